// Spearman's rank correlation with average ranks for ties, and the Jaccard overlap (eap/compare.hpp),
// on vectors whose answers are known (values as scipy.stats.spearmanr gives them).
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "eap/compare.hpp"

namespace teap::eap {
namespace {

TEST(Compare, AverageRanksShareTies) {
  EXPECT_EQ(average_ranks({3.0, 1.0, 2.0}), (std::vector<double>{3, 1, 2}));
  EXPECT_EQ(average_ranks({1.0, 2.0, 2.0, 5.0, 2.0}), (std::vector<double>{1, 3, 3, 5, 3}));
  EXPECT_EQ(average_ranks({}), std::vector<double>{});
}

TEST(Compare, SpearmanOfMonotoneAndReversed) {
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {10, 20, 30, 400}), 1.0);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {4, 3, 2, -100}), -1.0);
}

TEST(Compare, SpearmanWithTies) {
  // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).statistic = 0.9486832980505138
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 3, 2, 4}), 0.9486832980505138, 1e-15);
  // ranks a: 1 2 3 4 5, b: 2 1 4 3 5 -> 1 - 6*4/(5*24) = 0.8
  EXPECT_NEAR(spearman({0.1, 0.2, 0.3, 0.4, 0.5}, {2, 1, 4, 3, 5}), 0.8, 1e-15);
}

TEST(Compare, SpearmanUndefinedIsNaN) {
  EXPECT_TRUE(std::isnan(spearman({1, 1, 1}, {1, 2, 3})));
  EXPECT_TRUE(std::isnan(spearman({1, 2, 3}, {0, 0, 0})));
  EXPECT_TRUE(std::isnan(spearman({1}, {2})));
  EXPECT_TRUE(std::isnan(spearman({}, {})));
  EXPECT_THROW(spearman({1, 2}, {1, 2, 3}), std::invalid_argument);
}

TEST(Compare, Jaccard) {
  EXPECT_DOUBLE_EQ(jaccard(0, 0, 0), 1.0);
  EXPECT_DOUBLE_EQ(jaccard(3, 0, 0), 0.0);
  EXPECT_DOUBLE_EQ(jaccard(4, 6, 2), 0.25);
  EXPECT_DOUBLE_EQ(jaccard(5, 5, 5), 1.0);
}

}  // namespace
}  // namespace teap::eap
