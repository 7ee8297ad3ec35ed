#include "io/evaluation_file.hpp"

#include <cmath>

#include "io/hdf5_file.hpp"

namespace teap::io {
namespace {

constexpr int64_t kMaxCount = 1 << 24;  // prompts of a batch, circuits of a cell

// The two counts every evaluation file states, bounded.
std::pair<hsize_t, hsize_t> counts(const Attrs& attrs, const Reader& r) {
  const int64_t B = required_int(attrs, r, "n_prompts"), C = required_int(attrs, r, "n_circuits");
  if (B < 0 || B > kMaxCount) r.bad("attribute 'n_prompts' is " + std::to_string(B) + ", not a count");
  if (C < 0 || C > kMaxCount) r.bad("attribute 'n_circuits' is " + std::to_string(C) + ", not a count");
  return {hsize_t(B), hsize_t(C)};
}

const char* const kPerCircuit[] = {"circuit", "circuit_k", "edge_count", "faithfulness"};
const char* const kPerPrompt[] = {"clean_logit_diff", "corrupt_logit_diff"};

}  // namespace

void write_evaluation(const std::string& path, const EvaluationRecord& e) {
  const size_t C = e.circuit.size(), B = e.n_prompts;
  if (e.circuit_k.size() != C || e.edge_count.size() != C || e.faithfulness.size() != C || e.logit_diff.size() != C * B ||
      e.clean_ld.size() != B || e.corrupt_ld.size() != B)
    throw std::invalid_argument(path + ": evaluation record sizes do not agree");
  write_atomic(path, [&](Writer& w) {
    w.strings("circuit", e.circuit);
    w.dataset("circuit_k", H5T_NATIVE_INT64, {C}, e.circuit_k.data());
    w.dataset("edge_count", H5T_NATIVE_INT64, {C}, e.edge_count.data());
    w.dataset("faithfulness", H5T_NATIVE_DOUBLE, {C}, e.faithfulness.data());
    w.dataset("logit_diff", H5T_NATIVE_DOUBLE, {C, B}, e.logit_diff.data());
    w.dataset("clean_logit_diff", H5T_NATIVE_DOUBLE, {B}, e.clean_ld.data());
    w.dataset("corrupt_logit_diff", H5T_NATIVE_DOUBLE, {B}, e.corrupt_ld.data());
    w.attr("format", kEvaluationFormat);
    for (const auto& [k, v] : e.text_attrs) w.attr(k, v);
    for (const auto& [k, v] : e.int_attrs) w.attr(k.c_str(), H5T_NATIVE_INT64, &v);
    for (const auto& [k, v] : e.real_attrs) w.attr(k.c_str(), H5T_NATIVE_DOUBLE, &v);
    w.attr("no_faithfulness", e.no_faithfulness);
    const int64_t n[] = {e.n_prompts, static_cast<int64_t>(C)};
    w.attr("n_prompts", H5T_NATIVE_INT64, &n[0]);
    w.attr("n_circuits", H5T_NATIVE_INT64, &n[1]);
  });
}

EvaluationRecord read_evaluation(const std::string& path) {
  Attrs attrs;
  const Id file = open_tagged(path, kEvaluationFormat, "evaluation file", attrs);
  const Reader r{file, path};
  const auto [B, C] = counts(attrs, r);
  EvaluationRecord e;
  e.n_prompts = static_cast<int>(B);
  e.circuit = r.strings("circuit", C);
  e.circuit_k = r.read<int64_t>("circuit_k", H5T_NATIVE_INT64, {C});
  e.edge_count = r.read<int64_t>("edge_count", H5T_NATIVE_INT64, {C});
  e.faithfulness = r.read<double>("faithfulness", H5T_NATIVE_DOUBLE, {C});
  e.logit_diff = r.read<double>("logit_diff", H5T_NATIVE_DOUBLE, {C, B});
  e.clean_ld = r.read<double>("clean_logit_diff", H5T_NATIVE_DOUBLE, {B});
  e.corrupt_ld = r.read<double>("corrupt_logit_diff", H5T_NATIVE_DOUBLE, {B});
  for (const auto* v : {&e.logit_diff, &e.clean_ld, &e.corrupt_ld})
    for (double x : *v)
      if (!std::isfinite(x)) r.bad("a logit difference is not finite (" + std::to_string(x) + ")");
  e.no_faithfulness = attrs.text["no_faithfulness"];
  attrs.text.erase("no_faithfulness");
  attrs.ints.erase("n_prompts");
  attrs.ints.erase("n_circuits");
  e.text_attrs = std::move(attrs.text);
  e.int_attrs = std::move(attrs.ints);
  e.real_attrs = std::move(attrs.reals);
  return e;
}

EvaluationHeader read_evaluation_header(const std::string& path) {
  Attrs attrs;
  const Id file = open_tagged(path, kEvaluationFormat, "evaluation file", attrs);
  const Reader r{file, path};
  const auto [B, C] = counts(attrs, r);
  for (const char* n : kPerCircuit) expect_shape(file, r, n, {C});
  for (const char* n : kPerPrompt) expect_shape(file, r, n, {B});
  expect_shape(file, r, "logit_diff", {C, B});
  EvaluationHeader h;
  h.cell_id = attrs.text["cell_id"];
  h.settings_hash = attrs.text["settings_hash"];
  h.evaluation_hash = attrs.text["evaluation_hash"];
  h.batch_index = required_int(attrs, r, "batch_index");
  return h;
}

}  // namespace teap::io
