// Cell quality on constructed batches: the effect, its spreads, flips and the flags with their
// thresholds (eap/quality.hpp).
#include <gtest/gtest.h>

#include <cmath>

#include "eap/quality.hpp"

namespace teap::eap {
namespace {

BatchScores batch(std::vector<double> clean, std::vector<double> corrupt, int correct, std::vector<int64_t> clean_top = {},
                  std::vector<int64_t> corrupt_top = {}) {
  BatchScores b;
  b.n_prompts = static_cast<int>(clean.size());
  b.clean_ld = std::move(clean);
  b.corrupt_ld = std::move(corrupt);
  b.clean_correct = correct;
  b.clean_top = std::move(clean_top);
  b.corrupt_top = std::move(corrupt_top);
  return b;
}

CellQuality assess(const std::vector<BatchScores>& bs, const QualityThresholds& t = {}) {
  std::vector<const BatchScores*> p;
  for (const auto& b : bs) p.push_back(&b);
  return assess_cell(p, t);
}

TEST(Quality, HealthyCellHasItsNumbersAndNoFlag) {
  const auto q = assess({batch({10, 12}, {-8, -6}, 2, {5, 5}, {7, 5}), batch({11, 9}, {-9, -7}, 1, {5, 5}, {7, 7})});
  EXPECT_DOUBLE_EQ(q.clean_ld, 10.5);
  EXPECT_DOUBLE_EQ(q.corrupt_ld, -7.5);
  EXPECT_DOUBLE_EQ(q.effect, 18);
  EXPECT_DOUBLE_EQ(q.effect_spread, 0);  // both batches move the metric by 18
  EXPECT_NEAR(q.ld_spread, std::sqrt(5.0 / 3), 1e-12);
  EXPECT_DOUBLE_EQ(q.clean_accuracy, 0.75);
  EXPECT_DOUBLE_EQ(q.flip_fraction, 0.75);
  EXPECT_TRUE(q.flags.empty());
}

TEST(Quality, NearDegenerateCellIsLowEffect) {
  // The demo's EngTableName.novel1.synfield0.syntable1: LD clean 2.7439, corrupt 2.7424.
  const auto q = assess({batch({2.7439, 2.0, 3.4878}, {2.7424, 2.0, 3.4848}, 3)});
  ASSERT_EQ(q.flags, std::vector<std::string>{"low_effect"});
  EXPECT_NE(q.reasons[0].find("barely moves"), std::string::npos) << q.reasons[0];
  EXPECT_TRUE(std::isnan(q.flip_fraction));  // no top answers recorded
}

TEST(Quality, LowEffectAgainstEitherYardstick) {
  // effect 1 against |LD_clean| 30: 0.033 < 0.05.
  EXPECT_EQ(assess({batch({30, 30}, {29, 29}, 2)}).flags, std::vector<std::string>{"low_effect"});
  // effect 1 against a spread over prompts of 10 (|LD_clean| small): 0.1 < 0.15.
  const auto spread = assess({batch({-9, 11}, {-10, 10}, 2)});
  EXPECT_NEAR(spread.ld_spread, std::sqrt(200.0), 1e-12);
  EXPECT_EQ(spread.flags, std::vector<std::string>{"low_effect"});
  // The thresholds are the user's: lowered, the same cells pass.
  QualityThresholds lax;
  lax.min_effect_vs_clean = 0.01;
  lax.min_effect_vs_spread = 0.01;
  EXPECT_TRUE(assess({batch({30, 30}, {29, 29}, 2)}, lax).flags.empty());
  EXPECT_TRUE(assess({batch({-9, 11}, {-10, 10}, 2)}, lax).flags.empty());
}

TEST(Quality, LowAccuracyAndDegenerate) {
  const auto q = assess({batch({5, 6}, {-5, -6}, 0)});
  EXPECT_EQ(q.flags, std::vector<std::string>{"low_accuracy"});
  QualityThresholds strict;
  strict.min_accuracy = 1.0;
  EXPECT_EQ(assess({batch({5, 6}, {-5, -6}, 1)}, strict).flags, std::vector<std::string>{"low_accuracy"});
  const auto d = assess({batch({1, 2}, {2, 1}, 2)});
  EXPECT_EQ(d.flags, std::vector<std::string>{"degenerate"});
}

TEST(Quality, EffectSpreadIsOverBatches) {
  const auto q = assess({batch({10}, {0}, 1), batch({10}, {4}, 1), batch({10}, {8}, 1)});
  EXPECT_DOUBLE_EQ(q.effect, 6);
  EXPECT_DOUBLE_EQ(q.effect_spread, 4);  // batch effects 10, 6, 2
}

}  // namespace
}  // namespace teap::eap
