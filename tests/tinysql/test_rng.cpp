// The generator, bounded integers and stream derivation are pinned to values computed by an
// independent Python transcription of the documented algorithms, so a change of any of them (which
// would silently change every batch of every sweep) fails here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "tinysql/corrupt.hpp"
#include "tinysql/rng.hpp"

namespace teap::tinysql {
namespace {

TEST(Rng, Xoshiro256StarStarSeededBySplitMix64) {
  Rng rng(0);
  EXPECT_EQ(rng.next(), 0x99ec5f36cb75f2b4ULL);
  EXPECT_EQ(rng.next(), 0xbf6e1f784956452aULL);
  EXPECT_EQ(rng.next(), 0x1a5f849d4933e6e0ULL);
}

TEST(Rng, BoundedByRejection) {
  Rng rng(12345);
  const std::vector<uint64_t> expected{4, 5, 0, 0, 2, 2, 6, 1, 0, 4};
  for (const uint64_t e : expected) EXPECT_EQ(rng.below(7), e);
  Rng one(1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(one.below(1), 0u);
  EXPECT_THROW(one.below(0), std::invalid_argument);
  // A bound just above 2^63 rejects almost half of all words; the result must still be in range.
  const uint64_t big = (uint64_t{1} << 63) + 12345;
  for (int i = 0; i < 1000; ++i) EXPECT_LT(one.below(big), big);
}

TEST(Rng, StreamSeedAndCellKey) {
  EXPECT_EQ(stream_seed(0, 1, 2, 3, 4), 0xb55e8fbfa70b6f46ULL);
  CellSettings cell;
  EXPECT_EQ(cell_key_string(cell), "feature=EngTableName;novel=0;syn_field=0;syn_table=0;num_fields=2");
  EXPECT_EQ(cell_key(cell), 0xcd7798ae6646634bULL);
  // Every key word matters.
  std::set<uint64_t> seeds;
  for (uint64_t w = 0; w < 5; ++w) {
    uint64_t key[5] = {7, 7, 7, 7, 7};
    key[w] = 8;
    seeds.insert(stream_seed(key[0], key[1], key[2], key[3], key[4]));
  }
  seeds.insert(stream_seed(7, 7, 7, 7, 7));
  EXPECT_EQ(seeds.size(), 6u);
}

TEST(Rng, FirstItemsOfACellArePinned) {
  // Item i of batch 0, seed 0, EngTableName with 2 fields (attempt 0), from the Python transcription.
  CellSettings cell;
  struct Want {
    const char* table;
    const char* f0;
    const char* f1;
    const char* t0;
    const char* t1;
    const char* corrupt;
  };
  const Want want[] = {{"items", "name", "value", "INT", "TEXT", "people"},
                       {"orders", "color", "label", "CHAR", "TIME", "users"},
                       {"links", "number", "category", "TEXT", "TEXT", "inventory"}};
  for (uint64_t i = 0; i < 3; ++i) {
    Rng rng(stream_seed(0, cell_key(cell), 0, i, 0));
    const Pair p = draw_pair(cell, rng);
    EXPECT_EQ(p.item.table, want[i].table);
    EXPECT_EQ(p.item.fields, (std::vector<std::string>{want[i].f0, want[i].f1}));
    EXPECT_EQ(p.item.types, (std::vector<std::string>{want[i].t0, want[i].t1}));
    EXPECT_EQ(p.corrupt_word, want[i].corrupt);
  }
}

TEST(Rng, SampleWithoutReplacementAndShuffle) {
  Rng rng(3);
  for (int k = 0; k <= 19; ++k) {
    const auto s = sample_without_replacement(19, k, rng);
    ASSERT_EQ(s.size(), static_cast<size_t>(k));
    EXPECT_EQ(std::set<int>(s.begin(), s.end()).size(), s.size());
    for (const int x : s) EXPECT_TRUE(0 <= x && x < 19);
  }
  EXPECT_THROW(sample_without_replacement(3, 4, rng), std::invalid_argument);
  std::vector<int> v{0, 1, 2, 3, 4, 5, 6, 7};
  shuffle(v, rng);
  std::vector<int> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(Rng, SampleOrderIsUniform) {
  // All 6 ordered pairs of 3 elements, 60000 draws: each count within 5 binomial standard
  // deviations of 10000.
  Rng rng(99);
  std::map<std::pair<int, int>, int> counts;
  const int n = 60000;
  for (int i = 0; i < n; ++i) {
    const auto s = sample_without_replacement(3, 2, rng);
    ++counts[{s[0], s[1]}];
  }
  ASSERT_EQ(counts.size(), 6u);
  const double p = 1.0 / 6, sd = std::sqrt(n * p * (1 - p));
  for (const auto& [pair, c] : counts) EXPECT_LE(std::abs(c - n * p), 5 * sd) << pair.first << "," << pair.second;
}

}  // namespace
}  // namespace teap::tinysql
