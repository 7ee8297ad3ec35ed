#include "tinysql/item.hpp"

#include <stdexcept>

#include "tinysql/vocabulary.hpp"

namespace teap::tinysql {

Item draw_item(Rng& rng, int num_fields) {
  const auto& tables = table_names();
  const auto& fields = field_names();
  const auto& types = field_types();
  if (num_fields < 1 || num_fields > static_cast<int>(fields.size()))
    throw std::invalid_argument("draw_item: num_fields out of range");
  Item item;
  item.table = tables[rng.below(tables.size())];
  for (const int i : sample_without_replacement(static_cast<int>(fields.size()), num_fields, rng))
    item.fields.push_back(fields[static_cast<size_t>(i)]);
  for (int i = 0; i < num_fields; ++i) item.types.push_back(types[rng.below(types.size())]);
  return item;
}

std::string shown_table(const Item& item, bool use_synonyms_table) {
  return use_synonyms_table ? table_synonym(item.table) : item.table;
}

std::vector<std::string> shown_fields(const Item& item, bool use_synonyms_field) {
  if (!use_synonyms_field) return item.fields;
  std::vector<std::string> out;
  for (const auto& f : item.fields) out.push_back(field_synonym(f));
  return out;
}

std::string english(const Item& item, bool use_synonyms_field, bool use_synonyms_table) {
  const auto fields = shown_fields(item, use_synonyms_field);
  if (fields.empty()) throw std::invalid_argument("english: an item has at least one field");
  std::string list;
  for (size_t i = 0; i + 1 < fields.size(); ++i) list += (i ? ", " : "") + fields[i];
  list += " and " + fields.back();
  return "show me the " + list + " from the " + shown_table(item, use_synonyms_table) + " table";
}

std::string sql(const Item& item) {
  std::string out = "SELECT ";
  for (size_t i = 0; i < item.fields.size(); ++i) out += (i ? ", " : "") + item.fields[i];
  return out + " FROM " + item.table;
}

std::string create_statement(const Item& item) {
  std::string out = "CREATE TABLE " + item.table + " ( ";
  for (size_t i = 0; i < item.fields.size(); ++i)
    out += (i ? ", " : "") + item.fields[i] + " " + item.types.at(i);
  return out + " )";
}

std::string collapse_whitespace(const std::string& text) {
  auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
  };
  std::string out;
  bool pending_space = false;
  for (const char c : text) {
    if (is_space(c)) {
      pending_space = !out.empty();
    } else {
      if (pending_space) out += ' ';
      pending_space = false;
      out += c;
    }
  }
  return out + ' ';
}

std::string make_prompt(const std::string& english_text, const std::string& create_text) {
  return collapse_whitespace("### Instruction: " + english_text + " ### Context: " + create_text +
                             " ### Response: ");
}

}  // namespace teap::tinysql
