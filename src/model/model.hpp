// Owns a loaded model and its forward pass. The forward pass can fill an ActivationRecord with
// what attribution needs (head outputs before W_O, MLP outputs, and tensors whose gradients are
// the gradients at each head's Q/K/V input and each MLP's input); it never knows about edges.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "model/config.hpp"
#include "model/weights.hpp"

namespace teap::model {

struct Model {
  ModelConfig config;
  Weights weights;
  c10::Device device = c10::kCPU;
  c10::ScalarType dtype = c10::kFloat;  // activations and matmuls; norms and softmax in float32
  std::string path;                     // the folder it was loaded from
  int trimmed_rows = 0;                 // vocabulary rows dropped by the trim
  // Bytes of weights that point into a read-only memory map (shared by every process on the node
  // that maps the same file, never written), and the file(s) they come from; 0 and empty when
  // every weight is a private copy.
  size_t mapped_bytes = 0;
  std::string mapped_from;
};

struct LoadOptions {
  std::string device = "cpu";   // "cpu", "cuda", "cuda:N"
  std::string dtype = "float32";  // "float32", "bfloat16", "float64" (float64 for tests)
  int trim_vocab_to = 0;          // > 0: keep only the first rows of wte / lm_head
  // On CPU, weights stored in the run's dtype point into the memory-mapped checkpoint instead of
  // being copied: one copy in the page cache for every rank of the node. Mapped weights are
  // read-only (a write would fault): nothing may change a loaded model's tensors in place.
  bool map_weights = true;
  // On CPU, weights stored in another dtype (BF16 for a float32 run) are converted once per node
  // into `convert_cache`/<fingerprint>-<dtype>/model.safetensors (under a file lock: the first
  // process converts, the others wait and map its result), then mapped. Empty: each process
  // converts privately. A cache that cannot be written is a warning, and a private conversion.
  std::string convert_cache;
};

// The node-local folder for converted weights: $TEAP_WEIGHTS_CACHE, else $TMPDIR/teap-weights-<uid>
// (/tmp without TMPDIR); empty (each rank converts privately) when TEAP_WEIGHTS_CACHE is "off".
std::string default_convert_cache();

// `name_or_path` is a model folder or a repository id in the offline Hugging Face cache.
Model load_model(const std::string& name_or_path, const LoadOptions& options = {},
                 const std::string& revision = "");

// What a run needs to know of a checkpoint before it starts, read without its weights: the config,
// and that every parameter is there with the shape the config implies and a float dtype, and no
// tensor the family would not use. Any fault is an InputError naming the file and tensor.
struct CheckpointInfo {
  std::string path;  // the resolved folder
  ModelConfig config;
  size_t bytes = 0;       // of all tensors' data, as stored
  int64_t parameters = 0;  // elements of all tensors
  std::string fingerprint; // weights_fingerprint: what the weights are
};
CheckpointInfo check_model(const std::string& name_or_path, const std::string& revision = "");

// An InputError unless `device` ("cpu", "cuda", "cuda:N") exists on this machine.
void check_device(const std::string& device);

// What one layer's forward pass leaves for attribution. Tensors marked (grad) have had
// retain_grad() called when the record asks for gradients: after a backward pass their .grad()
// is the gradient of the loss at that point.
struct LayerRecord {
  at::Tensor resid_pre;  // [B,P,d_model] residual stream entering the layer (input of norm 1)
  at::Tensor resid_mid;  // [B,P,d_model] residual stream entering the MLP (input of norm 2)
  at::Tensor z;          // [B,P,H,d_head] each query head's attention-weighted values, before W_O
  at::Tensor mlp_out;    // [B,P,d_model] MLP output, bias included
  at::Tensor q;          // (grad) [B,P,H,d_head] Q projection output per query head, before rotary
  at::Tensor k, v;       // (grad) [B,P,H,d_head] K/V projection output repeated per query head
                         //        (grouped-query), before rotary; bias included
  at::Tensor mlp_in;     // (grad) [B,P,d_model] norm 2's output, the MLP's input
};

// With gradients, the graph starts at layer 0's Q/K/V projections (the weights and the embedding
// take no gradient), so a backward pass costs about one forward pass.
struct ActivationRecord {
  bool with_grads = false;     // ask for the (grad) tensors
  // Keep only each layer's k and v (the rest dropped as each layer ends), one per key/value head
  // ([B,P,H_kv,d_head], not repeated per query head: attend repeats them): a common prefix's
  // record, of which a later run reads nothing else.
  bool keys_values_only = false;
  // Keep only each layer's z and MLP output, and the embedding: a corrupt run's record, of which
  // the upstream differences read nothing else.
  bool upstream_only = false;
  // The caller reads the returned hidden state at the last position only (the metric's logits):
  // the last layer's other positions feed nothing, so the last layer computes its keys, values
  // and queries at every position, and its attention, W_O and MLP at the last position alone. Its
  // z, resid_mid, mlp_in and mlp_out, and resid_final, then cover that position only ([B,1,...]);
  // its q (and q's gradient, zero before the last position), k, v and resid_pre every position.
  // A keys_values_only record's output is read nowhere: its last layer computes keys and values
  // alone and the returned hidden state is empty ([B,0,d]).
  bool last_position_only = false;
  at::Tensor embed;            // [B,P,d_model] token (+ position) embedding entering layer 0
  std::vector<LayerRecord> layers;
  at::Tensor resid_final;      // (grad) [B,P,d_model] residual stream before the final norm
};

// Runs the model on `ids` ([B,P] int64, every row the same length, no padding) and returns the
// final-normed residual stream [B,P,d_model] in float32. Fills `record` when given.
// With start > 0 only positions [start, P) are computed (outputs and record cover those), the
// earlier ones being taken from `prefix`, the record of a run whose ids agree before `start`:
// causal attention makes their keys and values the same, so they are not computed twice.
at::Tensor forward(const Model& m, const at::Tensor& ids, ActivationRecord* record = nullptr, int64_t start = 0,
                   const ActivationRecord* prefix = nullptr);

// The same run from a given embedding [B, P-start, d_model] of positions [start, P) instead of
// token ids (integrated gradients interpolate it between two prompts' embeddings); `prefix` as
// above, from a run whose embedding agrees before `start`. The embedding is used as given: for
// GPT-Neo it includes the position embedding.
at::Tensor forward_embedded(const Model& m, const at::Tensor& embedding, ActivationRecord* record = nullptr,
                            int64_t start = 0, const ActivationRecord* prefix = nullptr);

// Checks that `ids` [..., P] fit the model: P within max_position_embeddings, every id inside the
// vocabulary; an InputError naming the model's config.json and the limit otherwise. forward()
// calls it.
void check_ids(const Model& m, const at::Tensor& ids);

// Logits of the given tokens at the last position: `hidden` [B,P,d], `tokens` [B,K] -> [B,K].
// Only those K rows of the unembedding are used.
at::Tensor last_position_logits(const Model& m, const at::Tensor& hidden, const at::Tensor& tokens);
// Full logits [B,P,vocab] (for completion and tests).
at::Tensor full_logits(const Model& m, const at::Tensor& hidden);

// The normalisation of layer `layer`'s block `which` (1: before attention, 2: before the MLP;
// layer == n_layers: the final norm) applied to x [..., d_model], in float32.
at::Tensor apply_norm(const Model& m, int layer, int which, const at::Tensor& x);

// The vector-Jacobian product of that norm at x [B,P,d]: the gradient at its input for an output
// gradient gy [..., B,P,d] (leading dimensions broadcast, so many cotangents go in one call).
// Computed analytically in the norm's compute type; x is not differentiated through.
at::Tensor norm_vjp(const Model& m, int layer, int which, const at::Tensor& x, const at::Tensor& gy);

// Number of parameters, and the dtype the checkpoint stored them in.
int64_t parameter_count(const Model& m);

}  // namespace teap::model
