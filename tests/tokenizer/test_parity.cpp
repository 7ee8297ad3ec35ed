// Parity with Hugging Face: the C++ tokenizer must give the same ids as the reference
// (tests/tokenizer/hf_reference.mjs, transformers.js's tokenizer code) on every corpus text, with
// and without special tokens, and decode the reference ids to the reference's text.
//   TEAP_TOKENIZER  what Tokenizer::load gets (folder or file)
//   TEAP_REFERENCE  the reference JSONL: {"text", "ids", "ids_plain", "decoded"} per line
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.hpp"

using nlohmann::json;
using teap::tokenizer::Tokenizer;

namespace {

constexpr int kMaxReported = 10;  // mismatches shown in full; the rest are only counted

struct Row {
  int line = 0;
  std::string text;
  std::vector<int> ids, ids_plain;
  std::string decoded;
};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// JSON form of a string, so that whitespace and control characters are visible.
std::string quoted(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string ids_str(const std::vector<int>& ids) { return json(ids).dump(); }

// The first index where two id lists differ (the shorter length if one is a prefix).
size_t first_difference(const std::vector<int>& a, const std::vector<int>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i;
}

class Parity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokenizer_path_ = env("TEAP_TOKENIZER");
    reference_path_ = env("TEAP_REFERENCE");
    if (tokenizer_path_.empty() || reference_path_.empty()) {
      setup_error_ = "TEAP_TOKENIZER and TEAP_REFERENCE must both be set";
      return;
    }
    std::ifstream f(reference_path_, std::ios::binary);
    if (!f) {
      setup_error_ = reference_path_ + ": cannot open the reference (run hf_reference.mjs first)";
      return;
    }
    std::string line;
    int n = 0;
    while (std::getline(f, line)) {
      ++n;
      if (line.empty()) continue;
      try {
        const json j = json::parse(line);
        Row r;
        r.line = n;
        r.text = j.at("text").get<std::string>();
        r.ids = j.at("ids").get<std::vector<int>>();
        r.ids_plain = j.at("ids_plain").get<std::vector<int>>();
        r.decoded = j.at("decoded").get<std::string>();
        rows_.push_back(std::move(r));
      } catch (const json::exception& e) {
        setup_error_ = reference_path_ + ":" + std::to_string(n) + ": " + e.what();
        return;
      }
    }
    if (rows_.empty()) {
      setup_error_ = reference_path_ + ": the reference is empty";
      return;
    }
    try {
      tokenizer_ = new Tokenizer(Tokenizer::load(tokenizer_path_));
    } catch (const std::exception& e) {
      setup_error_ = std::string("loading ") + tokenizer_path_ + ": " + e.what();
    }
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
    rows_.clear();
  }
  void SetUp() override { ASSERT_TRUE(setup_error_.empty()) << setup_error_; }

  std::string where(const Row& r) const {
    return reference_path_ + ":" + std::to_string(r.line) + " text " + quoted(r.text);
  }

  static std::string tokenizer_path_, reference_path_, setup_error_;
  static std::vector<Row> rows_;
  static Tokenizer* tokenizer_;
};

std::string Parity::tokenizer_path_, Parity::reference_path_, Parity::setup_error_;
std::vector<Row> Parity::rows_;
Tokenizer* Parity::tokenizer_ = nullptr;

void compare_ids(const std::string& what, const std::string& where, const std::vector<int>& want,
                 const std::vector<int>& got, int* bad) {
  if (want == got) return;
  if (++*bad <= kMaxReported) {
    ADD_FAILURE() << what << " differ at index " << first_difference(want, got) << "\n  " << where
                  << "\n  reference: " << ids_str(want) << "\n  C++:       " << ids_str(got);
  }
}

TEST_F(Parity, IdsWithSpecialTokens) {
  int bad = 0;
  for (const Row& r : rows_) compare_ids("ids (add_special_tokens)", where(r), r.ids, tokenizer_->encode(r.text, true), &bad);
  EXPECT_EQ(bad, 0) << bad << " of " << rows_.size() << " texts differ (" << tokenizer_path_ << " vs "
                    << reference_path_ << ")";
}

TEST_F(Parity, IdsWithoutSpecialTokens) {
  int bad = 0;
  for (const Row& r : rows_)
    compare_ids("ids_plain (no special tokens)", where(r), r.ids_plain, tokenizer_->encode(r.text, false), &bad);
  EXPECT_EQ(bad, 0) << bad << " of " << rows_.size() << " texts differ (" << tokenizer_path_ << " vs "
                    << reference_path_ << ")";
}

TEST_F(Parity, Decode) {
  int bad = 0;
  size_t round_trips = 0;
  auto report = [&](const Row& r, const std::string& what, const std::string& want, const std::string& got) {
    if (++bad <= kMaxReported)
      ADD_FAILURE() << what << "\n  " << where(r) << "\n  want: " << quoted(want) << "\n  got:  " << quoted(got);
  };
  for (const Row& r : rows_) {
    // The reference's own ids, so that decoding is checked apart from encoding.
    const std::string d = tokenizer_->decode(r.ids_plain);
    if (d != r.decoded) report(r, "decode(reference ids_plain) differs from the reference's decode", r.decoded, d);
    if (r.decoded == r.text) {
      ++round_trips;
      const std::string d2 = tokenizer_->decode(tokenizer_->encode(r.text, false));
      if (d2 != r.text) report(r, "decode(encode(text)) does not give the text back", r.text, d2);
    }
  }
  EXPECT_EQ(bad, 0) << bad << " decode mismatches over " << rows_.size() << " texts";
  // Byte-level BPE is lossless apart from normalisation: nearly every text must round-trip.
  EXPECT_GE(round_trips * 10, rows_.size() * 9) << "only " << round_trips << " of " << rows_.size()
                                                << " reference texts round-trip: is the reference sane?";
}

}  // namespace
