#include "eap/compare.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

namespace teap::eap {

std::vector<double> average_ranks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return x[i] < x[j]; });
  std::vector<double> r(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t k = i;
    while (k + 1 < order.size() && x[order[k + 1]] == x[order[i]]) ++k;
    const double rank = (static_cast<double>(i) + static_cast<double>(k)) / 2.0 + 1.0;  // ranks i+1 .. k+1
    for (size_t m = i; m <= k; ++m) r[order[m]] = rank;
    i = k + 1;
  }
  return r;
}

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size())
    throw std::invalid_argument("spearman: " + std::to_string(a.size()) + " values against " + std::to_string(b.size()));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (a.size() < 2) return nan;
  std::vector<double> ra = average_ranks(a), rb = average_ranks(b);
  auto centre = [](std::vector<double>& r) {
    double m = 0;
    for (double v : r) m += v;
    m /= static_cast<double>(r.size());
    for (double& v : r) v -= m;
  };
  const bool ca = std::all_of(ra.begin(), ra.end(), [&](double v) { return v == ra.front(); });
  const bool cb = std::all_of(rb.begin(), rb.end(), [&](double v) { return v == rb.front(); });
  if (ca || cb) return nan;
  centre(ra);
  centre(rb);
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    ab += ra[i] * rb[i];
    aa += ra[i] * ra[i];
    bb += rb[i] * rb[i];
  }
  return ab / std::sqrt(aa * bb);
}

double jaccard(size_t size_a, size_t size_b, size_t common) {
  const size_t uni = size_a + size_b - common;
  return uni == 0 ? 1.0 : static_cast<double>(common) / static_cast<double>(uni);
}

}  // namespace teap::eap
