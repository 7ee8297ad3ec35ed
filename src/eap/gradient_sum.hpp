// Internal to eap/: the methods whose gradient is taken at several runs (eap-ig-inputs,
// clean-corrupted; ../shared/spec/circuits.md, "Scoring methods"). Their runs, and the sum of the
// runs' gradients at every destination, kept in a form from which score.cpp's contraction builds
// one layer's summed gradients at a time, so that the upstream differences are contracted once per
// batch whatever the number of runs.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "eap/graph.hpp"
#include "eap/score.hpp"
#include "model/model.hpp"

namespace teap::eap {

// The gradient at head h's private copy of the residual stream x (its Q input, say) after a run k
// is the norm's VJP of g = dq_h . W_Q[h]:
//   rstd_k * (g*w - mean_d(g*w) - xhat_k * mean_d(g*w*xhat_k))      (no mean term for RMSNorm)
// The first two terms are linear in rstd_k * dq_k, so the runs' rstd-weighted dq are summed and
// multiplied by W_Q once. The third needs, per run, only the scalar mean_d(g*w*xhat_k) per head
// and position, which is (rstd_k/d) dq_k . (W_Q[h] (w*xhat_k)) = (rstd_k/d) dq_k . (q_k - b_q - W_Q[h] b_norm):
// the run's own Q projection, so no product with W_Q per run.
class GradientSum {
 public:
  GradientSum(const model::Model& m, const Graph& g, int64_t n_rows);
  // Adds the gradients of a run recorded with gradients, after its backward pass.
  void add(const model::ActivationRecord& rec);
  int runs() const { return runs_; }
  // Writes the summed gradients at layer b's destinations into G [K, N, d]: with K = 3H+1 the q, k, v
  // rows per query head, then the MLP input; with K = 1 the MLP input only.
  void layer_gradients(int b, at::Tensor G) const;
  // The summed gradient at the final residual stream [N, d].
  const at::Tensor& final_gradient() const { return final_; }

 private:
  struct Layer {
    at::Tensor dp[3];               // [H, N, d_head] sum over runs of rstd_k * dproj_k (q, k, v)
    std::vector<at::Tensor> c2;     // per run [3H, N]: mean_d(g*w*xhat_k) of every q, k, v row
    std::vector<at::Tensor> xhat;   // per run [N, d]: the normalised residual stream entering the layer
    at::Tensor mlp;                 // [N, d] sum over runs of the gradient at the MLP's input copy
  };
  bool heads_needed(int b) const;
  const model::Model& m_;
  at::ScalarType ct_;
  int64_t N_;
  bool heads_down_, input_node_;
  std::vector<Layer> layers_;
  at::Tensor final_;
  int runs_ = 0;
};

// The third term's scalar above, mean_d(g*w*xhat), for every row of one of layer b's projections (slot 0, 1, 2: q, k, v; one row
// per query head) [H, N], from the run's recorded projection `value` [B, P, H, dh] and
// dp = rstd * dproj [H, N, dh] in the compute type: the norm VJP's third term without a pass over
// the [H, N, d] gradients.
at::Tensor head_mean_term(const model::Model& m, int b, int slot, const at::Tensor& value, const at::Tensor& dp);

// The runs of eap-ig-inputs and clean-corrupted: the clean and corrupt runs recorded over positions
// [start, P) (their differences are the upstream differences of every method), what BatchScores
// records of them (LDs, top tokens, accuracy), and the method's gradient runs added to `sum`.
void gradient_runs(const model::Model& m, const BatchInput& in, const ScoreOptions& options, int64_t start,
                   const model::ActivationRecord* prefix, model::ActivationRecord& clean,
                   model::ActivationRecord& corrupt, BatchScores& out, GradientSum& sum);

}  // namespace teap::eap
