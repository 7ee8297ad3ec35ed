#include "eap/runs.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace teap::eap {

at::Tensor as_tensor(const std::vector<int64_t>& v, int64_t rows, int64_t cols) {
  return at::tensor(at::ArrayRef<int64_t>(v), at::kLong).view({rows, cols});
}

at::Tensor answer_tokens(const std::vector<int64_t>& ids, const c10::Device& device) {
  return at::tensor(at::ArrayRef<int64_t>(ids), at::kLong).to(device);
}

LogitDiffs logit_diff(const model::Model& m, const at::Tensor& hidden, const at::Tensor& clean, const at::Tensor& corrupt,
                      MetricPairing pairing, const MetricPairs& broadcast) {
  const int64_t B = clean.size(0);
  if (pairing == MetricPairing::Own) {
    const at::Tensor l = model::last_position_logits(m, hidden, at::stack({clean, corrupt}, 1));  // [B,2]
    const at::Tensor ld = l.select(1, 0) - l.select(1, 1);
    return {ld, ld};
  }
  if (pairing == MetricPairing::BatchBroadcast) {
    const at::Tensor all = at::cat({clean, corrupt}).unsqueeze(0).expand({B, 2 * B}).contiguous();
    const at::Tensor l = model::last_position_logits(m, hidden, all);  // [B,2B]
    const at::Tensor ld = l.narrow(1, 0, B).mean(1) - l.narrow(1, B, B).mean(1);
    return {ld, ld};
  }
  // Notebook: the own pair, then the K broadcast pairs, read in one product: [B, 2 + 2K].
  const int64_t K = static_cast<int64_t>(broadcast.clean.size());
  const at::Tensor pairs = at::cat({at::tensor(at::ArrayRef<int64_t>(broadcast.clean), at::kLong),
                                    at::tensor(at::ArrayRef<int64_t>(broadcast.corrupt), at::kLong)})
                               .to(clean.device());
  const at::Tensor all = at::cat({at::stack({clean, corrupt}, 1), pairs.unsqueeze(0).expand({B, 2 * K})}, 1).contiguous();
  const at::Tensor l = model::last_position_logits(m, hidden, all);  // [B, 2+2K]
  return {l.narrow(1, 2, K).mean(1) - l.narrow(1, 2 + K, K).mean(1), l.select(1, 0) - l.select(1, 1)};
}

std::vector<int64_t> to_ids(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::vector<double> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

int64_t first_difference(const BatchInput& in) {
  int64_t first = in.n_positions - 1;
  for (int i = 0; i < in.n_prompts; ++i)
    for (int64_t p = 0; p < first; ++p)
      if (in.clean_ids[i * in.n_positions + p] != in.corrupt_ids[i * in.n_positions + p]) {
        first = p;
        break;
      }
  return first;
}

void check_finite(const model::Model& m, const std::vector<double>& v, const char* what) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw std::runtime_error(m.path + ": non-finite " + what + " (" + std::to_string(v[i]) + ") for prompt " +
                               std::to_string(i) + ": the model's logits overflow or are NaN");
}

at::Tensor top_tokens(const model::Model& m, const at::Tensor& last) {
  at::NoGradGuard no_grad;
  return model::full_logits(m, last.detach()).argmax(-1);
}

void record_clean_top(const BatchInput& in, const at::Tensor& top, BatchScores& out) {
  const at::Tensor expected = answer_tokens(in.expected.empty() ? in.clean_answer : in.expected, top.device());
  out.clean_correct = static_cast<int>((top == expected).sum().item<int64_t>());
  out.clean_top = to_ids(top);
}

PlainRuns plain_runs(const model::Model& m, const BatchInput& in, MetricPairing pairing, const MetricPairs& broadcast,
                     BatchScores& out) {
  at::NoGradGuard no_grad;
  const int64_t B = in.n_prompts, P = in.n_positions;
  PlainRuns r;
  r.clean_tok = answer_tokens(in.clean_answer, m.device);
  r.corrupt_tok = answer_tokens(in.corrupt_answer, m.device);
  r.start = first_difference(in);
  const at::Tensor clean_ids = as_tensor(in.clean_ids, B, P);
  if (r.start > 0) model::forward(m, clean_ids.narrow(1, 0, r.start), &r.prefix);
  out.n_prompts = static_cast<int>(B);
  out.n_positions = static_cast<int>(P);
  const int64_t Ps = P - r.start;
  const at::Tensor clean_hidden = model::forward(m, clean_ids, &r.clean, r.start, r.before());
  r.clean_ld = logit_diff(m, clean_hidden, r.clean_tok, r.corrupt_tok, pairing, broadcast);
  out.clean_ld = to_vector(r.clean_ld.recorded);
  check_finite(m, out.clean_ld, "clean logit difference");
  record_clean_top(in, top_tokens(m, clean_hidden.select(1, Ps - 1)), out);
  const at::Tensor corrupt_hidden = model::forward(m, as_tensor(in.corrupt_ids, B, P), &r.corrupt, r.start, r.before());
  r.corrupt_ld = logit_diff(m, corrupt_hidden, r.clean_tok, r.corrupt_tok, pairing, broadcast);
  out.corrupt_ld = to_vector(r.corrupt_ld.recorded);
  check_finite(m, out.corrupt_ld, "corrupt logit difference");
  out.corrupt_top = to_ids(top_tokens(m, corrupt_hidden.select(1, Ps - 1)));
  return r;
}

at::Tensor corrupt_run(const model::Model& m, const BatchInput& in, const ScoreOptions& options, int64_t start,
                       const model::ActivationRecord* prefix, model::ActivationRecord& record, std::vector<double>& ld) {
  at::NoGradGuard no_grad;
  const int64_t B = in.n_prompts, P = in.n_positions;
  record = model::ActivationRecord{};
  record.upstream_only = true;  // what the upstream differences read
  record.last_position_only = true;  // the metric's logits
  const at::Tensor hidden = model::forward(m, as_tensor(in.corrupt_ids, B, P), &record, start, prefix);
  const at::Tensor clean_tok = answer_tokens(in.clean_answer, m.device);
  const at::Tensor corrupt_tok = answer_tokens(in.corrupt_answer, m.device);
  ld = to_vector(logit_diff(m, hidden, clean_tok, corrupt_tok, options.pairing, options.broadcast).recorded);
  check_finite(m, ld, "corrupt logit difference");
  return hidden;
}

}  // namespace teap::eap
