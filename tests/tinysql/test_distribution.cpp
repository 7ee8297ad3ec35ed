// Frequencies over many draws, through the same per-item streams make_batch uses.
//
// The bound: every category's count must lie within 5 standard deviations of its expectation,
// |count - sum_i p_i| <= 5 * sqrt(sum_i p_i (1 - p_i)) + 1, where p_i is the category's exact
// probability in draw i (for corrupt words: 1/|candidates| given the drawn item, or 0 when
// excluded). Per category that is a two-sided binomial (Poisson-binomial) 5-sigma test: a correct
// generator fails one category with probability below 1e-6, so the hundreds of categories checked
// here pass by a wide margin, while a wrong list, a lost exclusion or a biased bounded draw (an
// error of a few percent over 20000 draws) fails. The seeds are fixed, so the test is deterministic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "tinysql/corrupt.hpp"
#include "tinysql/vocabulary.hpp"

namespace teap::tinysql {
namespace {

struct Tally {
  std::map<std::string, double> expected, variance;
  std::map<std::string, int> observed;
  void add(const std::string& category, double p) {
    expected[category] += p;
    variance[category] += p * (1 - p);
  }
  void see(const std::string& category) { ++observed[category]; }
  void check(const std::string& what) const {
    for (const auto& [category, e] : expected) {
      const auto it = observed.find(category);
      const int n = it == observed.end() ? 0 : it->second;
      const double bound = 5 * std::sqrt(variance.at(category)) + (e > 0 ? 1 : 0);
      EXPECT_LE(std::abs(n - e), bound) << what << ": '" << category << "' seen " << n << " times, expected " << e;
    }
    for (const auto& [category, n] : observed)
      EXPECT_TRUE(expected.count(category)) << what << ": '" << category << "' was never possible but seen " << n;
  }
};

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::vector<CellSettings> all_cells(const std::vector<int>& field_counts) {
  std::vector<CellSettings> cells;
  for (const Feature f : all_features())
    for (int flags = 0; flags < 8; ++flags)
      for (const int k : field_counts) {
        CellSettings c;
        c.feature = f;
        c.use_novel_names = flags & 1;
        c.use_synonyms_field = flags & 2;
        c.use_synonyms_table = flags & 4;
        c.num_fields = k;
        cells.push_back(c);
      }
  return cells;
}

std::string describe(const CellSettings& c) { return cell_key_string(c); }

TEST(Distribution, TablesFieldsAndTypes) {
  for (const int k : {1, 2, 4, 19}) {
    CellSettings cell;
    cell.num_fields = k;
    cell.use_novel_names = true;  // any corrupt list: only the item draws are counted here
    const int n = 20000;
    Tally tables, fields, first_fields, types;
    for (int i = 0; i < n; ++i) {
      Rng rng(stream_seed(1, cell_key(cell), static_cast<uint64_t>(i / 30), static_cast<uint64_t>(i % 30), 0));
      const Pair p = draw_pair(cell, rng);
      for (const auto& t : table_names()) tables.add(t, 1.0 / 7);
      tables.see(p.item.table);
      for (const auto& f : field_names()) {
        fields.add(f, k / 19.0);
        first_fields.add(f, 1.0 / 19);
      }
      for (const auto& f : p.item.fields) fields.see(f);
      first_fields.see(p.item.fields.front());
      for (int j = 0; j < k; ++j) {
        for (const auto& t : field_types()) types.add(t, 1.0 / 5);
        types.see(p.item.types[static_cast<size_t>(j)]);
      }
      ASSERT_EQ(std::set<std::string>(p.item.fields.begin(), p.item.fields.end()).size(), static_cast<size_t>(k));
    }
    const std::string what = "num_fields " + std::to_string(k);
    tables.check(what + " tables");
    if (k < 19) fields.check(what + " fields");  // with 19 every field is always present
    first_fields.check(what + " first field");
    types.check(what + " types");
  }
}

TEST(Distribution, CorruptWordsExclusionsAndLists) {
  for (const CellSettings& cell : all_cells({1, 2, 3, 4})) {
    const std::string what = describe(cell);
    const bool table = cell.feature == Feature::EngTableName || cell.feature == Feature::DefTableName;
    const auto& list = cell.use_novel_names ? (table ? novel_table_names() : novel_field_names())
                                            : (table ? table_names() : field_names());
    const int n = 6000;
    Tally corrupt;
    for (int i = 0; i < n; ++i) {
      Rng rng(stream_seed(2, cell_key(cell), 0, static_cast<uint64_t>(i), 0));
      const Pair p = draw_pair(cell, rng);
      const auto shown_f = shown_fields(p.item, cell.use_synonyms_field);
      const auto shown_t = shown_table(p.item, cell.use_synonyms_table);
      // The right lists: shown words are synonyms exactly in synonym mode, corrupt words come from
      // the novel list exactly in novel mode.
      for (size_t j = 0; j < shown_f.size(); ++j)
        ASSERT_EQ(shown_f[j], cell.use_synonyms_field ? field_synonym(p.item.fields[j]) : p.item.fields[j]);
      ASSERT_EQ(shown_t, cell.use_synonyms_table ? table_synonym(p.item.table) : p.item.table);
      ASSERT_TRUE(contains(list, p.corrupt_word)) << what << ": " << p.corrupt_word;
      // The exclusions of the spec's table.
      switch (cell.feature) {
        case Feature::EngTableName: ASSERT_NE(p.corrupt_word, shown_t) << what; break;
        case Feature::EngFieldName: ASSERT_FALSE(contains(shown_f, p.corrupt_word)) << what; break;
        case Feature::DefTableName: ASSERT_NE(p.corrupt_word, p.item.table) << what; break;
        case Feature::DefFieldName: ASSERT_FALSE(contains(p.item.fields, p.corrupt_word)) << what; break;
      }
      ASSERT_NE(p.corrupt_word, p.clean_word) << what;
      ASSERT_NE(p.corrupt_prompt, p.clean_prompt) << what;
      const auto candidates = corrupt_candidates(cell, p.item);
      for (const auto& w : list)
        corrupt.add(w, contains(candidates, w) ? 1.0 / static_cast<double>(candidates.size()) : 0.0);
      corrupt.see(p.corrupt_word);
    }
    corrupt.check(what + " corrupt word");
  }
}

TEST(Distribution, UnconditionalCorruptFrequenciesWithoutSynonyms) {
  // Without synonyms every word of the list is, by symmetry, equally likely to be the corrupt word.
  for (const Feature f : all_features()) {
    for (const bool novel : {false, true}) {
      CellSettings cell;
      cell.feature = f;
      cell.use_novel_names = novel;
      const bool table = f == Feature::EngTableName || f == Feature::DefTableName;
      const auto& list = novel ? (table ? novel_table_names() : novel_field_names())
                               : (table ? table_names() : field_names());
      const int n = 20000;
      Tally corrupt;
      for (int i = 0; i < n; ++i) {
        Rng rng(stream_seed(3, cell_key(cell), 1, static_cast<uint64_t>(i), 0));
        for (const auto& w : list) corrupt.add(w, 1.0 / static_cast<double>(list.size()));
        corrupt.see(draw_pair(cell, rng).corrupt_word);
      }
      corrupt.check(describe(cell));
    }
  }
}

TEST(Distribution, SynonymQuirkCorruptIsSometimesTheRealName) {
  // EngTableName with table synonyms draws from all 7 real names, the real one included (1 in 7).
  CellSettings cell;
  cell.use_synonyms_table = true;
  int real = 0;
  const int n = 7000;
  for (int i = 0; i < n; ++i) {
    Rng rng(stream_seed(4, cell_key(cell), 0, static_cast<uint64_t>(i), 0));
    const Pair p = draw_pair(cell, rng);
    real += p.corrupt_word == p.item.table;
  }
  const double p = 1.0 / 7;
  EXPECT_LE(std::abs(real - n * p), 5 * std::sqrt(n * p * (1 - p)) + 1);
}

}  // namespace
}  // namespace teap::tinysql
