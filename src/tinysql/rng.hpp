// Owns every random draw of the prompt generator: an exactly specified generator, bounded integers,
// sampling, and the derivation of one independent stream per (seed, cell, batch, item, attempt), so
// that a batch is the same on every compiler, machine and rank.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace teap::tinysql {

// The SplitMix64 output function (Steele, Lea, Flood 2014): a bijection on 64-bit words.
//   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^ (z >> 31)
uint64_t mix64(uint64_t z);

// One SplitMix64 step: state += 0x9E3779B97F4A7C15, returns mix64(state).
uint64_t splitmix64_next(uint64_t& state);

// 64-bit FNV-1a of the bytes (offset basis 0xCBF29CE484222325, prime 0x100000001B3).
uint64_t fnv1a64(std::string_view bytes);

// xoshiro256** 1.0 (Blackman and Vigna 2018). The four state words are the first four outputs of
// SplitMix64 started at `seed`, as the authors recommend.
class Rng {
 public:
  explicit Rng(uint64_t seed);

  uint64_t next();

  // A uniform integer in [0, n), n >= 1, by rejection: draws r = next() until r >= (2^64 mod n),
  // then returns r % n. The accepted range is a whole number of copies of [0, n), so the result is
  // exactly uniform; fewer than one draw in two is rejected for any n.
  uint64_t below(uint64_t n);

 private:
  uint64_t s_[4];
};

// The seed of the stream for one attempt at one item:
//   h = 0x9E3779B97F4A7C15; for w in (seed, cell_key, batch_index, item_index, attempt):
//   h = mix64(h ^ mix64(w)).
// Each step is a bijection of h for fixed w and of w for fixed h, so distinct keys give unrelated
// streams; nothing depends on the order in which items or batches are generated.
uint64_t stream_seed(uint64_t seed, uint64_t cell_key, uint64_t batch_index, uint64_t item_index,
                     uint64_t attempt);

// Fisher-Yates from the last element down: for i = n-1 .. 1, swap v[i] with v[below(i+1)].
template <class T>
void shuffle(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng.below(i));
    std::swap(v[i - 1], v[j]);
  }
}

// k distinct indices of [0, n) in random order (partial Fisher-Yates from the front: for
// i = 0 .. k-1, swap a[i] with a[i + below(n - i)] in a = 0..n-1, keep a[0..k)). Every ordered
// k-subset is equally likely, like Python's random.sample.
std::vector<int> sample_without_replacement(int n, int k, Rng& rng);

}  // namespace teap::tinysql
