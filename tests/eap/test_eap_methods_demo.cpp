// Completeness of eap-ig-inputs on the demo model (a GPT-Neo trained on TinySQL, BM1's family):
// with the input and logits nodes, row `input` summed over every destination tends to
// mean LD_clean - mean LD_corrupt as m grows. The model folder is TEAP_DEMO_MODEL (ctest trains it
// once per build folder, the fixture demo_model); one batch of 30 prompts per feature.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "eap/graph.hpp"
#include "eap/score.hpp"
#include "model/model.hpp"
#include "runner/unit.hpp"
#include "tinysql/batch.hpp"
#include "tinysql/corrupt.hpp"
#include "tokenizer/tokenizer.hpp"

namespace {

using namespace teap;

TEST(EapMethodsDemo, CompletenessErrorFallsWithStepsOnTheDemoModel) {
  const char* dir = std::getenv("TEAP_DEMO_MODEL");
  ASSERT_TRUE(dir && *dir) << "TEAP_DEMO_MODEL (the demo model's folder) is not set: run through ctest";
  const model::Model m = model::load_model(dir);
  const auto tok = tokenizer::Tokenizer::load(dir);
  eap::GraphOptions go;
  go.input_node = true;
  go.logits_node = true;
  const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
  for (auto feature : {tinysql::Feature::EngTableName, tinysql::Feature::DefFieldName}) {
    tinysql::CellSettings cell;
    cell.feature = feature;
    const eap::BatchInput in = runner::batch_input(tinysql::make_batch(tok, cell, 0, 0, 30));
    std::vector<double> err;
    double target = 0;
    std::string figures = std::string(tinysql::feature_name(feature)) + ":";
    for (int steps : {1, 2, 5, 10, 50}) {
      eap::ScoreOptions so;
      so.method = eap::Method::EapIgInputs;
      so.ig_steps = steps;
      const eap::BatchScores s = eap::score_batch(m, g, in, so);
      double row = 0;
      for (int v = 0; v < g.n_downstream(); ++v) row += s.scores[size_t(g.input_up()) * g.n_downstream() + v];
      target = 0;
      for (int i = 0; i < in.n_prompts; ++i) target += (s.clean_ld[i] - s.corrupt_ld[i]) / in.n_prompts;
      err.push_back(std::fabs(row - target));
      char buf[112];
      std::snprintf(buf, sizeof buf, " m=%d sum %.4f err %.3e (%.2f%%);", steps, row, err.back(),
                    100 * err.back() / std::fabs(target));
      figures += buf;
    }
    char tail[64];
    std::snprintf(tail, sizeof tail, " target %.4f", target);
    figures += tail;
    std::printf("%s\n", figures.c_str());
    ASSERT_GT(std::fabs(target), 0.1) << figures;
    for (size_t i = 1; i < err.size(); ++i) EXPECT_LT(err[i], err[i - 1]) << figures;
    EXPECT_LT(err.back(), 0.05 * err.front()) << figures;
    EXPECT_LT(err.back(), 0.05 * std::fabs(target)) << figures;
  }
}

}  // namespace
