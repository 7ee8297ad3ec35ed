// Owns the numbers that put two scorings of one cell side by side (`reduce --compare`): Spearman's
// rank correlation of two edge-score vectors (average ranks for ties) and the Jaccard overlap of two
// edge sets. Plain functions on plain vectors, as analysis/tinysql_eap/methods.py computes them.
#pragma once

#include <cstddef>
#include <vector>

namespace teap::eap {

// 1-based ranks of `x`, ties sharing the average of their ranks (pandas' rank(method="average")).
std::vector<double> average_ranks(const std::vector<double>& x);

// Pearson correlation of the average ranks of `a` and `b`; NaN when either is constant or shorter
// than 2. The two must be equally long (std::invalid_argument otherwise).
double spearman(const std::vector<double>& a, const std::vector<double>& b);

// |A & B| / |A | B| from the sizes of A and B and of their intersection; two empty sets: 1.
double jaccard(size_t size_a, size_t size_b, size_t common);

}  // namespace teap::eap
