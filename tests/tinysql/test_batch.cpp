// Token bookkeeping and whole batches under the real tokenizers: the spec's GPT-2 numbers, every
// invariant for every cell shape, reproducibility, and the failures that must be InputErrors.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <unistd.h>

#include "tinysql/batch.hpp"
#include "tinysql/vocabulary.hpp"
#include "tokenizers.hpp"
#include "util/error.hpp"

namespace teap::tinysql {
namespace {

using testing::cached_tokenizer;

const std::vector<std::string> kTokenizers{"gpt2", "qwen2", "llama3", "llama3-bos"};

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

int count_of(const std::vector<int>& ids, size_t end, int id) {
  return static_cast<int>(std::count(ids.begin(), ids.begin() + static_cast<long>(end), id));
}

const Item kPeople{"people", {"price", "count"}, {"INT", "CHAR"}};

TEST(Batch, SpecExampleIdForId) {
  const auto& tok = cached_tokenizer("gpt2");
  const std::vector<int> want{21017, 46486, 25,    905,   502,   262,   2756,  290,   954,  422,  262,  661,
                              3084,  44386, 30532, 25,    29244, 6158,  43679, 661,   357,  2756, 17828, 11,
                              954,   28521, 1267,  44386, 18261, 25,    33493, 2756,  11,   954,  16034, 661};
  const std::string corrupt_words[] = {"orders", "total", "links", "size"};
  const int want_prompt[] = {11, 6, 19, 21};
  const int want_answer[] = {35, 31, 35, 31};
  for (size_t f = 0; f < 4; ++f) {
    CellSettings cell;
    cell.feature = all_features()[f];
    std::string why;
    const auto ex = make_example(tok, cell, build_pair(cell, kPeople, corrupt_words[f]), &why);
    ASSERT_TRUE(ex) << why;
    EXPECT_EQ(ex->clean_ids, want) << feature_name(cell.feature);
    EXPECT_EQ(ex->prompt_position, want_prompt[f]) << feature_name(cell.feature);
    EXPECT_EQ(ex->answer_position, want_answer[f]) << feature_name(cell.feature);
    EXPECT_EQ(ex->clean_input_ids, std::vector<int>(want.begin(), want.begin() + want_answer[f]));
    EXPECT_EQ(ex->corrupt_ids.size(), 36u);
    EXPECT_EQ(ex->corrupt_input_ids.size(), static_cast<size_t>(want_answer[f]));
    EXPECT_EQ(ex->clean_token_id, want[static_cast<size_t>(want_prompt[f])]);
  }
}

TEST(Batch, Gpt2TwoFieldsLengthsAndPositions) {
  const auto& tok = cached_tokenizer("gpt2");
  const int want_prompt[] = {11, 6, 19, 21};
  const int want_answer[] = {35, 31, 35, 31};
  for (const CellSettings& cell : all_cells({2})) {
    const auto f = static_cast<size_t>(cell.feature);
    const Batch batch = make_batch(tok, cell, 5, 0, 30);
    EXPECT_EQ(batch.length, 36) << cell_key_string(cell);
    EXPECT_EQ(batch.input_length, want_answer[f]) << cell_key_string(cell);
    for (const auto& ex : batch.examples) {
      EXPECT_EQ(ex.clean_ids.size(), 36u);
      EXPECT_EQ(ex.answer_position, want_answer[f]);
      // The spec's positions hold for every flag that leaves the clean word where the plain prompt
      // has it; the rest follows the reference's first-occurrence rule (next test).
      const bool plain = !cell.use_synonyms_field && !cell.use_synonyms_table;
      const bool shown_in_place = plain || (cell.feature == Feature::EngTableName) ||
                                  (cell.feature == Feature::EngFieldName) ||
                                  (cell.feature == Feature::DefTableName && cell.use_synonyms_table);
      if (shown_in_place) {
        EXPECT_EQ(ex.prompt_position, want_prompt[f]) << cell_key_string(cell) << " " << ex.clean_text;
      }
    }
  }
}

TEST(Batch, PromptPositionFirstOccurrenceRuleWithSynonyms) {
  const auto& tok = cached_tokenizer("gpt2");
  std::string why;
  CellSettings cell;
  // DefTableName with field synonyms only: the real table name is still in the English, and the
  // reference takes its first occurrence there.
  cell.feature = Feature::DefTableName;
  cell.use_synonyms_field = true;
  auto ex = make_example(tok, cell, build_pair(cell, kPeople, "links"), &why);
  ASSERT_TRUE(ex) << why;
  EXPECT_EQ(ex->prompt_position, 11);
  // DefFieldName with field synonyms, first field total and the other amount (shown as "total"):
  // the first " total" is the English's, the spec's third quirk.
  cell.feature = Feature::DefFieldName;
  const Item quirk{"people", {"total", "amount"}, {"INT", "CHAR"}};
  ex = make_example(tok, cell, build_pair(cell, quirk, "price"), &why);
  ASSERT_TRUE(ex) << why;
  EXPECT_EQ(ex->clean_text,
            "### Instruction: show me the sum and total from the people table ### Context: CREATE TABLE people ( "
            "total INT, amount CHAR ) ### Response: SELECT total, amount FROM people");
  EXPECT_EQ(ex->prompt_position, 8);
  EXPECT_EQ(ex->answer_position, 31);
  // Without the quirk the first occurrence of the real name is in the Create statement.
  ex = make_example(tok, cell, build_pair(cell, kPeople, "size"), &why);
  ASSERT_TRUE(ex) << why;
  EXPECT_EQ(ex->prompt_position, 21);
}

void check_invariants(const tokenizer::Tokenizer& tok, const CellSettings& cell, const Batch& batch, int batch_size) {
  const std::string what = cell_key_string(cell) + " under " + tok.family() + " " + tok.source();
  ASSERT_EQ(batch.examples.size(), static_cast<size_t>(batch_size)) << what;
  const bool def = is_def_feature(cell.feature);
  const bool plain = !cell.use_synonyms_field && !cell.use_synonyms_table;
  for (const auto& ex : batch.examples) {
    const std::string item = what + ": " + ex.clean_text + " / " + ex.corrupt_word;
    EXPECT_NE(ex.clean_word, ex.corrupt_word) << item;
    EXPECT_NE(ex.clean_token_id, ex.corrupt_token_id) << item;
    EXPECT_NE(ex.clean_token_id, -1) << item;
    EXPECT_NE(ex.corrupt_token_id, -1) << item;
    EXPECT_NE(ex.clean_text, ex.corrupt_text) << item;
    EXPECT_LT(0, ex.prompt_position) << item;
    EXPECT_LT(ex.prompt_position, ex.answer_position) << item;
    // Equal lengths, and the batch's.
    EXPECT_EQ(ex.clean_ids.size(), ex.corrupt_ids.size()) << item;
    EXPECT_EQ(static_cast<int>(ex.clean_ids.size()), batch.length) << item;
    EXPECT_EQ(ex.answer_position, batch.input_length) << item;
    EXPECT_EQ(ex.clean_ids, tok.encode(ex.clean_text, true)) << item;
    EXPECT_EQ(ex.corrupt_ids, tok.encode(ex.corrupt_text, true)) << item;
    // The ids are the first tokens of " " + word, never a begin-of-text.
    EXPECT_EQ(ex.clean_token_id, tok.encode(" " + ex.clean_word, false).front()) << item;
    EXPECT_EQ(ex.corrupt_token_id, tok.encode(" " + ex.corrupt_word, false).front()) << item;
    for (const int prefix : tok.prefix_ids()) EXPECT_NE(ex.clean_token_id, prefix) << item;
    // The clean token sits at prompt_position of the clean prompt, at the right occurrence.
    const auto prompt_ids = tok.encode(ex.clean_prompt, true);
    ASSERT_LT(static_cast<size_t>(ex.prompt_position), prompt_ids.size()) << item;
    EXPECT_EQ(prompt_ids[static_cast<size_t>(ex.prompt_position)], ex.clean_token_id) << item;
    EXPECT_EQ(ex.clean_ids[static_cast<size_t>(ex.prompt_position)], ex.clean_token_id) << item;
    EXPECT_EQ(count_of(prompt_ids, static_cast<size_t>(ex.prompt_position), ex.clean_token_id), def && plain ? 1 : 0)
        << item;
    // The answer token sits at answer_position; for Def features it is the clean token too.
    EXPECT_EQ(ex.clean_ids[static_cast<size_t>(ex.answer_position)], ex.answer_token_id) << item;
    EXPECT_EQ(ex.answer_token_id, tok.encode(" " + ex.answer_word, false).front()) << item;
    if (def) {
      EXPECT_EQ(ex.clean_ids[static_cast<size_t>(ex.answer_position)], ex.clean_token_id) << item;
    }
    // The answer position is the answer's place in the SQL: the reference's formula, which is
    // right without a begin-of-text and one too far with one.
    const auto sql_ids = tok.encode(ex.clean_text.substr(ex.clean_prompt.size()), true);
    const auto in_sql = std::find(sql_ids.begin(), sql_ids.end(), ex.answer_token_id) - sql_ids.begin();
    const int reference = static_cast<int>(prompt_ids.size() + static_cast<size_t>(in_sql)) - 1;
    EXPECT_EQ(ex.answer_position, reference - static_cast<int>(tok.prefix_ids().size())) << item;
    // Model inputs are the texts cut before the answer; they differ only in the prompt.
    EXPECT_EQ(ex.clean_input_ids, std::vector<int>(ex.clean_ids.begin(), ex.clean_ids.begin() + ex.answer_position));
    EXPECT_EQ(ex.corrupt_input_ids,
              std::vector<int>(ex.corrupt_ids.begin(), ex.corrupt_ids.begin() + ex.answer_position));
    EXPECT_NE(ex.clean_input_ids, ex.corrupt_input_ids) << item;
    EXPECT_TRUE(std::equal(tok.prefix_ids().begin(), tok.prefix_ids().end(), ex.clean_input_ids.begin())) << item;
  }
}

TEST(Batch, InvariantsForEveryCellShapeAndTokenizer) {
  const int batch_size = 6;
  std::map<std::string, std::vector<Batch>> by_tokenizer;
  for (const auto& name : kTokenizers) {
    const auto& tok = cached_tokenizer(name);
    for (const CellSettings& cell : all_cells({1, 2, 3, 4})) {
      const Batch batch = make_batch(tok, cell, 17, 3, batch_size);
      check_invariants(tok, cell, batch, batch_size);
      by_tokenizer[name].push_back(batch);
    }
  }
  // Every word is one token after a space in all three families, so no item is resampled and the
  // texts are the same under every tokenizer; Llama-3.2's begin-of-text shifts positions by one.
  const auto& gpt2 = by_tokenizer["gpt2"];
  for (const auto& name : kTokenizers)
    for (size_t b = 0; b < gpt2.size(); ++b)
      for (size_t i = 0; i < gpt2[b].examples.size(); ++i)
        EXPECT_EQ(by_tokenizer[name][b].examples[i].clean_text, gpt2[b].examples[i].clean_text) << name;
  const auto& l3 = by_tokenizer["llama3"];
  const auto& bos = by_tokenizer["llama3-bos"];
  for (size_t b = 0; b < l3.size(); ++b) {
    EXPECT_EQ(bos[b].length, l3[b].length + 1);
    for (size_t i = 0; i < l3[b].examples.size(); ++i) {
      EXPECT_EQ(bos[b].examples[i].prompt_position, l3[b].examples[i].prompt_position + 1);
      EXPECT_EQ(bos[b].examples[i].answer_position, l3[b].examples[i].answer_position + 1);
      EXPECT_EQ(bos[b].examples[i].clean_token_id, l3[b].examples[i].clean_token_id);
      EXPECT_EQ(bos[b].examples[i].clean_input_ids.front(), 128000);
    }
  }
}

bool same_batch(const Batch& a, const Batch& b) {
  if (a.length != b.length || a.input_length != b.input_length || a.examples.size() != b.examples.size()) return false;
  for (size_t i = 0; i < a.examples.size(); ++i) {
    const auto& x = a.examples[i];
    const auto& y = b.examples[i];
    if (x.clean_text != y.clean_text || x.corrupt_text != y.corrupt_text || x.clean_input_ids != y.clean_input_ids ||
        x.corrupt_input_ids != y.corrupt_input_ids || x.prompt_position != y.prompt_position ||
        x.clean_token_id != y.clean_token_id || x.corrupt_token_id != y.corrupt_token_id)
      return false;
  }
  return true;
}

TEST(Batch, Reproducible) {
  const auto& tok = cached_tokenizer("qwen2");
  CellSettings cell;
  cell.feature = Feature::DefFieldName;
  cell.num_fields = 3;
  const Batch a = make_batch(tok, cell, 42, 7, 20);
  EXPECT_TRUE(same_batch(a, make_batch(tok, cell, 42, 7, 20)));
  EXPECT_FALSE(same_batch(a, make_batch(tok, cell, 42, 8, 20)));
  EXPECT_FALSE(same_batch(a, make_batch(tok, cell, 43, 7, 20)));
  cell.use_novel_names = true;
  EXPECT_FALSE(same_batch(a, make_batch(tok, cell, 42, 7, 20)));
  cell.use_novel_names = false;
  // Item i does not depend on the batch size.
  const Batch small = make_batch(tok, cell, 42, 7, 5);
  Batch head = a;
  head.examples.resize(5);
  EXPECT_TRUE(same_batch(small, head));
  // Different items within a batch (20 identical draws would be a broken stream derivation).
  std::set<std::string> texts;
  for (const auto& ex : a.examples) texts.insert(ex.clean_text);
  EXPECT_GT(texts.size(), 15u);
}

void expect_input_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL() << "no InputError (wanted one mentioning '" << needle << "')";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "not one line: " << e.what();
  }
}

TEST(Batch, BadInput) {
  const auto& tok = cached_tokenizer("gpt2");
  CellSettings cell;
  expect_input_error([&] { make_batch(tok, cell, 0, 0, 0); }, "batch size 0");
  expect_input_error([&] { make_batch(tok, cell, 0, -1, 3); }, "-1");
  cell.num_fields = 0;
  expect_input_error([&] { make_batch(tok, cell, 0, 0, 3); }, "num_fields 0");
  cell.num_fields = 20;
  expect_input_error([&] { make_batch(tok, cell, 0, 0, 3); }, "num_fields 20");
  expect_input_error([] { parse_feature("TableName"); }, "EngTableName, EngFieldName, DefTableName, DefFieldName");
}

TEST(Batch, NineteenFields) {
  // The largest item: all fields in random order, under the llama3 begin-of-text tokenizer.
  const auto& tok = cached_tokenizer("llama3-bos");
  for (const Feature f : all_features()) {
    CellSettings cell;
    cell.feature = f;
    cell.num_fields = 19;
    cell.use_novel_names = true;
    check_invariants(tok, cell, make_batch(tok, cell, 1, 0, 4), 4);
  }
}

// A byte-level BPE with the 256 byte tokens and no merges: every word is one token per letter, all
// beginning with the space token, so no clean/corrupt pair has distinct token ids.
std::string write_bytes_only_tokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer::bytes_to_unicode(std::string(1, static_cast<char>(b)))] = b;
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  const auto dir = std::filesystem::temp_directory_path() / ("teap-bytes-only-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = (dir / "tokenizer.json").string();
  std::ofstream(path) << j.dump();
  return path;
}

TEST(Batch, TokenizerThatCannotFormPairsIsAnInputError) {
  const std::string path = write_bytes_only_tokenizer();
  const auto tok = tokenizer::Tokenizer::load(path);
  for (const Feature f : all_features()) {
    CellSettings cell;
    cell.feature = f;
    try {
      make_batch(tok, cell, 0, 0, 2);
      FAIL() << "no InputError";
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(tok.source()), std::string::npos) << msg;
      EXPECT_NE(msg.find(tok.family()), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::to_string(kMaxTriesPerItem) + " tries"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      bool names_a_word = false;
      for (const auto* list : {&table_names(), &field_names()})
        for (const auto& w : *list) names_a_word |= msg.find("' " + w + "'") != std::string::npos;
      EXPECT_TRUE(names_a_word) << msg;
    }
  }
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

}  // namespace
}  // namespace teap::tinysql
