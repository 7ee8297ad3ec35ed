// Reference token ids from transformers.js's tokenizer code (@lenml/tokenizers), an implementation
// of Hugging Face tokenizers independent of ours, for tests/tokenizer/test_parity.cpp.
//
//   node hf_reference.mjs TOKENIZER_DIR CORPUS OUT
//
// TOKENIZER_DIR holds tokenizer.json and tokenizer_config.json (for GPT-2 pass the gpt2-json folder:
// the gpt2 folder's encoder.json + vocab.bpe are the same vocabulary). CORPUS has one JSON string per
// line. OUT gets one JSON object per corpus line:
//   {"text", "ids" (add_special_tokens true), "ids_plain" (false), "decoded" (decode(ids_plain))}
// `decoded` is the plain byte-level decode: special tokens kept, no clean_up_tokenization_spaces
// (transformers' default for GPT-2 and Llama-3 would rewrite " 's" to "'s" and " ." to ".").
//
// The package is found through $TEAP_NODE_MODULES, else ../../.cache/npm/node_modules from here.
import fs from "fs";
import path from "path";
import { fileURLToPath, pathToFileURL } from "url";

function die(msg) {
  console.error(`hf_reference: ${msg}`);
  process.exit(2);
}

const args = process.argv.slice(2);
if (args.length !== 3) die("usage: node hf_reference.mjs TOKENIZER_DIR CORPUS OUT");
const [dir, corpusPath, outPath] = args;

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeModules = process.env.TEAP_NODE_MODULES || path.resolve(here, "../../.cache/npm/node_modules");
const mainMjs = path.join(nodeModules, "@lenml", "tokenizers", "dist", "main.mjs");
if (!fs.existsSync(mainMjs)) die(`${mainMjs}: not found (run scripts/setup.sh or set TEAP_NODE_MODULES)`);
const { TokenizerLoader } = await import(pathToFileURL(mainMjs).href);

function readJson(file) {
  if (!fs.existsSync(file)) die(`${file}: not found`);
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    die(`${file}: ${e.message}`);
  }
}
const tokenizerJSON = readJson(path.join(dir, "tokenizer.json"));
const tokenizerConfig = readJson(path.join(dir, "tokenizer_config.json"));
const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });

if (!fs.existsSync(corpusPath)) die(`${corpusPath}: not found`);
// Split on "\n" only: JSON escapes every control character, but U+2028 may appear raw.
const lines = fs.readFileSync(corpusPath, "utf8").split("\n").filter((l) => l.length > 0);
if (lines.length === 0) die(`${corpusPath}: empty corpus`);

const out = [];
lines.forEach((line, i) => {
  let text;
  try {
    text = JSON.parse(line);
  } catch (e) {
    die(`${corpusPath}:${i + 1}: ${e.message}`);
  }
  if (typeof text !== "string") die(`${corpusPath}:${i + 1}: not a JSON string`);
  const ids = tok.encode(text, { add_special_tokens: true });
  const idsPlain = tok.encode(text, { add_special_tokens: false });
  // transformers.js refuses to decode an empty list; Hugging Face returns "".
  const decoded = idsPlain.length === 0 ? ""
    : tok.decode(idsPlain, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  out.push(JSON.stringify({ text, ids, ids_plain: idsPlain, decoded }));
});
fs.mkdirSync(path.dirname(path.resolve(outPath)), { recursive: true });
fs.writeFileSync(outPath, out.join("\n") + "\n");
console.log(`${outPath}: ${out.length} texts (${dir})`);
