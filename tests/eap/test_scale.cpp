// Issue 17, the real models' scale on CPU: denormals flushed on every thread with unchanged
// scores, weights shared through read-only maps (and the node's converted copy), the presets'
// real shapes, tensor-by-tensor checkpoint writes, micro-batches that add up to the whole batch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <limits>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <optional>
#include <thread>

#include "eap/graph.hpp"
#include "eap/memory.hpp"
#include "eap/micro_batch.hpp"
#include "job/job.hpp"
#include "runner/memory_plan.hpp"
#include "eap/score.hpp"
#include "eap/topn.hpp"
#include "model/denormal.hpp"
#include "model/make.hpp"
#include "model/model.hpp"
#include "model/params.hpp"
#include "model/products.hpp"
#include "model/safetensors.hpp"
#include "tiny_models.hpp"
#include "util/error.hpp"

using namespace teap;
using model::Family;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("teap_scale_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// The file that the mapping holding `p` maps, from /proc/self/maps ("" for anonymous memory).
std::string mapped_file_of(const void* p) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto a = reinterpret_cast<uintptr_t>(p);
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms, offset, dev, inode, path;
    in >> range >> perms >> offset >> dev >> inode;
    std::getline(in, path);
    const size_t dash = range.find('-');
    const uintptr_t lo = std::stoull(range.substr(0, dash), nullptr, 16), hi = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (a >= lo && a < hi) {
      path.erase(0, path.find_first_not_of(' '));
      return perms[1] == 'w' ? "(writable) " + path : path;
    }
  }
  return "";
}

std::vector<const at::Tensor*> weights_of(const model::Model& m) {
  const auto& w = m.weights;
  std::vector<const at::Tensor*> out = {&w.wte, &w.ln_f_w};
  for (const auto& l : w.layers)
    for (const at::Tensor* t : {&l.ln1_w, &l.w_q, &l.w_k, &l.w_v, &l.w_o, &l.ln2_w, &l.w_gate, &l.w_up, &l.w_down})
      out.push_back(t);
  return out;
}

model::ModelConfig small_qwen2() {
  model::ModelConfig c = model::family_config(Family::Qwen2, 2, 4, 2, 32, 48, eap_test::kVocab);
  c.max_positions = 64;
  return c;
}

std::vector<float> scores_of(const model::Model& m, const eap_test::Batch& b, const eap::ScoreOptions& o = {}) {
  return eap::score_batch(m, eap::make_graph(m.config.n_layers, m.config.n_heads), b.in, o).scores;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

// --- Denormals --------------------------------------------------------------------------------

// Products of 1e-20 and 1e-20 are denormal (1e-40): flushed, a matrix product of them is exactly
// 0 on every thread of OpenBLAS and of LibTorch's pool; computed, their sum (2.56e-38 over 256
// terms) is a normal float.
TEST(Denormals, FlushedOnEveryPoolThreadIncludingBlas) {
  at::set_num_threads(4);
  model::flush_denormals(false);
  const at::Tensor a = at::full({512, 256}, 1e-20f), b = at::full({256, 512}, 1e-20f);
  const at::Tensor tiny = at::full({1 << 22}, 1e-40f);
  // Control: without flushing, the same products are not zero (so the checks below can fail).
  ASSERT_GT(at::matmul(a, b).min().item<float>(), 0.f);
  ASSERT_GT((tiny * 1.0f).min().item<float>(), 0.f);
  ASSERT_TRUE(model::flush_denormals(true));
  EXPECT_TRUE(model::flushing_denormals());
  EXPECT_EQ(at::matmul(a, b).abs().max().item<float>(), 0.f) << "a BLAS thread computes denormals";
  EXPECT_EQ((tiny * 1.0f).abs().max().item<float>(), 0.f) << "an intra-op thread computes denormals";
  // Threads the pool creates later inherit the setting.
  at::set_num_threads(6);
  EXPECT_EQ(at::matmul(a, b).abs().max().item<float>(), 0.f);
  EXPECT_EQ((tiny * 1.0f).abs().max().item<float>(), 0.f);
  model::flush_denormals(false);
  at::set_num_threads(2);
}

// A checkpoint whose heads 0 and 1 write ~1e-38 (their output projections scaled by 1e-36) makes
// the contraction's products denormal, the case that ran 13-19x slower (the benchmark times it).
// Flushed, every score moves by less than 1e-30 and the top edges are the same.
TEST(Denormals, ScoresOfADenormalCheckpointAreUnchangedWhenFlushed) {
  model::Model m = model::random_model(small_qwen2(), 5, at::kFloat);
  // Heads 0 and 1 of every layer write ~1e-38 into the residual stream; the others are normal.
  const int64_t dh = m.config.d_head;
  for (auto& l : m.weights.layers) {
    at::Tensor scale = at::ones({l.w_o.size(1)});
    scale.narrow(0, 0, 2 * dh).fill_(1e-36f);
    l.w_o = l.w_o * scale;
  }
  const eap_test::Batch b = eap_test::make_batch(6, 9, 3);
  model::flush_denormals(false);
  const std::vector<float> computed = scores_of(m, b);
  model::flush_denormals(true);
  const std::vector<float> flushed = scores_of(m, b);
  model::flush_denormals(false);
  ASSERT_EQ(computed.size(), flushed.size());
  size_t denormal = 0;
  for (size_t i = 0; i < computed.size(); ++i) {
    EXPECT_NEAR(computed[i], flushed[i], 1e-30) << "score " << i;
    denormal += computed[i] != 0 && std::fpclassify(computed[i]) == FP_SUBNORMAL;
  }
  const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads);
  auto edges = [&](const std::vector<float>& s) {
    std::vector<std::pair<int, int>> out;
    for (const auto& e : eap::top_n(g, s.data(), 1.0, 10, false)) out.emplace_back(e.up, e.down);
    return out;
  };
  EXPECT_EQ(edges(computed), edges(flushed));
  EXPECT_GT(denormal, 0u) << "the checkpoint does not produce denormal scores";
  std::printf("denormal scores without flushing: %zu of %zu\n", denormal, computed.size());
}

// --- Shared weights --------------------------------------------------------------------------

TEST(SharedWeights, MappedReadOnlyFromTheCheckpointWhenStoredInTheRunDtype) {
  const std::string dir = temp_dir("mapped");
  model::save_model(model::random_model(small_qwen2(), 1), dir);
  const model::Model mapped = model::load_model(dir);
  model::LoadOptions copy;
  copy.map_weights = false;
  const model::Model copied = model::load_model(dir, copy);
  const std::string file = fs::canonical(dir + "/model.safetensors").string();
  EXPECT_EQ(mapped.mapped_bytes, model::Checkpoint::open(dir).total_bytes());
  EXPECT_EQ(copied.mapped_bytes, 0u);
  for (const at::Tensor* t : weights_of(mapped)) EXPECT_EQ(mapped_file_of(t->data_ptr()), file);
  for (const at::Tensor* t : weights_of(copied)) EXPECT_NE(mapped_file_of(t->data_ptr()), file);
  // The same numbers, and the same scores: nothing writes into a weight (it would fault).
  const eap_test::Batch b = eap_test::make_batch(4, 8, 2);
  EXPECT_EQ(scores_of(mapped, b), scores_of(copied, b));
  fs::remove_all(dir);
}

TEST(SharedWeights, TrimmedVocabularyOfAMappedModelIsAView) {
  const std::string dir = temp_dir("trim");
  model::save_model(model::random_model(small_qwen2(), 1), dir);
  model::LoadOptions lo;
  lo.trim_vocab_to = eap_test::kVocab - 3;
  const model::Model m = model::load_model(dir, lo);
  EXPECT_EQ(mapped_file_of(m.weights.wte.data_ptr()), fs::canonical(dir + "/model.safetensors").string());
  EXPECT_EQ(m.weights.wte.size(0), eap_test::kVocab - 3);
  EXPECT_EQ(scores_of(m, eap_test::make_batch(3, 7, 4)).size(), size_t(eap::make_graph(2, 4).n_upstream()) * eap::make_graph(2, 4).n_downstream());
  fs::remove_all(dir);
}

// BF16 weights for a float32 run: converted once into the node's cache (the first load), mapped
// from there by every later load (no second conversion: the same file, untouched), with the
// numbers of a private conversion.
TEST(SharedWeights, ConvertedOncePerNodeThenMapped) {
  const std::string dir = temp_dir("bf16"), cache = temp_dir("cache");
  model::SaveOptions so;
  so.bf16 = true;
  model::save_model(model::random_model(small_qwen2(), 2), dir, so);
  model::LoadOptions lo;
  lo.convert_cache = cache;
  const model::Model first = model::load_model(dir, lo);
  ASSERT_GT(first.mapped_bytes, 0u);
  ASSERT_EQ(first.mapped_from.rfind(cache, 0), 0u) << first.mapped_from;
  const std::string converted = first.mapped_from;
  for (const at::Tensor* t : weights_of(first)) {
    EXPECT_EQ(t->scalar_type(), at::kFloat);
    EXPECT_EQ(mapped_file_of(t->data_ptr()), fs::canonical(converted).string());
  }
  struct stat before {}, after {};
  ASSERT_EQ(::stat(converted.c_str(), &before), 0);
  const model::Model second = model::load_model(dir, lo);
  ASSERT_EQ(::stat(converted.c_str(), &after), 0);
  EXPECT_EQ(second.mapped_from, converted);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
  model::LoadOptions priv;
  priv.map_weights = false;
  const model::Model own = model::load_model(dir, priv);
  const eap_test::Batch b = eap_test::make_batch(4, 8, 5);
  EXPECT_EQ(scores_of(second, b), scores_of(own, b));
  fs::remove_all(dir);
  fs::remove_all(cache);
}

// Two loaders at once (separate lock descriptions, as two ranks): one converts, the other waits
// and maps its file; no temporary is left.
TEST(SharedWeights, ConcurrentLoadsShareOneConversion) {
  const std::string dir = temp_dir("race"), cache = temp_dir("race_cache");
  model::SaveOptions so;
  so.bf16 = true;
  model::save_model(model::random_model(small_qwen2(), 3), dir, so);
  model::LoadOptions lo;
  lo.convert_cache = cache;
  std::optional<model::Model> a, b;
  std::thread ta([&] { a.emplace(model::load_model(dir, lo)); });
  std::thread tb([&] { b.emplace(model::load_model(dir, lo)); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->mapped_from, b->mapped_from);
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(cache)) files += e.is_regular_file() && e.path().extension() != ".lock";
  EXPECT_EQ(files, 1);
  fs::remove_all(dir);
  fs::remove_all(cache);
}

TEST(SharedWeights, NonFiniteWeightsAreNamedAndNothingIsCached) {
  const std::string dir = temp_dir("nan"), cache = temp_dir("nan_cache");
  model::Model m = model::random_model(small_qwen2(), 4);
  m.weights.layers[1].w_up = m.weights.layers[1].w_up.clone();
  m.weights.layers[1].w_up[0][3] = std::nanf("");
  model::SaveOptions so;
  so.bf16 = true;
  model::save_model(m, dir, so);
  model::LoadOptions lo;
  lo.convert_cache = cache;
  try {
    model::load_model(dir, lo);
    FAIL() << "loaded";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(dir + "/model.safetensors"), std::string::npos) << what;
    EXPECT_NE(what.find("model.layers.1.mlp.up_proj.weight' has 1 non-finite"), std::string::npos) << what;
  }
  for (const auto& e : fs::recursive_directory_iterator(cache))
    EXPECT_NE(e.path().filename(), "model.safetensors") << "a conversion of bad weights was kept";
  fs::remove_all(dir);
  fs::remove_all(cache);
}

// The check runs slice by slice (4 Mi elements, so that a rank's load holds no whole-embedding
// temporaries): values in every slice count, those at the slices' edges included.
TEST(SharedWeights, NonFiniteWeightsPastTheFirstSliceAreCounted) {
  const std::string dir = temp_dir("nan_slices");
  model::ModelConfig c = model::family_config(Family::Qwen2, 1, 4, 2, 64, 48, 70000);  // 4.48 Mi embedding values
  c.max_positions = 64;
  model::Model m = model::random_model(c, 5);
  at::Tensor flat = m.weights.wte.clone().view({-1});
  const int64_t slice = int64_t(1) << 22;
  ASSERT_GT(flat.numel(), slice);
  flat[slice - 1] = std::numeric_limits<float>::infinity();
  flat[slice] = std::nanf("");
  flat[flat.numel() - 1] = -std::numeric_limits<float>::infinity();
  m.weights.wte = flat.view(m.weights.wte.sizes());
  if (c.tie_word_embeddings) m.weights.lm_head = m.weights.wte;
  model::save_model(m, dir);
  try {
    model::load_model(dir);  // float32 stored and run: mapped, checked in place
    FAIL() << "loaded";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("model.embed_tokens.weight' has 3 non-finite"), std::string::npos) << what;
  }
  fs::remove_all(dir);
}

// --- Presets and writing ---------------------------------------------------------------------

// The parameter counts of the real checkpoints: TinyStories-Instruct-2Layers-33M, Qwen2.5-0.5B
// (494,032,768) and Llama-3.2-1B (1,235,814,400, tied).
TEST(Presets, RealShapesAndParameterCounts) {
  auto count = [](const std::string& name) {
    model::Model m;
    m.config = model::preset_config(name);
    int64_t n = 0;
    for (const auto& p : model::parameter_table(m)) {
      if (p.optional) continue;
      int64_t k = 1;
      for (int64_t s : p.shape) k *= s;
      n += k;
    }
    return n;
  };
  EXPECT_EQ(count("bm1"), 78748672);
  EXPECT_EQ(count("bm2"), 494032768);
  EXPECT_EQ(count("bm3"), 1235814400);
  const auto bm3 = model::preset_config("bm3");
  EXPECT_TRUE(bm3.tie_word_embeddings);
  EXPECT_EQ(bm3.d_head, 64);
  ASSERT_TRUE(bm3.rope_scaling);
  EXPECT_EQ(bm3.rope_scaling->factor, 32.0);
  EXPECT_EQ(model::preset_config("bm2").vocab_size, 151936);
  EXPECT_THROW(model::preset_config("bm4"), InputError);
}

// Streaming writes give the very bytes of drawing the whole model and saving it, single or
// sharded, float32 or bfloat16, tied or not.
TEST(StreamingWriter, RandomModelWrittenTensorByTensorIsByteIdentical) {
  for (bool bf16 : {false, true})
    for (int64_t shard : {int64_t(0), int64_t(20000)})
      for (Family f : {Family::Llama, Family::Qwen2, Family::GptNeo}) {
        model::ModelConfig c = model::family_config(f, 2, 4, 0, 32, 48, 40);
        c.max_positions = 16;
        c.torch_dtype = bf16 ? "bfloat16" : "float32";
        const std::string whole = temp_dir("whole"), streamed = temp_dir("streamed");
        model::SaveOptions so;
        so.bf16 = bf16;
        so.max_shard_bytes = shard;
        model::save_model(model::random_model(c, 9), whole, so);
        model::write_random_model(c, 9, streamed, so);
        int files = 0;
        for (const auto& e : fs::directory_iterator(whole)) {
          ++files;
          EXPECT_EQ(file_bytes(e.path().string()), file_bytes(streamed + "/" + e.path().filename().string()))
              << e.path().filename() << " bf16 " << bf16 << " shard " << shard;
        }
        EXPECT_EQ(files, std::distance(fs::directory_iterator(streamed), fs::directory_iterator{}));
        EXPECT_EQ(model::parse_config(streamed + "/config.json").torch_dtype, bf16 ? "bfloat16" : "float32");
        fs::remove_all(whole);
        fs::remove_all(streamed);
      }
}

// --- Micro-batches and the memory budget --------------------------------------------------------

namespace {

void expect_same_batch(const eap::BatchScores& whole, const eap::BatchScores& parts, double tol) {
  ASSERT_EQ(whole.scores.size(), parts.scores.size());
  double scale = 0;
  for (float v : whole.scores) scale = std::max(scale, double(std::abs(v)));
  for (size_t i = 0; i < whole.scores.size(); ++i) EXPECT_NEAR(whole.scores[i], parts.scores[i], tol * scale) << "score " << i;
  ASSERT_EQ(whole.clean_ld.size(), parts.clean_ld.size());
  // A logit difference is the difference of two logits of order 1: its rounding error follows the
  // logits, not the difference (a float32 LD of 1.9e-4 moved by 1.5e-8 between batch sizes).
  for (size_t i = 0; i < whole.clean_ld.size(); ++i) {
    EXPECT_NEAR(whole.clean_ld[i], parts.clean_ld[i], tol * (1 + std::abs(whole.clean_ld[i])));
    EXPECT_NEAR(whole.corrupt_ld[i], parts.corrupt_ld[i], tol * (1 + std::abs(whole.corrupt_ld[i])));
  }
  EXPECT_EQ(whole.clean_top, parts.clean_top);
  EXPECT_EQ(whole.corrupt_top, parts.corrupt_top);
  EXPECT_EQ(whole.clean_correct, parts.clean_correct);
  EXPECT_EQ(whole.n_prompts, parts.n_prompts);
}

}  // namespace

// The metric is a mean over prompts: the prompt-weighted sum of the parts' matrices is the
// batch's (float64: to rounding; float32: to float tolerance), for every family, with the
// input and logits nodes, and for each split of 7 prompts.
TEST(MicroBatch, PartsAddUpToTheWholeBatch) {
  for (Family f : {Family::GptNeo, Family::Qwen2, Family::Llama}) {
    const model::Model m = eap_test::make_model(f);
    eap::GraphOptions go;
    go.input_node = go.logits_node = true;
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
    const eap_test::Batch b = eap_test::make_batch(7, 9, 11, 2);
    const eap::BatchScores whole = eap::score_batch(m, g, b.in);
    for (int micro : {1, 2, 3, 6}) {
      SCOPED_TRACE("family " + model::family_name(f) + ", micro-batches of " + std::to_string(micro));
      expect_same_batch(whole, eap::score_in_micro_batches(m, g, b.in, {}, micro), 1e-12);
    }
    EXPECT_EQ(eap::score_in_micro_batches(m, g, b.in, {}, 7).scores, whole.scores);  // one part: score_batch itself
  }
  model::Model m32 = model::random_model(small_qwen2(), 6, at::kFloat);
  const eap::Graph g = eap::make_graph(m32.config.n_layers, m32.config.n_heads);
  const eap_test::Batch b = eap_test::make_batch(30, 10, 12);
  expect_same_batch(eap::score_batch(m32, g, b.in), eap::score_in_micro_batches(m32, g, b.in, {}, 8), 1e-5);
}

// A rank group's share: the weight applies to the total, and the group's sum is called once, with
// the whole share's matrix, as score_batch calls it.
TEST(MicroBatch, GroupSumCalledOnceWithTheWeightedTotal) {
  const model::Model m = eap_test::make_model(Family::Llama);
  const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads);
  const eap_test::Batch b = eap_test::make_batch(6, 8, 13);
  int calls = 0;
  std::vector<double> summed;
  eap::ScoreOptions o;
  o.weight = 0.25;
  o.sum_scores = [&](void* data, size_t n, bool is_double, bool on_cuda) {
    ++calls;
    ASSERT_TRUE(is_double);  // a float64 model's compute type, as score_batch passes it
    ASSERT_FALSE(on_cuda);
    summed.assign(static_cast<double*>(data), static_cast<double*>(data) + n);
  };
  const eap::BatchScores parts = eap::score_in_micro_batches(m, g, b.in, o, 4);
  EXPECT_EQ(calls, 1);
  const eap::BatchScores whole = eap::score_batch(m, g, b.in);
  ASSERT_EQ(summed.size(), whole.scores.size());
  for (size_t i = 0; i < summed.size(); ++i) {
    EXPECT_NEAR(summed[i], 0.25 * whole.scores[i], 1e-6 * (1 + std::abs(whole.scores[i])));
    EXPECT_FLOAT_EQ(parts.scores[i], float(summed[i]));
  }
}

// One workspace for a unit's batches and a batch's micro-batches (eap/workspace.hpp): its buffers
// hold the last call's numbers, and a later call of another shape must not read any of them; the
// micro-batches' deferred top tokens and shared prefix must not leak into a later whole batch.
TEST(MicroBatch, SharedWorkspaceLeavesNoTrace) {
  for (const auto dtype : {at::kDouble, at::kBFloat16}) {
    SCOPED_TRACE(std::string("dtype ") + c10::toString(dtype));
    const model::Model m = model::random_model(small_qwen2(), 9, dtype);
    eap::GraphOptions go;
    go.input_node = go.logits_node = true;
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
    const eap_test::Batch large = eap_test::make_batch(8, 12, 21, 3), small = eap_test::make_batch(3, 7, 22, 1);
    eap::ScoreOptions shared;
    shared.workspace = eap::make_workspace();
    eap::ScoreOptions ig = shared;
    ig.method = eap::Method::EapIgInputs;
    ig.ig_steps = 3;
    eap::ScoreOptions ig_fresh = ig;
    ig_fresh.workspace = nullptr;
    // Whole batches, then micro-batches, then whole again, through the same buffers: each as with fresh ones.
    const std::vector<std::pair<const eap_test::Batch*, int>> calls = {
        {&large, 0}, {&small, 0}, {&large, 3}, {&small, 0}, {&large, 5}, {&small, 2}, {&large, 0}};
    for (const auto& [b, micro] : calls) {
      SCOPED_TRACE(std::to_string(b->in.n_prompts) + " prompts, micro-batches of " + std::to_string(micro));
      const eap::BatchScores fresh = eap::score_in_micro_batches(m, g, b->in, {}, micro);
      const eap::BatchScores reused = eap::score_in_micro_batches(m, g, b->in, shared, micro);
      EXPECT_EQ(fresh.scores, reused.scores);
      ASSERT_EQ(reused.clean_top.size(), size_t(b->in.n_prompts));
      EXPECT_EQ(fresh.clean_top, reused.clean_top);
      EXPECT_EQ(fresh.corrupt_top, reused.corrupt_top);
      EXPECT_EQ(fresh.clean_correct, reused.clean_correct);
      EXPECT_EQ(fresh.clean_ld, reused.clean_ld);
      const eap::BatchScores ig_reused = eap::score_in_micro_batches(m, g, b->in, ig, micro);
      EXPECT_EQ(eap::score_in_micro_batches(m, g, b->in, ig_fresh, micro).scores, ig_reused.scores);
      EXPECT_EQ(ig_reused.clean_top.size(), size_t(b->in.n_prompts));
    }
    // The micro-batches' top tokens, found at once for the whole batch, are each part's own.
    const eap::BatchScores whole = eap::score_batch(m, g, large.in);
    const eap::BatchScores parts = eap::score_in_micro_batches(m, g, large.in, shared, 3);
    EXPECT_EQ(whole.clean_top, parts.clean_top);
    EXPECT_EQ(whole.corrupt_top, parts.corrupt_top);
    EXPECT_EQ(whole.clean_correct, parts.clean_correct);
  }
}

// Streaming (issue 17, item 3): the upstream differences held a few layers at a time, each pass
// recomputing the gradients its rows meet, give every edge's score as the one pass over all of them.
TEST(Streaming, UpstreamLayersAtATimeGiveTheSameScores) {
  for (Family f : {Family::GptNeo, Family::Qwen2, Family::Llama}) {
    const model::Model m = eap_test::make_model(f);
    const int L = m.config.n_layers;
    ASSERT_GE(L, 2);
    for (bool ends : {false, true}) {
      eap::GraphOptions go;
      go.input_node = go.logits_node = ends;
      const eap::Graph g = eap::make_graph(L, m.config.n_heads, go);
      const eap_test::Batch b = eap_test::make_batch(5, 9, 31, 2);
      for (eap::Method method : {eap::Method::Eap, eap::Method::EapIgInputs}) {
        eap::ScoreOptions o;
        o.method = method;
        o.ig_steps = 2;
        const eap::BatchScores whole = eap::score_batch(m, g, b.in, o);
        for (int layers = 1; layers < L; ++layers) {
          SCOPED_TRACE("family " + model::family_name(f) + (ends ? ", input and logits nodes" : "") + ", " +
                       eap::to_string(method) + ", " + std::to_string(layers) + " upstream layer(s) a pass");
          eap::ScoreOptions streamed = o;
          streamed.upstream_layers = layers;
          const eap::BatchScores parts = eap::score_batch(m, g, b.in, streamed);
          expect_same_batch(whole, parts, 1e-12);
          // and within micro-batches sharing one workspace, as a rank under a small budget runs
          streamed.workspace = eap::make_workspace();
          expect_same_batch(whole, eap::score_in_micro_batches(m, g, b.in, streamed, 2), 1e-12);
        }
      }
    }
  }
}

// The common prefix's record keeps each layer's keys and values only, one per key/value head (all
// a later run reads of it, and what eap::batch_work_bytes counts of it), and a run from it gives
// what a full record gives.
TEST(MicroBatch, PrefixRecordKeepsKeysAndValuesOnly) {
  const model::Model m = eap_test::make_model(Family::Llama);
  const eap_test::Batch b = eap_test::make_batch(4, 10, 41);
  const at::Tensor prefix_ids = b.clean.narrow(1, 0, 4);
  model::ActivationRecord full, kv;
  kv.keys_values_only = true;
  model::forward(m, prefix_ids, &full);
  model::forward(m, prefix_ids, &kv);
  ASSERT_EQ(kv.layers.size(), full.layers.size());
  const int64_t group = m.config.n_heads / m.config.n_kv_heads;
  ASSERT_GT(group, 1);
  for (size_t l = 0; l < kv.layers.size(); ++l) {  // per key/value head (a full record's are per query head)
    EXPECT_EQ(kv.layers[l].k.size(2), m.config.n_kv_heads);
    EXPECT_TRUE(kv.layers[l].k.repeat_interleave(group, 2).equal(full.layers[l].k));
    EXPECT_TRUE(kv.layers[l].v.repeat_interleave(group, 2).equal(full.layers[l].v));
    for (const at::Tensor* t : {&kv.layers[l].z, &kv.layers[l].q, &kv.layers[l].resid_pre, &kv.layers[l].resid_mid,
                                &kv.layers[l].mlp_in, &kv.layers[l].mlp_out})
      EXPECT_FALSE(t->defined()) << "layer " << l;
  }
  EXPECT_FALSE(kv.resid_final.defined());
  EXPECT_TRUE(model::forward(m, b.clean, nullptr, 4, &kv).equal(model::forward(m, b.clean, nullptr, 4, &full)));
}

// The corrupt run's record keeps what the upstream differences read (z, MLP outputs, the
// embedding), equal to a full record's, and nothing else; its run's output is unchanged.
TEST(MicroBatch, CorruptRecordKeepsWhatTheDifferencesRead) {
  for (Family f : {Family::GptNeo, Family::Llama}) {
    const model::Model m = eap_test::make_model(f);
    const eap_test::Batch b = eap_test::make_batch(4, 10, 41);
    model::ActivationRecord full, kept;
    kept.upstream_only = true;
    const at::Tensor out_full = model::forward(m, b.corrupt, &full);
    const at::Tensor out_kept = model::forward(m, b.corrupt, &kept);
    EXPECT_TRUE(out_kept.equal(out_full));
    EXPECT_TRUE(kept.embed.equal(full.embed));
    ASSERT_EQ(kept.layers.size(), full.layers.size());
    for (size_t l = 0; l < kept.layers.size(); ++l) {
      EXPECT_TRUE(kept.layers[l].z.equal(full.layers[l].z)) << "layer " << l;
      EXPECT_TRUE(kept.layers[l].mlp_out.equal(full.layers[l].mlp_out)) << "layer " << l;
      for (const at::Tensor* t : {&kept.layers[l].q, &kept.layers[l].k, &kept.layers[l].v, &kept.layers[l].resid_pre,
                                  &kept.layers[l].resid_mid, &kept.layers[l].mlp_in})
        EXPECT_FALSE(t->defined()) << "layer " << l;
    }
    EXPECT_TRUE(full.resid_final.defined());
    EXPECT_FALSE(kept.resid_final.defined());
  }
}

// The parts of a batch share its corrupt run, which starts at the batch's first difference: a part
// whose own prompts agree for longer (here prompt 1, differing only at the last position, while
// prompt 0 differs at position 0) still scores over the batch's positions.
TEST(MicroBatch, PartsAgreeingLongerThanTheBatchStartWhereItDoes) {
  for (Family f : {Family::GptNeo, Family::Llama}) {
    const model::Model m = eap_test::make_model(f);
    eap::GraphOptions go;
    go.input_node = go.logits_node = true;
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
    eap::BatchInput in = eap_test::make_batch(3, 8, 23).in;
    const int64_t P = in.n_positions, V = m.config.vocab_size;
    in.corrupt_ids = in.clean_ids;
    in.corrupt_ids[0] = (in.clean_ids[0] + 1) % V;                          // prompt 0, position 0
    in.corrupt_ids[2 * P - 1] = (in.clean_ids[2 * P - 1] + 1) % V;          // prompt 1, the last position
    in.corrupt_ids[2 * P + P / 2] = (in.clean_ids[2 * P + P / 2] + 1) % V;  // prompt 2, the middle
    const eap::BatchScores whole = eap::score_batch(m, g, in);
    for (int micro : {1, 2}) {
      SCOPED_TRACE("family " + model::family_name(f) + ", micro-batches of " + std::to_string(micro));
      expect_same_batch(whole, eap::score_in_micro_batches(m, g, in, {}, micro), 1e-12);
    }
  }
}

TEST(MicroBatch, BatchBroadcastCannotBeSplit) {
  const model::Model m = eap_test::make_model(Family::Qwen2);
  const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads);
  eap::ScoreOptions o;
  o.pairing = eap::MetricPairing::BatchBroadcast;
  try {
    eap::score_in_micro_batches(m, g, eap_test::make_batch(6, 8, 14).in, o, 4);
    FAIL() << "split";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("batch_broadcast"), std::string::npos) << e.what();
  }
}

TEST(MemoryBudget, MicroBatchSizeFitsTheBudgetAndGrowsWithIt) {
  eap::WorkShape w;
  w.n_layers = 16, w.n_heads = 32, w.n_kv_heads = 8, w.d_model = 2048, w.d_head = 64, w.d_mlp = 8192, w.vocab = 128256;
  // One prompt of a batch of 30 holds the batch's prefix, corrupt record and logits besides its own work.
  const double one = eap::batch_work_bytes(w, 1, 35, 23, 0, 30), thirty = eap::batch_work_bytes(w, 30, 35, 23);
  EXPECT_GT(thirty, 10 * one);
  // The measure: the upstream differences alone are 2.8 GiB for BM3 at batch 30.
  EXPECT_GT(thirty, 2.8 * (1 << 30));
  EXPECT_EQ(eap::micro_batch_prompts(w, 30, 35, 23, thirty), 30);
  EXPECT_EQ(eap::micro_batch_prompts(w, 30, 35, 23, one * 0.99), 0);
  int64_t last = 0;
  for (double budget = one; budget < thirty; budget *= 1.5) {
    const int64_t n = eap::micro_batch_prompts(w, 30, 35, 23, budget);
    EXPECT_LE(eap::batch_work_bytes(w, n, 35, 23, 0, 30), budget);
    EXPECT_GT(eap::batch_work_bytes(w, n + 1, 35, 23, 0, 30), budget);
    EXPECT_GE(n, last);
    last = n;
  }
  EXPECT_EQ(eap::parse_bytes("12GiB"), 12.0 * (1 << 30));
  EXPECT_EQ(eap::parse_bytes("800 MiB"), 800.0 * (1 << 20));
  EXPECT_EQ(eap::parse_bytes("1.5GB"), 1.5e9);
  EXPECT_LT(eap::parse_bytes("lots"), 0);
  EXPECT_LT(eap::parse_bytes("12 parsecs"), 0);
  // Streaming: fewer upstream layers a pass need less, and the layers per pass are the most that fit.
  const double alone = eap::batch_work_bytes(w, 1, 35, 23);  // a batch of one prompt
  EXPECT_EQ(eap::upstream_layers_per_pass(w, 35, 23, alone), 0);
  const double least = eap::batch_work_bytes(w, 1, 35, 23, 1);
  EXPECT_EQ(eap::upstream_layers_per_pass(w, 35, 23, least * 0.99), -1);
  for (int64_t layers = 1; layers < w.n_layers; ++layers) {
    const double work = eap::batch_work_bytes(w, 1, 35, 23, layers);
    EXPECT_LT(work, eap::batch_work_bytes(w, 1, 35, 23, layers + 1));
    EXPECT_EQ(eap::upstream_layers_per_pass(w, 35, 23, work), layers);
  }
  EXPECT_EQ(eap::batch_work_bytes(w, 1, 35, 23, w.n_layers), alone);
  // Micro-batches of a share hold the share's prefix keys and values (12 positions, per key/value head),
  // the corrupt run's z and MLP outputs (23 positions, and the embedding) and both runs'
  // last-position logits for all of its prompts, not only their own.
  const double extra = 27.0 * 12 * w.n_layers * (2.0 * w.n_kv_heads * w.d_head) * 4 +
                       27.0 * 23 * (w.n_layers * (w.n_heads * w.d_head + w.d_model) + w.d_model) * 4 + 2.0 * 27 * w.vocab * 4;
  EXPECT_DOUBLE_EQ(eap::batch_work_bytes(w, 3, 35, 23, 0, 30), eap::batch_work_bytes(w, 3, 35, 23) + extra);
  // A gradient method runs its corrupt pass with gradients in every micro-batch (a second clean-sized
  // record and graph), not once for the share.
  eap::WorkShape wg = w;
  wg.corrupt_with_gradients = true;
  EXPECT_GT(eap::batch_work_bytes(wg, 3, 35, 23, 0, 30), eap::batch_work_bytes(w, 3, 35, 23, 0, 30));
  EXPECT_GT(eap::batch_work_bytes(wg, 6, 35, 23, 0, 30) - eap::batch_work_bytes(wg, 3, 35, 23, 0, 30),
            eap::batch_work_bytes(w, 6, 35, 23, 0, 30) - eap::batch_work_bytes(w, 3, 35, 23, 0, 30));
  // bfloat16 products through float32 (model/products.hpp): the weights' float32 buffer (2^24
  // floats, BM3's MLP weight and the unembedding's blocks) and, per suffix row, an MLP product's
  // float32 input and result.
  eap::WorkShape wf = w;
  wf.activation_bytes = 2;
  wf.products_in_float32 = true;
  eap::WorkShape w16 = wf;
  w16.products_in_float32 = false;
  EXPECT_DOUBLE_EQ(eap::batch_work_bytes(wf, 3, 35, 23), eap::batch_work_bytes(w16, 3, 35, 23) + 64.0 * (1 << 20) + 3 * 23 * 2.0 * w.d_mlp * 4);
  EXPECT_DOUBLE_EQ(eap::batch_work_bytes(wf, 3, 35, 23, 0, 30),
                   eap::batch_work_bytes(w16, 3, 35, 23, 0, 30) + 64.0 * (1 << 20) + 3 * 23 * 2.0 * w.d_mlp * 4);
}

namespace {

std::string job_with(const std::string& dir, const std::string& extra) {
  const std::string path = dir + "/job.toml";
  std::ofstream(path) << "output = \"" << dir << "/out\"\n[grid]\nmodels = [2]\ncommandsets = [1]\n[settings]\nbatch_size = 30\n"
                      << extra << "\n[models.BM2]\ncs1 = \"/nonexistent/model\"\ntokenizer = \"/nonexistent/model\"\n";
  return path;
}

}  // namespace

// Micro-batches change no result beyond float order, so the budget is not a setting of the cells.
TEST(MemoryBudget, NotInTheSettingsHashAndBadValuesNamed) {
  const std::string dir = temp_dir("job");
  const job::Job plain = job::load_job(job_with(dir, ""));
  const job::Job budget = job::load_job(job_with(dir, "memory_budget = \"2GiB\""));
  EXPECT_EQ(budget.settings.memory_budget_bytes, 2.0 * (1 << 30));
  EXPECT_EQ(plain.settings.memory_budget_bytes, 0.0);
  ASSERT_EQ(plain.cells.size(), budget.cells.size());
  for (size_t i = 0; i < plain.cells.size(); ++i) {
    EXPECT_EQ(plain.cells[i].settings, budget.cells[i].settings);
    EXPECT_EQ(plain.cells[i].hash, budget.cells[i].hash);
  }
  EXPECT_EQ(job::load_job(job_with(dir, "memory_budget = 1073741824")).settings.memory_budget_bytes, double(1 << 30));
  for (const std::string bad : {"memory_budget = \"lots\"", "memory_budget = -5", "memory_budget = true"}) {
    try {
      job::load_job(job_with(dir, bad));
      ADD_FAILURE() << bad << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("job.toml:7: settings.memory_budget: "), std::string::npos) << e.what();
    }
  }
  fs::remove_all(dir);
}

// Weights stored in the run's dtype are mapped, shared by the node; a conversion is shared only
// when several ranks share the node; a budget below one prompt's needs leaves no micro-batch.
TEST(MemoryBudget, PlanCountsSharedWeightsOncePerNode) {
  const model::ModelConfig c = model::preset_config("bm2");
  const int64_t params = 494032768;
  job::Settings s;
  s.memory_budget_bytes = 8.0 * (1 << 30);
  const runner::MemoryPlan f32 = runner::plan_memory(c, params, 4.0 * params, s, 30, 35, 23, 1);
  EXPECT_EQ(f32.weights_shared, 4.0 * params);
  EXPECT_EQ(f32.weights_private, 0.0);
  const runner::MemoryPlan bf16_one = runner::plan_memory(c, params, 2.0 * params, s, 30, 35, 23, 1);
  EXPECT_EQ(bf16_one.weights_private, 4.0 * params);
  const runner::MemoryPlan bf16_two = runner::plan_memory(c, params, 2.0 * params, s, 30, 35, 23, 2);
  EXPECT_EQ(bf16_two.weights_shared, 4.0 * params);
  EXPECT_GT(bf16_two.micro, 0);
  // Private float32 weights (1.8 GiB) and a little more than one prompt's work: one prompt at a time.
  s.memory_budget_bytes = 4.0 * params + 1.01 * bf16_one.one_prompt;
  const runner::MemoryPlan one = runner::plan_memory(c, params, 2.0 * params, s, 30, 35, 23, 1);
  EXPECT_EQ(one.micro, 1);
  EXPECT_EQ(one.upstream_layers, 0);
  EXPECT_GT(bf16_one.one_prompt, 0);
  // Less: the contraction streams over as many upstream layers as fit (item 3), within the budget.
  // (Streaming saves at most one prompt's differences, about a tenth of its work in a batch of 30.)
  s.memory_budget_bytes = 4.0 * params + 0.95 * bf16_one.one_prompt;
  const runner::MemoryPlan streamed = runner::plan_memory(c, params, 2.0 * params, s, 30, 35, 23, 1);
  EXPECT_EQ(streamed.micro, 1);
  EXPECT_GT(streamed.upstream_layers, 0);
  EXPECT_LT(streamed.upstream_layers, c.n_layers);
  EXPECT_LE(streamed.work, 0.95 * bf16_one.one_prompt);
  EXPECT_NE(runner::describe(streamed, 1).find("streaming over " + std::to_string(streamed.upstream_layers) + " upstream layer"),
            std::string::npos);
  // Below one prompt's work at one upstream layer a pass: not one prompt fits, and the plan says how
  // much that least is (the preflight's error names it).
  s.memory_budget_bytes = 4.0 * params + 0.5 * bf16_one.one_prompt;
  const runner::MemoryPlan none = runner::plan_memory(c, params, 2.0 * params, s, 30, 35, 23, 1);
  EXPECT_EQ(none.micro, 0);
  EXPECT_GT(none.one_prompt, 0.5 * bf16_one.one_prompt);
  EXPECT_LT(none.one_prompt, streamed.work);
  s.memory_budget_bytes = 4.0 * params + 1.001 * none.one_prompt;
  const runner::MemoryPlan least = runner::plan_memory(c, params, 2.0 * params, s, 30, 35, 23, 1);
  EXPECT_EQ(least.micro, 1);
  EXPECT_EQ(least.upstream_layers, 1);
}

// "auto" on CPU (runner::auto_work_cap_bytes): the node's share, but no more work than
// kAutoRowsPerThread suffix rows per intra-op thread need (never below kAutoMinWorkBytes). A BM2
// batch of 30 splits into micro-batches of ceil(128 / 23) = 6 prompts on one thread and twice that
// on two; a small model's batch stays whole; an explicit budget and CUDA are not capped.
TEST(MemoryBudget, AutoStopsWhereLargerMicroBatchesBuyNoSpeed) {
  const model::ModelConfig c = model::preset_config("bm2");
  const int64_t params = 494032768;
  job::Settings s;  // memory_budget "auto"
  const eap::WorkShape w = runner::work_shape(c, s);
  const double cap1 = runner::auto_work_cap_bytes(w, 35, 23, 1), cap2 = runner::auto_work_cap_bytes(w, 35, 23, 2);
  const int64_t per_thread = (runner::kAutoRowsPerThread + 22) / 23;
  EXPECT_EQ(cap1, std::max(runner::kAutoMinWorkBytes, eap::batch_work_bytes(w, per_thread, 35, 23)));
  EXPECT_EQ(cap2, std::max(runner::kAutoMinWorkBytes, eap::batch_work_bytes(w, 2 * per_thread, 35, 23)));
  // bfloat16: the same rows per thread, in half the bytes.
  eap::WorkShape w16 = w;
  w16.activation_bytes = 2;
  EXPECT_EQ(runner::auto_work_cap_bytes(w16, 35, 23, 1),
            std::max(runner::kAutoMinWorkBytes, eap::batch_work_bytes(w16, per_thread, 35, 23)));
  const double share = runner::rank_budget_bytes(s, 1, 4.0 * params);
  if (share < 2 * cap2) GTEST_SKIP() << "this node's memory (" << share << " bytes per rank) is below the cap";
  const runner::MemoryPlan one = runner::plan_memory(c, params, 4.0 * params, s, 30, 35, 23, 1, 1);
  // The cap a sweep applies counts the share's prefix and logits in each micro-batch's work, and is
  // at least kAutoWorkShareOfWeights of the mapped weights.
  EXPECT_EQ(one.budget, runner::auto_work_cap_bytes(w, 35, 23, 1, 30, 4.0 * params));
  EXPECT_EQ(one.budget, std::max(runner::auto_work_cap_bytes(w, 35, 23, 1, 30), runner::kAutoWorkShareOfWeights * 4.0 * params));
  EXPECT_EQ(one.micro, per_thread);
  EXPECT_LE(one.work, one.budget);
  // The rank's work is a fraction of the weights its node's ranks share: 2 ranks hold < 1.3x one's.
  EXPECT_LT((4.0 * params + 2 * one.work) / (4.0 * params + one.work), 1.3);
  const runner::MemoryPlan two = runner::plan_memory(c, params, 4.0 * params, s, 30, 35, 23, 1, 2);
  EXPECT_EQ(two.micro, 2 * per_thread);
  job::Settings s16 = s;
  s16.dtype = "bfloat16";
  // bfloat16: as many rows where the CPU multiplies it natively, twice as many where products go
  // through float32 and each micro-batch converts every weight twice.
  for (bool native : {true, false}) {
    SCOPED_TRACE(native ? "bfloat16 products" : "products through float32");
    model::force_bf16_products_native(native);
    EXPECT_EQ(runner::work_shape(c, s16).products_in_float32, !native);
    const int64_t rows = runner::kAutoRowsPerThread * (native ? 1 : runner::kAutoRowsFactorThroughFloat32);
    const runner::MemoryPlan p16 = runner::plan_memory(c, params, 2.0 * params, s16, 30, 35, 23, 1, 1);
    model::force_bf16_products_native(std::nullopt);
    EXPECT_EQ(p16.micro, (rows + 22) / 23);
  }
  // Private (converted) weights come on top of the cap: the same micro-batches.
  EXPECT_EQ(runner::plan_memory(c, params, 2.0 * params, s, 30, 35, 23, 1, 1).micro, per_thread);
  // An explicit budget is the user's: not capped.
  job::Settings big = s;
  big.memory_budget_bytes = 16.0 * (1 << 30);
  EXPECT_EQ(runner::plan_memory(c, params, 4.0 * params, big, 30, 35, 23, 1, 1).micro, 30);
  // CUDA: no budget at all.
  job::Settings cuda = s;
  cuda.device = "cuda";
  EXPECT_EQ(runner::plan_memory(c, params, 4.0 * params, cuda, 30, 35, 23, 1, 1).micro, 30);
  // BM3 float32: its weights' share holds more prompts than the rows per thread need (a larger
  // micro-batch streams the weights fewer times), still a fraction of the weights (2 ranks < 1.3x).
  const model::ModelConfig c3 = model::preset_config("bm3");
  const int64_t params3 = 1235814400;
  const eap::WorkShape w3 = runner::work_shape(c3, s);
  if (runner::rank_budget_bytes(s, 1, 4.0 * params3) > 4.0 * params3) {
    const runner::MemoryPlan big3 = runner::plan_memory(c3, params3, 4.0 * params3, s, 30, 35, 23, 1, 1);
    EXPECT_GT(big3.micro, per_thread);
    EXPECT_LE(big3.work, runner::kAutoWorkShareOfWeights * 4.0 * params3);
    EXPECT_GT(eap::batch_work_bytes(w3, big3.micro + 1, 35, 23, 0, 30), runner::kAutoWorkShareOfWeights * 4.0 * params3);
    // Private (converted) weights: no share of them, the rows per thread alone.
    EXPECT_EQ(runner::plan_memory(c3, params3, 2.0 * params3, s, 30, 35, 23, 1, 1).micro, per_thread);
  }
  // A small model's whole batch is below kAutoMinWorkBytes: one part, as before.
  const model::ModelConfig tiny = model::family_config(Family::GptNeo, 2, 4, 4, 64, 256, 50257);
  EXPECT_EQ(runner::plan_memory(tiny, 1 << 22, 4.0 * (1 << 22), s, 8, 35, 23, 1, 1).micro, 8);
}

// A bfloat16 run contracts its differences and gradients in bfloat16 with float32 accumulation
// (score.cpp): its scores stay those of the float32 run of the same weights up to bfloat16's own
// error (the activations are bfloat16 too), and its strongest edges are float32's.
TEST(Bf16Contraction, ScoresFollowTheFloat32Run) {
  for (Family f : {Family::Qwen2, Family::Llama, Family::GptNeo}) {  // GPT-Neo: LayerNorm's mean term too
    SCOPED_TRACE(model::family_name(f));
    model::ModelConfig c = model::family_config(f, 3, 4, f == Family::GptNeo ? 4 : 2, 128, 256, eap_test::kVocab);
    c.max_positions = 64;
    const model::Model m32 = model::random_model(c, 11, at::kFloat);
    const model::Model m16 = model::random_model(c, 11, at::kBFloat16);
    const eap_test::Batch b = eap_test::make_batch(6, 12, 17);
    eap::GraphOptions go;
    go.input_node = go.logits_node = true;
    const eap::Graph g = eap::make_graph(c.n_layers, c.n_heads, go);
    const std::vector<float> s32 = eap::score_batch(m32, g, b.in).scores;
    // Both ways of multiplying bfloat16 on a CPU (model/products.hpp): LibTorch's own (oneDNN on
    // AVX-512; bfloat16 operands in the contraction) and through float32 (float32 operands there).
    for (bool native : {true, false}) {
      SCOPED_TRACE(native ? "bfloat16 products" : "products through float32");
      model::force_bf16_products_native(native);
      const std::vector<float> s16 = eap::score_batch(m16, g, b.in).scores;
      model::force_bf16_products_native(std::nullopt);
      ASSERT_EQ(s32.size(), s16.size());
      double scale = 0, worst = 0;
      for (float v : s32) scale = std::max(scale, double(std::abs(v)));
      for (size_t i = 0; i < s32.size(); ++i) worst = std::max(worst, double(std::abs(s32[i] - s16[i])));
      std::printf("bf16 (%s) vs float32: largest score difference %.3g of the largest score %.3g (%.2f%%)\n",
                  native ? "bfloat16 products" : "products through float32", worst, scale, 100 * worst / scale);
      EXPECT_LT(worst, 0.05 * scale);
      // The float32 run's 5 strongest edges are among the bfloat16 run's 10 strongest.
      auto top = [](const std::vector<float>& s, size_t n) {
        std::vector<size_t> idx(s.size());
        for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
        std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](size_t a, size_t b) { return std::abs(s[a]) > std::abs(s[b]); });
        return std::vector<size_t>(idx.begin(), idx.begin() + n);
      };
      const std::vector<size_t> t32 = top(s32, 5), t16 = top(s16, 10);
      for (size_t e : t32) EXPECT_NE(std::find(t16.begin(), t16.end(), e), t16.end()) << "edge " << e;
    }
  }
}
