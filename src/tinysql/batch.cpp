#include "tinysql/batch.hpp"

#include <algorithm>

#include "util/error.hpp"

namespace teap::tinysql {

namespace {

std::string quoted(const std::string& word) { return "' " + word + "'"; }

// The words of a pair that the tokenizer splits after a space, for messages.
std::string split_words(const tokenizer::Tokenizer& tok, const CellSettings& cell, const Pair& pair) {
  std::vector<std::string> words{pair.item.table, shown_table(pair.item, cell.use_synonyms_table), pair.corrupt_word};
  for (const auto& w : pair.item.fields) words.push_back(w);
  for (const auto& w : shown_fields(pair.item, cell.use_synonyms_field)) words.push_back(w);
  for (const auto& w : pair.item.types) words.push_back(w);
  std::string out;
  std::vector<std::string> seen;
  for (const auto& w : words) {
    if (std::find(seen.begin(), seen.end(), w) != seen.end()) continue;
    seen.push_back(w);
    const size_t n = tok.encode(" " + w, false).size();
    if (n != 1) out += std::string(out.empty() ? "" : ", ") + quoted(w) + " is " + std::to_string(n) + " tokens";
  }
  return out.empty() ? "" : " (" + out + ")";
}

int first_token(const tokenizer::Tokenizer& tok, const std::string& word) {
  const auto ids = tok.encode(" " + word, false);
  return ids.empty() ? -1 : ids.front();
}

}  // namespace

std::optional<Example> make_example(const tokenizer::Tokenizer& tok, const CellSettings& cell,
                                    const Pair& pair, std::string* why) {
  auto fail = [&](const std::string& reason) -> std::optional<Example> {
    if (why) *why = reason;
    return std::nullopt;
  };
  Example ex;
  ex.item = pair.item;
  ex.clean_prompt = pair.clean_prompt;
  ex.corrupt_prompt = pair.corrupt_prompt;
  ex.clean_text = pair.clean_prompt + pair.sql;
  ex.corrupt_text = pair.corrupt_prompt + pair.sql;
  ex.clean_word = pair.clean_word;
  ex.corrupt_word = pair.corrupt_word;
  ex.answer_word = pair.answer_word;
  ex.clean_token_id = first_token(tok, pair.clean_word);
  ex.corrupt_token_id = first_token(tok, pair.corrupt_word);
  ex.answer_token_id = first_token(tok, pair.answer_word);
  if (ex.clean_word == ex.corrupt_word) return fail("clean and corrupt word are both " + quoted(ex.clean_word));
  if (ex.clean_text == ex.corrupt_text)
    return fail("replacing " + quoted(ex.clean_word) + " by " + quoted(ex.corrupt_word) + " leaves the prompt as it is");
  if (ex.clean_token_id < 0 || ex.corrupt_token_id < 0 || ex.answer_token_id < 0)
    return fail("a word encodes to no token: " + quoted(ex.clean_word) + ", " + quoted(ex.corrupt_word) + ", " +
                quoted(ex.answer_word));
  if (ex.clean_token_id == ex.corrupt_token_id)
    return fail(quoted(ex.clean_word) + " and " + quoted(ex.corrupt_word) + " both begin with token '" +
                tok.token(ex.clean_token_id) + "' (" + std::to_string(ex.clean_token_id) + ")");

  ex.clean_ids = tok.encode(ex.clean_text, true);
  ex.corrupt_ids = tok.encode(ex.corrupt_text, true);
  if (ex.clean_ids.size() != ex.corrupt_ids.size())
    return fail("clean text with " + quoted(ex.clean_word) + " is " + std::to_string(ex.clean_ids.size()) +
                " tokens, corrupt text with " + quoted(ex.corrupt_word) + " is " +
                std::to_string(ex.corrupt_ids.size()) + split_words(tok, cell, pair));
  if (ex.clean_ids == ex.corrupt_ids)
    return fail("clean text with " + quoted(ex.clean_word) + " and corrupt text with " + quoted(ex.corrupt_word) +
                " encode to the same tokens");

  // The answer is where the tokens of the text up to it end, provided they are a prefix of the
  // whole text's tokens (the tokenizer does not merge across that boundary).
  const auto before_answer = tok.encode(pair.clean_prompt + pair.sql.substr(0, pair.answer_offset), true);
  const size_t ap = before_answer.size();
  if (ap >= ex.clean_ids.size() || !std::equal(before_answer.begin(), before_answer.end(), ex.clean_ids.begin()) ||
      ex.clean_ids[ap] != ex.answer_token_id)
    return fail("answer " + quoted(ex.answer_word) + " does not begin a token of its own in the SQL" +
                split_words(tok, cell, pair));
  ex.answer_position = static_cast<int>(ap);
  if (!std::equal(ex.clean_ids.begin() + ex.answer_position, ex.clean_ids.end(),
                  ex.corrupt_ids.begin() + ex.answer_position))
    return fail("replacing " + quoted(ex.clean_word) + " by " + quoted(ex.corrupt_word) +
                " changes the tokens of the SQL" + split_words(tok, cell, pair));
  if (is_def_feature(cell.feature) && ex.clean_ids[ap] != ex.clean_token_id)
    return fail("clean word " + quoted(ex.clean_word) + " is not the answer's token");

  const bool any_synonyms = cell.use_synonyms_field || cell.use_synonyms_table;
  const int occurrence = (is_def_feature(cell.feature) && !any_synonyms) ? 2 : 1;
  const auto prompt_ids = tok.encode(pair.clean_prompt, true);
  int seen = 0;
  for (size_t i = 0; i < prompt_ids.size() && i < ex.clean_ids.size(); ++i) {
    if (prompt_ids[i] == ex.clean_token_id && ++seen == occurrence) {
      ex.prompt_position = static_cast<int>(i);
      break;
    }
  }
  if (ex.prompt_position < 0)
    return fail("clean word " + quoted(ex.clean_word) + " (token " + std::to_string(ex.clean_token_id) +
                ") occurs " + std::to_string(seen) + " times in the tokenized prompt, occurrence " +
                std::to_string(occurrence) + " is needed" + split_words(tok, cell, pair));
  if (ex.clean_ids[static_cast<size_t>(ex.prompt_position)] != ex.clean_token_id ||
      !(0 < ex.prompt_position && ex.prompt_position < ex.answer_position))
    return fail("clean word " + quoted(ex.clean_word) + " at prompt position " + std::to_string(ex.prompt_position) +
                " is not before the answer position " + std::to_string(ex.answer_position) + " in the text");

  ex.clean_input_ids.assign(ex.clean_ids.begin(), ex.clean_ids.begin() + ex.answer_position);
  ex.corrupt_input_ids.assign(ex.corrupt_ids.begin(), ex.corrupt_ids.begin() + ex.answer_position);
  return ex;
}

Batch make_batch(const tokenizer::Tokenizer& tok, const CellSettings& cell, uint64_t seed, int batch_index,
                 int batch_size) {
  validate(cell);
  if (batch_index < 0) throw InputError("batch index " + std::to_string(batch_index) + " is negative");
  if (batch_size < 1) throw InputError("batch size " + std::to_string(batch_size) + " is not at least 1");
  const uint64_t key = cell_key(cell);
  Batch batch;
  for (int i = 0; i < batch_size; ++i) {
    std::string why;
    bool done = false;
    for (int attempt = 0; attempt < kMaxTriesPerItem && !done; ++attempt) {
      Rng rng(stream_seed(seed, key, static_cast<uint64_t>(batch_index), static_cast<uint64_t>(i),
                          static_cast<uint64_t>(attempt)));
      const Pair pair = draw_pair(cell, rng);
      auto ex = make_example(tok, cell, pair, &why);
      if (!ex) continue;
      const bool fits =
          static_cast<int>(ex->clean_ids.size()) == batch.length && ex->answer_position == batch.input_length;
      if (i > 0 && !fits) {
        why = "text with " + quoted(ex->clean_word) + " is " + std::to_string(ex->clean_ids.size()) +
              " tokens with the answer at " + std::to_string(ex->answer_position) + ", the batch's first item " +
              std::to_string(batch.length) + " with the answer at " + std::to_string(batch.input_length) +
              split_words(tok, cell, pair);
        continue;
      }
      if (i == 0) {
        batch.length = static_cast<int>(ex->clean_ids.size());
        batch.input_length = ex->answer_position;
      }
      batch.examples.push_back(std::move(*ex));
      done = true;
    }
    if (!done)
      throw InputError("tokenizer " + tok.family() + " (" + tok.source() + ") cannot make item " + std::to_string(i) +
                       " of batch " + std::to_string(batch_index) + " for " + cell_key_string(cell) + " in " +
                       std::to_string(kMaxTriesPerItem) + " tries; last: " + why);
  }
  return batch;
}

}  // namespace teap::tinysql
