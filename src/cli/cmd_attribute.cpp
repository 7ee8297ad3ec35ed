// `tinysql-eap attribute`: the notebook's whole computation for one cell on one process: prompt
// batches, EAP per batch, baselines, metrics, accuracy and the consistent edges.
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/cell_options.hpp"
#include "cli/cell_result.hpp"
#include "cli/commands.hpp"
#include "eap/circuit.hpp"
#include "eap/evaluate.hpp"
#include "eap/faithfulness.hpp"
#include "eap/score.hpp"
#include "model/hf_cache.hpp"
#include "model/model.hpp"
#include "report/faithfulness_json.hpp"
#include "report/notebook_json.hpp"
#include "runner/unit.hpp"
#include "tokenizer/tokenizer.hpp"
#include "util/error.hpp"
#include "util/files.hpp"
#include "version.hpp"

namespace teap::cli {
namespace {

// "5", "all" -> 5, kAllEdges; anything else is an InputError naming --top-k.
std::vector<int64_t> parse_top_k(const std::vector<std::string>& items) {
  std::vector<int64_t> out;
  for (const auto& s : items) {
    if (s == "all") {
      out.push_back(eap::kAllEdges);
      continue;
    }
    char* end = nullptr;
    const long long k = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end || k < 1) fail_input("--top-k", "'" + s + "' is not an edge count (a positive integer, or all)");
    out.push_back(k);
  }
  return out;
}

// Runs the cell's circuits on every batch (as a sweep's evaluation units do) and gathers F.
eap::CellFaithfulness evaluate_cell(const model::Model& m, const eap::Graph& g, const tokenizer::Tokenizer& tok,
                                    const tinysql::CellSettings& cell, uint64_t seed, const CellArgs& args,
                                    const std::vector<eap::BatchScores>& results, const runner::CellResult& cr,
                                    const eap::EvaluateSpec& spec, const eap::ScoreOptions& so) {
  std::vector<const float*> scores;
  for (const auto& r : results) scores.push_back(r.scores.data());
  const std::vector<eap::Circuit> circuits = eap::cell_circuits(spec, g, cr.edges, scores, 1.0 / cr.baselines.denominator());
  std::vector<const eap::Circuit*> ptrs;
  for (const auto& c : circuits) ptrs.push_back(&c);
  eap::EvaluateOptions eo;
  eo.pairing = so.pairing;
  eo.broadcast = so.broadcast;
  std::vector<eap::BatchFaithfulness> batches;
  for (int b = 0; b < args.batches; ++b) {
    const auto t0 = std::chrono::steady_clock::now();
    const tinysql::Batch batch = tinysql::make_batch(tok, cell, seed, b, args.batch_size);
    const eap::BatchEvaluation ev = eap::evaluate_batch(m, runner::batch_input(batch), ptrs, eo);
    eap::BatchFaithfulness bf;
    for (size_t i = 0; i < circuits.size(); ++i) {
      bf.circuit.push_back(circuits[i].name);
      bf.k.push_back(circuits[i].k);
      bf.edges.push_back(circuits[i].n_edges());
      bf.f.push_back(eap::normalised_metric(ev.circuit_ld[i], cr.baselines));
    }
    batches.push_back(std::move(bf));
    std::printf("evaluated batch %d: %zu circuits (%.2f s)\n", b, circuits.size(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return eap::cell_faithfulness(batches, "", "attribute");
}

void print_faithfulness(const eap::CellFaithfulness& f) {
  std::printf("faithfulness F = mean_i (LD_i(circuit) - LD_corr) / (LD_clean - LD_corr), over %d batches:\n", f.n_batches);
  for (const auto& c : f.circuits)
    std::printf("  %-12s %6lld edges  F %8.4f  (spread %.4f)\n", c.name.c_str(), static_cast<long long>(c.edges), c.f,
                c.spread);
  if (!f.curve_k.empty()) std::printf("  area under F(k) over log k: %.4f\n", f.auc);
}

}  // namespace

Run add_attribute_command(CLI::App& app) {
  struct Args {
    CellArgs cell;
    std::string model, tokenizer, revision, device = "cpu", dtype = "float32", scores_out;
    std::string downstream_heads = "qkv", pairing = "own", json;
    int top_n = 10, threads = 0, model_number = 0, commandset = 0;
    bool trim = false, signed_rank = false, input_node = false, logits_node = false;
    std::string method = "eap";
    int ig_steps = eap::kDefaultIgSteps;
    bool evaluate = false, prune = false;
    std::vector<std::string> circuits = eap::EvaluateSpec().circuits, top_k;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("attribute", "Run EAP on one cell and print its consistent edges");
  sub->add_option("--model", a->model, "model folder or repository id in the Hugging Face cache")->required();
  add_cell_options(sub, a->cell, 5);
  sub->add_option("--top-n", a->top_n, "edges kept per batch")->capture_default_str()->check(CLI::Range(1, 1 << 24));
  sub->add_flag("--signed", a->signed_rank, "rank by signed score instead of |score|");
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer: a folder, a file or a repository id in the Hugging Face cache (default: the model's own files)");
  sub->add_option("--revision", a->revision, "revision in the Hugging Face cache");
  sub->add_option("--device", a->device, "cpu, cuda, cuda:N")->capture_default_str();
  sub->add_option("--dtype", a->dtype, "float32 or bfloat16")->capture_default_str();
  sub->add_option("--threads", a->threads, "intra-op threads (default: LibTorch's)")->check(CLI::Range(0, 1024));
  sub->add_flag("--trim-vocab", a->trim, "drop checkpoint rows beyond the tokenizer's vocabulary (BM1 fine-tunes)");
  sub->add_option("--downstream-heads", a->downstream_heads, "qkv: head inputs are destinations; none: MLPs only (the notebook)")
      ->check(CLI::IsMember({"qkv", "none"}))->capture_default_str();
  sub->add_option("--metric-pairing", a->pairing,
                  "own; batch_broadcast (the notebook's indexing broadcast within a batch); notebook (what the notebook "
                  "computed: every batch against the last batch's pairs, its JSON's values of the last batch)")
      ->check(CLI::IsMember({"own", "batch_broadcast", "notebook"}))->capture_default_str();
  sub->add_option("--json", a->json, "also write the cell's result JSON (the notebook's schema) to this file");
  sub->add_option("--model-number", a->model_number, "BM number written into the JSON's metadata (0: not given)")
      ->capture_default_str()->check(CLI::Range(0, 3));
  sub->add_option("--commandset", a->commandset, "command set written into the JSON's metadata")
      ->capture_default_str()->check(CLI::Range(0, 3));
  sub->add_flag("--input-node", a->input_node, "add the embedding as an upstream node");
  sub->add_flag("--logits-node", a->logits_node, "add the final residual stream as a downstream node");
  sub->add_option("--method", a->method,
                  "scoring method: eap (gradient at the clean run), eap-ig-inputs (integrated gradients over "
                  "embeddings interpolated from corrupt to clean), clean-corrupted (mean of the gradients at both "
                  "runs), exact (one patched run per edge: slow, for validation)")
      ->check(CLI::IsMember(eap::method_names()))->capture_default_str();
  sub->add_option("--ig-steps", a->ig_steps, "eap-ig-inputs: interpolation steps")
      ->check(CLI::Range(1, eap::kMaxIgSteps))->capture_default_str();
  sub->add_flag("--evaluate", a->evaluate,
                "run the cell's circuits (consistent, top-k, empty, full) with everything else ablated and print "
                "their faithfulness F (docs/faithfulness.md)");
  sub->add_option("--circuits", a->circuits, "with --evaluate: which circuits (consistent, top-k, empty, full)")
      ->check(CLI::IsMember(eap::known_circuit_kinds()))->delimiter(',');
  sub->add_option("--top-k", a->top_k, "with --evaluate: the top-k circuits' k, positive or 'all' (default 1,2,5,...,500,all)")
      ->delimiter(',');
  sub->add_flag("--prune", a->prune, "with --evaluate: prune edges cut off from input or logits");
  sub->add_option("--scores-out", a->scores_out,
                  "also write every batch's raw scores, LDs and the consistent edges, unrounded, as JSON "
                  "(scripts/gpu/compare_scores.py compares two such files)");
  return [a] {
    const tinysql::CellSettings cell = cell_settings(a->cell);
    eap::EvaluateSpec spec;
    spec.circuits = a->circuits;
    spec.prune = a->prune;
    if (!a->top_k.empty()) spec.top_k = parse_top_k(a->top_k);
    const uint64_t seed = parse_seed(a->cell.seed);
    if (a->threads > 0) at::set_num_threads(a->threads);
    const std::string path = model::resolve_model_path(a->model, a->revision);
    const auto tok = tokenizer::Tokenizer::load(a->tokenizer.empty() ? path : model::resolve_tokenizer_path(a->tokenizer));
    model::LoadOptions lo;
    lo.device = a->device;
    lo.dtype = a->dtype;
    if (a->trim) lo.trim_vocab_to = tok.vocab_size();
    const model::Model m = model::load_model(path, lo);
    eap::GraphOptions go;
    go.downstream_heads = eap::parse_downstream_heads(a->downstream_heads, "--downstream-heads");
    go.input_node = a->input_node;
    go.logits_node = a->logits_node;
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
    eap::ScoreOptions so;
    so.method = eap::parse_method(a->method, "--method");
    so.ig_steps = a->ig_steps;
    so.pairing = eap::parse_metric_pairing(a->pairing, "--metric-pairing");
    if (so.pairing == eap::MetricPairing::Notebook)
      so.broadcast = runner::notebook_metric_pairs(tok, cell, seed, a->cell.batches, a->cell.batch_size);
    std::printf("model %s (%s, %d layers x %d heads), %d threads; graph: %d upstream, %d downstream, %d edges\n",
                path.c_str(), m.config.model_type.c_str(), m.config.n_layers, m.config.n_heads, at::get_num_threads(),
                g.n_upstream(), g.n_downstream(), g.n_edges());
    std::printf("cell %s, %d batches of %d, seed %llu\n", tinysql::cell_key_string(cell).c_str(), a->cell.batches,
                a->cell.batch_size, static_cast<unsigned long long>(seed));

    std::vector<eap::BatchScores> results;
    for (int b = 0; b < a->cell.batches; ++b) {
      const auto t0 = std::chrono::steady_clock::now();
      const tinysql::Batch batch = tinysql::make_batch(tok, cell, seed, b, a->cell.batch_size);
      results.push_back(eap::score_batch(m, g, runner::batch_input(batch), so));
      const auto& r = results.back();
      double c = 0, k = 0;
      for (double x : r.clean_ld) c += x / r.n_prompts;
      for (double x : r.corrupt_ld) k += x / r.n_prompts;
      std::printf("batch %d: %d prompts x %d tokens, LD clean %.4f, corrupt %.4f, clean accuracy %.3f (%.2f s)\n", b,
                  r.n_prompts, r.n_positions, c, k, r.clean_accuracy(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::vector<const eap::BatchScores*> ptrs;
    for (const auto& r : results) ptrs.push_back(&r);
    const runner::CellResult cr = runner::reduce_cell(g, ptrs, a->top_n, a->signed_rank, so.pairing);
    std::printf("clean logit diff %.6f, corrupt logit diff %.6f\n", cr.baselines.clean_ld, cr.baselines.corrupt_ld);
    std::printf("clean metric %.6f, corrupt metric %.6f, clean accuracy %.3f\n", cr.clean_metric, cr.corrupt_metric,
                cr.clean_accuracy);
    if (so.pairing == eap::MetricPairing::Notebook)
      std::printf("last batch (the notebook's JSON): clean logit diff %.6f, corrupt logit diff %.6f, clean metric %.6f, "
                  "corrupt metric %.6f\n",
                  cr.last_batch.clean_ld, cr.last_batch.corrupt_ld, cr.last_batch.clean_metric, cr.last_batch.corrupt_metric);
    std::printf("%zu edges in the top %d of all %d batches:\n", cr.edges.size(), a->top_n, a->cell.batches);
    for (const auto& e : cr.edges)
      std::printf("%s -> [%.3f] -> %s\n", g.upstream[e.up].c_str(), e.score, g.downstream[e.down].c_str());
    nlohmann::ordered_json faithfulness;
    if (a->evaluate) {
      const eap::CellFaithfulness f = evaluate_cell(m, g, tok, cell, seed, a->cell, results, cr, spec, so);
      print_faithfulness(f);
      report::FaithfulnessContext fc;
      fc.input_node = a->input_node;
      fc.logits_node = a->logits_node;
      fc.head_destinations = g.heads_down();
      fc.pruned = a->prune;
      fc.top_n = a->top_n;
      fc.batches_evaluated = fc.n_batches = a->cell.batches;
      faithfulness = report::faithfulness_json(f, fc);
    }
    if (!a->json.empty()) {
      report::Result res;
      res.metadata.model = a->model_number;
      res.metadata.commandset = a->commandset;
      res.metadata.hf_model = a->model;
      res.metadata.feature_name = tinysql::feature_name(cell.feature);
      res.metadata.use_novel_names = cell.use_novel_names;
      res.metadata.use_synonyms_field = cell.use_synonyms_field;
      res.metadata.use_synonyms_table = cell.use_synonyms_table;
      res.metadata.num_sql_fields = cell.num_fields;
      res.metadata.batch_size = a->cell.batch_size;
      res.metadata.n_batches = a->cell.batches;
      res.metadata.n_positions = cr.n_positions;
      res.metadata.n_layers = g.n_layers;
      res.metadata.n_heads = g.n_heads;
      for (const auto& e : cr.edges)
        res.edges.push_back({eap::display_name(g.upstream[e.up]), eap::display_name(g.downstream[e.down]), e.score});
      set_result_parameters(res.parameters, cr, so.pairing, a->top_n);
      auto& x = res.parameters.extra;
      x["clean_accuracy"] = cr.clean_accuracy;
      x["n_prompts"] = cr.baselines.n_prompts;
      x["downstream_heads"] = a->downstream_heads;
      x["metric_pairing"] = a->pairing;
      x["signed_rank"] = a->signed_rank;
      x["seed"] = seed;
      x["dtype"] = a->dtype;
      x["device"] = a->device;
      x["program_version"] = TEAP_VERSION;
      x["method"] = a->method;
      if (so.method == eap::Method::EapIgInputs) x["ig_steps"] = a->ig_steps;
      x["input_node"] = a->input_node;
      x["logits_node"] = a->logits_node;
      res.faithfulness = faithfulness;
      write_file_atomic(a->json, report::dump_python_json(report::to_json(res)));
      std::printf("%s\n", a->json.c_str());
    }
    if (!a->scores_out.empty()) {
      nlohmann::ordered_json j;
      j["model"] = path;
      j["model_type"] = m.config.model_type;
      j["device"] = a->device;
      j["dtype"] = a->dtype;
      j["cell"] = tinysql::cell_key_string(cell);
      j["seed"] = seed;
      j["top_n"] = a->top_n;
      j["method"] = a->method;
      j["upstream"] = g.upstream;
      j["downstream"] = g.downstream;
      j["valid"] = g.valid;
      nlohmann::ordered_json batches = nlohmann::ordered_json::array();
      for (const auto& r : results) {
        nlohmann::ordered_json b;
        b["n_prompts"] = r.n_prompts;
        b["n_positions"] = r.n_positions;
        b["clean_correct"] = r.clean_correct;
        b["clean_ld"] = r.clean_ld;
        b["corrupt_ld"] = r.corrupt_ld;
        b["scores"] = r.scores;  // [n_upstream * n_downstream] row-major, raw (unnormalised)
        batches.push_back(std::move(b));
      }
      j["batches"] = std::move(batches);
      j["baselines"] = {{"clean_ld", cr.baselines.clean_ld}, {"corrupt_ld", cr.baselines.corrupt_ld}};
      j["clean_metric"] = cr.clean_metric;
      j["corrupt_metric"] = cr.corrupt_metric;
      j["clean_accuracy"] = cr.clean_accuracy;
      nlohmann::ordered_json edges = nlohmann::ordered_json::array();
      for (const auto& e : cr.edges)
        edges.push_back({{"up", g.upstream[e.up]}, {"down", g.downstream[e.down]}, {"score", e.score}});
      j["edges"] = std::move(edges);
      if (!faithfulness.is_null()) j["faithfulness"] = faithfulness;
      write_file_atomic(a->scores_out, j.dump() + "\n");
      std::printf("scores written to %s\n", a->scores_out.c_str());
    }
  };
}

}  // namespace teap::cli
