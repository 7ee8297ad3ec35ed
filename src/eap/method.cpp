#include "eap/method.hpp"

#include "util/error.hpp"

namespace teap::eap {

std::vector<std::string> method_names() { return {"eap", "eap-ig-inputs", "clean-corrupted", "exact"}; }

Method parse_method(const std::string& s, const std::string& where) {
  if (s == "eap") return Method::Eap;
  if (s == "eap-ig-inputs") return Method::EapIgInputs;
  if (s == "clean-corrupted") return Method::CleanCorrupted;
  if (s == "exact") return Method::Exact;
  fail_input(where, "method '" + s + "' is not one of eap, eap-ig-inputs, clean-corrupted, exact");
}

std::string to_string(Method m) {
  switch (m) {
    case Method::Eap: return "eap";
    case Method::EapIgInputs: return "eap-ig-inputs";
    case Method::CleanCorrupted: return "clean-corrupted";
    case Method::Exact: return "exact";
  }
  return "eap";
}

}  // namespace teap::eap
