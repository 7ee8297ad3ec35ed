// The texts of one item and of one pair, the feature table of the spec, and the input checks.
#include <gtest/gtest.h>

#include <algorithm>

#include "tinysql/corrupt.hpp"
#include "tinysql/item.hpp"
#include "tinysql/vocabulary.hpp"
#include "util/error.hpp"

namespace teap::tinysql {
namespace {

Item people_price_count() { return Item{"people", {"price", "count"}, {"INT", "CHAR"}}; }

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(Vocabulary, SizesAndSynonyms) {
  EXPECT_EQ(table_names().size(), 7u);
  EXPECT_EQ(table_synonyms().size(), 7u);
  EXPECT_EQ(novel_table_names().size(), 5u);
  EXPECT_EQ(field_names().size(), 19u);
  EXPECT_EQ(field_synonyms().size(), 19u);
  EXPECT_EQ(novel_field_names().size(), 5u);
  EXPECT_EQ(field_types().size(), 5u);
  EXPECT_EQ(table_synonym("links"), "connections");
  EXPECT_EQ(field_synonym("amount"), "total");
  EXPECT_EQ(field_synonym("total"), "sum");
  EXPECT_EQ(field_synonym("value"), "amount");
  EXPECT_THROW(field_synonym("people"), std::invalid_argument);
}

TEST(Item, Texts) {
  const Item item = people_price_count();
  EXPECT_EQ(english(item, false, false), "show me the price and count from the people table");
  EXPECT_EQ(english(item, true, true), "show me the cost and quantity from the children table");
  EXPECT_EQ(sql(item), "SELECT price, count FROM people");
  EXPECT_EQ(create_statement(item), "CREATE TABLE people ( price INT, count CHAR )");
  EXPECT_EQ(make_prompt(english(item, false, false), create_statement(item)),
            "### Instruction: show me the price and count from the people table ### Context: CREATE TABLE people "
            "( price INT, count CHAR ) ### Response: ");
  const Item three{"users", {"date", "size", "code"}, {"TIME", "INT", "JSON"}};
  EXPECT_EQ(english(three, false, false), "show me the date, size and code from the users table");
  EXPECT_EQ(english(three, true, false), "show me the time, dimension and reference from the users table");
  EXPECT_EQ(sql(three), "SELECT date, size, code FROM users");
  EXPECT_EQ(create_statement(three), "CREATE TABLE users ( date TIME, size INT, code JSON )");
}

TEST(Item, OneFieldQuirk) {
  // The reference joins an empty list before " and "; the prompt's collapse removes the double space.
  const Item one{"links", {"price"}, {"INT"}};
  EXPECT_EQ(english(one, false, false), "show me the  and price from the links table");
  EXPECT_EQ(make_prompt(english(one, false, false), create_statement(one)),
            "### Instruction: show me the and price from the links table ### Context: CREATE TABLE links ( price "
            "INT ) ### Response: ");
}

TEST(Item, CollapseWhitespace) {
  EXPECT_EQ(collapse_whitespace("  a \t\n b  c \r\n"), "a b c ");
  EXPECT_EQ(collapse_whitespace(""), " ");
  EXPECT_EQ(collapse_whitespace("x"), "x ");
}

TEST(Item, DrawRespectsCounts) {
  Rng rng(5);
  for (int k = 1; k <= 19; ++k) {
    const Item item = draw_item(rng, k);
    EXPECT_EQ(item.fields.size(), static_cast<size_t>(k));
    EXPECT_EQ(item.types.size(), static_cast<size_t>(k));
    for (const auto& f : item.fields) EXPECT_TRUE(contains(field_names(), f));
    for (const auto& t : item.types) EXPECT_TRUE(contains(field_types(), t));
    EXPECT_TRUE(contains(table_names(), item.table));
  }
  EXPECT_THROW(draw_item(rng, 0), std::invalid_argument);
  EXPECT_THROW(draw_item(rng, 20), std::invalid_argument);
}

TEST(Corrupt, ReplaceAllIsPythonReplace) {
  EXPECT_EQ(replace_all("a total and total", "total", "sum"), "a sum and sum");
  EXPECT_EQ(replace_all("aaa", "aa", "b"), "ba");
  EXPECT_EQ(replace_all("none", "x", "y"), "none");
}

TEST(Corrupt, FeatureNames) {
  for (const Feature f : all_features()) EXPECT_EQ(parse_feature(feature_name(f)), f);
  try {
    parse_feature("DefCreateTable");
    FAIL() << "no InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("DefCreateTable"), std::string::npos);
    EXPECT_NE(msg.find("EngTableName, EngFieldName, DefTableName, DefFieldName"), std::string::npos) << msg;
  }
  EXPECT_THROW(parse_feature("engtablename"), InputError);
}

TEST(Corrupt, Validate) {
  CellSettings cell;
  for (const int k : {0, 20, -1}) {
    cell.num_fields = k;
    try {
      validate(cell);
      FAIL() << "no InputError for " << k;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(k)), std::string::npos) << e.what();
    }
  }
  for (const int k : {1, 19}) {
    cell.num_fields = k;
    EXPECT_NO_THROW(validate(cell));
  }
  // All 19 fields in the item leave no clean field name to corrupt with.
  cell.num_fields = 19;
  cell.feature = Feature::DefFieldName;
  EXPECT_THROW(validate(cell), InputError);
  cell.use_novel_names = true;
  EXPECT_NO_THROW(validate(cell));
  cell.feature = Feature::EngFieldName;
  cell.use_novel_names = false;
  EXPECT_THROW(validate(cell), InputError);
  cell.use_synonyms_field = true;
  EXPECT_NO_THROW(validate(cell));
  cell.num_fields = 18;
  cell.use_synonyms_field = false;
  EXPECT_NO_THROW(validate(cell));
}

TEST(Corrupt, PairsOfTheFourFeatures) {
  const Item item = people_price_count();
  CellSettings cell;
  cell.feature = Feature::EngTableName;
  Pair p = build_pair(cell, item, "orders");
  EXPECT_EQ(p.clean_word, "people");
  EXPECT_EQ(p.answer_word, "people");
  EXPECT_EQ(p.corrupt_prompt,
            "### Instruction: show me the price and count from the orders table ### Context: CREATE TABLE people "
            "( price INT, count CHAR ) ### Response: ");
  EXPECT_EQ(p.sql.substr(p.answer_offset), " people");

  cell.feature = Feature::EngFieldName;
  p = build_pair(cell, item, "total");
  EXPECT_EQ(p.clean_word, "price");
  EXPECT_EQ(p.answer_word, "price");
  EXPECT_EQ(p.corrupt_prompt,
            "### Instruction: show me the total and count from the people table ### Context: CREATE TABLE people "
            "( price INT, count CHAR ) ### Response: ");
  EXPECT_EQ(p.sql.substr(p.answer_offset, 6), " price");

  cell.feature = Feature::DefTableName;
  p = build_pair(cell, item, "links");
  EXPECT_EQ(p.clean_word, "people");
  EXPECT_EQ(p.corrupt_prompt,
            "### Instruction: show me the price and count from the people table ### Context: CREATE TABLE links "
            "( price INT, count CHAR ) ### Response: ");

  cell.feature = Feature::DefFieldName;
  p = build_pair(cell, item, "size");
  EXPECT_EQ(p.clean_word, "price");
  EXPECT_EQ(p.corrupt_prompt,
            "### Instruction: show me the price and count from the people table ### Context: CREATE TABLE people "
            "( size INT, count CHAR ) ### Response: ");
  EXPECT_EQ(p.clean_prompt + p.sql,
            "### Instruction: show me the price and count from the people table ### Context: CREATE TABLE people "
            "( price INT, count CHAR ) ### Response: SELECT price, count FROM people");
}

TEST(Corrupt, SynonymModesShowSynonymsAndKeepRealAnswers) {
  const Item item{"people", {"amount", "total"}, {"INT", "CHAR"}};
  CellSettings cell;
  cell.use_synonyms_field = true;
  cell.use_synonyms_table = true;
  cell.feature = Feature::EngTableName;
  Pair p = build_pair(cell, item, "people");  // the quirk: the real name is a candidate
  EXPECT_EQ(p.clean_word, "children");
  EXPECT_EQ(p.answer_word, "people");
  EXPECT_NE(p.corrupt_prompt.find("from the people table"), std::string::npos);
  EXPECT_TRUE(contains(corrupt_candidates(cell, item), "people"));
  EXPECT_EQ(corrupt_candidates(cell, item).size(), 7u);

  cell.feature = Feature::EngFieldName;
  p = build_pair(cell, item, "price");
  EXPECT_EQ(p.clean_word, "total");  // amount's synonym
  EXPECT_EQ(p.answer_word, "amount");
  // Shown words (total, sum) are excluded, the real name amount is not.
  const auto c = corrupt_candidates(cell, item);
  EXPECT_FALSE(contains(c, "total"));
  EXPECT_TRUE(contains(c, "amount"));
  EXPECT_EQ(c.size(), 18u);

  cell.feature = Feature::DefFieldName;
  p = build_pair(cell, item, "price");
  EXPECT_EQ(p.clean_word, "amount");
  // The Create statement changes; the English "total and sum" does not.
  EXPECT_NE(p.corrupt_prompt.find("show me the total and sum from the children table"), std::string::npos);
  EXPECT_NE(p.corrupt_prompt.find("( price INT, total CHAR )"), std::string::npos);
}

TEST(Corrupt, CandidateListsPerFeature) {
  const Item item{"orders", {"status", "label", "size"}, {"INT", "INT", "INT"}};
  CellSettings cell;
  cell.num_fields = 3;
  cell.feature = Feature::EngTableName;
  EXPECT_EQ(corrupt_candidates(cell, item).size(), 6u);
  EXPECT_FALSE(contains(corrupt_candidates(cell, item), "orders"));
  cell.feature = Feature::DefTableName;
  EXPECT_FALSE(contains(corrupt_candidates(cell, item), "orders"));
  cell.use_synonyms_table = true;  // Def excludes the real name whatever is shown
  EXPECT_FALSE(contains(corrupt_candidates(cell, item), "orders"));
  EXPECT_EQ(corrupt_candidates(cell, item).size(), 6u);
  cell.feature = Feature::EngFieldName;
  EXPECT_EQ(corrupt_candidates(cell, item).size(), 16u);
  cell.feature = Feature::DefFieldName;
  EXPECT_EQ(corrupt_candidates(cell, item).size(), 16u);
  cell.use_novel_names = true;
  EXPECT_EQ(corrupt_candidates(cell, item), novel_field_names());
  cell.feature = Feature::DefTableName;
  EXPECT_EQ(corrupt_candidates(cell, item), novel_table_names());
}

}  // namespace
}  // namespace teap::tinysql
