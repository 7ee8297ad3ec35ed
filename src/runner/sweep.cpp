#include "runner/sweep.hpp"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "dist/dist.hpp"
#include "eap/score.hpp"
#include "io/unit_file.hpp"
#include "model/hf_cache.hpp"
#include "model/model.hpp"
#include "runner/unit.hpp"
#include "tokenizer/tokenizer.hpp"
#include "util/error.hpp"
#include "util/files.hpp"
#include "version.hpp"

namespace teap::runner {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

json manifest_of(const job::Job& job) {
  json cells = json::array();
  for (const auto& c : job.cells) {
    const auto& s = job.settings;
    cells.push_back({{"id", c.id}, {"model", c.model}, {"commandset", c.commandset}, {"hf_model", c.weights},
                     {"tokenizer", c.tokenizer}, {"trim_vocab", c.trim_vocab},
                     {"feature", tinysql::feature_name(c.prompts.feature)}, {"use_novel_names", c.prompts.use_novel_names},
                     {"use_synonyms_field", c.prompts.use_synonyms_field},
                     {"use_synonyms_table", c.prompts.use_synonyms_table}, {"num_fields", s.num_fields},
                     {"batch_size", s.batch_size}, {"n_batches", s.batches}, {"seed", s.seed}, {"dtype", s.dtype},
                     {"device", s.device}, {"downstream_heads", s.downstream_heads}, {"metric_pairing", s.metric_pairing},
                     {"top_n", s.top_n}, {"settings", c.settings}, {"settings_hash", c.hash}});
  }
  return {{"version", TEAP_VERSION}, {"job", job.path}, {"cells", cells}};
}

// "a=1;b=2" -> {a:1, b:2}
std::map<std::string, std::string> split_settings(const std::string& s) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(';', pos);
    if (end == std::string::npos) end = s.size();
    const std::string kv = s.substr(pos, end - pos);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = kv.substr(eq + 1);
    pos = end + 1;
  }
  return out;
}

// The manifest to write: the existing sweep's cells plus this job's; a cell present in both with
// other result-changing settings is refused, naming what differs.
json merge_manifest(const std::string& path, const json& fresh) {
  if (!fs::exists(path)) return fresh;
  json old;
  try {
    old = json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail_input(path, std::string("not a sweep manifest: ") + e.what());
  }
  std::map<std::string, json> by_id;
  for (const auto& c : old.value("cells", json::array())) by_id[c.value("id", "")] = c;
  for (const auto& c : fresh["cells"]) {
    auto it = by_id.find(c["id"]);
    if (it == by_id.end()) continue;
    if (it->second.value("settings_hash", "") == c["settings_hash"]) continue;
    const auto a = split_settings(it->second.value("settings", "")), b = split_settings(c["settings"]);
    std::string diff;
    for (const auto& [k, v] : b)
      if (!a.count(k) || a.at(k) != v) diff += (diff.empty() ? "" : ", ") + k + " '" + (a.count(k) ? a.at(k) : "") + "' -> '" + v + "'";
    for (const auto& [k, v] : a)
      if (!b.count(k)) diff += (diff.empty() ? "" : ", ") + k + " '" + v + "' -> ''";
    if (diff.empty())  // same settings, another hash: written by another version of this program
      diff = "settings_hash '" + it->second.value("settings_hash", "") + "' -> '" + c["settings_hash"].get<std::string>() +
             "', written by another version of tinysql-eap";
    fail_input(path, "this folder holds results of other settings for cell " + c["id"].get<std::string>() + " (" +
                         diff + "); use another output folder");
  }
  json merged = old;
  for (const auto& c : fresh["cells"]) by_id[c["id"]] = c;
  merged["cells"] = json::array();
  for (const auto& c : fresh["cells"]) merged["cells"].push_back(c);  // this job's order first
  std::set<std::string> seen;
  for (const auto& c : fresh["cells"]) seen.insert(c["id"]);
  for (const auto& c : old.value("cells", json::array()))
    if (!seen.count(c.value("id", ""))) merged["cells"].push_back(c);
  merged["version"] = TEAP_VERSION;
  merged["job"] = fresh["job"];
  return merged;
}

struct Unit {
  int cell = 0;
  int batch = 0;
};

// Loaded models and tokenizers, kept while consecutive units use them.
struct ModelCache {
  std::string key;
  std::optional<model::Model> model;
  std::optional<tokenizer::Tokenizer> tok;

  void get(const job::Cell& c, const job::Settings& s) {
    const std::string k = c.weights + "|" + c.tokenizer + "|" + std::to_string(c.trim_vocab) + "|" + s.dtype + "|" + s.device;
    if (k == key) return;
    model.reset();
    tok.reset();
    key.clear();
    tok.emplace(tokenizer::Tokenizer::load(model::resolve_model_path(c.tokenizer)));
    model::LoadOptions lo;
    lo.dtype = s.dtype;
    lo.device = s.device;
    if (c.trim_vocab) lo.trim_vocab_to = tok->vocab_size();
    const auto t0 = std::chrono::steady_clock::now();
    model.emplace(model::load_model(c.weights, lo));
    spdlog::info("loaded {} ({} layers x {} heads) in {:.2f} s", c.weights, model->config.n_layers, model->config.n_heads,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    key = k;
  }
};

// `in` is the batch's model input (batch_input of `b`): its ids and tokens are stored as they were scored.
io::UnitRecord unit_record(const job::Job& job, const job::Cell& cell, int batch, const tinysql::Batch& b,
                           const eap::BatchInput& in, const eap::Graph& g, const eap::BatchScores& r, const model::Model& m, double seconds,
                           int rank, int threads) {
  io::UnitRecord u;
  const auto& s = job.settings;
  u.text_attrs = {{"cell_id", cell.id}, {"hf_model", cell.weights}, {"tokenizer", cell.tokenizer},
                  {"feature", tinysql::feature_name(cell.prompts.feature)}, {"dtype", s.dtype}, {"device", s.device},
                  {"downstream_heads", s.downstream_heads}, {"metric_pairing", s.metric_pairing},
                  {"settings", cell.settings}, {"settings_hash", cell.hash}, {"program_version", TEAP_VERSION},
                  {"seed", std::to_string(s.seed)}};
  u.int_attrs = {{"model", cell.model}, {"commandset", cell.commandset}, {"batch_index", batch},
                 {"use_novel_names", cell.prompts.use_novel_names}, {"use_synonyms_field", cell.prompts.use_synonyms_field},
                 {"use_synonyms_table", cell.prompts.use_synonyms_table}, {"num_fields", s.num_fields},
                 {"batch_size", s.batch_size}, {"n_batches", s.batches}, {"n_layers", m.config.n_layers},
                 {"n_heads", m.config.n_heads}, {"rank", rank}, {"threads", threads}, {"group_size", s.group_size}};
  u.real_attrs = {{"seconds", seconds}};
  u.n_upstream = r.n_upstream;
  u.n_downstream = r.n_downstream;
  u.n_prompts = r.n_prompts;
  u.n_positions = r.n_positions;
  u.scores = r.scores;
  u.valid = g.valid;
  u.upstream = g.upstream;
  u.downstream = g.downstream;
  u.clean_ld = r.clean_ld;
  u.corrupt_ld = r.corrupt_ld;
  u.clean_correct = r.clean_correct;
  u.clean_ids = in.clean_ids;
  u.corrupt_ids = in.corrupt_ids;
  u.clean_token = in.clean_answer;
  u.corrupt_token = in.corrupt_answer;
  u.answer_token = in.expected;
  for (const auto& e : b.examples) {
    u.clean_word.push_back(e.clean_word);
    u.corrupt_word.push_back(e.corrupt_word);
  }
  return u;
}

std::string format_duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

}  // namespace

std::string unit_path(const std::string& out, const std::string& cell_id, int batch) {
  char name[32];
  std::snprintf(name, sizeof name, "b%05d.h5", batch);
  return out + "/units/" + cell_id + "/" + name;
}

std::string failure_path(const std::string& out, const std::string& cell_id, int batch) {
  char name[32];
  std::snprintf(name, sizeof name, ".b%05d.txt", batch);
  return out + "/failed/" + cell_id + name;
}

int threads_per_rank(int job_threads, int ranks_on_node) {
  if (job_threads > 0) return job_threads;
  if (const char* s = std::getenv("SLURM_CPUS_PER_TASK")) {
    const int n = std::atoi(s);
    if (n > 0) return n;
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, ranks_on_node));
}

RunSummary run_sweep(const job::Job& job, const dist::Runtime& rt, const RunOptions& options) {
  const std::string out = job.output;
  const auto& s = job.settings;
  RunSummary summary;

  // Rank 0 checks everything and prepares the folder; the others learn the outcome and the
  // pending units from it, so that every rank fails alike or works alike.
  std::string setup_error, pending_text;
  if (options.shard_count < 1 || options.shard_index < 0 || options.shard_index >= options.shard_count)
    throw InputError("--shard " + std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count) +
                     ": expected K/N with 0 <= K < N");
  const auto in_shard = [&](size_t cell, int batch) {
    return (static_cast<int64_t>(cell) * s.batches + batch) % options.shard_count == options.shard_index;
  };
  int64_t shard_total = 0;  // units of this shard (all units without sharding)
  if (rt.rank() == 0) {
    try {
      if (rt.size() % s.group_size != 0)
        throw InputError(job.path + ": settings.group_size " + std::to_string(s.group_size) + " does not divide the " +
                         std::to_string(rt.size()) + " ranks");
      std::set<std::string> checked;
      for (const auto& c : job.cells)
        for (const auto& [name, origin] : {std::pair{c.weights, c.weights_origin}, std::pair{c.tokenizer, c.tokenizer_origin}})
          if (checked.insert(name).second) {
            try {
              model::resolve_model_path(name);
            } catch (const InputError& e) {
              if (!options.dry_run) throw InputError(origin + ": " + e.what());
              std::printf("missing model: %s\n", e.what());
            }
          }
      const json manifest = merge_manifest(out + "/sweep.json", manifest_of(job));
      if (!options.dry_run) {
        std::error_code ec;
        for (const char* sub : {"units", "failed", "logs", "cells"})
          if (fs::create_directories(fs::path(out) / sub, ec), ec) break;
        if (ec || access(out.c_str(), W_OK) != 0)
          throw InputError(job.output_origin + ": " + out + ": the output folder cannot be created or written (" +
                           (ec ? ec.message() : std::string("not writable")) + ")");
        write_file_atomic(out + "/sweep.json", manifest.dump(2) + "\n");
        write_file_atomic(out + "/job.toml", job.text);
        // Half-written files of a killed run never carry a final name; remove them (this shard's
        // only: another shard may be writing its own right now).
        std::map<std::string, size_t> cell_index;
        for (size_t ci = 0; ci < job.cells.size(); ++ci) cell_index[job.cells[ci].id] = ci;
        for (const auto& e : fs::recursive_directory_iterator(out + "/units")) {
          const std::string name = e.path().filename().string();
          if (!e.is_regular_file() || name.find(".tmp.") == std::string::npos) continue;
          if (options.shard_count > 1) {
            const auto it = cell_index.find(e.path().parent_path().filename().string());
            int b = -1;
            if (it == cell_index.end() || std::sscanf(name.c_str(), "b%d.h5", &b) != 1 || !in_shard(it->second, b)) continue;
          }
          fs::remove(e.path());
        }
      }
      for (size_t ci = 0; ci < job.cells.size(); ++ci) {
        int done = 0;
        for (int b = 0; b < s.batches; ++b) {
          const bool exists = fs::exists(unit_path(out, job.cells[ci].id, b));
          done += exists;
          if (!in_shard(ci, b)) continue;
          ++shard_total;
          if (exists) continue;
          pending_text += std::to_string(ci) + " " + std::to_string(b) + "\n";
          if (!options.dry_run) fs::remove(failure_path(out, job.cells[ci].id, b));
        }
        if (options.dry_run)
          std::printf("%-48s %d/%d batches done\n", job.cells[ci].id.c_str(), done, s.batches);
      }
    } catch (const InputError& e) {
      setup_error = std::string("E") + e.what();
    } catch (const std::exception& e) {
      setup_error = std::string("F") + e.what();
    }
  }
  rt.broadcast(setup_error);
  if (!setup_error.empty()) {
    if (setup_error[0] == 'E') throw InputError(setup_error.substr(1));
    throw std::runtime_error(setup_error.substr(1));
  }
  rt.broadcast(pending_text);
  std::string total_text = std::to_string(shard_total);
  rt.broadcast(total_text);
  shard_total = std::stoll(total_text);
  std::vector<Unit> pending;
  {
    std::istringstream in(pending_text);
    Unit u;
    while (in >> u.cell >> u.batch) pending.push_back(u);
  }
  summary.units_total = shard_total;
  summary.units_done_before = summary.units_total - static_cast<int64_t>(pending.size());
  if (options.dry_run) {
    if (rt.rank() == 0)
      std::printf("%zu cells, %lld of %lld units done, %zu to do\n", job.cells.size(),
                  static_cast<long long>(summary.units_done_before), static_cast<long long>(summary.units_total),
                  pending.size());
    return summary;
  }

  // Per-rank log file, every line carrying the rank.
  auto file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(
      out + "/logs/rank-" + std::to_string(rt.rank()) +
          (options.shard_count > 1 ? ".shard-" + std::to_string(options.shard_index) : std::string()) + ".log",
      false);
  file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [rank " + std::to_string(rt.rank()) + "] [%l] %v");
  auto logger = std::make_shared<spdlog::logger>("teap-rank", file_sink);
  logger->set_level(spdlog::get_level());
  logger->flush_on(spdlog::level::info);
  auto console = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  struct Restore {
    std::shared_ptr<spdlog::logger> l;
    ~Restore() { spdlog::set_default_logger(l); }
  } restore{console};

  const int threads = threads_per_rank(s.threads, rt.local_size());
  at::set_num_threads(threads);
  spdlog::info("tinysql-eap {}: rank {} of {}, {} intra-op threads, group size {}, {} units pending of {}{}", TEAP_VERSION,
               rt.rank(), rt.size(), threads, s.group_size, pending.size(), summary.units_total,
               options.shard_count > 1
                   ? " (shard " + std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count) + ")"
                   : std::string());
  if (rt.rank() == 0)
    console->info("{} cells, {} units to do ({} done before), {} ranks x {} threads, log files in {}/logs",
                  job.cells.size(), pending.size(), summary.units_done_before, rt.size(), threads, out);

  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);

  dist::Group group(rt, s.group_size);
  dist::Counter next_unit(rt), finished(rt);
  ModelCache cache;
  const bool tty = isatty(fileno(stderr));
  const auto t_start = std::chrono::steady_clock::now();
  auto last_report = t_start;
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count(); };

  auto report = [&](bool final_line) {
    if (rt.rank() != 0) return;
    const int64_t done = finished.peek();
    const double secs = elapsed();
    const double rate = secs > 0 ? done / secs * 60.0 : 0;
    const int64_t left = static_cast<int64_t>(pending.size()) - done;
    const std::string eta = rate > 0 ? format_duration(left / rate * 60.0) : "?";
    char line[256];
    std::snprintf(line, sizeof line, "units %lld/%zu (%lld done before), %.1f units/min, elapsed %s, ETA %s",
                  static_cast<long long>(done), pending.size(), static_cast<long long>(summary.units_done_before), rate,
                  format_duration(secs).c_str(), eta.c_str());
    if (tty) {
      std::fprintf(stderr, "\r%s\033[K%s", line, final_line ? "\n" : "");
    } else if (final_line || std::chrono::duration<double>(std::chrono::steady_clock::now() - last_report).count() >= 30) {
      std::fprintf(stderr, "[progress] %s\n", line);
      last_report = std::chrono::steady_clock::now();
    }
    std::fflush(stderr);
  };

  int64_t my_done = 0, my_failed = 0;
  while (true) {
    int64_t idx = -1;
    // A stop signal ends the loop between units: the unit in flight was finished.
    int64_t stop = g_stop_signal.load() ? 1 : 0;
    group.sum(&stop, 1);
    if (stop) {
      summary.interrupted = true;
      break;
    }
    if (group.leader()) idx = next_unit.next();
    group.broadcast(idx);
    if (idx < 0 || idx >= static_cast<int64_t>(pending.size())) break;
    const Unit unit = pending[idx];
    const job::Cell& cell = job.cells[unit.cell];
    const auto t0 = std::chrono::steady_clock::now();
    std::string error;
    bool error_is_input = false;
    // Group members match their collectives even when one fails: `phase` counts the agreement
    // sums done (1: at the scores' sum, 2: after scoring); a failing member joins the next one
    // with a 1 unless a sum already told everyone the unit failed.
    int phase = 0;
    bool known_failed = false;
    try {
      cache.get(cell, s);
      const model::Model& m = *cache.model;
      const tinysql::Batch batch = tinysql::make_batch(*cache.tok, cell.prompts, s.seed, unit.batch, s.batch_size);
      eap::BatchInput full = batch_input(batch);
      // This member's share of the prompts: [lo, hi).
      const int B = full.n_prompts, P = full.n_positions;
      const int lo = static_cast<int>(int64_t(B) * group.rank() / group.size());
      const int hi = static_cast<int>(int64_t(B) * (group.rank() + 1) / group.size());
      eap::BatchInput part;
      part.n_prompts = hi - lo;
      part.n_positions = P;
      part.clean_ids.assign(full.clean_ids.begin() + int64_t(lo) * P, full.clean_ids.begin() + int64_t(hi) * P);
      part.corrupt_ids.assign(full.corrupt_ids.begin() + int64_t(lo) * P, full.corrupt_ids.begin() + int64_t(hi) * P);
      part.clean_answer.assign(full.clean_answer.begin() + lo, full.clean_answer.begin() + hi);
      part.corrupt_answer.assign(full.corrupt_answer.begin() + lo, full.corrupt_answer.begin() + hi);
      part.expected.assign(full.expected.begin() + lo, full.expected.begin() + hi);
      eap::GraphOptions go;
      go.downstream_heads = eap::parse_downstream_heads(s.downstream_heads, job.path);
      const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
      eap::ScoreOptions so;
      so.pairing = eap::parse_metric_pairing(s.metric_pairing, job.path);
      if (group.size() > 1) {
        so.weight = double(part.n_prompts) / B;
        so.sum_scores = [&](void* data, size_t n, bool is_double, bool on_cuda) {
          int64_t failed_members = 0;  // members that failed before this point say so here
          group.sum(&failed_members, 1);
          phase = 1;
          known_failed = failed_members > 0;
          if (known_failed) throw std::runtime_error("another rank of the group failed on this unit");
          if (is_double) group.sum(static_cast<double*>(data), n, on_cuda);
          else group.sum(static_cast<float*>(data), n, on_cuda);
        };
      }
      if (part.n_prompts == 0) throw InputError("group of " + std::to_string(group.size()) + " ranks is larger than the batch");
      eap::BatchScores r = eap::score_batch(m, g, part, so);
      if (group.size() > 1) {
        int64_t post_failed = 0;
        group.sum(&post_failed, 1);
        phase = 2;
        known_failed = post_failed > 0;
        if (known_failed) throw std::runtime_error("another rank of the group failed on this unit");
      }
      r.clean_ld = group.gather(r.clean_ld);
      r.corrupt_ld = group.gather(r.corrupt_ld);
      int64_t correct = r.clean_correct;
      group.sum(&correct, 1);
      r.clean_correct = static_cast<int>(correct);
      r.n_prompts = B;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (group.leader()) {
        const auto t_write = std::chrono::steady_clock::now();
        fs::create_directories(fs::path(unit_path(out, cell.id, unit.batch)).parent_path());
        io::write_unit(unit_path(out, cell.id, unit.batch),
                       unit_record(job, cell, unit.batch, batch, full, g, r, m, secs, rt.rank(), threads));
        spdlog::info("unit {} batch {} done in {:.2f} s (write {:.3f} s), clean accuracy {:.3f}", cell.id, unit.batch, secs,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t_write).count(), r.clean_accuracy());
      }
      ++my_done;
    } catch (const InputError& e) {
      error = e.what();
      error_is_input = true;
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) {
      if (group.size() > 1 && !known_failed && phase < 2) {
        int64_t one = 1;
        group.sum(&one, 1);
      }
      ++my_failed;
      spdlog::error("unit {} batch {} failed: {}", cell.id, unit.batch, error);
      if (group.leader()) {
        std::error_code ec;
        fs::create_directories(out + "/failed", ec);
        write_file_atomic(failure_path(out, cell.id, unit.batch),
                          std::string(error_is_input ? "input: " : "failure: ") + error + "\n");
      }
    }
    if (group.leader()) finished.next();
    report(false);
  }
  summary.units_done_now = rt.sum(group.leader() ? my_done : 0);
  summary.units_failed = rt.sum(group.leader() ? my_failed : 0);
  // A signal that came after the last unit was taken stopped nothing.
  summary.interrupted = rt.any(summary.interrupted) &&
                        summary.units_done_now + summary.units_failed < static_cast<int64_t>(pending.size());
  report(true);  // every rank has finished: the count is final
  spdlog::info("rank {} finished: {} units done, {} failed{}", rt.rank(), my_done, my_failed,
               summary.interrupted ? " (stopped by a signal)" : "");
  return summary;
}

}  // namespace teap::runner
