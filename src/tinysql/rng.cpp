#include "tinysql/rng.hpp"

#include <numeric>
#include <stdexcept>

namespace teap::tinysql {

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t splitmix64_next(uint64_t& state) {
  state += kGolden;
  return mix64(state);
}

uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3ULL;
  }
  return h;
}

Rng::Rng(uint64_t seed) {
  uint64_t state = seed;
  for (auto& word : s_) word = splitmix64_next(state);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

uint64_t Rng::below(uint64_t n) {
  if (n == 0) throw std::invalid_argument("Rng::below(0)");
  // Unsigned negation is 2^64 - n, so this is 2^64 mod n without 128-bit arithmetic.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = next();
    if (r >= threshold) return r % n;
  }
}

uint64_t stream_seed(uint64_t seed, uint64_t cell_key, uint64_t batch_index, uint64_t item_index,
                     uint64_t attempt) {
  uint64_t h = kGolden;
  for (const uint64_t w : {seed, cell_key, batch_index, item_index, attempt}) h = mix64(h ^ mix64(w));
  return h;
}

std::vector<int> sample_without_replacement(int n, int k, Rng& rng) {
  if (n < 0 || k < 0 || k > n) throw std::invalid_argument("sample_without_replacement: need 0 <= k <= n");
  std::vector<int> a(static_cast<size_t>(n));
  std::iota(a.begin(), a.end(), 0);
  for (int i = 0; i < k; ++i) {
    const int j = i + static_cast<int>(rng.below(static_cast<uint64_t>(n - i)));
    std::swap(a[i], a[j]);
  }
  a.resize(static_cast<size_t>(k));
  return a;
}

}  // namespace teap::tinysql
