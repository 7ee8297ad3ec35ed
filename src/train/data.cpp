#include "train/data.hpp"

#include <algorithm>
#include <stdexcept>

#include "tinysql/rng.hpp"
#include "util/error.hpp"

namespace teap::train {

namespace {

uint64_t stream_key(Stream s) {
  switch (s) {
    case Stream::Train: return tinysql::fnv1a64("teap-train/data");
    case Stream::Holdout: return tinysql::fnv1a64("teap-train/holdout");
    case Stream::Eval: return tinysql::fnv1a64("teap-train/eval");
  }
  throw std::logic_error("stream_key: unknown stream");
}

// True with probability p (to one part in 2^20).
bool bernoulli(tinysql::Rng& rng, double p) {
  constexpr uint64_t kScale = uint64_t(1) << 20;
  return rng.below(kScale) < static_cast<uint64_t>(p * static_cast<double>(kScale) + 0.5);
}

}  // namespace

Sequence make_sequence(const tokenizer::Tokenizer& tok, const DataOptions& data, uint64_t seed, Stream stream,
                       uint64_t batch, uint64_t index) {
  tinysql::Rng rng(tinysql::stream_seed(seed, stream_key(stream), batch, index, 0));
  Sequence s;
  s.num_fields = data.min_fields + static_cast<int>(rng.below(static_cast<uint64_t>(data.max_fields - data.min_fields + 1)));
  s.syn_table = bernoulli(rng, data.p_syn_table);
  s.syn_field = bernoulli(rng, data.p_syn_field);
  s.item = tinysql::draw_item(rng, s.num_fields);
  s.prompt = tinysql::make_prompt(tinysql::english(s.item, s.syn_field, s.syn_table),
                                  tinysql::create_statement(s.item));
  s.sql = tinysql::sql(s.item);
  s.ids = tok.encode(s.prompt + s.sql, true);
  // The prompt's trailing space belongs to the first response token (" SELECT" in GPT-2 BPE).
  const std::vector<int> head = tok.encode(s.prompt.substr(0, s.prompt.size() - 1), true);
  if (head.size() >= s.ids.size() || !std::equal(head.begin(), head.end(), s.ids.begin()))
    throw std::logic_error("make_sequence: tokenizer " + tok.family() + " merges across the prompt/response boundary");
  s.response_start = static_cast<int>(head.size());
  s.ids.push_back(end_of_text_id(tok));
  return s;
}

int end_of_text_id(const tokenizer::Tokenizer& tok) {
  for (const auto& t : tok.added_tokens())
    if (t.content == "<|endoftext|>") return t.id;
  if (const auto id = tok.token_id("<|endoftext|>")) return *id;
  fail_input(tok.source(), "tokenizer has no <|endoftext|> token");
}

void require_gpt2(const tokenizer::Tokenizer& tok) {
  if (tok.family() != "gpt2" || tok.vocab_size() != 50257)
    fail_input(tok.source(), "a " + tok.family() + " tokenizer with " + std::to_string(tok.vocab_size()) +
                                 " tokens; train needs GPT-2's (gpt2, 50257 tokens)");
}

void validate(const DataOptions& data) {
  if (data.min_fields < 1 || data.max_fields > 19 || data.min_fields > data.max_fields)
    throw InputError("fields per item: need 1 <= min (" + std::to_string(data.min_fields) + ") <= max (" +
                     std::to_string(data.max_fields) + ") <= 19");
  for (const double p : {data.p_syn_table, data.p_syn_field})
    if (!(p >= 0 && p <= 1)) throw InputError("synonym probability " + std::to_string(p) + " is not in [0, 1]");
}

}  // namespace teap::train
