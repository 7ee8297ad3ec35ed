// Owns the names of the scoring methods (../shared/spec/circuits.md, "Scoring methods"): which
// gradient, or which patched runs, a batch's score matrix comes from. Plain C++.
#pragma once

#include <string>
#include <vector>

namespace teap::eap {

// eap: the gradient at the clean run. eap-ig-inputs: the mean gradient over runs whose embedding
// is interpolated from corrupt to clean (ig_steps of them). clean-corrupted: the mean of the
// gradients at the clean and the corrupt run. exact: M(all edges) - M(all but the edge), by
// patched runs.
enum class Method { Eap, EapIgInputs, CleanCorrupted, Exact };

// Parses a method's name; anything else is an InputError naming `where` and the known names.
Method parse_method(const std::string& s, const std::string& where);
std::string to_string(Method m);
std::vector<std::string> method_names();

inline constexpr int kDefaultIgSteps = 5;
inline constexpr int kMaxIgSteps = 1000;

}  // namespace teap::eap
