#include "io/hdf5_file.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <numeric>

#include "util/files.hpp"

namespace teap::io {

void write_atomic(const std::string& path, const std::function<void(Writer&)>& fill) {
  quiet_hdf5();
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (file < 0) throw std::runtime_error(tmp + ": cannot create an HDF5 file");
    Writer w{file, path};
    try {
      fill(w);
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

herr_t collect_attr(hid_t loc, const char* name, const H5A_info_t*, void* data) {
  auto* u = static_cast<Attrs*>(data);
  Id a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  Id t(H5Aget_type(a), H5Tclose);
  const std::string key = name;
  switch (H5Tget_class(t)) {
    case H5T_STRING: {
      Id st(string_type(), H5Tclose);
      char* s = nullptr;
      if (H5Tis_variable_str(t) > 0 && H5Aread(a, st, &s) >= 0) {
        u->text[key] = s ? s : "";
        Id space(H5Screate(H5S_SCALAR), H5Sclose);
        H5Dvlen_reclaim(st, space, H5P_DEFAULT, &s);
      }
      break;
    }
    case H5T_INTEGER: {
      int64_t v = 0;
      if (H5Aread(a, H5T_NATIVE_INT64, &v) >= 0) u->ints[key] = v;
      break;
    }
    case H5T_FLOAT: {
      double v = 0;
      if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0) u->reals[key] = v;
      break;
    }
    default: break;
  }
  return 0;
}

}  // namespace

Id open_tagged(const std::string& path, const char* format, const char* what, Attrs& attrs) {
  quiet_hdf5();
  check_regular_file(path, kMaxHdf5File);
  if (H5Fis_hdf5(path.c_str()) <= 0) fail_input(path, "not an HDF5 file (truncated or foreign)");
  Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (file < 0) fail_input(path, "cannot open as HDF5 (truncated?)");
  hsize_t idx = 0;
  H5Aiterate2(file, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr, &attrs);
  if (attrs.text["format"] != format)
    fail_input(path, std::string("not a tinysql-eap ") + what + " (format attribute '" + attrs.text["format"] + "')");
  attrs.text.erase("format");
  return file;
}

int64_t required_int(const Attrs& attrs, const Reader& r, const char* key) {
  const auto it = attrs.ints.find(key);
  if (it == attrs.ints.end()) r.bad(std::string("attribute '") + key + "' is missing");
  return it->second;
}

void expect_shape(hid_t file, const Reader& r, const char* name, const std::vector<hsize_t>& want) {
  Id ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
  if (ds < 0) r.bad(std::string("dataset '") + name + "' is missing or unreadable");
  const auto got = r.dims(ds);
  const hsize_t n = std::accumulate(want.begin(), want.end(), hsize_t{1}, std::multiplies<>());
  if (std::accumulate(got.begin(), got.end(), hsize_t{1}, std::multiplies<>()) != n || (n > 0 && got != want))
    r.bad(std::string("dataset '") + name + "' has the wrong shape");
  if (n > 0 && H5Dget_storage_size(ds) == 0) r.bad(std::string("dataset '") + name + "' holds no data");
}

}  // namespace teap::io
