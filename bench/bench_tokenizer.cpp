// Tokenizing one long word (no spaces, so the pre-tokenizer leaves it whole and BPE sees all of
// it): seconds per word length, for each tokenizer folder. BPE of a word must grow as n log n;
// the naive rescan this replaced took 26 s at 128 KiB (gpt2, llama3) and over 120 s (qwen2).
//   bench_tokenizer [TOKENIZERS_DIR]   (default .cache/tokenizers: gpt2, qwen2, llama3)
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "tokenizer/tokenizer.hpp"

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".cache/tokenizers";
  std::printf("| tokenizer | %s |\n| --- | --- | --- | --- | --- | --- |\n",
              "8 KiB | 16 KiB | 32 KiB | 64 KiB | 128 KiB (s, random letters a-z)");
  for (const char* name : {"gpt2", "qwen2", "llama3"}) {
    const auto tok = teap::tokenizer::Tokenizer::load(dir + "/" + name);
    std::printf("| %s |", name);
    for (int kib : {8, 16, 32, 64, 128}) {
      std::mt19937 rng(kib);
      std::string word(static_cast<size_t>(kib) * 1024, 'a');
      for (char& c : word) c = static_cast<char>('a' + rng() % 26);
      const auto t0 = std::chrono::steady_clock::now();
      const size_t n = tok.encode(word, false).size();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf(" %.3f (%zu tokens) |", s, n);
      std::fflush(stdout);
    }
    std::printf("\n");
  }
}
