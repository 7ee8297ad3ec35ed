// The gradient methods of ../shared/spec/circuits.md ("Scoring methods") against the independent
// float64 reference (reference_forward.hpp), its first-order scores taken by autograd through it:
// eap-ig-inputs is the mean of m first-order passes at the interpolated embeddings (also where the
// common-prefix shortcut applies), clean-corrupted the mean of those at the clean and the corrupt
// run; completeness of eap-ig-inputs as m grows; invariance to batch size and threads; errors.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "eap/graph.hpp"
#include "eap/score.hpp"
#include "model/model.hpp"
#include "reference_forward.hpp"
#include "tiny_models.hpp"
#include "util/error.hpp"

namespace {

using namespace teap;
using eap_test::Batch;
using eap_test::Deltas;
using eap_test::Node;
using eap_test::Port;
using eap_test::RefRun;
using eap_test::make_batch;
using eap_test::make_model;
using eap_test::reference_forward;
using model::Family;

constexpr Family kFamilies[] = {Family::GptNeo, Family::Qwen2, Family::Llama};

eap::GraphOptions with_io() {
  eap::GraphOptions go;
  go.input_node = true;
  go.logits_node = true;
  return go;
}

eap::ScoreOptions method(eap::Method m, int steps = eap::kDefaultIgSteps) {
  eap::ScoreOptions so;
  so.method = m;
  so.ig_steps = steps;
  return so;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

std::string edge_name(const eap::Graph& g, size_t e) {
  return g.upstream[e / g.n_downstream()] + " -> " + g.downstream[e % g.n_downstream()];
}

// The first-order score matrix of the run on `ids` whose embedding is moved by `shift` [B,P,d]
// (undefined: not moved): S[u,v] = sum (a_u_clean - a_u_corrupt) . dLD/dx_v with LD the batch's
// mean own-paired logit difference, by autograd through the reference. Moving every input copy of
// the reference by `shift` is moving the embedding: every copy is the embedding plus upstream
// outputs computed from copies.
std::vector<double> ref_first_order(const model::Model& m, const eap::Graph& g, const Batch& b, const at::Tensor& ids,
                                    const at::Tensor& shift) {
  const RefRun clean = reference_forward(m, b.clean), corrupt = reference_forward(m, b.corrupt);
  const int64_t B = b.in.n_prompts, P = b.in.n_positions, d = m.config.d_model;
  const at::Tensor base = shift.defined() ? shift.to(at::kDouble) : at::zeros({B, P, d}, at::kDouble);
  Deltas deltas;
  std::vector<Node> nodes;
  for (int l = 0; l < m.config.n_layers; ++l) {
    for (int h = 0; h < m.config.n_heads; ++h)
      for (Port p : {Port::Q, Port::K, Port::V}) nodes.push_back({p, l, h});
    nodes.push_back({Port::Mlp, l, 0});
  }
  nodes.push_back({Port::Logits, 0, 0});
  for (const Node& n : nodes) deltas[n] = base.clone().requires_grad_(true);
  const RefRun r = reference_forward(m, ids, deltas);
  const at::Tensor last = r.logits.select(1, P - 1);
  const at::Tensor c = at::tensor(at::ArrayRef<int64_t>(b.in.clean_answer), at::kLong).view({B, 1});
  const at::Tensor k = at::tensor(at::ArrayRef<int64_t>(b.in.corrupt_answer), at::kLong).view({B, 1});
  (last.gather(1, c) - last.gather(1, k)).mean().backward();
  std::vector<double> S(size_t(g.n_upstream()) * g.n_downstream(), 0.0);
  for (int u = 0; u < g.n_upstream(); ++u) {
    const at::Tensor diff = eap_test::upstream_act(g, clean, u) - eap_test::upstream_act(g, corrupt, u);
    for (int v = 0; v < g.n_downstream(); ++v)
      if (g.is_edge(u, v)) {
        const at::Tensor grad = deltas.at(eap_test::downstream_node(g, v)).grad();
        S[size_t(u) * g.n_downstream() + v] = (diff * grad).sum().item<double>();
      }
  }
  return S;
}

// Every entry of `got` (float, as BatchScores stores) against `want`, to float storage accuracy.
void expect_scores(const eap::Graph& g, const std::vector<float>& got, const std::vector<double>& want,
                   const std::string& label) {
  ASSERT_EQ(got.size(), want.size()) << label;
  const double smax = max_abs(want);
  ASSERT_GT(smax, 1e-6) << label << ": scores too small to test";
  int shown = 0;
  for (size_t e = 0; e < want.size(); ++e) {
    const double tol = 1e-6 * std::fabs(want[e]) + 1e-9 * smax;
    if (std::fabs(got[e] - want[e]) > tol && shown++ < 10)
      ADD_FAILURE() << label << " " << edge_name(g, e) << ": " << got[e] << " vs " << want[e];
  }
}

// The interpolated embedding of step k out of m is the clean one moved by (1 - k/m)(e_corr - e_clean).
at::Tensor ig_shift(const model::Model& m, const Batch& b, int k, int steps) {
  const RefRun clean = reference_forward(m, b.clean), corrupt = reference_forward(m, b.corrupt);
  return (1.0 - double(k) / steps) * (corrupt.embed - clean.embed);
}

std::vector<double> ig_reference(const model::Model& m, const eap::Graph& g, const Batch& b, int steps) {
  std::vector<double> mean(size_t(g.n_upstream()) * g.n_downstream(), 0.0);
  for (int k = 0; k < steps; ++k) {
    const std::vector<double> s = ref_first_order(m, g, b, b.clean, ig_shift(m, b, k, steps));
    for (size_t e = 0; e < mean.size(); ++e) mean[e] += s[e] / steps;
  }
  return mean;
}

// --- eap-ig-inputs: the mean of m first-order passes at the interpolated inputs ------------------

TEST(EapMethodsIg, MeanOfFirstOrderPassesAtInterpolatedInputsAllFamilies) {
  for (Family f : kFamilies) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(4, 8, 101);
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, with_io());
    for (int steps : {1, 3}) {
      const eap::BatchScores s = eap::score_batch(m, g, b.in, method(eap::Method::EapIgInputs, steps));
      expect_scores(g, s.scores, ig_reference(m, g, b, steps),
                    model::family_name(f) + " m=" + std::to_string(steps));
    }
  }
}

// The shared-prefix shortcut (positions before the first clean/corrupt difference computed once,
// from the clean run) stays exact for the interpolated runs: their embedding equals the clean one
// there. The reference computes every position of every run.
TEST(EapMethodsIg, CommonPrefixShortcutHoldsForInterpolatedRuns) {
  for (Family f : kFamilies) {
    const model::Model m = make_model(f, 13);
    const Batch b = make_batch(3, 9, 102, /*first_pos=*/4);  // every prompt equal before position 4
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, with_io());
    const eap::BatchScores s = eap::score_batch(m, g, b.in, method(eap::Method::EapIgInputs, 4));
    expect_scores(g, s.scores, ig_reference(m, g, b, 4), model::family_name(f) + " prefix");
    // Also without head destinations (the MLP-only graph of the notebook).
    eap::GraphOptions none = with_io();
    none.downstream_heads = eap::DownstreamHeads::None;
    const eap::Graph gn = eap::make_graph(m.config.n_layers, m.config.n_heads, none);
    const eap::BatchScores sn = eap::score_batch(m, gn, b.in, method(eap::Method::EapIgInputs, 4));
    expect_scores(gn, sn.scores, ig_reference(m, gn, b, 4), model::family_name(f) + " prefix, downstream_heads none");
  }
}

// Completeness: with the input and logits nodes, row `input` summed over every destination is the
// left Riemann sum of the path integral of dLD/de from e_corr to e_clean, which tends to
// mean LD_clean - mean LD_corrupt as m grows.
TEST(EapMethodsIg, CompletenessErrorFallsWithStepsAllFamilies) {
  for (Family f : kFamilies) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(6, 8, 103);
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, with_io());
    std::vector<double> err;
    double target = 0;
    std::string figures = model::family_name(f) + ":";
    for (int steps : {1, 2, 5, 10, 50}) {
      const eap::BatchScores s = eap::score_batch(m, g, b.in, method(eap::Method::EapIgInputs, steps));
      double row = 0;
      for (int v = 0; v < g.n_downstream(); ++v) row += s.scores[size_t(g.input_up()) * g.n_downstream() + v];
      target = 0;
      for (int i = 0; i < b.in.n_prompts; ++i) target += (s.clean_ld[i] - s.corrupt_ld[i]) / b.in.n_prompts;
      err.push_back(std::fabs(row - target));
      char buf[96];
      std::snprintf(buf, sizeof buf, " m=%d sum %.5f err %.2e;", steps, row, err.back());
      figures += buf;
    }
    figures += " target " + std::to_string(target);
    std::printf("%s\n", figures.c_str());
    ASSERT_GT(std::fabs(target), 1e-3) << figures;
    for (size_t i = 1; i < err.size(); ++i) EXPECT_LT(err[i], err[i - 1]) << figures;
    // A left Riemann sum's error falls like 1/m (from m = 10 to 50: a fifth).
    EXPECT_LT(err.back(), 0.05 * err.front()) << figures;
    EXPECT_LT(err[4], 0.3 * err[3]) << figures;
  }
}

// --- clean-corrupted: the mean of the first-order scores at the clean and at the corrupt run ----

TEST(EapMethodsCleanCorrupted, MeanOfFirstOrderAtCleanAndCorruptAllFamilies) {
  for (Family f : kFamilies) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(4, 8, 111, 2);
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, with_io());
    const std::vector<double> at_clean = ref_first_order(m, g, b, b.clean, at::Tensor());
    const std::vector<double> at_corrupt = ref_first_order(m, g, b, b.corrupt, at::Tensor());
    // The helper agrees with eap at the clean run (its own check).
    expect_scores(g, eap::score_batch(m, g, b.in).scores, at_clean, model::family_name(f) + " eap");
    std::vector<double> mean(at_clean.size());
    for (size_t e = 0; e < mean.size(); ++e) mean[e] = 0.5 * (at_clean[e] + at_corrupt[e]);
    const eap::BatchScores s = eap::score_batch(m, g, b.in, method(eap::Method::CleanCorrupted));
    expect_scores(g, s.scores, mean, model::family_name(f) + " clean-corrupted");
    // The two gradients differ enough that the mean is not eap's score.
    double moved = 0;
    for (size_t e = 0; e < mean.size(); ++e) moved = std::max(moved, std::fabs(at_clean[e] - mean[e]));
    EXPECT_GT(moved, 1e-3 * max_abs(mean)) << model::family_name(f);
  }
}

// The same through score_batch alone: eap on the swapped batch (corrupt prompts as the clean ones,
// the metric's answer tokens unchanged) takes the gradient at the corrupt run with the upstream
// differences negated, so clean-corrupted = (eap(batch) - eap(swapped)) / 2.
TEST(EapMethodsCleanCorrupted, EqualsHalfTheDifferenceOfEapAndEapOnTheSwappedBatch) {
  for (Family f : kFamilies) {
    const model::Model m = make_model(f, 17);
    const Batch b = make_batch(5, 7, 112);
    Batch swapped = b;
    std::swap(swapped.in.clean_ids, swapped.in.corrupt_ids);
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, with_io());
    const eap::BatchScores fwd = eap::score_batch(m, g, b.in), back = eap::score_batch(m, g, swapped.in);
    const eap::BatchScores cc = eap::score_batch(m, g, b.in, method(eap::Method::CleanCorrupted));
    std::vector<double> want(cc.scores.size());
    for (size_t e = 0; e < want.size(); ++e) want[e] = 0.5 * (double(fwd.scores[e]) - double(back.scores[e]));
    expect_scores(g, cc.scores, want, model::family_name(f));
    EXPECT_EQ(cc.clean_ld, fwd.clean_ld);
    EXPECT_EQ(cc.corrupt_ld, fwd.corrupt_ld);
    EXPECT_EQ(cc.clean_top, fwd.clean_top);
    EXPECT_EQ(cc.corrupt_top, fwd.corrupt_top);
    EXPECT_EQ(cc.clean_correct, fwd.clean_correct);
  }
}

// --- Invariance ---------------------------------------------------------------------------------

Batch slice(const Batch& b, int from, int n) {
  Batch s;
  const int P = b.in.n_positions;
  s.in.n_prompts = n;
  s.in.n_positions = P;
  auto cut = [&](const std::vector<int64_t>& v, int per) {
    return std::vector<int64_t>(v.begin() + size_t(from) * per, v.begin() + size_t(from + n) * per);
  };
  s.in.clean_ids = cut(b.in.clean_ids, P);
  s.in.corrupt_ids = cut(b.in.corrupt_ids, P);
  s.in.clean_answer = cut(b.in.clean_answer, 1);
  s.in.corrupt_answer = cut(b.in.corrupt_answer, 1);
  return s;
}

// Batches of 1, 5 and 12 (each with its own common prefix) give the same per-prompt contributions.
TEST(EapMethodsInvariance, BatchSizeAllFamiliesBothMethods) {
  for (Family f : kFamilies)
    for (eap::Method me : {eap::Method::EapIgInputs, eap::Method::CleanCorrupted}) {
      const model::Model m = make_model(f);
      const Batch all = make_batch(12, 8, 121, 3);
      const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, with_io());
      auto run = [&](int size, std::vector<double>& abs_total, std::vector<double>& ld) {
        std::vector<double> total(size_t(g.n_upstream()) * g.n_downstream(), 0.0);
        abs_total.assign(total.size(), 0.0);
        for (int from = 0; from < 12; from += size) {
          const int n = std::min(size, 12 - from);
          const eap::BatchScores bs = eap::score_batch(m, g, slice(all, from, n).in, method(me, 3));
          for (size_t e = 0; e < total.size(); ++e) {
            total[e] += n * double(bs.scores[e]);
            abs_total[e] += n * std::fabs(double(bs.scores[e]));
          }
          ld.insert(ld.end(), bs.corrupt_ld.begin(), bs.corrupt_ld.end());
        }
        return total;
      };
      std::vector<double> abs12, abs1, abs5, ld12, ld1, ld5;
      const auto t12 = run(12, abs12, ld12), t1 = run(1, abs1, ld1), t5 = run(5, abs5, ld5);
      const double scale = max_abs(abs12);
      ASSERT_GT(scale, 1e-6);
      for (const auto* t : {&t1, &t5})
        for (size_t e = 0; e < t12.size(); ++e)
          EXPECT_NEAR((*t)[e], t12[e], 2e-7 * (abs1[e] + abs5[e] + abs12[e]) + 1e-12 * scale)
              << model::family_name(f) << " " << eap::to_string(me) << " " << edge_name(g, e);
      for (size_t i = 0; i < ld12.size(); ++i) {
        EXPECT_NEAR(ld1[i], ld12[i], 1e-12);
        EXPECT_NEAR(ld5[i], ld12[i], 1e-12);
      }
    }
}

// Intra-op threads split the contraction's long products; the scores must not depend on it.
TEST(EapMethodsInvariance, ThreadCountBothMethods) {
  const int before = at::get_num_threads();
  for (Family f : {Family::GptNeo, Family::Qwen2})
    for (eap::Method me : {eap::Method::EapIgInputs, eap::Method::CleanCorrupted}) {
      const model::Model m = make_model(f);
      const Batch b = make_batch(64, 9, 131);  // B*P*d_model past the split threshold (2 x 4096)
      const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, with_io());
      at::set_num_threads(1);
      const eap::BatchScores one = eap::score_batch(m, g, b.in, method(me, 3));
      at::set_num_threads(2);
      const eap::BatchScores two = eap::score_batch(m, g, b.in, method(me, 3));
      double smax = 0;
      for (float x : one.scores) smax = std::max(smax, double(std::fabs(x)));
      ASSERT_GT(smax, 1e-6);
      for (size_t e = 0; e < one.scores.size(); ++e)
        EXPECT_NEAR(one.scores[e], two.scores[e], 1e-6 * smax) << model::family_name(f) << " " << eap::to_string(me);
    }
  at::set_num_threads(before);
}

// --- Errors and shapes ----------------------------------------------------------------------------

TEST(EapMethodsOptions, IgStepsOutsideTheirRangeAreInputErrors) {
  const model::Model m = make_model(Family::GptNeo);
  const Batch b = make_batch(2, 5, 141);
  const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads);
  for (int steps : {0, -3, eap::kMaxIgSteps + 1})
    EXPECT_THROW(eap::score_batch(m, g, b.in, method(eap::Method::EapIgInputs, steps)), InputError) << steps;
  EXPECT_NO_THROW(eap::score_batch(m, g, b.in, method(eap::Method::EapIgInputs, 1)));
}

// Off the graph every method's scores are exactly zero; the records are those of eap.
TEST(EapMethodsOptions, ZerosOffTheGraphAndEapsRecords) {
  for (Family f : kFamilies)
    for (eap::GraphOptions go : {eap::GraphOptions{}, with_io()}) {
      const model::Model m = make_model(f);
      const Batch b = make_batch(3, 6, 151);
      const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
      const eap::BatchScores e = eap::score_batch(m, g, b.in);
      for (eap::Method me : {eap::Method::EapIgInputs, eap::Method::CleanCorrupted}) {
        const eap::BatchScores s = eap::score_batch(m, g, b.in, method(me, 2));
        ASSERT_EQ(s.scores.size(), e.scores.size());
        int nonzero = 0;
        for (int u = 0; u < g.n_upstream(); ++u)
          for (int v = 0; v < g.n_downstream(); ++v) {
            const float x = s.scores[size_t(u) * g.n_downstream() + v];
            if (!g.is_edge(u, v)) EXPECT_EQ(x, 0.0f);
            else nonzero += x != 0.0f;
          }
        EXPECT_GT(nonzero, g.n_edges() / 2);
        EXPECT_EQ(s.clean_ld, e.clean_ld);
        EXPECT_EQ(s.corrupt_ld, e.corrupt_ld);
        EXPECT_EQ(s.clean_top, e.clean_top);
        EXPECT_EQ(s.corrupt_top, e.corrupt_top);
        EXPECT_EQ(s.clean_correct, e.clean_correct);
        EXPECT_EQ(s.n_positions, e.n_positions);
      }
    }
}

}  // namespace
