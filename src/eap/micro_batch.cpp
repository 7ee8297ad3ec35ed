#include "eap/micro_batch.hpp"

#include <ATen/ATen.h>

#include <chrono>
#include <string>

#include "eap/runs.hpp"
#include "eap/workspace.hpp"
#include "model/model.hpp"
#include "util/error.hpp"

namespace teap::eap {

BatchInput prompts_of(const BatchInput& in, int lo, int hi) {
  const int64_t P = in.n_positions;
  BatchInput part;
  part.n_prompts = hi - lo;
  part.n_positions = in.n_positions;
  part.clean_ids.assign(in.clean_ids.begin() + lo * P, in.clean_ids.begin() + hi * P);
  part.corrupt_ids.assign(in.corrupt_ids.begin() + lo * P, in.corrupt_ids.begin() + hi * P);
  part.clean_answer.assign(in.clean_answer.begin() + lo, in.clean_answer.begin() + hi);
  part.corrupt_answer.assign(in.corrupt_answer.begin() + lo, in.corrupt_answer.begin() + hi);
  if (!in.expected.empty()) part.expected.assign(in.expected.begin() + lo, in.expected.begin() + hi);
  return part;
}

BatchScores score_in_micro_batches(const model::Model& m, const Graph& g, const BatchInput& in, const ScoreOptions& options,
                                   int max_prompts) {
  const int B = in.n_prompts;
  if (max_prompts <= 0 || max_prompts >= B) return score_batch(m, g, in, options);
  check_batch(m, in);  // before the shared prefix and corrupt run use it
  check_options(m, options);
  if (options.pairing == MetricPairing::BatchBroadcast)
    throw InputError("metric_pairing batch_broadcast averages over the whole batch's pairs, so a batch of " +
                     std::to_string(B) + " prompts cannot be split into micro-batches of " + std::to_string(max_prompts) +
                     ": raise settings.memory_budget, lower settings.batch_size, or use metric_pairing own");
  const int parts = (B + max_prompts - 1) / max_prompts;
  // The parts share their buffers, and leave their last hidden states for one pass over the
  // unembedding at the end (eap/workspace.hpp).
  const std::shared_ptr<ScoreWorkspace> ws = options.workspace ? options.workspace : make_workspace();
  ws->defer_tops = true;
  ws->clean_last.clear();
  ws->corrupt_last.clear();
  struct Undefer {
    ScoreWorkspace& w;
    ~Undefer() {
      w.defer_tops = false;
      w.clean_last.clear();
      w.corrupt_last.clear();
      w.prefix = {};
      w.prefix_start = w.part_row = 0;
      w.corrupt_shared = false;
      w.corrupt = {};
      w.corrupt_ld.clear();
    }
  } undefer{*ws};
  const int64_t start = options.method == Method::Exact ? 0 : first_difference(in);
  if (start > 0) {
    const auto t0 = std::chrono::steady_clock::now();
    at::NoGradGuard no_grad;
    ws->prefix = model::ActivationRecord{};
    ws->prefix.keys_values_only = true;  // all the parts read of it (eap::batch_work_bytes counts it)
    model::forward(m, as_tensor(in.clean_ids, B, in.n_positions).narrow(1, 0, start), &ws->prefix);
    ws->prefix_start = start;
    if (options.profile) options.profile->prefix += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  if (options.method == Method::Eap) {
    // The corrupt run needs no gradients: once for the whole batch, the parts take their rows
    // (eap/workspace.hpp; eap::batch_work_bytes counts its record for the whole batch).
    const auto t0 = std::chrono::steady_clock::now();
    const at::Tensor hidden = corrupt_run(m, in, options, start, start > 0 ? &ws->prefix : nullptr, ws->corrupt, ws->corrupt_ld);
    ws->corrupt_last.push_back(hidden.select(1, hidden.size(1) - 1).clone());  // [B,d]
    ws->corrupt_shared = true;
    if (options.profile)
      options.profile->corrupt_forward += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  at::Tensor total;  // the weighted sum of the parts' matrices, where score_batch leaves them
  BatchScores out;
  for (int k = 0; k < parts; ++k) {
    const int lo = static_cast<int>(int64_t(B) * k / parts), hi = static_cast<int>(int64_t(B) * (k + 1) / parts);
    ScoreOptions o = options;
    o.workspace = ws;
    ws->part_row = lo;
    o.weight = options.weight * double(hi - lo) / B;
    o.sum_scores = [&total, &m](void* data, size_t n, bool is_double, bool on_cuda) {
      const at::TensorOptions t =
          at::TensorOptions().dtype(is_double ? at::kDouble : at::kFloat).device(on_cuda ? m.device : at::Device(at::kCPU));
      const at::Tensor part = at::from_blob(data, {static_cast<int64_t>(n)}, t);
      if (total.defined()) total.add_(part);
      else total = part.clone();
    };
    BatchScores r = score_batch(m, g, prompts_of(in, lo, hi), o);
    if (k == 0) {
      out = std::move(r);
      continue;
    }
    out.n_prompts += r.n_prompts;
    out.clean_ld.insert(out.clean_ld.end(), r.clean_ld.begin(), r.clean_ld.end());
    out.corrupt_ld.insert(out.corrupt_ld.end(), r.corrupt_ld.begin(), r.corrupt_ld.end());
    out.clean_top.insert(out.clean_top.end(), r.clean_top.begin(), r.clean_top.end());
    out.corrupt_top.insert(out.corrupt_top.end(), r.corrupt_top.begin(), r.corrupt_top.end());
    out.clean_correct += r.clean_correct;
  }
  if (!ws->clean_last.empty()) {  // the methods that deferred them: every part's top tokens at once
    at::NoGradGuard no_grad;
    const at::Tensor top = top_tokens(m, at::cat({at::cat(ws->clean_last), at::cat(ws->corrupt_last)}));  // [2B]
    record_clean_top(in, top.narrow(0, 0, B), out);
    out.corrupt_top = to_ids(top.narrow(0, B, B));
  }
  if (options.sum_scores) options.sum_scores(total.data_ptr(), static_cast<size_t>(total.numel()), total.scalar_type() == at::kDouble, total.is_cuda());
  const at::Tensor f = total.to(at::kCPU, at::kFloat).contiguous();
  out.scores.assign(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
  return out;
}

}  // namespace teap::eap
