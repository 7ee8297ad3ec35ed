// Reads a Hugging Face tokenizer.json, or GPT-2's vocab.json + merges.txt, into Tokenizer::Impl,
// checking everything a later encode relies on so that a bad file fails here, naming itself.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tokenizer/impl.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::tokenizer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// GPT-2's pattern, which ByteLevel applies when `use_regex` is set.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

json parse_json(const std::string& path) {
  const std::string text = read_file(path);
  if (text.empty()) fail_input(path, "empty file");
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail_input(path, "not valid JSON (truncated?) at byte " + std::to_string(e.byte));
  }
}

uint64_t pair_key(int a, int b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

void set_vocab(Tokenizer::Impl& t, const json& vocab, const std::string& where) {
  if (!vocab.is_object() || vocab.empty()) fail_input(where, "vocabulary missing or empty");
  int max_id = -1;
  for (const auto& [tok, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<long long>() < 0 || id.get<long long>() > 10'000'000)
      fail_input(where, "vocabulary entry '" + tok + "' has no valid id");
    max_id = std::max(max_id, id.get<int>());
  }
  t.id_bytes.assign(max_id + 1, "");
  t.id_string.assign(max_id + 1, "");
  t.id_special.assign(max_id + 1, 0);
  std::vector<char> seen(max_id + 1, 0);
  std::string bytes;
  for (const auto& [tok, idj] : vocab.items()) {
    const int id = idj.get<int>();
    if (seen[id]) fail_input(where, "id " + std::to_string(id) + " appears twice in the vocabulary");
    seen[id] = 1;
    t.id_string[id] = tok;
    // A vocabulary string outside the byte-level alphabet (a literal such as "<|endoftext|>"
    // that was never byte-encoded) decodes to its own UTF-8 and cannot come out of a merge.
    if (byte_level_to_bytes(tok, &bytes)) {
      t.id_bytes[id] = bytes;
      t.bytes_id.emplace(bytes, id);
    } else {
      t.id_bytes[id] = tok;
    }
  }
  t.base_vocab = max_id + 1;
  for (int b = 0; b < 256; ++b) {
    auto it = t.bytes_id.find(std::string(1, static_cast<char>(b)));
    if (it == t.bytes_id.end()) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      fail_input(where, std::string("not a byte-level BPE vocabulary: byte ") + hex + " has no token");
    }
    t.byte_id[b] = it->second;
  }
}

void add_merge(Tokenizer::Impl& t, const std::string& a, const std::string& b, size_t rank,
               const std::string& where) {
  auto id_of = [&](const std::string& s) {
    std::string bytes;
    if (byte_level_to_bytes(s, &bytes)) {
      auto f = t.bytes_id.find(bytes);
      if (f != t.bytes_id.end()) return f->second;
    }
    fail_input(where, "merge #" + std::to_string(rank + 1) + " '" + a + " " + b + "': '" + s +
                          "' is not in the vocabulary");
  };
  const int ia = id_of(a), ib = id_of(b), im = id_of(a + b);
  // The first occurrence of a pair wins, as in Hugging Face's BPE builder.
  t.merges.emplace(pair_key(ia, ib), Merge{static_cast<int>(rank), im});
}

void add_added_tokens(Tokenizer::Impl& t, const json& list, const std::string& where) {
  if (list.is_null()) return;
  if (!list.is_array()) fail_input(where, "added_tokens is not a list");
  for (const auto& a : list) {
    AddedToken tok;
    try {
      tok.id = a.at("id").get<int>();
      tok.content = a.at("content").get<std::string>();
      tok.special = a.value("special", false);
      tok.lstrip = a.value("lstrip", false);
      tok.rstrip = a.value("rstrip", false);
      tok.single_word = a.value("single_word", false);
    } catch (const json::exception& e) {
      fail_input(where, std::string("added_tokens entry is malformed: ") + e.what());
    }
    if (tok.id < 0 || tok.id > 10'000'000 || tok.content.empty())
      fail_input(where, "added token '" + tok.content + "' has an invalid id or empty content");
    if (tok.id >= static_cast<int>(t.id_bytes.size())) {
      t.id_bytes.resize(tok.id + 1);
      t.id_string.resize(tok.id + 1);
      t.id_special.resize(tok.id + 1, 0);
    }
    t.id_bytes[tok.id] = tok.content;
    t.id_string[tok.id] = tok.content;
    t.id_special[tok.id] = tok.special ? 1 : 0;
    t.added.push_back(tok);
  }
}

void add_normalizer(Tokenizer::Impl& t, const json& n, const std::string& where) {
  if (n.is_null()) return;
  const std::string type = n.value("type", "");
  if (type == "Sequence") {
    for (const auto& s : n.value("normalizers", json::array())) add_normalizer(t, s, where);
  } else if (type == "NFC") {
    t.normalizers.push_back(Normalization::NFC);
  } else if (type == "NFD") {
    t.normalizers.push_back(Normalization::NFD);
  } else if (type == "NFKC") {
    t.normalizers.push_back(Normalization::NFKC);
  } else if (type == "NFKD") {
    t.normalizers.push_back(Normalization::NFKD);
  } else {
    fail_input(where, "normalizer '" + type + "' is not supported (NFC, NFD, NFKC, NFKD, Sequence)");
  }
}

void add_pre_tokenizer(Tokenizer::Impl& t, const json& p, const std::string& where) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const auto& s : p.value("pretokenizers", json::array())) add_pre_tokenizer(t, s, where);
  } else if (type == "ByteLevel") {
    PreTokenizerStep step;
    step.add_prefix_space = p.value("add_prefix_space", false);
    if (p.value("use_regex", true)) step.regex = std::make_unique<Regex>(kGpt2Pattern, where);
    if (step.regex || step.add_prefix_space) t.pre_tokenizer.push_back(std::move(step));
  } else if (type == "Split") {
    PreTokenizerStep step;
    const json& pat = p.value("pattern", json::object());
    if (pat.contains("Regex")) {
      step.regex = std::make_unique<Regex>(pat["Regex"].get<std::string>(), where);
    } else if (pat.contains("String")) {
      std::string lit;  // a literal string: quote it for PCRE2
      for (char c : pat["String"].get<std::string>()) {
        if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) lit.push_back('\\');
        lit.push_back(c);
      }
      step.regex = std::make_unique<Regex>(lit, where);
    } else {
      fail_input(where, "Split pre-tokenizer without a Regex or String pattern");
    }
    const std::string b = p.value("behavior", "Isolated");
    if (b == "Isolated") step.behavior = SplitBehavior::Isolated;
    else if (b == "Removed") step.behavior = SplitBehavior::Removed;
    else if (b == "MergedWithPrevious") step.behavior = SplitBehavior::MergedWithPrevious;
    else if (b == "MergedWithNext") step.behavior = SplitBehavior::MergedWithNext;
    else if (b == "Contiguous") step.behavior = SplitBehavior::Contiguous;
    else fail_input(where, "Split behavior '" + b + "' is unknown");
    step.invert = p.value("invert", false);
    t.pre_tokenizer.push_back(std::move(step));
  } else {
    fail_input(where, "pre-tokenizer '" + type + "' is not supported (ByteLevel, Split, Sequence)");
  }
}

void add_post_processor(Tokenizer::Impl& t, const json& p, const std::string& where) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const auto& s : p.value("processors", json::array())) add_post_processor(t, s, where);
  } else if (type == "ByteLevel") {
    // Offsets only; ids are untouched.
  } else if (type == "TemplateProcessing") {
    const json& specials = p.value("special_tokens", json::object());
    bool after = false;
    for (const auto& piece : p.value("single", json::array())) {
      if (piece.contains("Sequence")) {
        after = true;
      } else if (piece.contains("SpecialToken")) {
        const std::string name = piece["SpecialToken"].value("id", "");
        if (!specials.contains(name))
          fail_input(where, "post-processor names special token '" + name + "' without ids");
        for (const auto& id : specials[name].value("ids", json::array())) {
          const int i = id.get<int>();
          if (i < 0 || i >= static_cast<int>(t.id_bytes.size()))
            fail_input(where, "post-processor token '" + name + "' has id " + std::to_string(i) +
                                  " outside the vocabulary");
          (after ? t.suffix_ids : t.prefix_ids).push_back(i);
        }
      }
    }
  } else {
    fail_input(where, "post-processor '" + type + "' is not supported (ByteLevel, TemplateProcessing, Sequence)");
  }
}

std::string family_of(const json& pre) {
  const std::string s = pre.dump();
  if (s.find("\\\\p{N}{1,3}") != std::string::npos) return "llama3";
  if (s.find("(?i:'s") != std::string::npos) return "qwen2";
  if (s.find("\"ByteLevel\"") != std::string::npos) return "gpt2";
  return "bpe";
}

std::unique_ptr<Tokenizer::Impl> load_tokenizer_json(const std::string& path) {
  const json j = parse_json(path);
  if (!j.is_object() || !j.contains("model")) fail_input(path, "no \"model\" section: not a tokenizer.json");
  const json& model = j["model"];
  const std::string type = model.value("type", "");
  if (type != "BPE")
    fail_input(path, "model type '" + type + "' is not supported (byte-level BPE only)");
  if (model.value("byte_fallback", false)) fail_input(path, "byte_fallback BPE is not supported");
  auto t = std::make_unique<Tokenizer::Impl>();
  t->source = path;
  try {
    set_vocab(*t, model.value("vocab", json()), path);
    const json& merges = model.value("merges", json::array());
    if (!merges.is_array()) fail_input(path, "merges is not a list");
    for (size_t r = 0; r < merges.size(); ++r) {
      const json& m = merges[r];
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 == s.size())
          fail_input(path, "merge #" + std::to_string(r + 1) + " '" + s + "' is not two tokens");
        add_merge(*t, s.substr(0, sp), s.substr(sp + 1), r, path);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        add_merge(*t, m[0].get<std::string>(), m[1].get<std::string>(), r, path);
      } else {
        fail_input(path, "merge #" + std::to_string(r + 1) + " is neither \"a b\" nor [a, b]");
      }
    }
    t->ignore_merges = model.value("ignore_merges", false);
    add_added_tokens(*t, j.value("added_tokens", json()), path);
    add_normalizer(*t, j.value("normalizer", json()), path);
    add_pre_tokenizer(*t, j.value("pre_tokenizer", json()), path);
    add_post_processor(*t, j.value("post_processor", json()), path);
  } catch (const json::exception& e) {
    fail_input(path, std::string("unexpected structure: ") + e.what());
  }
  t->family = family_of(j.value("pre_tokenizer", json()));
  return t;
}

std::unique_ptr<Tokenizer::Impl> load_gpt2_files(const std::string& vocab_path, const std::string& merges_path) {
  const json vocab = parse_json(vocab_path);
  auto t = std::make_unique<Tokenizer::Impl>();
  t->source = vocab_path;
  set_vocab(*t, vocab, vocab_path);
  const std::string text = read_file(merges_path);
  if (text.empty()) fail_input(merges_path, "empty file");
  size_t pos = 0, rank = 0, line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size() || line.find(' ', sp + 1) != std::string::npos)
      fail_input(merges_path, "line " + std::to_string(line_no) + " is not two tokens: '" + line + "'");
    add_merge(*t, line.substr(0, sp), line.substr(sp + 1), rank++, merges_path);
  }
  if (rank == 0) fail_input(merges_path, "no merges");
  // GPT2TokenizerFast registers its end-of-text token as special.
  if (auto it = vocab.find("<|endoftext|>"); it != vocab.end()) {
    AddedToken eot;
    eot.id = it->get<int>();
    eot.content = "<|endoftext|>";
    eot.special = true;
    t->added.push_back(eot);
    t->id_special[eot.id] = 1;
  }
  PreTokenizerStep step;
  step.regex = std::make_unique<Regex>(kGpt2Pattern, vocab_path);
  t->pre_tokenizer.push_back(std::move(step));
  t->family = "gpt2";
  return t;
}

}  // namespace

std::unique_ptr<Tokenizer::Impl> load_impl(const std::string& path) {
  std::error_code ec;
  if (path.empty()) fail_input("--tokenizer", "empty path");
  if (!fs::exists(path, ec)) fail_input(path, "no such file or folder");
  if (fs::is_directory(path, ec)) {
    const fs::path d(path);
    if (fs::exists(d / "tokenizer.json")) return load_tokenizer_json((d / "tokenizer.json").string());
    if (fs::exists(d / "vocab.json")) return load_gpt2_files((d / "vocab.json").string(), (d / "merges.txt").string());
    if (fs::exists(d / "encoder.json")) return load_gpt2_files((d / "encoder.json").string(), (d / "vocab.bpe").string());
    fail_input(path, "no tokenizer.json, vocab.json + merges.txt or encoder.json + vocab.bpe in this folder");
  }
  const fs::path p(path);
  const std::string name = p.filename().string();
  if (name == "vocab.json") return load_gpt2_files(path, (p.parent_path() / "merges.txt").string());
  if (name == "encoder.json") return load_gpt2_files(path, (p.parent_path() / "vocab.bpe").string());
  return load_tokenizer_json(path);
}

void copy_tokenizer_files(const std::string& path, const std::string& out) {
  static const char* names[] = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                                "encoder.json", "vocab.bpe", "special_tokens_map.json"};
  const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
  std::error_code ec;
  if (fs::equivalent(dir, fs::path(out), ec)) return;  // already there
  for (const char* name : names) {
    if (!fs::exists(dir / name)) continue;
    check_regular_file((dir / name).string(), kMaxDataFile);  // copying a FIFO would wait forever
    fs::copy_file(dir / name, fs::path(out) / name, fs::copy_options::overwrite_existing);
  }
}

}  // namespace teap::tokenizer
