#include "model/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <utility>

#include "model/printable.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::model {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1},       {DType::U8, "U8", 1},           {DType::I8, "I8", 1},
    {DType::F8_E5M2, "F8_E5M2", 1}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},         {DType::F16, "F16", 2},         {DType::BF16, "BF16", 2},
    {DType::I32, "I32", 4},         {DType::U32, "U32", 4},         {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},         {DType::I64, "I64", 8},         {DType::U64, "U64", 8},
};

// The reference implementation (Rust `safetensors`) refuses larger headers; so do we, which also
// bounds the JSON parser's work.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string tensor_msg(const std::string& name, const std::string& what) {
  return "tensor '" + printable(name) + "': " + what;
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_le64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A non-negative JSON integer, or nullopt.
std::optional<uint64_t> unsigned_of(const json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;
  return v.get<uint64_t>();
}

struct Parsed {
  std::vector<TensorView> tensors;
  std::map<std::string, std::string> metadata;
};

// Everything is checked against `size` before a view is made; no data byte is read here.
Parsed parse_header(const std::string& path, const uint8_t* base, size_t size) {
  if (size < 8)
    fail_input(path, "truncated: " + std::to_string(size) +
                         " bytes, but a safetensors file starts with an 8-byte header length");
  const uint64_t n = read_le64(base);
  if (n > size - 8)
    fail_input(path, "header length " + std::to_string(n) + " runs past the end of the file (" +
                         std::to_string(size) + " bytes; truncated or not safetensors)");
  if (n > kMaxHeaderBytes)
    fail_input(path, "header length " + std::to_string(n) + " exceeds the format's limit of " +
                         std::to_string(kMaxHeaderBytes) + " bytes");
  const uint8_t* hbegin = base + 8;
  json header;
  try {
    header = json::parse(hbegin, hbegin + n);
  } catch (const json::parse_error& e) {
    fail_input(path, "header is not valid JSON (error at byte " + std::to_string(e.byte) +
                         " of the " + std::to_string(n) + "-byte header)");
  } catch (const json::exception&) {
    fail_input(path, "header is not valid JSON");
  }
  if (!header.is_object()) fail_input(path, "header is not a JSON object");

  const uint64_t data_size = size - 8 - n;
  const uint8_t* data = hbegin + n;
  Parsed out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail_input(path, "__metadata__ is not an object of strings");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string())
          fail_input(path, "__metadata__ entry '" + printable(k) + "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) fail_input(path, tensor_msg(name, "header entry is not an object"));
    const auto dt = entry.find("dtype");
    const auto sh = entry.find("shape");
    const auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string())
      fail_input(path, tensor_msg(name, "no dtype string in the header"));
    const auto dtype = dtype_from_name(dt->get<std::string>());
    if (!dtype)
      fail_input(path,
                 tensor_msg(name, "unknown dtype '" + printable(dt->get<std::string>()) + "'"));
    if (sh == entry.end() || !sh->is_array())
      fail_input(path, tensor_msg(name, "no shape array in the header"));
    TensorView t;
    t.name = name;
    t.dtype = *dtype;
    t.file = path;
    bool zero = false;
    for (const auto& d : *sh) {
      const auto v = unsigned_of(d);
      if (!v || *v > static_cast<uint64_t>(INT64_MAX))
        fail_input(path, tensor_msg(name, "shape " + printable(sh->dump()) +
                                              " is not a list of non-negative integers"));
      t.shape.push_back(static_cast<int64_t>(*v));
      zero = zero || *v == 0;
    }
    // The byte count in 64 bits, overflow-checked; a zero dimension makes any other size empty.
    uint64_t bytes = dtype_size(*dtype);
    if (zero) {
      bytes = 0;
    } else {
      for (int64_t d : t.shape)
        if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes))
          fail_input(path, tensor_msg(name, "shape " + shape_string(t.shape) + " is too large"));
    }
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      fail_input(path, tensor_msg(name, "data_offsets is not a pair [begin, end]"));
    const auto b = unsigned_of((*off)[0]);
    const auto e = unsigned_of((*off)[1]);
    if (!b || !e || *b > *e)
      fail_input(path, tensor_msg(name, "data_offsets " + printable(off->dump()) +
                                            " are not non-negative integers with begin <= end"));
    if (*e > data_size)
      fail_input(path, tensor_msg(name, "data_offsets [" + std::to_string(*b) + ", " +
                                            std::to_string(*e) + "] lie outside the data (" +
                                            std::to_string(data_size) + " bytes)"));
    if (*e - *b != bytes)
      fail_input(path,
                 tensor_msg(name, "shape " + shape_string(t.shape) + " of " + dtype_name(*dtype) +
                                      " needs " + std::to_string(bytes) +
                                      " bytes, but data_offsets span " + std::to_string(*e - *b)));
    t.data = data + *b;
    t.nbytes = static_cast<size_t>(bytes);
    out.tensors.push_back(std::move(t));
  }

  // Overlaps, by sorting the non-empty extents by their start.
  std::vector<const TensorView*> by_start;
  for (const auto& t : out.tensors)
    if (t.nbytes) by_start.push_back(&t);
  std::sort(by_start.begin(), by_start.end(),
            [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
  for (size_t i = 1; i < by_start.size(); ++i) {
    const TensorView* prev = by_start[i - 1];
    const TensorView* cur = by_start[i];
    if (cur->data < prev->data + prev->nbytes)
      fail_input(path, "tensors '" + printable(prev->name) + "' and '" + printable(cur->name) +
                           "' overlap (data bytes [" + std::to_string(prev->data - data) + ", " +
                           std::to_string(prev->data - data + prev->nbytes) + ") and [" +
                           std::to_string(cur->data - data) + ", " +
                           std::to_string(cur->data - data + cur->nbytes) + "))");
  }
  return out;
}

void check_convertible(const TensorView& t, const char* to) {
  if (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16 ||
      t.dtype == DType::F64)
    return;
  fail_input(t.file.empty() ? std::string("tensor") : t.file,
             tensor_msg(t.name, "dtype " + dtype_name(t.dtype) + " cannot be converted to " + to));
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t to_bf16(float f) {
  const uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

uint16_t to_f16(float f) {
  const uint32_t u = bits_of(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t x = u & 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00;  // NaN
  if (x >= 0x38800000u) {                     // >= 2^-14: a normal half, or overflow
    uint32_t m = x - 0x38000000u;             // rebias the exponent from 127 to 15
    m = (m + 0x0fffu + ((m >> 13) & 1u)) >> 13;
    return m >= 0x7c00u ? (sign | 0x7c00) : static_cast<uint16_t>(sign | m);
  }
  if (x <= 0x33000000u) return sign;  // <= 2^-25: half the smallest subnormal, ties to zero
  // A subnormal half counts units of 2^-24: the 24-bit significand shifted by 126 - exponent.
  const uint32_t mant = (x & 0x7fffffu) | 0x800000u;
  const int shift = 126 - static_cast<int>(x >> 23);  // 14..24
  uint32_t r = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

}  // namespace

size_t dtype_size(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.size;
  return 0;
}

std::string dtype_name(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name;
  return "?";
}

std::optional<DType> dtype_from_name(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

int64_t numel(const TensorView& t) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// --- SafetensorsFile -------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO would wait for a writer; it is then refused as not a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) fail_input(path, "no such file");
    fail_input(path, std::string("cannot open: ") + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    check_regular_file(path, UINT64_MAX);  // says what it is instead (a FIFO, a device)
    fail_input(path, "not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    parse_header(path, nullptr, size_);  // throws "truncated"
  }
  void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (m == MAP_FAILED) fail_input(path, std::string("cannot map: ") + std::strerror(map_errno));
  // The ranks of a node share these pages through the page cache. Where the kernel collapses
  // read-only file pages into huge pages (khugepaged, READ_ONLY_THP_FOR_FS), a rank that maps the
  // file during a collapse keeps the old small pages while the others get the new huge ones, and
  // the node then holds parts of the weights twice (measured: 2 ranks 1.5x one rank's memory on a
  // freshly written BM2 checkpoint, 1.23x on a settled one). Advisory: ignored where unsupported.
  ::madvise(m, size_, MADV_NOHUGEPAGE);
  map_ = m;
  try {
    Parsed p = parse_header(path, static_cast<const uint8_t*>(map_), size_);
    tensors_ = std::move(p.tensors);
    metadata_ = std::move(p.metadata);
  } catch (...) {
    unmap();
    throw;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

SafetensorsFile::~SafetensorsFile() { unmap(); }

void SafetensorsFile::unmap() noexcept {
  if (map_) ::munmap(map_, size_);
  map_ = nullptr;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      tensors_(std::move(other.tensors_)),
      index_(std::move(other.index_)),
      metadata_(std::move(other.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    size_ = std::exchange(other.size_, 0);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// --- Checkpoint ------------------------------------------------------------------------------

Checkpoint Checkpoint::open(const std::string& folder) { return open_checkpoint(folder); }

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = by_name.find(name);
  return it == by_name.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) fail_input(folder, "missing tensor '" + printable(name) + "'");
  return *t;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(by_name.size());
  for (const auto& [name, t] : by_name) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : by_name) n += t->nbytes;
  return n;
}

namespace {

void add_tensors(Checkpoint& c, const std::string& where) {
  const SafetensorsFile& f = c.files.back();
  for (const auto& t : f.tensors()) {
    auto [it, fresh] = c.by_name.emplace(t.name, &t);
    if (!fresh)
      fail_input(where, tensor_msg(t.name, "is in both " + it->second->file + " and " + t.file));
  }
}

}  // namespace

Checkpoint open_checkpoint(const std::string& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) fail_input(folder, "not a model folder");
  Checkpoint c;
  c.folder = folder;
  const fs::path dir(folder);
  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    c.files.emplace_back(single.string());
    add_tensors(c, folder);
    return c;
  }
  if (!fs::exists(index, ec)) {
    if (fs::exists(dir / "pytorch_model.bin", ec) ||
        fs::exists(dir / "pytorch_model.bin.index.json", ec))
      fail_input(folder,
                 "has only pytorch_model.bin weights, which are not supported; convert "
                 "them to model.safetensors");
    fail_input(folder, "no model.safetensors or model.safetensors.index.json");
  }

  c.index_file = index.string();
  json j;
  try {
    j = json::parse(read_file(c.index_file, kMaxJsonFile));
  } catch (const json::exception&) {
    fail_input(c.index_file, "not valid JSON");
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail_input(c.index_file, "no weight_map object");
  std::map<std::string, std::string> weight_map;    // tensor -> shard file name
  std::map<std::string, std::string> first_tensor;  // shard file name -> a tensor naming it
  for (const auto& [name, shard] : j["weight_map"].items()) {
    if (!shard.is_string())
      fail_input(c.index_file, tensor_msg(name, "weight_map value is not a file name"));
    const std::string s = shard.get<std::string>();
    if (s.empty() || s == "." || s == ".." || s.find('/') != std::string::npos)
      fail_input(c.index_file,
                 tensor_msg(name, "shard '" + printable(s) + "' is not a file name in the folder"));
    weight_map[name] = s;
    first_tensor.emplace(s, name);
  }
  for (const auto& [shard, name] : first_tensor) {
    const fs::path p = dir / shard;
    if (!fs::is_regular_file(p, ec))
      fail_input(c.index_file, "shard '" + printable(shard) + "' (of tensor '" + printable(name) +
                                   "') does not exist in " + folder);
    c.files.emplace_back(p.string());
    add_tensors(c, c.index_file);
  }
  for (const auto& [name, shard] : weight_map) {
    const TensorView* t = c.find(name);
    const std::string want = (dir / shard).string();
    if (!t || t->file != want)
      fail_input(c.index_file, tensor_msg(name, "not in its shard " + shard));
  }
  return c;
}

// --- Writing ---------------------------------------------------------------------------------

size_t TensorSpec::nbytes() const {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

namespace {

void check_specs(const std::vector<TensorSpec>& specs) {
  for (const auto& t : specs) {
    if (t.name == "__metadata__") throw std::invalid_argument("a tensor cannot be named __metadata__");
    for (int64_t d : t.shape)
      if (d < 0) throw std::invalid_argument(t.name + ": negative dimension");
  }
}

// One file's header: tensors by element size, largest first, then by name (every tensor then
// starts at a multiple of its element size); returns the header bytes with their 8-byte length,
// and each tensor's offset from the start of the file.
std::string layout_file(std::vector<const TensorSpec*> order, const std::map<std::string, std::string>& metadata,
                        std::vector<std::pair<const TensorSpec*, uint64_t>>& offsets) {
  std::sort(order.begin(), order.end(), [](const TensorSpec* a, const TensorSpec* b) {
    const size_t sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->name == order[i - 1]->name) throw std::invalid_argument(order[i]->name + ": tensor named twice");
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<uint64_t> rel;
  for (const TensorSpec* t : order) {
    header[t->name] = {{"dtype", dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->nbytes()}}};
    rel.push_back(offset);
    offset += t->nbytes();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out;
  put_le64(out, h.size());
  out += h;
  for (size_t i = 0; i < order.size(); ++i) offsets.emplace_back(order[i], out.size() + rel[i]);
  return out;
}

void pwrite_all(int fd, const void* data, size_t n, uint64_t offset, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, std::min<size_t>(n, size_t{1} << 30), static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(path + ": write failed: " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

}  // namespace

CheckpointWriter::CheckpointWriter(const std::string& target, const std::vector<TensorSpec>& specs, size_t max_shard_bytes,
                                   const std::map<std::string, std::string>& metadata) {
  check_specs(specs);
  // Which tensors go to which file: one file, or shards in name order closed before they would
  // exceed max_shard_bytes (a larger tensor gets a shard of its own).
  std::vector<std::vector<const TensorSpec*>> groups;
  std::vector<std::string> paths;
  if (max_shard_bytes == 0) {
    groups.emplace_back();
    for (const auto& t : specs) groups.back().push_back(&t);
    paths.push_back(target);
  } else {
    std::vector<const TensorSpec*> order;
    for (const auto& t : specs) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorSpec* a, const TensorSpec* b) { return a->name < b->name; });
    size_t in_shard = 0;
    for (const TensorSpec* t : order) {
      if (groups.empty() || (!groups.back().empty() && in_shard + t->nbytes() > max_shard_bytes)) {
        groups.emplace_back();
        in_shard = 0;
      }
      groups.back().push_back(t);
      in_shard += t->nbytes();
    }
    if (groups.empty()) groups.emplace_back();
    std::error_code ec;
    fs::create_directories(target, ec);
    if (ec) throw std::runtime_error(target + ": cannot create: " + ec.message());
    json weight_map = json::object();
    uint64_t total = 0;
    for (size_t i = 0; i < groups.size(); ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, groups.size());
      paths.push_back((fs::path(target) / name).string());
      for (const TensorSpec* t : groups[i]) weight_map[t->name] = name, total += t->nbytes();
    }
    index_path_ = (fs::path(target) / "model.safetensors.index.json").string();
    index_text_ = json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) + "\n";
  }
  try {
    for (size_t i = 0; i < groups.size(); ++i) {
      std::vector<std::pair<const TensorSpec*, uint64_t>> offsets;
      const std::string head = layout_file(groups[i], metadata, offsets);
      File f;
      f.path = paths[i];
      f.tmp = paths[i] + ".tmp." + std::to_string(::getpid());
      f.fd = ::open(f.tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (f.fd < 0) throw std::runtime_error(f.tmp + ": cannot create: " + std::strerror(errno));
      files_.push_back(f);
      uint64_t size = head.size();
      for (const auto& [t, off] : offsets) {
        if (!places_.emplace(t->name, Place{i, off, t->nbytes(), t->nbytes() == 0}).second)
          throw std::invalid_argument(t->name + ": tensor named twice");
        size = std::max<uint64_t>(size, off + t->nbytes());
      }
      pwrite_all(f.fd, head.data(), head.size(), 0, f.tmp);
      if (::ftruncate(f.fd, static_cast<off_t>(size)) != 0)
        throw std::runtime_error(f.tmp + ": cannot size the file: " + std::strerror(errno));
    }
  } catch (...) {
    for (auto& f : files_) {
      ::close(f.fd);
      std::remove(f.tmp.c_str());
    }
    files_.clear();
    throw;
  }
}

CheckpointWriter::~CheckpointWriter() {
  for (auto& f : files_) {
    if (f.fd >= 0) ::close(f.fd);
    if (!committed_) std::remove(f.tmp.c_str());
  }
}

void CheckpointWriter::put(const std::string& name, const void* data, size_t nbytes) {
  const auto it = places_.find(name);
  if (it == places_.end()) throw std::invalid_argument(name + ": not a tensor of this checkpoint");
  Place& p = it->second;
  if (p.written && p.nbytes) throw std::invalid_argument(name + ": written twice");
  if (nbytes != p.nbytes)
    throw std::invalid_argument(name + ": nbytes " + std::to_string(nbytes) + " disagrees with its shape (" +
                                std::to_string(p.nbytes) + ")");
  pwrite_all(files_[p.file].fd, data, nbytes, p.offset, files_[p.file].tmp);
  p.written = true;
}

void CheckpointWriter::commit() {
  for (const auto& [name, p] : places_)
    if (!p.written) throw std::logic_error(name + ": never written");
  for (auto& f : files_) {
    // A full disk shows up at close on some file systems.
    if (::close(f.fd) != 0) {
      f.fd = -1;
      throw std::runtime_error(f.tmp + ": write failed (disk full?): " + std::strerror(errno));
    }
    f.fd = -1;
  }
  for (auto& f : files_) {
    std::error_code ec;
    fs::rename(f.tmp, f.path, ec);
    if (ec) throw std::runtime_error(f.path + ": cannot rename into place: " + ec.message());
  }
  committed_ = true;
  if (!index_path_.empty()) write_file_atomic(index_path_, index_text_);
}

namespace {

std::vector<TensorSpec> specs_of(const std::vector<TensorView>& tensors) {
  std::vector<TensorSpec> specs;
  for (const auto& t : tensors) {
    for (int64_t d : t.shape)
      if (d < 0) throw std::invalid_argument(t.name + ": negative dimension");
    if (static_cast<size_t>(numel(t)) * dtype_size(t.dtype) != t.nbytes)
      throw std::invalid_argument(t.name + ": nbytes " + std::to_string(t.nbytes) + " disagrees with shape " +
                                  shape_string(t.shape));
    specs.push_back({t.name, t.dtype, t.shape});
  }
  return specs;
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  CheckpointWriter w(path, specs_of(tensors), 0, metadata);
  for (const auto& t : tensors) w.put(t.name, t.data, t.nbytes);
  w.commit();
}

void write_sharded(const std::string& folder, const std::vector<TensorView>& tensors, size_t max_shard_bytes,
                   const std::map<std::string, std::string>& metadata) {
  CheckpointWriter w(folder, specs_of(tensors), std::max<size_t>(max_shard_bytes, 1), metadata);
  for (const auto& t : tensors) w.put(t.name, t.data, t.nbytes);
  w.commit();
}

// --- Conversions -----------------------------------------------------------------------------

float bf16_to_f32(uint16_t bits) { return float_of(static_cast<uint32_t>(bits) << 16); }

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return float_of(bits_of(v) | sign);
  }
  if (exp == 31) return float_of(sign | 0x7f800000u | (mant << 13));
  return float_of(sign | ((exp + 112) << 23) | (mant << 13));
}

void convert_to_f32(const TensorView& t, float* out) {
  check_convertible(t, "float32");
  const size_t n = t.nbytes / dtype_size(t.dtype);
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      if (n) std::memcpy(out, p, n * 4);
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(load<uint16_t>(p + 2 * i));
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load<uint16_t>(p + 2 * i));
      break;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(load<double>(p + 8 * i));
      break;
    default:
      break;
  }
}

void convert_to_f64(const TensorView& t, double* out) {
  check_convertible(t, "float64");
  const size_t n = t.nbytes / dtype_size(t.dtype);
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      for (size_t i = 0; i < n; ++i) out[i] = load<float>(p + 4 * i);
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(load<uint16_t>(p + 2 * i));
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load<uint16_t>(p + 2 * i));
      break;
    case DType::F64:
      if (n) std::memcpy(out, p, n * 8);
      break;
    default:
      break;
  }
}

std::vector<uint16_t> f32_to_bf16(const float* values, size_t n) {
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = to_bf16(values[i]);
  return out;
}

std::vector<uint16_t> f32_to_f16(const float* values, size_t n) {
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = to_f16(values[i]);
  return out;
}

std::string weights_fingerprint(const Checkpoint& ck) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  for (const auto& f : ck.files) {
    const uint64_t size = f.file_size();
    mix(&size, sizeof size);
  }
  for (const std::string& name : ck.names()) {
    const TensorView& t = *ck.find(name);
    mix(name.data(), name.size());
    const int d = static_cast<int>(t.dtype);
    mix(&d, sizeof d);
    for (int64_t x : t.shape) mix(&x, sizeof x);
    const size_t chunk = 64, samples = std::min<size_t>(8, (t.nbytes + chunk - 1) / chunk);
    for (size_t k = 0; k < samples; ++k) {
      const size_t at = samples > 1 ? (t.nbytes - std::min(chunk, t.nbytes)) * k / (samples - 1) : 0;
      mix(t.data + at, std::min(chunk, t.nbytes - at));
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

}  // namespace teap::model
