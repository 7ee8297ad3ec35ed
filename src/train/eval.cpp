// `eval`: exact match of greedy completions on fresh items and last-position accuracy on the four
// features' clean prompts; also the packing and response logits that training uses.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "model/model.hpp"
#include "model/products.hpp"
#include "tinysql/batch.hpp"
#include "train/internal.hpp"
#include "train/train.hpp"
#include "util/error.hpp"

namespace teap::train {
namespace detail {

Packed pack(const std::vector<Sequence>& seqs, int pad_id) {
  const int64_t B = static_cast<int64_t>(seqs.size());
  int64_t L = 0;
  for (const auto& s : seqs) L = std::max<int64_t>(L, static_cast<int64_t>(s.ids.size()));
  std::vector<int64_t> ids(static_cast<size_t>(B * L), pad_id), positions, targets;
  Packed p;
  for (int64_t b = 0; b < B; ++b) {
    const auto& s = seqs[static_cast<size_t>(b)];
    std::copy(s.ids.begin(), s.ids.end(), ids.begin() + b * L);
    for (int64_t t = s.response_start - 1; t + 1 < static_cast<int64_t>(s.ids.size()); ++t) {
      positions.push_back(b * L + t);
      targets.push_back(s.ids[static_cast<size_t>(t + 1)]);
      p.owner.push_back(static_cast<int>(b));
    }
  }
  p.ids = at::tensor(ids, at::kLong).view({B, L});
  p.positions = at::tensor(positions, at::kLong);
  p.targets = at::tensor(targets, at::kLong);
  return p;
}

at::Tensor response_logits(const model::Model& m, const Packed& p) {
  const at::Tensor hidden = model::forward(m, p.ids);  // [B, L, d]
  const at::Tensor h = hidden.reshape({-1, hidden.size(2)}).index_select(0, p.positions.to(m.device));
  return model::linear(h.to(m.dtype), m.weights.lm_head).to(at::kFloat);  // [N, vocab]
}

ExactMatch exact_match(const model::Model& m, const tokenizer::Tokenizer& tok, const DataOptions& data, uint64_t seed,
                       Stream stream, int n, int chunk) {
  at::NoGradGuard no_grad;
  const int eot = end_of_text_id(tok);
  std::vector<Sequence> seqs;
  seqs.reserve(static_cast<size_t>(n));
  std::map<size_t, std::vector<int>> by_length;  // items of one length go together: no padding
  for (int i = 0; i < n; ++i) {
    seqs.push_back(make_sequence(tok, data, seed, stream, 0, static_cast<uint64_t>(i)));
    by_length[seqs.back().ids.size()].push_back(i);
  }
  std::vector<char> ok(static_cast<size_t>(n), 1);
  for (const auto& [length, members] : by_length) {
    for (size_t from = 0; from < members.size(); from += static_cast<size_t>(chunk)) {
      const size_t to = std::min(members.size(), from + static_cast<size_t>(chunk));
      std::vector<Sequence> part;
      for (size_t k = from; k < to; ++k) part.push_back(seqs[static_cast<size_t>(members[k])]);
      const Packed p = pack(part, eot);
      const at::Tensor hit = (response_logits(m, p).argmax(1).cpu() == p.targets).to(at::kByte).contiguous();
      const uint8_t* h = hit.data_ptr<uint8_t>();
      for (size_t j = 0; j < p.owner.size(); ++j)
        if (!h[j]) ok[static_cast<size_t>(members[from + static_cast<size_t>(p.owner[j])])] = 0;
    }
  }
  ExactMatch r;
  r.by_fields.assign(static_cast<size_t>(data.max_fields), Count{});
  for (int i = 0; i < n; ++i) {
    const Sequence& s = seqs[static_cast<size_t>(i)];
    const bool good = ok[static_cast<size_t>(i)];
    for (Count* c : {&r.exact, &r.by_fields[static_cast<size_t>(s.num_fields - 1)],
                     &r.by_synonyms[(s.syn_table ? 1 : 0) + (s.syn_field ? 2 : 0)]}) {
      c->total += 1;
      c->correct += good ? 1 : 0;
    }
    if (!good) r.failed.push_back(s);
  }
  return r;
}

}  // namespace detail

namespace {

// The model's own greedy continuation of the sequence's prompt, until end-of-text.
std::string greedy(const model::Model& m, const tokenizer::Tokenizer& tok, const Sequence& s, int eot) {
  std::vector<int64_t> ids(s.ids.begin(), s.ids.begin() + s.response_start);
  std::vector<int> out;
  const size_t limit = s.ids.size() - static_cast<size_t>(s.response_start) + 8;
  while (out.size() < limit) {
    const at::Tensor hidden = model::forward(m, at::tensor(ids, at::kLong).view({1, -1}));
    const int next = static_cast<int>(model::full_logits(m, hidden.narrow(1, hidden.size(1) - 1, 1)).argmax(-1).item<int64_t>());
    if (next == eot) break;
    ids.push_back(next);
    out.push_back(next);
  }
  std::string text = tok.decode(out);
  if (out.size() == limit) text += " ... (no end-of-text)";
  return text;
}

Count feature_accuracy(const model::Model& m, const tokenizer::Tokenizer& tok, const tinysql::CellSettings& cell,
                       uint64_t seed, int n, int chunk = 128) {
  const tinysql::Batch batch = tinysql::make_batch(tok, cell, seed, 0, n);
  Count c;
  for (size_t from = 0; from < batch.examples.size(); from += static_cast<size_t>(chunk)) {
    const size_t to = std::min(batch.examples.size(), from + static_cast<size_t>(chunk));
    std::vector<int64_t> ids, answers;
    for (size_t k = from; k < to; ++k) {
      const auto& ex = batch.examples[k];
      ids.insert(ids.end(), ex.clean_input_ids.begin(), ex.clean_input_ids.end());
      answers.push_back(ex.answer_token_id);
    }
    const int64_t B = static_cast<int64_t>(to - from);
    const at::Tensor hidden = model::forward(m, at::tensor(ids, at::kLong).view({B, batch.input_length}));
    const at::Tensor pred = model::full_logits(m, hidden.narrow(1, hidden.size(1) - 1, 1)).squeeze(1).argmax(-1).cpu();
    c.correct += static_cast<int>((pred == at::tensor(answers, at::kLong)).sum().item<int64_t>());
    c.total += static_cast<int>(B);
  }
  return c;
}

}  // namespace

EvalReport evaluate(const std::string& model_dir, const EvalOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.items < 1) throw InputError("--items " + std::to_string(o.items) + " is not at least 1");
  validate(o.data);
  if (o.threads > 0) at::set_num_threads(o.threads);
  const model::Model m = model::load_model(model_dir);
  const auto tok = tokenizer::Tokenizer::load(o.tokenizer.empty() ? m.path : o.tokenizer);
  at::NoGradGuard no_grad;
  EvalReport r;
  r.model_path = m.path;
  r.threads = at::get_num_threads();
  detail::ExactMatch em = detail::exact_match(m, tok, o.data, o.seed, Stream::Eval, o.items);
  r.exact = em.exact;
  r.by_fields = em.by_fields;
  std::copy(std::begin(em.by_synonyms), std::end(em.by_synonyms), std::begin(r.by_synonyms));
  const int eot = end_of_text_id(tok);
  for (const Sequence& s : em.failed) {
    if (static_cast<int>(r.failures.size()) >= o.max_failures) break;
    r.failures.push_back({s.prompt, s.sql, greedy(m, tok, s, eot)});
  }
  for (const tinysql::Feature f : tinysql::all_features()) {
    for (const bool syn : {false, true}) {
      tinysql::CellSettings cell;
      cell.feature = f;
      cell.num_fields = 2;
      cell.use_synonyms_field = syn;
      cell.use_synonyms_table = syn;
      r.features.push_back({tinysql::feature_name(f), tinysql::cell_key_string(cell),
                            feature_accuracy(m, tok, cell, o.seed, o.items)});
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace teap::train
