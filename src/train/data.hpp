// Owns what `train` learns from and `eval` tests on: TinySQL CS1-style sequences (prompt + SQL +
// end-of-text) drawn from the generator's clean vocabulary, 1 to 3 fields, table and field synonyms
// shown in the English with some probability, novel words never. Every sequence is a pure function
// of (seed, stream, batch, index), so training is reproducible and evaluation items come from
// streams that training never draws from. Knows nothing of LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tinysql/item.hpp"
#include "tokenizer/tokenizer.hpp"

namespace teap::train {

struct DataOptions {
  int min_fields = 1;
  int max_fields = 3;
  double p_syn_table = 0.3;  // probability that the English shows the table's synonym
  double p_syn_field = 0.3;  // probability that it shows every field's synonym (one flag per item)
};

// Independent families of draws. Train: the batches of training; Holdout: the check at the end of
// training (training.json); Eval: `tinysql-eap eval`.
enum class Stream { Train, Holdout, Eval };

struct Sequence {
  tinysql::Item item;
  int num_fields = 0;
  bool syn_table = false, syn_field = false;
  std::string prompt;           // "### Instruction: ... ### Response: " (ends in one space)
  std::string sql;              // "SELECT a, b FROM t"
  std::vector<int> ids;         // tokens of prompt + SQL, then the end-of-text id
  int response_start = 0;       // index in ids of the first response token (" SELECT")
};

// Item `index` of batch `batch` of `stream`: Rng(stream_seed(seed, key(stream), batch, index, 0))
// draws the number of fields (uniform in [min_fields, max_fields]), the table-synonym flag, the
// field-synonym flag, then the item (tinysql::draw_item). std::logic_error when the tokenizer merges
// across the prompt/response boundary (never with GPT-2's).
Sequence make_sequence(const tokenizer::Tokenizer& tok, const DataOptions& data, uint64_t seed, Stream stream,
                       uint64_t batch, uint64_t index);

// The tokenizer's <|endoftext|> id; InputError naming the tokenizer when it has none.
int end_of_text_id(const tokenizer::Tokenizer& tok);

// InputError unless `tok` is GPT-2's (family "gpt2", 50257 tokens): the model family trained here
// is BM1's, whose vocabulary is GPT-2's.
void require_gpt2(const tokenizer::Tokenizer& tok);

// InputError naming the option when the data options are out of range.
void validate(const DataOptions& data);

}  // namespace teap::train
