#include "io/unit_file.hpp"

#include "io/hdf5_file.hpp"

#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <numeric>
#include <stdexcept>

#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::io {
namespace {

constexpr hsize_t kMaxNodes = 1 << 20;       // upstream or downstream nodes of a graph
constexpr int64_t kMaxCount = 1 << 24;       // prompts of a batch, positions of a prompt

}  // namespace

void write_unit(const std::string& path, const UnitRecord& u) {
  quiet_hdf5();
  const size_t UD = static_cast<size_t>(u.n_upstream) * u.n_downstream;
  const size_t BP = static_cast<size_t>(u.n_prompts) * u.n_positions;
  if (u.scores.size() != UD || u.valid.size() != UD || u.upstream.size() != size_t(u.n_upstream) ||
      u.downstream.size() != size_t(u.n_downstream) || u.clean_ld.size() != size_t(u.n_prompts) ||
      u.corrupt_ld.size() != size_t(u.n_prompts) || u.clean_ids.size() != BP || u.corrupt_ids.size() != BP ||
      u.clean_token.size() != size_t(u.n_prompts) || u.corrupt_token.size() != size_t(u.n_prompts) ||
      u.answer_token.size() != size_t(u.n_prompts) || u.clean_word.size() != size_t(u.n_prompts) ||
      u.corrupt_word.size() != size_t(u.n_prompts))
    throw std::invalid_argument(path + ": unit record sizes do not agree");
  write_atomic(path, [&](Writer& w) {
    const hsize_t U = u.n_upstream, D = u.n_downstream, B = u.n_prompts, P = u.n_positions;
    w.dataset("scores", H5T_NATIVE_FLOAT, {U, D}, u.scores.data());
    w.dataset("valid", H5T_NATIVE_UINT8, {U, D}, u.valid.data());
    w.strings("upstream", u.upstream);
    w.strings("downstream", u.downstream);
    w.dataset("clean_logit_diff", H5T_NATIVE_DOUBLE, {B}, u.clean_ld.data());
    w.dataset("corrupt_logit_diff", H5T_NATIVE_DOUBLE, {B}, u.corrupt_ld.data());
    w.dataset("clean_input_ids", H5T_NATIVE_INT64, {B, P}, u.clean_ids.data());
    w.dataset("corrupt_input_ids", H5T_NATIVE_INT64, {B, P}, u.corrupt_ids.data());
    w.dataset("clean_token_id", H5T_NATIVE_INT64, {B}, u.clean_token.data());
    w.dataset("corrupt_token_id", H5T_NATIVE_INT64, {B}, u.corrupt_token.data());
    w.dataset("answer_token_id", H5T_NATIVE_INT64, {B}, u.answer_token.data());
    w.strings("clean_word", u.clean_word);
    w.strings("corrupt_word", u.corrupt_word);
    if (!u.clean_top_token.empty() || !u.corrupt_top_token.empty()) {
      if (u.clean_top_token.size() != B || u.corrupt_top_token.size() != B)
        throw std::invalid_argument(path + ": top tokens for " + std::to_string(u.clean_top_token.size()) + " and " +
                                    std::to_string(u.corrupt_top_token.size()) + " prompts, expected " + std::to_string(B));
      w.dataset("clean_top_token", H5T_NATIVE_INT64, {B}, u.clean_top_token.data());
      w.dataset("corrupt_top_token", H5T_NATIVE_INT64, {B}, u.corrupt_top_token.data());
    }
    w.attr("format", kUnitFormat);
    for (const auto& [k, v] : u.text_attrs) w.attr(k, v);
    for (const auto& [k, v] : u.int_attrs) w.attr(k.c_str(), H5T_NATIVE_INT64, &v);
    for (const auto& [k, v] : u.real_attrs) w.attr(k.c_str(), H5T_NATIVE_DOUBLE, &v);
    const int64_t n[] = {u.n_prompts, u.n_positions, u.clean_correct};
    w.attr("n_prompts", H5T_NATIVE_INT64, &n[0]);
    w.attr("n_positions", H5T_NATIVE_INT64, &n[1]);
    w.attr("clean_correct", H5T_NATIVE_INT64, &n[2]);
  });
}

namespace {

// The graph's size, from the score matrix's shape: [n_upstream, n_downstream].
std::pair<hsize_t, hsize_t> graph_dims(hid_t file, const Reader& r) {
  Id ds(H5Dopen2(file, "scores", H5P_DEFAULT), H5Dclose);
  if (ds < 0) r.bad("dataset 'scores' is missing");
  const auto d = r.dims(ds);
  if (d.size() != 2) r.bad("dataset 'scores' is not two-dimensional");
  if (d[0] > kMaxNodes || d[1] > kMaxNodes)
    r.bad("dataset 'scores' is " + std::to_string(d[0]) + " x " + std::to_string(d[1]) + ", more nodes than a graph has");
  return {d[0], d[1]};
}

}  // namespace

UnitRecord read_unit(const std::string& path) {
  UnitRecord u;
  Attrs attrs;
  const Id file = open_tagged(path, kUnitFormat, "unit file", attrs);
  const Reader r{file, path};
  auto take_int = [&](const char* k) {
    const int64_t v = required_int(attrs, r, k);
    attrs.ints.erase(k);
    return v;
  };
  auto take_count = [&](const char* k) {
    const int64_t v = take_int(k);
    if (v < 0 || v > kMaxCount) r.bad(std::string("attribute '") + k + "' is " + std::to_string(v) + ", not a count");
    return static_cast<int>(v);
  };
  u.n_prompts = take_count("n_prompts");
  u.n_positions = take_count("n_positions");
  u.clean_correct = take_int("clean_correct");
  u.text_attrs = std::move(attrs.text);
  u.int_attrs = std::move(attrs.ints);
  u.real_attrs = std::move(attrs.reals);
  const auto [n_up, n_down] = graph_dims(file, r);
  u.n_upstream = static_cast<int>(n_up);
  u.n_downstream = static_cast<int>(n_down);
  const hsize_t U = u.n_upstream, D = u.n_downstream, B = u.n_prompts, P = u.n_positions;
  u.scores = r.read<float>("scores", H5T_NATIVE_FLOAT, {U, D});
  u.valid = r.read<uint8_t>("valid", H5T_NATIVE_UINT8, {U, D});
  u.upstream = r.strings("upstream", U);
  u.downstream = r.strings("downstream", D);
  u.clean_ld = r.read<double>("clean_logit_diff", H5T_NATIVE_DOUBLE, {B});
  u.corrupt_ld = r.read<double>("corrupt_logit_diff", H5T_NATIVE_DOUBLE, {B});
  u.clean_ids = r.read<int64_t>("clean_input_ids", H5T_NATIVE_INT64, {B, P});
  u.corrupt_ids = r.read<int64_t>("corrupt_input_ids", H5T_NATIVE_INT64, {B, P});
  u.clean_token = r.read<int64_t>("clean_token_id", H5T_NATIVE_INT64, {B});
  u.corrupt_token = r.read<int64_t>("corrupt_token_id", H5T_NATIVE_INT64, {B});
  u.answer_token = r.read<int64_t>("answer_token_id", H5T_NATIVE_INT64, {B});
  if (H5Lexists(file, "clean_top_token", H5P_DEFAULT) > 0) {  // absent in files of earlier versions
    u.clean_top_token = r.read<int64_t>("clean_top_token", H5T_NATIVE_INT64, {B});
    u.corrupt_top_token = r.read<int64_t>("corrupt_top_token", H5T_NATIVE_INT64, {B});
  }
  // A NaN or Inf stored by an older build, or written by another tool, must not be averaged into a
  // cell as if it were a score.
  auto finite = [&](const auto& v, const char* name) {
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(static_cast<double>(v[i])))
        r.bad(std::string("dataset '") + name + "' holds a non-finite value (" + std::to_string(static_cast<double>(v[i])) +
              ") at index " + std::to_string(i));
  };
  finite(u.scores, "scores");
  finite(u.clean_ld, "clean_logit_diff");
  finite(u.corrupt_ld, "corrupt_logit_diff");
  u.clean_word = r.strings("clean_word", B);
  u.corrupt_word = r.strings("corrupt_word", B);
  return u;
}

UnitHeader read_unit_header(const std::string& path) {
  Attrs attrs;
  const Id file = open_tagged(path, kUnitFormat, "unit file", attrs);
  const Reader r{file, path};
  const hsize_t B = static_cast<hsize_t>(required_int(attrs, r, "n_prompts"));
  const hsize_t P = static_cast<hsize_t>(required_int(attrs, r, "n_positions"));
  // Every dataset with the size the others imply: a file cut short or written by a killed
  // writer under its final name fails here, before anyone trusts it.
  auto expect = [&](const char* name, std::vector<hsize_t> want) { expect_shape(file, r, name, want); };
  const auto [U, D] = graph_dims(file, r);
  expect("scores", {U, D});
  expect("valid", {U, D});
  expect("upstream", {U});
  expect("downstream", {D});
  for (const char* n : {"clean_logit_diff", "corrupt_logit_diff", "clean_token_id", "corrupt_token_id", "answer_token_id",
                        "clean_word", "corrupt_word"})
    expect(n, {B});
  expect("clean_input_ids", {B, P});
  expect("corrupt_input_ids", {B, P});
  if (H5Lexists(file, "clean_top_token", H5P_DEFAULT) > 0) {  // as read_unit: then both, [n_prompts]
    expect("clean_top_token", {B});
    expect("corrupt_top_token", {B});
  }
  UnitHeader h;
  h.cell_id = attrs.text["cell_id"];
  h.settings_hash = attrs.text["settings_hash"];
  h.batch_index = required_int(attrs, r, "batch_index");
  return h;
}

}  // namespace teap::io
