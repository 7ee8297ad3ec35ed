// The training library (issue 7): the data stream, the output-folder rules, and a short training
// run whose loss falls and whose folder loads back.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <unistd.h>

#include "model/model.hpp"
#include "tinysql/vocabulary.hpp"
#include "tokenizer/tokenizer.hpp"
#include "train/data.hpp"
#include "train/train.hpp"
#include "util/error.hpp"

namespace fs = std::filesystem;
using namespace teap;

namespace {

std::string tokenizers_dir() {
  const char* env = std::getenv("TEAP_TOKENIZERS");
  return env ? env : TEAP_DEFAULT_TOKENIZERS;
}

const tokenizer::Tokenizer& gpt2() {
  static const auto tok = tokenizer::Tokenizer::load(tokenizers_dir() + "/gpt2");
  return tok;
}

// A folder under the build tree, emptied first.
std::string fresh_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("teap_test_train_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p.string();
}

train::TrainSettings small() {
  train::TrainSettings s;
  s.layers = 2;
  s.heads = 2;
  s.d_model = 32;
  s.steps = 30;
  s.batch_size = 8;
  s.lr = 1e-2;
  s.seed = 7;
  return s;
}

}  // namespace

TEST(TrainData, SequenceShape) {
  const auto& tok = gpt2();
  const int eot = train::end_of_text_id(tok);
  EXPECT_EQ(eot, 50256);
  std::map<int, size_t> length_of;  // number of fields -> tokens
  for (int i = 0; i < 50; ++i) {
    const train::Sequence s = train::make_sequence(tok, {}, 3, train::Stream::Train, 0, static_cast<uint64_t>(i));
    ASSERT_GE(s.num_fields, 1);
    ASSERT_LE(s.num_fields, 3);
    EXPECT_EQ(s.ids.back(), eot);
    EXPECT_EQ(tok.token(s.ids[static_cast<size_t>(s.response_start)]), "\xC4\xA0SELECT");  // "ĠSELECT"
    const std::vector<int> body(s.ids.begin(), s.ids.end() - 1);
    EXPECT_EQ(tok.decode(body), s.prompt + s.sql);
    // GPT-2: every word is one token, so the length is a function of the number of fields.
    const size_t n = length_of.emplace(s.num_fields, s.ids.size()).first->second;
    EXPECT_EQ(s.ids.size(), n);
  }
}

TEST(TrainData, DeterministicAndStreamsDiffer) {
  const auto& tok = gpt2();
  int same_stream_diff = 0, other_stream_same = 0;
  for (int i = 0; i < 40; ++i) {
    const auto a = train::make_sequence(tok, {}, 1, train::Stream::Train, 5, static_cast<uint64_t>(i));
    const auto b = train::make_sequence(tok, {}, 1, train::Stream::Train, 5, static_cast<uint64_t>(i));
    const auto c = train::make_sequence(tok, {}, 1, train::Stream::Eval, 5, static_cast<uint64_t>(i));
    same_stream_diff += a.ids != b.ids;
    other_stream_same += a.ids == c.ids;
  }
  EXPECT_EQ(same_stream_diff, 0);
  EXPECT_LT(other_stream_same, 5);  // a few 1-field items may coincide by chance
}

TEST(TrainData, MixAndNoNovelWords) {
  const auto& tok = gpt2();
  train::DataOptions d;
  int syn_table = 0, syn_field = 0, fields[4] = {0, 0, 0, 0};
  const int n = 3000;
  std::set<std::string> novel(tinysql::novel_table_names().begin(), tinysql::novel_table_names().end());
  novel.insert(tinysql::novel_field_names().begin(), tinysql::novel_field_names().end());
  for (int i = 0; i < n; ++i) {
    const auto s = train::make_sequence(tok, d, 11, train::Stream::Train, static_cast<uint64_t>(i / 32), i % 32);
    syn_table += s.syn_table;
    syn_field += s.syn_field;
    fields[s.num_fields]++;
    if (s.syn_table) {
      EXPECT_NE(s.prompt.find(" " + tinysql::table_synonym(s.item.table) + " table"), std::string::npos);
    }
    for (const auto& w : novel) EXPECT_EQ((" " + s.prompt + s.sql + " ").find(" " + w + " "), std::string::npos) << w;
  }
  EXPECT_NEAR(syn_table / double(n), 0.3, 0.04);
  EXPECT_NEAR(syn_field / double(n), 0.3, 0.04);
  for (int k = 1; k <= 3; ++k) EXPECT_NEAR(fields[k] / double(n), 1.0 / 3, 0.04);
}

TEST(TrainInput, BadSettingsAndTokenizer) {
  train::TrainSettings s = small();
  s.steps = 0;
  EXPECT_THROW(train::validate(s), InputError);
  s = small();
  s.d_model = 30;  // not a multiple of the heads
  s.heads = 4;
  EXPECT_THROW(train::validate(s), InputError);
  const auto qwen = tokenizer::Tokenizer::load(tokenizers_dir() + "/qwen2");
  EXPECT_THROW(train::require_gpt2(qwen), InputError);
  EXPECT_NO_THROW(train::require_gpt2(gpt2()));
}

TEST(Train, LossFallsFolderLoadsAndIsReused) {
  const std::string out = fresh_dir("small");
  const train::TrainSettings s = small();
  ASSERT_EQ(train::check_output(out, s, false), train::OutputAction::Train);
  const train::TrainResult r = train::train(s, gpt2(), out, 1);
  EXPECT_EQ(r.steps, 30);
  EXPECT_EQ(r.threads, 1);
  EXPECT_NEAR(r.first_loss, std::log(50257.0), 0.5);
  EXPECT_LT(r.final_loss, 0.5 * r.first_loss) << "first " << r.first_loss << ", final " << r.final_loss;
  for (const char* f : {"config.json", "model.safetensors", "training.json", "vocab.json", "merges.txt"})
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;

  const model::Model m = model::load_model(out);
  EXPECT_EQ(m.config.model_type, "gpt_neo");
  EXPECT_EQ(m.config.n_layers, 2);
  EXPECT_EQ(m.config.d_model, 32);
  EXPECT_EQ(m.config.vocab_size, 50257);
  EXPECT_EQ(m.config.local_layer, (std::vector<bool>{false, true}));
  EXPECT_TRUE(m.weights.lm_head.is_same(m.weights.wte));  // tied, stored once
  EXPECT_EQ(model::parameter_count(m), r.parameters);
  EXPECT_EQ(tokenizer::Tokenizer::load(out).vocab_size(), 50257);

  // Same settings: reuse. Other settings: refused, unless forced (which clears the old weights).
  EXPECT_EQ(train::check_output(out, s, false), train::OutputAction::Reuse);
  train::TrainSettings other = s;
  other.steps = 31;
  EXPECT_THROW(train::check_output(out, other, false), InputError);
  EXPECT_EQ(train::check_output(out, other, true), train::OutputAction::Train);
  EXPECT_FALSE(fs::exists(fs::path(out) / "model.safetensors"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "training.json"));
  fs::remove_all(out);
}

TEST(Train, SameSeedAndThreadsSameBytes) {
  train::TrainSettings s = small();
  s.steps = 6;
  std::string bytes[2];
  for (int k = 0; k < 2; ++k) {
    const std::string out = fresh_dir("repeat" + std::to_string(k));
    train::train(s, gpt2(), out, 1);
    std::ifstream f(out + "/model.safetensors", std::ios::binary);
    bytes[k].assign(std::istreambuf_iterator<char>(f), {});
    fs::remove_all(out);
  }
  ASSERT_GT(bytes[0].size(), 1000u);
  EXPECT_TRUE(bytes[0] == bytes[1]);
}

TEST(Eval, ReportShape) {
  const std::string out = fresh_dir("eval");
  train::TrainSettings s = small();
  s.steps = 5;
  train::train(s, gpt2(), out, 1);
  train::EvalOptions o;
  o.items = 40;
  o.threads = 1;
  const train::EvalReport r = train::evaluate(out, o);
  EXPECT_EQ(r.exact.total, 40);
  int by_fields = 0, by_syn = 0;
  for (const auto& c : r.by_fields) by_fields += c.total;
  for (const auto& c : r.by_synonyms) by_syn += c.total;
  EXPECT_EQ(by_fields, 40);
  EXPECT_EQ(by_syn, 40);
  ASSERT_EQ(r.features.size(), 8u);
  for (const auto& f : r.features) EXPECT_EQ(f.count.total, 40);
  EXPECT_LE(r.failures.size(), 5u);
  fs::remove_all(out);
}
