#include "io/unit_file.hpp"

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

// Far above any real unit (a few MB), far below the memory: bounds what a corrupt or foreign file
// can make the reader allocate.
constexpr uint64_t kMaxUnitFile = uint64_t{4} << 30;
constexpr hsize_t kMaxNodes = 1 << 20;       // upstream or downstream nodes of a graph
constexpr int64_t kMaxCount = 1 << 24;       // prompts of a batch, positions of a prompt

// HDF5 prints its own error stacks unless told not to; every call here is checked instead.
void quiet_hdf5() {
  static const bool once = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)once;
}

// Owns one HDF5 identifier.
struct Id {
  hid_t id;
  herr_t (*close)(hid_t);
  Id(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  ~Id() {
    if (id >= 0) close(id);
  }
  Id(const Id&) = delete;
  Id(Id&& o) noexcept : id(o.id), close(o.close) { o.id = -1; }
  operator hid_t() const { return id; }
};

hid_t string_type() {
  const hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

struct Writer {
  hid_t file;
  std::string path;

  void check(herr_t r, const std::string& what) const {
    if (r < 0) throw std::runtime_error(path + ": HDF5 could not write " + what + " (disk full?)");
  }

  // Numbers of kCompressFrom bytes or more are stored shuffled and deflated (one chunk per
  // dataset): score matrices are mostly zeros off the graph's edges, so large units shrink
  // severalfold; below that a chunk's index costs more than deflate saves. Any HDF5 reader (h5py
  // included) decompresses them transparently.
  static constexpr hsize_t kCompressFrom = 16 * 1024;
  void dataset(const char* name, hid_t type, std::vector<hsize_t> dims, const void* data, bool compress = true) {
    for (hsize_t d : dims)
      if (d == 0) dims = {0};  // an empty dataset stays one-dimensional
    Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
    Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    hsize_t bytes = H5Tget_size(type);
    for (hsize_t d : dims) bytes *= d;
    if (compress && bytes >= kCompressFrom && H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) {
      H5Pset_chunk(dcpl, static_cast<int>(dims.size()), dims.data());
      H5Pset_shuffle(dcpl);
      H5Pset_deflate(dcpl, 4);
    }
    Id ds(H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose);
    if (ds < 0) check(-1, name);
    if (dims[0] > 0) check(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), name);
  }
  void strings(const char* name, const std::vector<std::string>& v) {
    std::vector<const char*> p;
    for (const auto& s : v) p.push_back(s.c_str());
    Id t(string_type(), H5Tclose);
    dataset(name, t, {v.size()}, p.data(), false);  // variable-length: the filters would see only pointers
  }
  void attr(const char* name, hid_t type, const void* value) {
    Id space(H5Screate(H5S_SCALAR), H5Sclose);
    Id a(H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (a < 0) check(-1, std::string("attribute ") + name);
    check(H5Awrite(a, type, value), std::string("attribute ") + name);
  }
  void attr(const std::string& name, const std::string& value) {
    Id t(string_type(), H5Tclose);
    const char* p = value.c_str();
    attr(name.c_str(), t, &p);
  }
};

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
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (file < 0) throw std::runtime_error(tmp + ": cannot create an HDF5 file");
    Writer w{file, path};
    try {
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
      w.check(H5Fflush(file, H5F_SCOPE_GLOBAL), "the file");
    } catch (...) {
      std::remove(tmp.c_str());
      throw;
    }
  }
  // Durable before it is visible under its final name.
  if (FILE* f = std::fopen(tmp.c_str(), "rb")) {
    ::fsync(fileno(f));
    std::fclose(f);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot rename into place: " + ec.message());
  }
}

namespace {

struct Reader {
  hid_t file;
  std::string path;

  [[noreturn]] void bad(const std::string& what) const { fail_input(path, what); }

  std::vector<hsize_t> dims(hid_t ds) const {
    Id space(H5Dget_space(ds), H5Sclose);
    const int n = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> d(n > 0 ? n : 0);
    if (n > 0) H5Sget_simple_extent_dims(space, d.data(), nullptr);
    return d;
  }
  template <class T>
  std::vector<T> read(const char* name, hid_t type, std::vector<hsize_t> want) const {
    Id ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
    if (ds < 0) bad(std::string("dataset '") + name + "' is missing");
    size_t n = 1;
    for (hsize_t w : want) n *= w;
    const auto got = dims(ds);
    size_t m = 1;
    for (hsize_t g : got) m = g && m > kMaxUnitFile / g ? kMaxUnitFile + 1 : m * g;
    // A dataset may declare more values than the file stores (unwritten chunks read as fill).
    if (m > kMaxUnitFile / sizeof(T))
      bad(std::string("dataset '") + name + "' declares " + std::to_string(m) + " values, more than a unit file holds");
    if (m != n) bad(std::string("dataset '") + name + "' has " + std::to_string(m) + " values, expected " + std::to_string(n));
    std::vector<T> out(n);
    if (n && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
      bad(std::string("dataset '") + name + "' cannot be read");
    return out;
  }
  std::vector<std::string> strings(const char* name, size_t want) const {
    Id ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
    if (ds < 0) bad(std::string("dataset '") + name + "' is missing");
    const auto got = dims(ds);
    const size_t n = got.empty() ? 0 : got[0];
    if (n > kMaxUnitFile / sizeof(char*))
      bad(std::string("dataset '") + name + "' declares " + std::to_string(n) + " strings, more than a unit file holds");
    if (n != want) bad(std::string("dataset '") + name + "' has " + std::to_string(n) + " strings, expected " + std::to_string(want));
    std::vector<char*> p(n, nullptr);
    Id t(string_type(), H5Tclose);
    if (n && H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data()) < 0)
      bad(std::string("dataset '") + name + "' cannot be read");
    std::vector<std::string> out;
    for (char* s : p) out.emplace_back(s ? s : "");
    if (n) {
      Id space(H5Dget_space(ds), H5Sclose);
      H5Dvlen_reclaim(t, space, H5P_DEFAULT, p.data());
    }
    return out;
  }
};

herr_t collect_attr(hid_t loc, const char* name, const H5A_info_t*, void* data) {
  auto* u = static_cast<UnitRecord*>(data);
  Id a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  Id t(H5Aget_type(a), H5Tclose);
  const std::string key = name;
  switch (H5Tget_class(t)) {
    case H5T_STRING: {
      Id st(string_type(), H5Tclose);
      char* s = nullptr;
      if (H5Tis_variable_str(t) > 0 && H5Aread(a, st, &s) >= 0) {
        u->text_attrs[key] = s ? s : "";
        Id space(H5Screate(H5S_SCALAR), H5Sclose);
        H5Dvlen_reclaim(st, space, H5P_DEFAULT, &s);
      }
      break;
    }
    case H5T_INTEGER: {
      int64_t v = 0;
      if (H5Aread(a, H5T_NATIVE_INT64, &v) >= 0) u->int_attrs[key] = v;
      break;
    }
    case H5T_FLOAT: {
      double v = 0;
      if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0) u->real_attrs[key] = v;
      break;
    }
    default: break;
  }
  return 0;
}

// Opens a unit file with its root attributes in `attrs` (the format tag checked and dropped).
// HDF5 would wait on a FIFO and read /dev/zero without end, so the file must be regular first.
Id open_unit(const std::string& path, UnitRecord& attrs) {
  quiet_hdf5();
  check_regular_file(path, kMaxUnitFile);
  if (H5Fis_hdf5(path.c_str()) <= 0) fail_input(path, "not an HDF5 file (truncated or foreign)");
  Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (file < 0) fail_input(path, "cannot open as HDF5 (truncated?)");
  hsize_t idx = 0;
  H5Aiterate2(file, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr, &attrs);
  if (attrs.text_attrs["format"] != kUnitFormat)
    fail_input(path, "not a tinysql-eap unit file (format attribute '" + attrs.text_attrs["format"] + "')");
  attrs.text_attrs.erase("format");
  return file;
}

// A root integer attribute that every unit file has.
int64_t required_int(const UnitRecord& attrs, const Reader& r, const char* key) {
  const auto it = attrs.int_attrs.find(key);
  if (it == attrs.int_attrs.end()) r.bad(std::string("attribute '") + key + "' is missing");
  return it->second;
}

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
  const Id file = open_unit(path, u);
  const Reader r{file, path};
  auto take_int = [&](const char* k) {
    const int64_t v = required_int(u, r, k);
    u.int_attrs.erase(k);
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
  UnitRecord attrs;
  const Id file = open_unit(path, attrs);
  const Reader r{file, path};
  const hsize_t B = static_cast<hsize_t>(required_int(attrs, r, "n_prompts"));
  const hsize_t P = static_cast<hsize_t>(required_int(attrs, r, "n_positions"));
  // Every dataset with the size the others imply: a file cut short or written by a killed
  // writer under its final name fails here, before anyone trusts it.
  auto expect = [&](const char* name, std::vector<hsize_t> want) {
    Id ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
    if (ds < 0) r.bad(std::string("dataset '") + name + "' is missing or unreadable");
    const auto got = r.dims(ds);
    const hsize_t n = std::accumulate(want.begin(), want.end(), hsize_t{1}, std::multiplies<>());
    if (std::accumulate(got.begin(), got.end(), hsize_t{1}, std::multiplies<>()) != n || (n > 0 && got != want))
      r.bad(std::string("dataset '") + name + "' has the wrong shape");
    if (n > 0 && H5Dget_storage_size(ds) == 0)
      r.bad(std::string("dataset '") + name + "' holds no data");
  };
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
  h.cell_id = attrs.text_attrs["cell_id"];
  h.settings_hash = attrs.text_attrs["settings_hash"];
  h.batch_index = required_int(attrs, r, "batch_index");
  return h;
}

}  // namespace teap::io
