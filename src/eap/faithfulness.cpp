#include "eap/faithfulness.hpp"

#include <cmath>

#include "eap/circuit.hpp"
#include "util/error.hpp"

namespace teap::eap {

const CircuitFaithfulness* CellFaithfulness::find(const std::string& name) const {
  for (const auto& c : circuits)
    if (c.name == name) return &c;
  return nullptr;
}

CellFaithfulness cell_faithfulness(const std::vector<BatchFaithfulness>& batches, const std::string& no_faithfulness,
                                   const std::string& where) {
  CellFaithfulness cell;
  cell.no_faithfulness = no_faithfulness;
  cell.n_batches = static_cast<int>(batches.size());
  if (batches.empty()) return cell;
  const BatchFaithfulness& first = batches.front();
  for (const auto& b : batches)
    if (b.circuit != first.circuit || b.k != first.k || b.edges != first.edges)
      fail_input(where, "its batches were evaluated on different circuits (another [evaluate] table or top_n?)");
  for (size_t i = 0; i < first.circuit.size(); ++i) {
    CircuitFaithfulness c;
    c.name = first.circuit[i];
    c.k = first.k[i];
    c.edges = first.edges[i];
    double sum = 0;
    for (const auto& b : batches) {
      c.per_batch.push_back(b.f[i]);
      sum += b.f[i];
    }
    const double n = double(batches.size());
    c.f = sum / n;
    double ss = 0;
    for (double x : c.per_batch) ss += (x - c.f) * (x - c.f);
    c.spread = batches.size() > 1 ? std::sqrt(ss / (n - 1)) : 0.0;
    cell.circuits.push_back(std::move(c));
  }
  for (const auto& c : cell.circuits)
    if (c.k > 0) {
      cell.curve_k.push_back(double(c.k));
      cell.curve_f.push_back(c.f);
    }
  cell.auc = cell.curve_k.empty() ? std::nan("") : log_k_auc(cell.curve_k, cell.curve_f);
  return cell;
}

}  // namespace teap::eap
