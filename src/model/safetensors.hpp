// Owns the safetensors format without LibTorch: memory-mapped reading of single and sharded
// checkpoints, validated against the file before any data is touched; writing single and sharded
// files; and the F16/BF16 <-> F32 conversions done on raw bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace teap::model {

enum class DType { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64,
                   U64 };

size_t dtype_size(DType dtype);       // bytes per element
std::string dtype_name(DType dtype);  // as the safetensors header spells it: "F32", "BF16"
std::optional<DType> dtype_from_name(const std::string& name);  // nullopt for an unknown name

// One tensor's bytes, little-endian, row-major. `data` points into a mapped file (or the caller's
// buffer when writing); it is aligned to the element size only when the writer aligned it (ours
// does; see write_safetensors), so read it with memcpy or the converters below.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // [d0, d1, ...]; empty for a scalar
  const uint8_t* data = nullptr;
  size_t nbytes = 0;  // == numel(*this) * dtype_size(dtype)
  std::string file;   // the file it was read from, for messages; empty when not from a file
};

int64_t numel(const TensorView& t);
std::string shape_string(const std::vector<int64_t>& shape);  // "[2, 3]"

// A read-only memory map of one .safetensors file. Opening validates the whole header against the
// file size (header length, JSON, dtypes, shapes, offsets within the data, no overlaps); any fault
// is an InputError "<file>: <what>" naming the tensor where there is one. Views stay valid while
// the object (or the one it was moved into) lives.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }  // sorted by name
  const TensorView* find(const std::string& name) const;               // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t file_size() const { return size_; }

 private:
  void unmap() noexcept;

  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A model folder's weights: `model.safetensors`, else `model.safetensors.index.json` and the shards
// it names (as transformers, the single file wins when both exist). Every tensor of the index must
// be in the shard it names, and no tensor may be in two files.
struct Checkpoint {
  std::string folder;
  std::string index_file;              // the index's path; empty for a single file
  std::vector<SafetensorsFile> files;  // one, or the shards in file-name order
  std::unordered_map<std::string, const TensorView*> by_name;  // points into `files`

  static Checkpoint open(const std::string& folder);  // == open_checkpoint(folder)

  const TensorView* find(const std::string& name) const;  // nullptr when absent
  // InputError "<folder>: missing tensor '<name>'" when absent.
  const TensorView& get(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  size_t total_bytes() const;              // of all tensors' data
};

// What the weights are, cheaply: a 64-bit hash (16 hex digits) of every tensor's name, dtype,
// shape and file size, and of up to 8 evenly spaced 64-byte samples of every tensor's data. Any
// retraining changes every tensor, so it changes the samples; reading them costs a few hundred
// KiB whatever the model's size.
std::string weights_fingerprint(const Checkpoint& checkpoint);

// InputError naming the folder when it holds no safetensors weights (saying so when it holds only
// pytorch_model.bin), or naming the index or a shard when they are at fault.
Checkpoint open_checkpoint(const std::string& folder);

// Writes one .safetensors file atomically (a temporary beside it, renamed into place). The data
// is laid out as the `safetensors` Python package does: by element size, largest first, then by
// name, so every tensor starts at a multiple of its element size (the header is padded with
// spaces to a multiple of 8). `metadata` is the header's `__metadata__`, omitted when empty;
// transformers expects {"format": "pt"}. Throws std::invalid_argument for a duplicate name or a
// view whose nbytes disagrees with its shape, std::runtime_error when the file cannot be written.
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes `folder`/model-0000i-of-0000n.safetensors and model.safetensors.index.json (index last,
// so a reader never sees it name a missing shard). Tensors are taken in name order and a shard is
// closed before it would exceed `max_shard_bytes` (a larger tensor gets a shard of its own). It
// does not remove a model.safetensors already in the folder, which readers would prefer.
void write_sharded(const std::string& folder, const std::vector<TensorView>& tensors,
                   size_t max_shard_bytes,
                   const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// A tensor to be written: its name, dtype and shape, without data.
struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t nbytes() const;  // numel * dtype_size
};

// Writes a checkpoint tensor by tensor, so that a model larger than memory can be written: the
// layout (a single file, or shards when max_shard_bytes > 0) is fixed from the specs, exactly as
// write_safetensors / write_sharded lay it out, and each tensor's bytes are then written at their
// place in any order (put), the caller freeing them at once. commit() renames every file into
// place (a shard index last); until then only temporaries exist, and they are removed when the
// writer is destroyed uncommitted. Errors as write_safetensors.
class CheckpointWriter {
 public:
  // `path_or_folder`: the .safetensors file (single) or the folder of the shards (sharded).
  CheckpointWriter(const std::string& path_or_folder, const std::vector<TensorSpec>& specs, size_t max_shard_bytes = 0,
                   const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // std::invalid_argument for an unknown name, a second put, or nbytes that disagree with the spec.
  void put(const std::string& name, const void* data, size_t nbytes);
  // std::logic_error when a tensor was never put.
  void commit();

 private:
  struct File {
    std::string path, tmp;
    int fd = -1;
  };
  struct Place {
    size_t file = 0;
    uint64_t offset = 0, nbytes = 0;
    bool written = false;
  };
  std::vector<File> files_;
  std::unordered_map<std::string, Place> places_;
  std::string index_path_, index_text_;  // sharded only
  bool committed_ = false;
};

// F32, F16, BF16 and F64 to float / double (F16 subnormals, infinities and NaNs exact). `out`
// holds numel(t) values. Another dtype is an InputError naming the file and tensor.
void convert_to_f32(const TensorView& t, float* out);
void convert_to_f64(const TensorView& t, double* out);

// Round to nearest, ties to even, as torch's .to(bfloat16) / .to(float16) do: NaN becomes a quiet
// NaN (BF16 0x7FC0 like torch; F16 keeps the sign, 0x7E00), overflow becomes infinity.
std::vector<uint16_t> f32_to_bf16(const float* values, size_t n);
std::vector<uint16_t> f32_to_f16(const float* values, size_t n);
float bf16_to_f32(uint16_t bits);
float f16_to_f32(uint16_t bits);

}  // namespace teap::model
