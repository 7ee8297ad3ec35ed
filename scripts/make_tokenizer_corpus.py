#!/usr/bin/python3
"""Writes tests/data/tokenizer_corpus.jsonl: the texts on which the C++ tokenizer must give the same
ids as Hugging Face's (tests/tokenizer/hf_reference.mjs computes the reference ids).

One JSON string per line, in a fixed order, so the file is reproducible and can be committed:
  python3 scripts/make_tokenizer_corpus.py [OUT]

Contents: TinySQL prompts and prompt+SQL texts for every word of the TinySQL spec
(tinysql-corrupt.md) in every position, each word alone, and edge cases of byte-level BPE
(contractions, digits, whitespace runs, punctuation, non-ASCII, emoji, special-token literals).

Left out on purpose, because transformers.js (the reference) and Hugging Face's Rust `tokenizers`
disagree there: U+0085 (a `\\s` in Rust's regex, not in JavaScript's), U+FEFF (the reverse), and
`'ſ` (U+017F matches `(?i:'s)` in Rust; transformers.js rewrites the group to `'[sS]`).
"""
import json
import os
import sys

# --- Vocabulary of spec/tinysql-corrupt.md -----------------------------------------------------
TABLES = ["people", "inventory", "orders", "products", "items", "users", "links"]
TABLE_SYNONYMS = {
    "people": "children", "inventory": "stock", "orders": "requests", "products": "goods",
    "items": "objects", "users": "customers", "links": "connections",
}
NOVEL_TABLES = ["star", "very", "apple", "blue", "orange"]
FIELDS = ["price", "count", "amount", "total", "name", "code", "number", "label", "type",
          "category", "status", "title", "date", "value", "rating", "color", "size", "weight",
          "duration"]
FIELD_SYNONYMS = {
    "price": "cost", "count": "quantity", "amount": "total", "total": "sum", "name": "title",
    "code": "reference", "number": "identifier", "label": "tag", "type": "category",
    "category": "class", "status": "state", "title": "heading", "date": "time", "value": "amount",
    "rating": "score", "color": "shade", "size": "dimension", "weight": "mass",
    "duration": "period",
}
NOVEL_FIELDS = ["hammer", "little", "wolf", "sky", "yellow"]
TYPES = ["INT", "CHAR", "TIME", "TEXT", "JSON"]


def unique(words):
    seen, out = set(), []
    for w in words:
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


TABLE_WORDS = unique(TABLES + [TABLE_SYNONYMS[t] for t in TABLES] + NOVEL_TABLES)
FIELD_WORDS = unique(FIELDS + [FIELD_SYNONYMS[f] for f in FIELDS] + NOVEL_FIELDS)
ALL_WORDS = unique(TABLE_WORDS + FIELD_WORDS + TYPES)


# --- The prompt format of the spec ---------------------------------------------------------------
def english(fields, table):
    # The reference joins the first n-1 fields with ", " then " and " then the last one; with one
    # field the list before " and " is empty ("show me the  and price"), collapsed below.
    listed = ", ".join(fields[:-1]) + " and " + fields[-1]
    return f"show me the {listed} from the {table} table"


def create(table, fields, types):
    cols = ", ".join(f"{f} {t}" for f, t in zip(fields, types))
    return f"CREATE TABLE {table} ( {cols} )"


def sql(table, fields):
    return f"SELECT {', '.join(fields)} FROM {table}"


def prompt(eng, cre):
    text = f"### Instruction: {eng} ### Context: {cre} ### Response: "
    return " ".join(text.split()) + " "


def item(eng_fields, eng_table, fields, table, types):
    """The prompt and prompt+SQL texts of one item (English words may differ from real names)."""
    p = prompt(english(eng_fields, eng_table), create(table, fields, types))
    return [p, p + sql(table, fields)]


def types_for(n, k):
    return [TYPES[(k + i) % len(TYPES)] for i in range(n)]


def partner(word, k=0):
    """A clean field other than `word`, chosen deterministically."""
    others = [f for f in FIELDS if f != word]
    return others[k % len(others)]


def tinysql_texts():
    out = []
    # The spec's example (36 GPT-2 tokens).
    out += item(["price", "count"], "people", ["price", "count"], "people", ["INT", "CHAR"])
    # Every table word as the table, everywhere (English, CREATE, FROM).
    for k, t in enumerate(TABLE_WORDS):
        fs = [partner("", k), partner("", k + 7)]
        out += item(fs, t, fs, t, types_for(2, k))
    # Every field word as the first and as the second field, and alone (the num_fields=1 quirk).
    for k, f in enumerate(FIELD_WORDS):
        table = TABLES[k % len(TABLES)]
        other = partner(f, k)
        out += item([f, other], table, [f, other], table, types_for(2, k))
        out += item([other, f], table, [other, f], table, types_for(2, k + 2))
        out += item([f], table, [f], table, types_for(1, k))
    # Every type in both column positions.
    for k, ty in enumerate(TYPES):
        out += item(["price", "count"], "orders", ["price", "count"], "orders", [ty, ty])
        out += item(["name", "size"], "items", ["name", "size"], "items",
                    [ty, TYPES[(k + 1) % len(TYPES)]])
    # Synonym and novel words in the English only (the corrupt prompts of the Eng features).
    for k, t in enumerate(TABLES):
        fs = [FIELDS[k], FIELDS[k + 7]]
        out += item(fs, TABLE_SYNONYMS[t], fs, t, types_for(2, k))
        out += item(fs, NOVEL_TABLES[k % len(NOVEL_TABLES)], fs, t, types_for(2, k))
    for k, f in enumerate(FIELDS):
        other = partner(f, k + 3)
        table = TABLES[(k + 3) % len(TABLES)]
        out += item([FIELD_SYNONYMS[f], FIELD_SYNONYMS[other]], table, [f, other], table,
                    types_for(2, k))
        out += item([NOVEL_FIELDS[k % len(NOVEL_FIELDS)], other], table, [f, other], table,
                    types_for(2, k))
    # Novel words in the CREATE only (the corrupt prompts of the Def features).
    for k, t in enumerate(NOVEL_TABLES):
        fs = ["price", "count"]
        p = prompt(english(fs, "people"), create(t, fs, ["INT", "CHAR"]))
        out += [p, p + sql("people", fs)]
    for k, f in enumerate(NOVEL_FIELDS):
        p = prompt(english(["price", "count"], "users"), create("users", [f, "count"], ["TEXT", "JSON"]))
        out += [p, p + sql("users", ["price", "count"])]
    # Three and four fields.
    out += item(["price", "count", "amount"], "links", ["price", "count", "amount"], "links",
                ["INT", "CHAR", "TIME"])
    out += item(["hammer", "wolf", "sky", "yellow"], "star", ["hammer", "wolf", "sky", "yellow"],
                "star", ["TEXT", "JSON", "INT", "TIME"])
    # The quirk text before whitespace collapsing, and the SQL alone.
    out.append("show me the  and price from the people table")
    out.append("show me the and price from the people table")
    out.append("SELECT price, count FROM people")
    out.append(" SELECT price FROM people")
    return out


def word_texts():
    out = []
    for w in ALL_WORDS:
        out += [w, " " + w, w.capitalize(), " " + w.upper()]
    return out


def edge_texts():
    return [
        # Empty and whitespace.
        "", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n\n", " \n ", "\t\t x", "a  b", "a   b",
        "a    b", "a\tb", "a \t b", "a\nb", "a\n\nb", "a\r\nb", "line one\r\nline two\r\n",
        "trailing space ", "trailing spaces   ", "  leading spaces", " leading space",
        "\n leading newline", "x\n  y", "x \n\n  y", "end\n", "end \n",
        "\u00a0nbsp\u00a0here", "ideographic\u3000space", "vertical\x0btab\x0cfeed",
        "line\u2028separator",
        # Contractions, lower and upper case.
        "it's", "don't", "they're", "we've", "I'm", "you'll", "he'd", "IT'S", "YOU'LL",
        "DON'T", "We'Ve", "she'S", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL",
        "'x", "''", "' s", "rock 'n' roll", "the user's price", "the users' prices",
        # Digits and numbers.
        "1", "12", "123", "1234", "12345", "1234567890123", " 1", " 12", " 1234", "3.14159",
        "1,000,000", "abc123def", "x1 y22 z333", "2024-01-15", "$1234.56", "100%", "0x1F",
        "١٢٣", "½ ⅓",
        # Punctuation runs.
        "!!!???...", "((", "))", "---", ");", "( price INT )", "a, b, c", "x == y != z",
        "<html></html>", "{\"key\": [1, 2]}", "#!/bin/sh", "@user #tag", "a...b", "...",
        " !!", "!\n", "?\r\n", "«quoted»", "“curly” ‘quotes’", "—dash–", "…",
        # Accents and other scripts.
        "café", "naïve", "Ελληνικά", "Привет", "Привет, мир!", "über straße", "Ångström",
        "cafe\u0301", " cafe\u0301 au lait", "\u212b", "\u2126", "\u1100\u1161",
        "हिन्दी", "العربية", "עברית", "ไทย", "한국어",
        # CJK.
        "日本語のテキスト", "中文", "中文 English mixed", "全角ＡＢＣ１２３",
        # Emoji.
        "👍", "👍🏽", "🤖", "👨\u200d👩\u200d👧\u200d👦", "🇫🇷", "I ❤️ SQL", " 🤖🤖",
        "😀 grin", "a\u200bzero-width",
        # Special tokens' literal strings (special in some tokenizers, plain text in others).
        "<|endoftext|>", "hello<|endoftext|>world", "hello <|endoftext|> world",
        "<|endoftext|><|endoftext|>", " <|endoftext|>", "<|endoftext|> ", "<|endoftext|",
        "<|endoftext", "|endoftext|>", "<<|endoftext|>>",
        "<|begin_of_text|>", "<|begin_of_text|>SELECT price", " <|begin_of_text|> x",
        "<|end_of_text|>", "done<|end_of_text|>", "done <|end_of_text|>\n",
        "<|im_start|>", "<|im_end|>", "<|im_start|>user\nhi<|im_end|>\n",
        "x <|im_start|>system", "<|im_end|>word", "<|begin_of_text|><|end_of_text|>",
        "### Response: SELECT price FROM people<|endoftext|>",
        # Qwen's added tokens that are not special (<think> is Qwen3's).
        "<think>\nok\n</think>", "<tool_call>x</tool_call>", "<|fim_prefix|>def f", " <|file_sep|> ",
        # Long and mixed.
        "The quick brown fox jumps over the lazy dog. " * 3,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "SELECT price, count FROM people WHERE price > 100 ORDER BY count DESC;",
        "def f(x):\n    return x ** 2\n",
        "    indented code\n\tand tabs\n",
    ]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "data",
                                                                  "tokenizer_corpus.jsonl")
    texts = unique(tinysql_texts() + word_texts() + edge_texts())
    for t in texts:
        # The corpus holds NFC text apart from the decomposed accents and singletons above,
        # which test the Qwen normalizer; nothing here may hold the characters left out.
        assert "\u0085" not in t and "\ufeff" not in t and "\u017f" not in t, t
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for t in texts:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    print(f"{out_path}: {len(texts)} texts")


if __name__ == "__main__":
    main()
