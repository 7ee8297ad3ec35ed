// Owns the evaluation file of a sweep (HDF5, OUT/evaluation/<cell>/bNNNNN.h5): one batch run with
// each of its cell's circuits (../shared/spec/circuits.md): per circuit its name, edge count and
// each prompt's logit difference, and the batch's faithfulness F; the cell's baselines and the
// settings as attributes. Readable with h5py alone (docs/outputs.md). Plain buffers: no LibTorch.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace teap::io {

struct EvaluationRecord {
  // Root attributes: cell_id, settings_hash, evaluation_hash, method, metric_pairing, ...
  // (text); batch_index, n_batches, input_node, logits_node, prune, top_n, rank, ... (integers);
  // baseline_clean_ld, baseline_corrupt_ld, seconds (reals).
  std::map<std::string, std::string> text_attrs;
  std::map<std::string, int64_t> int_attrs;
  std::map<std::string, double> real_attrs;

  int n_prompts = 0;
  std::vector<std::string> circuit;       // [C] "consistent", "top-10", "empty", "full"
  std::vector<int64_t> circuit_k;         // [C] a top-k circuit's k, -1 for the others
  std::vector<int64_t> edge_count;        // [C] edges of the scoring graph in the circuit
  std::vector<double> logit_diff;         // [C * n_prompts] each prompt's LD with the circuit run
  std::vector<double> faithfulness;       // [C] F of this batch; NaN where the cell has no F
  std::vector<double> clean_ld, corrupt_ld;  // [n_prompts] the batch's clean and corrupt runs
  // Why F is not defined for this cell ("" when it is): a degenerate cell (LD_clean == LD_corr).
  std::string no_faithfulness;
  int n_circuits() const { return static_cast<int>(circuit.size()); }
};

// Written atomically (io/hdf5_file.hpp): a file under its final name is complete.
void write_evaluation(const std::string& path, const EvaluationRecord& e);

// Reads an evaluation file; a missing, truncated or foreign file is an InputError naming it.
EvaluationRecord read_evaluation(const std::string& path);

// Its identity, with every dataset's shape checked and no data read.
struct EvaluationHeader {
  std::string cell_id, settings_hash, evaluation_hash;
  int64_t batch_index = -1;
};
EvaluationHeader read_evaluation_header(const std::string& path);

inline constexpr const char* kEvaluationFormat = "tinysql-eap evaluation v1";

}  // namespace teap::io
