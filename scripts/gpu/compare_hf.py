#!/usr/bin/env python3
"""Our forward pass and tokenizer against Hugging Face's own code (`transformers`, `tokenizers`),
on the GPU machine, whose venv has both. Two subcommands:

  compare_hf.py logits MODEL_DIR --bin TINYSQL_EAP --dump-logits DUMP_LOGITS
                [--device cpu|cuda] [--reference hf|project] [--tol 1e-4] [--positions 40]
      Token ids of two TinySQL texts from `tinysql-eap tokenize` (and, with --reference hf, the
      same ids from `tokenizers`, which must be identical); our logits from DUMP_LOGITS (float32,
      --device); the reference's logits from AutoModelForCausalLM (float32, CPU) with --reference
      hf, or from tests/model/reference.py (float64, the project's independent Python forward
      pass) with --reference project, which needs no transformers (the build machine's test).
      Passes when max |ours - ref| <= TOL * max(1, max |ref|) at every position.

  compare_hf.py tokens TOKENIZER_DIR CORPUS OUT.jsonl
      Writes the reference ids of every corpus text from Hugging Face `tokenizers`
      (tokenizer.json) in the format of tests/tokenizer/hf_reference.mjs ({"text", "ids",
      "ids_plain", "decoded"}), for the project's test_parity program:
          TEAP_TOKENIZER=TOKENIZER_DIR TEAP_REFERENCE=OUT.jsonl build-gpu/tests/test_parity

Exit 0: pass, 1: fail, 2: bad usage or input (one line).
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# The texts of tests/model/test_reference.py: TinySQL prompts with their answers.
TEXTS = [
    "### Instruction: show me the name and price from the products table "
    "### Context: CREATE TABLE products ( name TEXT, price INTEGER, stock INTEGER, maker TEXT ) "
    "### Response: SELECT name, price FROM products",
    "### Instruction: what are the title and author in the books table "
    "### Context: CREATE TABLE books ( title TEXT, author TEXT, year INTEGER, pages INTEGER ) "
    "### Response: SELECT title, author FROM books",
]


def die(msg, code=2):
    print(f"compare_hf: {msg}", file=sys.stderr)
    sys.exit(code)


def run(cmd):
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        die(f"{cmd[0]}: {e.strerror}")
    if r.returncode != 0:
        die(f"{' '.join(cmd[:2])} exited {r.returncode}: {r.stderr.strip()[-300:]}", 1)
    return r.stdout


def our_ids(binary, model_dir, positions):
    out = run([binary, "tokenize", "--tokenizer", model_dir, *TEXTS])
    rows = [[int(t) for t in line.split()[1:]] for line in out.splitlines() if line.startswith("ids:")]
    if len(rows) != len(TEXTS) or any(len(r) < positions for r in rows):
        die(f"tokenize gave {[len(r) for r in rows]} ids, need {positions} per text", 1)
    return rows


def hf_tokenizer(folder):
    """Hugging Face tokenizers' own: tokenizer.json, else GPT-2's vocab.json + merges.txt (the files
    make-model and train copy for GPT-Neo) as a byte-level BPE without a prefix space."""
    import tokenizers

    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        return tokenizers.Tokenizer.from_file(path)
    vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    if not (os.path.isfile(vocab) and os.path.isfile(merges)):
        die(f"{folder}: neither tokenizer.json nor vocab.json + merges.txt")
    return tokenizers.ByteLevelBPETokenizer(vocab, merges, add_prefix_space=False)


def hf_ids(model_dir):
    tok = hf_tokenizer(model_dir)
    return [tok.encode(t, add_special_tokens=True).ids for t in TEXTS]


def read_logits(path):
    import numpy as np

    with open(path + ".json") as f:
        shape = json.load(f)["shape"]
    return np.fromfile(path, dtype="<f4").reshape(shape)


def reference_logits(model_dir, ids, which):
    import numpy as np
    import torch

    x = torch.tensor(ids, dtype=torch.int64)
    if which == "project":
        sys.path.insert(0, os.path.join(ROOT, "tests", "model"))
        import reference  # tests/model/reference.py

        return reference.Reference(model_dir).forward(x).numpy()
    from transformers import AutoModelForCausalLM

    try:
        m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    except TypeError:  # transformers 4.x names it torch_dtype
        m = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        return m(input_ids=x).logits.to(torch.float64).numpy()


def cmd_logits(a):
    import numpy as np

    if not os.path.isfile(os.path.join(a.model_dir, "config.json")):
        die(f"{a.model_dir}: no config.json (not a model folder)")
    for p, what in ((a.bin, "--bin"), (a.dump_logits, "--dump-logits")):
        if not os.access(p, os.X_OK):
            die(f"{what} {p}: not an executable")
    rows = our_ids(a.bin, a.model_dir, a.positions)
    notes = []
    if a.reference == "hf":
        theirs = hf_ids(a.model_dir)
        if theirs != rows:
            print(f"FAIL logits {os.path.basename(a.model_dir)}: token ids differ from tokenizers' "
                  f"(ours {rows[0][:8]}..., theirs {theirs[0][:8]}...)")
            return 1
        notes.append("ids = tokenizers'")
    ids = [r[: a.positions] for r in rows]
    out = os.path.join(a.work, f"{os.path.basename(os.path.normpath(a.model_dir))}.{a.device}.bin")
    os.makedirs(a.work, exist_ok=True)
    run([a.dump_logits, a.model_dir, out, "--ids", ",".join(" ".join(map(str, r)) for r in ids),
         "--dtype", "float32", "--device", a.device])
    ours = read_logits(out).astype(np.float64)
    ref = reference_logits(a.model_dir, ids, a.reference)
    if ours.shape != ref.shape:
        print(f"FAIL logits: shape {list(ours.shape)} against the reference's {list(ref.shape)}")
        return 1
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours - ref).max())
    ok = np.isfinite(ours).all() and err <= a.tol * scale
    name = os.path.basename(os.path.normpath(a.model_dir))
    print(f"{'PASS' if ok else 'FAIL'} logits {name} ({a.device}, float32) vs {a.reference}: "
          f"max err {err:.2e} = {err / scale:.2e} of max(1, max |ref|) {scale:.3g} (tol {a.tol:g})"
          + (f"; {', '.join(notes)}" if notes else ""))
    return 0 if ok else 1


def cmd_tokens(a):
    if not os.path.isdir(a.tokenizer_dir):
        die(f"{a.tokenizer_dir}: not a folder")
    tok = hf_tokenizer(a.tokenizer_dir)
    try:
        with open(a.corpus, encoding="utf-8") as f:
            # Split on "\n" only, as hf_reference.mjs: U+2028 may appear raw inside a JSON string.
            lines = [l for l in f.read().split("\n") if l]
    except OSError as e:
        die(f"{a.corpus}: {e.strerror}")
    if not lines:
        die(f"{a.corpus}: empty corpus")
    out = []
    for i, line in enumerate(lines, 1):
        try:
            text = json.loads(line)
        except ValueError as e:
            die(f"{a.corpus}:{i}: {e}")
        if not isinstance(text, str):
            die(f"{a.corpus}:{i}: not a JSON string")
        ids = tok.encode(text, add_special_tokens=True).ids
        plain = tok.encode(text, add_special_tokens=False).ids
        # The plain byte-level decode (special tokens kept), as hf_reference.mjs.
        decoded = tok.decode(plain, skip_special_tokens=False) if plain else ""
        out.append(json.dumps({"text": text, "ids": ids, "ids_plain": plain, "decoded": decoded}))
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"{a.out}: {len(out)} texts ({a.tokenizer_dir}, tokenizers)")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lg = sub.add_parser("logits", help="our logits against transformers' (or the project reference)")
    lg.add_argument("model_dir")
    lg.add_argument("--bin", required=True, help="tinysql-eap")
    lg.add_argument("--dump-logits", required=True, help="build-*/tests/model/dump_logits")
    lg.add_argument("--device", default="cpu")
    lg.add_argument("--reference", choices=["hf", "project"], default="hf")
    lg.add_argument("--tol", type=float, default=1e-4)
    lg.add_argument("--positions", type=int, default=40)
    lg.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp") + "/compare_hf")
    tk = sub.add_parser("tokens", help="reference ids from tokenizers for test_parity")
    tk.add_argument("tokenizer_dir")
    tk.add_argument("corpus")
    tk.add_argument("out")
    a = ap.parse_args()
    if a.cmd == "logits":
        if a.positions < 1:
            die(f"--positions must be at least 1, not {a.positions}")
        return cmd_logits(a)
    return cmd_tokens(a)


if __name__ == "__main__":
    sys.exit(main())
