// Internal to io/: the HDF5 plumbing the sweep's files share (unit files, evaluation files): owned
// identifiers, a writer with compression of large datasets, atomic publication under the final
// name, a bounded reader, and the root attributes of a tagged file. Plain buffers, no LibTorch.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "util/error.hpp"

namespace teap::io {

// Far above any real sweep file (a few MB), far below the memory: bounds what a corrupt or foreign
// file can make a reader allocate.
constexpr uint64_t kMaxHdf5File = uint64_t{4} << 30;

// HDF5 prints its own error stacks unless told not to; every call here is checked instead.
inline void quiet_hdf5() {
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

inline hid_t string_type() {
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


// Writes `path` atomically: `fill` writes into a temporary file beside it, which is flushed, synced
// and renamed, so a file under the final name is always complete. Removes the temporary on error.
void write_atomic(const std::string& path, const std::function<void(Writer&)>& fill);

// Root attributes by type.
struct Attrs {
  std::map<std::string, std::string> text;
  std::map<std::string, int64_t> ints;
  std::map<std::string, double> reals;
};

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
    for (hsize_t g : got) m = g && m > kMaxHdf5File / g ? kMaxHdf5File + 1 : m * g;
    // A dataset may declare more values than the file stores (unwritten chunks read as fill).
    if (m > kMaxHdf5File / sizeof(T))
      bad(std::string("dataset '") + name + "' declares " + std::to_string(m) + " values, more than a sweep file holds");
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
    if (n > kMaxHdf5File / sizeof(char*))
      bad(std::string("dataset '") + name + "' declares " + std::to_string(n) + " strings, more than a sweep file holds");
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

// Opens a file whose root attribute `format` is `format`, its other root attributes in `attrs`.
// HDF5 would wait on a FIFO and read /dev/zero without end, so the file must be regular first.
// `what` names the kind of file in messages ("unit file").
Id open_tagged(const std::string& path, const char* format, const char* what, Attrs& attrs);

// A root integer attribute that every file of its kind has.
int64_t required_int(const Attrs& attrs, const Reader& r, const char* key);

// Fails unless dataset `name` exists with shape `want` and stores data (a file cut short or
// written by a killed writer under its final name fails here); reads nothing.
void expect_shape(hid_t file, const Reader& r, const char* name, const std::vector<hsize_t>& want);

}  // namespace teap::io
