// Owns the per-batch result file of a sweep (HDF5): one work unit's raw scores, logit
// differences, token ids and words, the graph's node names and edge mask, and the cell's settings
// as attributes. Readable with h5py/pandas alone (docs/outputs.md). Plain buffers: no LibTorch.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace teap::io {

struct UnitRecord {
  // Identity and settings (root attributes).
  std::map<std::string, std::string> text_attrs;  // cell_id, feature, hf_model, dtype, device, ...
  std::map<std::string, int64_t> int_attrs;       // model, commandset, batch_index, num_fields, ...
  std::map<std::string, double> real_attrs;       // seconds, ...

  int n_upstream = 0, n_downstream = 0, n_prompts = 0, n_positions = 0;
  std::vector<float> scores;                    // [n_upstream * n_downstream] raw S_b, 0 off-edge
  std::vector<uint8_t> valid;                   // [n_upstream * n_downstream] 1 = edge
  std::vector<std::string> upstream, downstream;  // node names
  std::vector<double> clean_ld, corrupt_ld;     // [n_prompts]
  std::vector<int64_t> clean_ids, corrupt_ids;  // [n_prompts * n_positions] model inputs
  std::vector<int64_t> clean_token, corrupt_token, answer_token;  // [n_prompts]
  std::vector<std::string> clean_word, corrupt_word;              // [n_prompts]
  // [n_prompts] each run's top token at the last position; empty in files written before they
  // were recorded (the datasets are then absent).
  std::vector<int64_t> clean_top_token, corrupt_top_token;
  int64_t clean_correct = 0;
};

// Writes `path` atomically: to a temporary name beside it, flushed and closed, then renamed, so a
// file under the final name is always complete.
void write_unit(const std::string& path, const UnitRecord& unit);

// Reads a unit file; a missing, truncated or foreign file is an InputError naming it.
UnitRecord read_unit(const std::string& path);

// A unit file's identity, read without its data.
struct UnitHeader {
  std::string cell_id, settings_hash;
  int64_t batch_index = -1;
};

// Opens a unit file, checks its format tag and that every dataset is there with a consistent
// shape, and returns its identity; no data is read, so a resume can check every file of a sweep.
// A file that is truncated, foreign to this program or incomplete is an InputError naming it.
UnitHeader read_unit_header(const std::string& path);

// The format tag written into every unit file.
inline constexpr const char* kUnitFormat = "tinysql-eap unit v1";

}  // namespace teap::io
