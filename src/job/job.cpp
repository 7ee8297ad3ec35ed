#include "job/job.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>

#include "eap/circuit.hpp"
#include "eap/memory.hpp"
#include "eap/method.hpp"
#include "tinysql/rng.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::job {
namespace {

namespace fs = std::filesystem;

struct Ctx {
  std::string file;
  // "FILE:LINE: key", the prefix of every message about `key` (set at node `n`).
  std::string where(const toml::node* n, const std::string& key) const {
    const int line = n ? static_cast<int>(n->source().begin.line) : 0;
    return file + (line ? ":" + std::to_string(line) : "") + ": " + key;
  }
  [[noreturn]] void fail(const toml::node* n, const std::string& key, const std::string& what) const {
    throw InputError(where(n, key) + ": " + what);
  }
  void only_keys(const toml::table& t, const std::string& where, const std::set<std::string>& allowed) const {
    for (const auto& [k, v] : t)
      if (!allowed.count(std::string(k.str()))) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail(&v, where + std::string(where.empty() ? "" : ".") + std::string(k.str()), "unknown key (known: " + list + ")");
      }
  }
  template <class T>
  T get(const toml::table& t, const std::string& where, const char* key, T fallback) const {
    const toml::node* n = t.get(key);
    if (!n) return fallback;
    const std::string path = where + (where.empty() ? "" : ".") + key;
    if constexpr (std::is_same_v<T, bool>) {
      if (!n->is_boolean()) fail(n, path, "expected true or false");
      return n->as_boolean()->get();
    } else if constexpr (std::is_integral_v<T>) {
      if (!n->is_integer()) fail(n, path, "expected an integer");
      return static_cast<T>(n->as_integer()->get());
    } else {
      if (!n->is_string()) fail(n, path, "expected a string");
      return n->as_string()->get();
    }
  }
  template <class T>
  std::vector<T> list(const toml::table& t, const std::string& where, const char* key, std::vector<T> fallback) const {
    const toml::node* n = t.get(key);
    if (!n) return fallback;
    const std::string path = where + "." + key;
    if (!n->is_array()) fail(n, path, "expected a list");
    std::vector<T> out;
    for (const auto& e : *n->as_array()) {
      if constexpr (std::is_same_v<T, bool>) {
        if (!e.is_boolean()) fail(&e, path, "expected a list of true/false");
        out.push_back(e.as_boolean()->get());
      } else if constexpr (std::is_integral_v<T>) {
        if (!e.is_integer()) fail(&e, path, "expected a list of integers");
        out.push_back(static_cast<T>(e.as_integer()->get()));
      } else {
        if (!e.is_string()) fail(&e, path, "expected a list of strings");
        out.push_back(e.as_string()->get());
      }
    }
    if (out.empty()) fail(n, path, where == "grid" ? "empty list: the grid would be empty" : "empty list");
    return out;
  }
};

// "settings.batches: " for a line "batches = ..." under [settings]; "" when the line has no key.
std::string key_on_line(const std::string& text, int line) {
  std::istringstream in(text);
  std::string l, table;
  for (int i = 1; std::getline(in, l) && i <= line; ++i) {
    const size_t a = l.find_first_not_of(" \t");
    if (a == std::string::npos || l[a] == '#') continue;
    if (l[a] == '[') {
      const size_t b = l.find_first_not_of("[ \t", a), e = l.find(']', a);
      table = b != std::string::npos && e != std::string::npos && e > b ? l.substr(b, l.find_last_not_of(" \t", e - 1) + 1 - b) : "";
      if (i == line) return table.empty() ? "" : table + ": ";
      continue;
    }
    if (i < line) continue;
    const size_t eq = l.find('=');
    if (eq == std::string::npos || eq == a) return "";
    const std::string key = l.substr(a, l.find_last_not_of(" \t", eq - 1) + 1 - a);
    return (table.empty() ? "" : table + ".") + key + ": ";
  }
  return "";
}

std::string settings_hash(const std::string& settings) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(tinysql::fnv1a64(settings)));
  return hex;
}

bool valid_device_name(const std::string& d) {
  if (d == "cpu" || d == "cuda") return true;
  if (d.rfind("cuda:", 0) != 0 || d.size() == 5 || d.size() > 9) return false;
  return std::all_of(d.begin() + 5, d.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string resolve(const std::string& base_dir, const std::string& p) {
  // A repository id (org/name that is not an existing path) stays as it is.
  if (p.empty() || fs::path(p).is_absolute()) return p;
  const fs::path rel = fs::path(base_dir) / p;
  if (fs::exists(rel) || p.rfind("./", 0) == 0 || p.rfind("../", 0) == 0 || std::count(p.begin(), p.end(), '/') != 1)
    return fs::weakly_canonical(rel).string();
  return p;
}

}  // namespace

std::string default_repository(int model, int commandset, bool synonym_variant) {
  if (commandset == 0) {
    static const char* base[] = {"roneneldan/TinyStories-Instruct-2Layers-33M", "Qwen/Qwen2.5-0.5B-Instruct",
                                 "withmartian/Llama-3.2-1B-Instruct"};
    return base[model - 1];
  }
  // withmartian/sql_interp_bm{m}_cs{c}_experiment_{x}.{y}: experiments number 1-9 over (model, command
  // set); BM1 plain/synonym runs are .8/.10, BM2 and BM3 .2/.3.
  const int experiment = (model - 1) * 3 + commandset;
  const int run = model == 1 ? (synonym_variant ? 10 : 8) : (synonym_variant ? 3 : 2);
  return "withmartian/sql_interp_bm" + std::to_string(model) + "_cs" + std::to_string(commandset) + "_experiment_" +
         std::to_string(experiment) + "." + std::to_string(run);
}

std::string top_k_string(int64_t k) { return k == eap::kAllEdges ? "all" : std::to_string(k); }

namespace {

void rehash(Cell& cell) {
  cell.hash = settings_hash(cell.settings);
  cell.evaluation_hash = cell.evaluation.empty() ? "" : settings_hash(cell.settings + ";" + cell.evaluation);
}

std::string evaluation_string(const Evaluate& e, int top_n) {
  if (!e.enabled) return "";
  std::string s = "circuits=";
  for (size_t i = 0; i < e.circuits.size(); ++i) s += (i ? "," : "") + e.circuits[i];
  s += ";top_k=";
  for (size_t i = 0; i < e.top_k.size(); ++i) s += (i ? "," : "") + top_k_string(e.top_k[i]);
  s += ";prune=" + std::to_string(e.prune ? 1 : 0) + ";top_n=" + std::to_string(top_n);
  return s;
}

}  // namespace

void set_weights_id(Cell& cell, const std::string& weights_id) {
  cell.settings += ";weights_id=" + weights_id;
  rehash(cell);
}

Job load_job(const std::string& path) {
  Job job;
  job.path = path;
  job.text = read_file(path, kMaxSmallFile);
  const Ctx ctx{path};
  toml::table root;
  try {
    root = toml::parse(job.text, path);
  } catch (const toml::parse_error& e) {
    const int line = static_cast<int>(e.source().begin.line);
    throw InputError(path + ":" + std::to_string(line) + ": " + key_on_line(job.text, line) + "syntax error: " +
                     std::string(e.description()));
  }
  const std::string dir = fs::absolute(fs::path(path)).parent_path().string();
  ctx.only_keys(root, "", {"output", "grid", "exclude", "settings", "models", "quality", "evaluate"});

  const toml::node* out = root.get("output");
  if (!out) ctx.fail(nullptr, "output", "missing (the sweep folder)");
  if (!out->is_string() || out->as_string()->get().empty()) ctx.fail(out, "output", "expected a folder name");
  job.output = resolve(dir, out->as_string()->get());
  job.output_origin = ctx.where(out, "output");

  static const toml::table empty;
  auto table = [&](const char* key) -> const toml::table& {
    const toml::node* n = root.get(key);
    if (!n) return empty;
    if (!n->is_table()) ctx.fail(n, key, "expected a table");
    return *n->as_table();
  };

  Settings& s = job.settings;
  const toml::table& st = table("settings");
  ctx.only_keys(st, "settings", {"num_fields", "batch_size", "batches", "top_n", "seed", "dtype", "device", "threads",
                                 "downstream_heads", "metric_pairing", "group_size", "model_variant",
                                 "any_architecture", "method", "ig_steps", "input_node", "logits_node",
                                 "memory_budget"});
  // Integers are read whole and bounded before they are narrowed: 9223372036854775807 is "too
  // large", not a wrapped "must be at least 1".
  auto bounded = [&](const char* key, int64_t fallback, int64_t lo, int64_t hi, const std::string& why_hi) {
    const int64_t v = ctx.get<int64_t>(st, "settings", key, fallback);
    if (v < lo) ctx.fail(st.get(key), std::string("settings.") + key, "must be at least " + std::to_string(lo));
    if (v > hi) ctx.fail(st.get(key), std::string("settings.") + key, std::to_string(v) + " is too large: at most " + std::to_string(hi) + why_hi);
    return v;
  };
  s.num_fields = static_cast<int>(bounded("num_fields", s.num_fields, 1, 19, " (the largest TinySQL table)"));
  s.batch_size = static_cast<int>(bounded("batch_size", s.batch_size, 1, kMaxBatchSize, ""));
  s.batches = static_cast<int>(bounded("batches", s.batches, 1, kMaxBatches, " (unit files are numbered b00000..b99999)"));
  s.top_n = static_cast<int>(bounded("top_n", s.top_n, 1, 1000000000, ""));
  const int64_t seed = bounded("seed", 0, 0, std::numeric_limits<int64_t>::max(), "");
  s.dtype = ctx.get(st, "settings", "dtype", s.dtype);
  s.device = ctx.get(st, "settings", "device", s.device);
  s.threads = static_cast<int>(bounded("threads", s.threads, 0, kMaxThreads, " (and at most the machine's cores, checked when the job runs)"));
  s.downstream_heads = ctx.get(st, "settings", "downstream_heads", s.downstream_heads);
  s.metric_pairing = ctx.get(st, "settings", "metric_pairing", s.metric_pairing);
  s.group_size = static_cast<int>(bounded("group_size", s.group_size, 1, 65536, ""));
  s.model_variant = ctx.get(st, "settings", "model_variant", s.model_variant);
  s.any_architecture = ctx.get(st, "settings", "any_architecture", s.any_architecture);
  s.method = ctx.get(st, "settings", "method", s.method);
  s.ig_steps = static_cast<int>(bounded("ig_steps", s.ig_steps, 1, eap::kMaxIgSteps, ""));
  s.input_node = ctx.get(st, "settings", "input_node", s.input_node);
  s.logits_node = ctx.get(st, "settings", "logits_node", s.logits_node);
  // memory_budget (issue 17): a size with a unit, a number of bytes, or "auto".
  if (const toml::node* n = st.get("memory_budget")) {
    if (n->is_integer() && n->as_integer()->get() > 0) {
      s.memory_budget_bytes = double(n->as_integer()->get());
      s.memory_budget = std::to_string(n->as_integer()->get());
    } else if (n->is_string()) {
      s.memory_budget = n->as_string()->get();
      if (s.memory_budget != "auto") {
        s.memory_budget_bytes = eap::parse_bytes(s.memory_budget);
        if (!(s.memory_budget_bytes > 0))
          ctx.fail(n, "settings.memory_budget", "'" + s.memory_budget + "' is not \"auto\" or a size such as \"12GiB\" or \"800MiB\"");
      }
    } else {
      ctx.fail(n, "settings.memory_budget", "expected \"auto\", a size such as \"12GiB\", or a positive number of bytes");
    }
  }
  auto check = [&](bool ok, const char* key, const std::string& what) {
    if (!ok) ctx.fail(st.get(key), std::string("settings.") + key, what);
  };
  s.seed = static_cast<uint64_t>(seed);
  check(s.dtype == "float32" || s.dtype == "bfloat16", "dtype", "'" + s.dtype + "' is not float32 or bfloat16");
  check(valid_device_name(s.device), "device", "'" + s.device + "' is not cpu, cuda or cuda:N (N = 0, 1, ...)");
  check(s.downstream_heads == "qkv" || s.downstream_heads == "none", "downstream_heads", "'" + s.downstream_heads + "' is not qkv or none");
  check(s.metric_pairing == "own" || s.metric_pairing == "batch_broadcast" || s.metric_pairing == "notebook",
        "metric_pairing", "'" + s.metric_pairing + "' is not own, batch_broadcast or notebook");
  // Each member of a group sees only its share of the batch, so it cannot average over all of the
  // batch's pairs: refused rather than computed differently from one rank.
  check(!(s.metric_pairing == "batch_broadcast" && s.group_size > 1), "group_size",
        "metric_pairing batch_broadcast needs the whole batch on one rank: use group_size = 1");
  {
    const auto names = eap::method_names();
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    check(std::find(names.begin(), names.end(), s.method) != names.end(), "method", "'" + s.method + "' is not one of " + list);
  }
  check(s.model_variant == "auto" || s.model_variant == "plain" || s.model_variant == "synonym", "model_variant",
        "'" + s.model_variant + "' is not auto, plain or synonym");

  const toml::table& qt = table("quality");
  ctx.only_keys(qt, "quality", {"min_effect_vs_clean", "min_effect_vs_spread", "min_accuracy"});
  auto threshold = [&](const char* key, double fallback, double hi) {
    const toml::node* n = qt.get(key);
    if (!n) return fallback;
    if (!n->is_number()) ctx.fail(n, std::string("quality.") + key, "expected a number");
    const double v = n->is_integer() ? double(n->as_integer()->get()) : n->as_floating_point()->get();
    if (!(v >= 0 && v <= hi)) ctx.fail(n, std::string("quality.") + key, "must be between 0 and " + std::to_string(int(hi)));
    return v;
  };
  job.quality.min_effect_vs_clean = threshold("min_effect_vs_clean", job.quality.min_effect_vs_clean, 1e6);
  job.quality.min_effect_vs_spread = threshold("min_effect_vs_spread", job.quality.min_effect_vs_spread, 1e6);
  job.quality.min_accuracy = threshold("min_accuracy", job.quality.min_accuracy, 1);

  const toml::table& et = table("evaluate");
  ctx.only_keys(et, "evaluate", {"enabled", "circuits", "top_k", "prune"});
  Evaluate& ev = job.evaluate;
  ev.enabled = root.get("evaluate") != nullptr && ctx.get(et, "evaluate", "enabled", true);
  ev.prune = ctx.get(et, "evaluate", "prune", ev.prune);
  ev.circuits = ctx.list<std::string>(et, "evaluate", "circuits", ev.circuits);
  {
    const auto kinds = eap::known_circuit_kinds();
    std::string list;
    for (const auto& k : kinds) list += (list.empty() ? "" : ", ") + k;
    for (const auto& c : ev.circuits)
      if (std::find(kinds.begin(), kinds.end(), c) == kinds.end())
        ctx.fail(et.get("circuits"), "evaluate.circuits", "unknown circuit '" + c + "' (known: " + list + ")");
  }
  if (const toml::node* n = et.get("top_k")) {
    if (!n->is_array() || n->as_array()->empty())
      ctx.fail(n, "evaluate.top_k", "expected a list of edge counts (positive integers, or \"all\")");
    ev.top_k.clear();
    for (const auto& e : *n->as_array()) {
      if (e.is_string() && e.as_string()->get() == "all") {
        ev.top_k.push_back(eap::kAllEdges);
      } else if (e.is_integer() && e.as_integer()->get() >= 1) {
        ev.top_k.push_back(e.as_integer()->get());
      } else {
        std::ostringstream os;
        if (e.is_integer()) os << e.as_integer()->get();
        else if (e.is_string()) os << "'" << e.as_string()->get() << "'";
        else os << "a " << e.type();
        ctx.fail(&e, "evaluate.top_k", os.str() + " is not an edge count (a positive integer, or \"all\")");
      }
    }
  }

  const toml::table& grid = table("grid");
  ctx.only_keys(grid, "grid", {"models", "commandsets", "features", "use_novel_names", "use_synonyms_field", "use_synonyms_table"});
  const auto models = ctx.list<int>(grid, "grid", "models", {1});
  const auto commandsets = ctx.list<int>(grid, "grid", "commandsets", {1});
  const auto features = ctx.list<std::string>(grid, "grid", "features", {"EngTableName", "EngFieldName", "DefTableName", "DefFieldName"});
  const auto novel = ctx.list<bool>(grid, "grid", "use_novel_names", {false});
  const auto synf = ctx.list<bool>(grid, "grid", "use_synonyms_field", {false});
  const auto synt = ctx.list<bool>(grid, "grid", "use_synonyms_table", {false});
  // A value listed twice would run every one of its units twice.
  auto unique = [&](const auto& values, const char* key) {
    for (size_t i = 0; i < values.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (values[i] == values[j]) {
          std::ostringstream os;
          os << std::boolalpha << values[i];
          ctx.fail(grid.get(key), std::string("grid.") + key, os.str() + " is listed twice");
        }
  };
  unique(models, "models");
  unique(commandsets, "commandsets");
  unique(features, "features");
  unique(novel, "use_novel_names");
  unique(synf, "use_synonyms_field");
  unique(synt, "use_synonyms_table");
  for (int m : models)
    if (m < 1 || m > 3) ctx.fail(grid.get("models"), "grid.models", std::to_string(m) + " is not a model number (1, 2, 3)");
  for (int c : commandsets)
    if (c < 0 || c > 3) ctx.fail(grid.get("commandsets"), "grid.commandsets", std::to_string(c) + " is not a command set (0-3)");
  std::vector<tinysql::Feature> feats;
  for (const auto& f : features) {
    try {
      feats.push_back(tinysql::parse_feature(f));
    } catch (const InputError& e) {
      ctx.fail(grid.get("features"), "grid.features", e.what());
    }
  }

  // Exclusions: each [[exclude]] removes the cells matching all of its keys.
  struct Exclusion {
    std::map<std::string, std::string> keys;
  };
  std::vector<Exclusion> exclusions;
  if (const toml::node* ex = root.get("exclude")) {
    if (!ex->is_array_of_tables()) ctx.fail(ex, "exclude", "expected [[exclude]] tables");
    for (const auto& e : *ex->as_array()) {
      const toml::table& t = *e.as_table();
      ctx.only_keys(t, "exclude", {"model", "commandset", "feature", "use_novel_names", "use_synonyms_field", "use_synonyms_table"});
      Exclusion x;
      for (const auto& [k, v] : t) {
        std::ostringstream os;
        if (v.is_boolean()) os << (v.as_boolean()->get() ? 1 : 0);
        else if (v.is_integer()) os << v.as_integer()->get();
        else if (v.is_string()) os << v.as_string()->get();
        else ctx.fail(&v, "exclude." + std::string(k.str()), "expected a number, a string or true/false");
        x.keys[std::string(k.str())] = os.str();
      }
      if (x.keys.count("feature")) {
        try {
          tinysql::parse_feature(x.keys["feature"]);
        } catch (const InputError& err) {
          ctx.fail(t.get("feature"), "exclude.feature", err.what());
        }
      }
      exclusions.push_back(x);
    }
  }

  const toml::table& mt = table("models");
  ctx.only_keys(mt, "models", {"BM1", "BM2", "BM3"});
  for (int m : models) {
    const std::string bm = "BM" + std::to_string(m);
    const toml::node* n = mt.get(bm);
    if (n && !n->is_table()) ctx.fail(n, "models." + bm, "expected a table");
    const toml::table& t = n ? *n->as_table() : empty;
    ctx.only_keys(t, "models." + bm, {"cs0", "cs1", "cs2", "cs3", "cs1_synonym", "cs2_synonym", "cs3_synonym", "tokenizer", "trim_vocab"});
    const std::string tokenizer = resolve(dir, ctx.get<std::string>(t, "models." + bm, "tokenizer", default_repository(m, 0, false)));
    // Where a model name came from: its key, else the grid's model list (a default repository id).
    auto origin = [&](const std::string& k) {
      const toml::node* kn = t.get(k);
      return kn ? ctx.where(kn, "models." + bm + "." + k)
                : ctx.where(grid.get("models"), "models." + bm + "." + k + " (not set: default repository id)");
    };
    for (int c : commandsets)
      for (auto f : feats)
        for (bool nv : novel)
          for (bool sf : synf)
            for (bool stb : synt) {
              const std::map<std::string, std::string> keys = {
                  {"model", std::to_string(m)}, {"commandset", std::to_string(c)}, {"feature", tinysql::feature_name(f)},
                  {"use_novel_names", nv ? "1" : "0"}, {"use_synonyms_field", sf ? "1" : "0"}, {"use_synonyms_table", stb ? "1" : "0"}};
              const bool excluded = std::any_of(exclusions.begin(), exclusions.end(), [&](const Exclusion& x) {
                return std::all_of(x.keys.begin(), x.keys.end(), [&](const auto& kv) { return keys.at(kv.first) == kv.second; });
              });
              if (excluded) continue;
              Cell cell;
              cell.model = m;
              cell.commandset = c;
              cell.prompts = {f, nv, sf, stb, s.num_fields};
              const bool synonym = s.model_variant == "synonym" || (s.model_variant == "auto" && (sf || stb));
              const std::string key = "cs" + std::to_string(c) + (synonym && c > 0 ? "_synonym" : "");
              std::string weights = ctx.get<std::string>(t, "models." + bm, key.c_str(), "");
              std::string weights_key = key;
              if (weights.empty() && synonym && c > 0) {
                weights_key = "cs" + std::to_string(c);
                weights = ctx.get<std::string>(t, "models." + bm, weights_key.c_str(), "");
                if (weights.empty()) weights_key = key;
              }
              cell.weights = weights.empty() ? default_repository(m, c, synonym) : resolve(dir, weights);
              cell.weights_origin = origin(weights_key);
              cell.tokenizer = tokenizer;
              cell.tokenizer_origin = origin("tokenizer");
              // BM1 fine-tunes carry a pad row the base tokenizer lacks (models.md); trimming is a
              // no-op for a checkpoint whose vocabulary already matches.
              cell.trim_vocab = ctx.get<bool>(t, "models." + bm, "trim_vocab", m == 1 && c > 0);
              char idbuf[128];
              std::snprintf(idbuf, sizeof idbuf, "BM%d.CS%d.%s.novel%d.synfield%d.syntable%d", m, c, tinysql::feature_name(f),
                            nv, sf, stb);
              cell.id = idbuf;
              std::ostringstream os;
              os << "weights=" << cell.weights << ";tokenizer=" << cell.tokenizer << ";trim_vocab=" << cell.trim_vocab
                 << ";" << tinysql::cell_key_string(cell.prompts) << ";batch_size=" << s.batch_size << ";seed=" << s.seed
                 << ";dtype=" << s.dtype << ";downstream_heads=" << s.downstream_heads << ";metric_pairing=" << s.metric_pairing;
              // Notebook pairing scores every batch against the cell's last batch, so the batch
              // count changes every batch's scores (other modes keep their hashes as they were).
              if (s.metric_pairing == "notebook") os << ";batches=" << s.batches;
              // Settings added later join the string only when not at their default, so that
              // sweeps of earlier versions keep their hashes.
              if (s.method != "eap") os << ";method=" << s.method;
              if (s.method == "eap-ig-inputs") os << ";ig_steps=" << s.ig_steps;
              if (s.input_node) os << ";input_node=1";
              if (s.logits_node) os << ";logits_node=1";
              cell.settings = os.str();
              cell.evaluation = evaluation_string(job.evaluate, s.top_n);
              rehash(cell);
              job.cells.push_back(cell);
            }
  }
  if (job.cells.empty()) ctx.fail(root.get("grid"), "grid", "every cell is excluded: the grid is empty");
  if (int64_t(job.cells.size()) * s.batches > kMaxUnits)
    ctx.fail(st.get("batches"), "settings.batches",
             std::to_string(job.cells.size()) + " cells x " + std::to_string(s.batches) + " batches is more than " +
                 std::to_string(kMaxUnits) + " work units: split the grid into several jobs");
  return job;
}

}  // namespace teap::job
