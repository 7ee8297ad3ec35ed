// Owns job files: the TOML a researcher writes (models, grid axes, exclusions, settings, output),
// validated with the key's path and line on every error, and its expansion into cells with a
// stable id and a hash of every setting that changes a cell's per-batch results.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tinysql/corrupt.hpp"

namespace teap::job {

// Upper bounds of the settings that size work: the unit files are numbered with five digits, a
// batch beyond kMaxBatchSize prompts is refused before its memory is estimated, and a thread
// count beyond kMaxThreads is a typo on any machine.
inline constexpr int64_t kMaxBatches = 99999 + 1;
inline constexpr int64_t kMaxBatchSize = 100000;
inline constexpr int64_t kMaxThreads = 4096;
inline constexpr int64_t kMaxUnits = 10000000;  // cells x batches a manifest may list

struct Settings {
  int num_fields = 2;
  int batch_size = 30;
  int batches = 5;
  int top_n = 10;
  uint64_t seed = 0;
  std::string dtype = "float32";
  std::string device = "cpu";
  int threads = 0;  // 0: SLURM_CPUS_PER_TASK, else the node's cores divided among its ranks
  std::string downstream_heads = "qkv";
  std::string metric_pairing = "own";
  int group_size = 1;  // ranks sharing one work unit
  std::string model_variant = "auto";  // auto: the synonym fine-tune for cells that show synonyms
  bool any_architecture = false;  // accept a checkpoint whose family is not its BM number's (gpt_neo, qwen2, llama)
  std::string method = "eap";     // eap, eap-ig-inputs, clean-corrupted, exact (eap/method.hpp)
  int ig_steps = 5;               // eap-ig-inputs: interpolation steps
  bool input_node = false;        // score the embedding as an upstream node
  bool logits_node = false;       // score the final residual stream as a downstream node
  // Per-rank memory for a batch's work and the rank's private weights ("12GiB"; weights mapped
  // read-only are shared by the node and not counted; "auto": the node's memory less those, divided
  // among its ranks). A batch that would not fit is scored in micro-batches, which give the same
  // scores up to float order: not part of the settings hash.
  std::string memory_budget = "auto";
  double memory_budget_bytes = 0;  // the parsed value; 0 for auto
};

// [evaluate]: the circuits each cell is run with once all its scores are in (circuits.md). Off
// unless the table is there; then on unless `enabled = false`.
struct Evaluate {
  bool enabled = false;
  std::vector<std::string> circuits = {"consistent", "top-k", "empty", "full"};
  std::vector<int64_t> top_k = {1, 2, 5, 10, 20, 50, 100, 200, 500, -1};  // -1: "all"
  bool prune = false;
};

// Thresholds of the cell-quality flags (eap/quality.hpp); they change what reduce reports, not
// any unit's numbers, so they are not part of the settings hash.
struct Quality {
  double min_effect_vs_clean = 0.05;
  double min_effect_vs_spread = 0.15;
  double min_accuracy = 0.5;
};

struct Cell {
  std::string id;         // BM1.CS1.EngTableName.novel0.synfield0.syntable0
  int model = 1;          // BM number
  int commandset = 1;     // 0 = base model
  tinysql::CellSettings prompts;
  std::string weights;    // model folder or repository id
  std::string tokenizer;  // folder or repository id of the tokenizer (the base model's by default)
  std::string weights_origin, tokenizer_origin;  // "FILE:LINE: models.BM1.cs1" (where they were set), for messages
  bool trim_vocab = false;
  std::string settings;   // canonical "key=value;..." of everything that changes per-batch results
  std::string hash;       // 16 hex digits of FNV-1a over `settings`
  // Canonical "key=value;..." of what changes the cell's evaluation units (the [evaluate] table and
  // top_n, which makes the consistent circuit), and the hash over `settings` and it: evaluation
  // units of another hash are redone, score units stay.
  std::string evaluation;
  std::string evaluation_hash;
};

struct Job {
  std::string path;    // the job file
  std::string output;  // sweep folder (relative paths in the file are relative to the file's folder)
  std::string output_origin;  // "FILE:LINE: output", for messages
  std::string text;    // the file as read (copied into the sweep folder)
  Settings settings;
  Quality quality;          // [quality]
  Evaluate evaluate;        // [evaluate]
  std::vector<Cell> cells;  // grid order: model, command set, feature, novel, field synonyms, table synonyms
};

// Adds what the weights are (a fingerprint of the checkpoint's contents, model/safetensors.hpp) to
// a cell's settings and hash, so that a checkpoint replaced at the same path is another setting.
void set_weights_id(Cell& cell, const std::string& weights_id);

// "all" for -1, else the number: how a top_k entry is written.
std::string top_k_string(int64_t k);

// Reads and validates a job; any problem is an InputError "FILE:LINE: key: what".
Job load_job(const std::string& path);

// The Hugging Face repository of a model (BM 1-3) and command set (0 = base), plain or synonym
// fine-tune (../shared/spec/tinysql-corrupt.md).
std::string default_repository(int model, int commandset, bool synonym_variant);

}  // namespace teap::job
