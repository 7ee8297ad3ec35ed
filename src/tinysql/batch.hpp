// Owns the token bookkeeping of a clean/corrupt pair (ids, prompt and answer positions, model inputs
// cut before the answer) and the making of a whole batch: a pure function of (tokenizer, cell
// settings, seed, batch index, batch size).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tinysql/corrupt.hpp"
#include "tokenizer/tokenizer.hpp"

namespace teap::tinysql {

// Draws of one item are retried this many times (each on its own stream) when the tokenizer breaks
// an invariant; then the batch fails with an InputError naming the word and the tokenizer.
inline constexpr int kMaxTriesPerItem = 64;

struct Example {
  Item item;
  std::string clean_prompt, corrupt_prompt;  // the prompts, ending in one space
  std::string clean_text, corrupt_text;      // prompt + SQL, the text that is tokenized
  std::string clean_word, corrupt_word, answer_word;
  // First token of " " + word, encoded without special tokens (so never Llama-3's begin-of-text).
  int clean_token_id = -1, corrupt_token_id = -1, answer_token_id = -1;
  // Positions in clean_ids. prompt_position: the clean word in the prompt (its second occurrence for
  // Def features without synonym flags, else the first). answer_position: where the answer word
  // starts in the SQL, found in the tokenized clean text itself (not the reference's
  // len(prompt) + index - 1, which is one too far under Llama-3).
  int prompt_position = -1, answer_position = -1;
  // The whole texts, encoded with the tokenizer's special tokens (Llama-3.2's begin-of-text).
  std::vector<int> clean_ids, corrupt_ids;
  // The model inputs: the above cut just before answer_position.
  std::vector<int> clean_input_ids, corrupt_input_ids;
};

struct Batch {
  std::vector<Example> examples;
  int length = 0;        // tokens of every clean and corrupt text of the batch
  int input_length = 0;  // tokens of every model input (= every example's answer_position)
};

// Tokenizes a pair and checks the spec's per-pair invariants: distinct clean/corrupt token ids,
// equal clean/corrupt lengths, 0 < prompt_position < answer_position, the clean token at
// prompt_position, the answer token at answer_position (the clean token too for Def features), and
// the corrupt text's tokens from answer_position on equal to the clean ones (same SQL, same target).
// On failure returns nullopt and puts a one-line reason naming the word into *why.
std::optional<Example> make_example(const tokenizer::Tokenizer& tok, const CellSettings& cell,
                                    const Pair& pair, std::string* why);

// Item i of the batch is drawn with Rng(stream_seed(seed, cell_key(cell), batch_index, i, attempt)),
// attempt = 0, 1, ... kMaxTriesPerItem-1, until make_example succeeds and the example has the
// batch's length and answer position; the first item fixes those. So item i does not depend on
// the batch size, and with the GPT-2, Qwen2 and Llama-3 tokenizers (where every word of the
// vocabulary is one token after a space) attempt 0 always succeeds and the texts are the same for
// all three. InputError for an invalid cell, batch_index < 0, batch_size < 1, or an item that
// cannot be filled.
Batch make_batch(const tokenizer::Tokenizer& tok, const CellSettings& cell, uint64_t seed, int batch_index,
                 int batch_size);

}  // namespace teap::tinysql
