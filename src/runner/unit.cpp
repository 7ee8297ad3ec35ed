#include "runner/unit.hpp"

#include "util/error.hpp"

namespace teap::runner {

eap::BatchScores batch_scores_of(io::UnitRecord&& u) {
  eap::BatchScores s;
  s.n_upstream = u.n_upstream;
  s.n_downstream = u.n_downstream;
  s.n_prompts = u.n_prompts;
  s.n_positions = u.n_positions;
  s.scores = std::move(u.scores);
  s.clean_ld = std::move(u.clean_ld);
  s.corrupt_ld = std::move(u.corrupt_ld);
  s.clean_correct = static_cast<int>(u.clean_correct);
  s.clean_top = std::move(u.clean_top_token);
  s.corrupt_top = std::move(u.corrupt_top_token);
  return s;
}

eap::BatchInput batch_input(const tinysql::Batch& batch) {
  eap::BatchInput in;
  in.n_prompts = static_cast<int>(batch.examples.size());
  in.n_positions = batch.input_length;
  for (const auto& e : batch.examples) {
    in.clean_ids.insert(in.clean_ids.end(), e.clean_input_ids.begin(), e.clean_input_ids.end());
    in.corrupt_ids.insert(in.corrupt_ids.end(), e.corrupt_input_ids.begin(), e.corrupt_input_ids.end());
    in.clean_answer.push_back(e.clean_token_id);
    in.corrupt_answer.push_back(e.corrupt_token_id);
    in.expected.push_back(e.answer_token_id);
  }
  return in;
}

eap::MetricPairs notebook_metric_pairs(const tokenizer::Tokenizer& tok, const tinysql::CellSettings& cell, uint64_t seed,
                                       int n_batches, int batch_size) {
  if (n_batches < 1) throw InputError("metric_pairing notebook: " + std::to_string(n_batches) + " batches (needs at least 1)");
  const tinysql::Batch last = tinysql::make_batch(tok, cell, seed, n_batches - 1, batch_size);
  eap::MetricPairs p;
  for (const auto& e : last.examples) {
    p.clean.push_back(e.clean_token_id);
    p.corrupt.push_back(e.corrupt_token_id);
  }
  return p;
}

CellResult reduce_cell(const eap::Graph& g, const std::vector<const eap::BatchScores*>& batches, int top_n,
                       bool signed_rank, eap::MetricPairing pairing) {
  CellResult r;
  if (batches.empty()) throw InputError("cell: no batches to reduce");
  r.baselines = eap::baselines(batches, pairing);
  if (r.baselines.degenerate())
    throw InputError("cell is degenerate: " + r.baselines.describe() +
                     "; the normalisation divides by LD_clean - LD_corr, so no score is defined");
  int correct = 0, prompts = 0;
  std::vector<const float*> scores;
  for (const auto* b : batches) {
    r.clean_metric += eap::normalised_metric(b->clean_ld, r.baselines) / batches.size();
    r.corrupt_metric += eap::normalised_metric(b->corrupt_ld, r.baselines) / batches.size();
    correct += b->clean_correct;
    prompts += b->n_prompts;
    scores.push_back(b->scores.data());
    r.n_positions = b->n_positions;
  }
  r.clean_accuracy = prompts ? double(correct) / prompts : 0.0;
  const eap::BatchScores& last = *batches.back();
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0.0 : s / v.size();
  };
  r.last_batch.clean_ld = mean(last.clean_ld);
  r.last_batch.corrupt_ld = mean(last.corrupt_ld);
  r.last_batch.clean_metric = eap::normalised_metric(last.clean_ld, r.baselines);
  r.last_batch.corrupt_metric = eap::normalised_metric(last.corrupt_ld, r.baselines);
  r.edges = eap::consistent_edges(g, scores, 1.0 / r.baselines.denominator(), top_n, signed_rank);
  return r;
}

}  // namespace teap::runner
