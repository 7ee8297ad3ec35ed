#include "tinysql/vocabulary.hpp"

#include <stdexcept>

namespace teap::tinysql {

namespace {

const std::string& lookup(const std::vector<std::string>& keys, const std::vector<std::string>& values,
                          const std::string& key, const char* what) {
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] == key) return values[i];
  throw std::invalid_argument(std::string("no ") + what + " synonym for '" + key + "'");
}

}  // namespace

const std::vector<std::string>& table_names() {
  static const std::vector<std::string> v{"people", "inventory", "orders", "products",
                                          "items",  "users",     "links"};
  return v;
}

const std::vector<std::string>& table_synonyms() {
  static const std::vector<std::string> v{"children", "stock",     "requests", "goods",
                                          "objects",  "customers", "connections"};
  return v;
}

const std::vector<std::string>& novel_table_names() {
  static const std::vector<std::string> v{"star", "very", "apple", "blue", "orange"};
  return v;
}

const std::vector<std::string>& field_names() {
  static const std::vector<std::string> v{"price",  "count",  "amount", "total",    "name",
                                          "code",   "number", "label",  "type",     "category",
                                          "status", "title",  "date",   "value",    "rating",
                                          "color",  "size",   "weight", "duration"};
  return v;
}

const std::vector<std::string>& field_synonyms() {
  static const std::vector<std::string> v{"cost",   "quantity", "total",  "sum",        "title",
                                          "reference", "identifier", "tag", "category", "class",
                                          "state",  "heading",  "time",   "amount",     "score",
                                          "shade",  "dimension", "mass",  "period"};
  return v;
}

const std::vector<std::string>& novel_field_names() {
  static const std::vector<std::string> v{"hammer", "little", "wolf", "sky", "yellow"};
  return v;
}

const std::vector<std::string>& field_types() {
  static const std::vector<std::string> v{"INT", "CHAR", "TIME", "TEXT", "JSON"};
  return v;
}

const std::string& table_synonym(const std::string& table) {
  return lookup(table_names(), table_synonyms(), table, "table");
}

const std::string& field_synonym(const std::string& field) {
  return lookup(field_names(), field_synonyms(), field, "field");
}

}  // namespace teap::tinysql
