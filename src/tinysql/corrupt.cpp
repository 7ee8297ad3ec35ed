#include "tinysql/corrupt.hpp"

#include <algorithm>
#include <stdexcept>

#include "tinysql/vocabulary.hpp"
#include "util/error.hpp"

namespace teap::tinysql {

namespace {

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::vector<std::string> without(const std::vector<std::string>& list, const std::vector<std::string>& excluded) {
  std::vector<std::string> out;
  for (const auto& w : list)
    if (!contains(excluded, w)) out.push_back(w);
  return out;
}

bool is_table_feature(Feature f) { return f == Feature::EngTableName || f == Feature::DefTableName; }

}  // namespace

const std::vector<Feature>& all_features() {
  static const std::vector<Feature> v{Feature::EngTableName, Feature::EngFieldName, Feature::DefTableName,
                                      Feature::DefFieldName};
  return v;
}

const char* feature_name(Feature feature) {
  switch (feature) {
    case Feature::EngTableName: return "EngTableName";
    case Feature::EngFieldName: return "EngFieldName";
    case Feature::DefTableName: return "DefTableName";
    case Feature::DefFieldName: return "DefFieldName";
  }
  throw std::invalid_argument("feature_name: not a Feature");
}

Feature parse_feature(const std::string& name) {
  std::string valid;
  for (const Feature f : all_features()) {
    if (name == feature_name(f)) return f;
    valid += std::string(valid.empty() ? "" : ", ") + feature_name(f);
  }
  throw InputError("unknown feature '" + name + "'; valid features: " + valid);
}

bool is_def_feature(Feature feature) {
  return feature == Feature::DefTableName || feature == Feature::DefFieldName;
}

void validate(const CellSettings& cell) {
  const int n_fields = static_cast<int>(field_names().size());
  if (cell.num_fields < 1 || cell.num_fields > n_fields)
    throw InputError("num_fields " + std::to_string(cell.num_fields) + " is out of range (1 to " +
                     std::to_string(n_fields) + ")");
  const bool all_fields_excluded =
      !cell.use_novel_names && (cell.feature == Feature::DefFieldName ||
                                (cell.feature == Feature::EngFieldName && !cell.use_synonyms_field));
  if (all_fields_excluded && cell.num_fields >= n_fields)
    throw InputError(std::string(feature_name(cell.feature)) + " with num_fields " +
                     std::to_string(cell.num_fields) +
                     " leaves no field name to corrupt with (use fewer fields or novel names)");
}

std::string cell_key_string(const CellSettings& cell) {
  return std::string("feature=") + feature_name(cell.feature) + ";novel=" + (cell.use_novel_names ? "1" : "0") +
         ";syn_field=" + (cell.use_synonyms_field ? "1" : "0") + ";syn_table=" +
         (cell.use_synonyms_table ? "1" : "0") + ";num_fields=" + std::to_string(cell.num_fields);
}

uint64_t cell_key(const CellSettings& cell) { return fnv1a64(cell_key_string(cell)); }

std::string replace_all(const std::string& text, const std::string& from, const std::string& to) {
  if (from.empty()) throw std::invalid_argument("replace_all: empty pattern");
  std::string out;
  size_t pos = 0;
  for (;;) {
    const size_t hit = text.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(text, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(text, pos, std::string::npos);
  return out;
}

std::vector<std::string> corrupt_candidates(const CellSettings& cell, const Item& item) {
  const bool table = is_table_feature(cell.feature);
  const auto& list = cell.use_novel_names ? (table ? novel_table_names() : novel_field_names())
                                          : (table ? table_names() : field_names());
  switch (cell.feature) {
    // The reference excludes the shown word, so with table synonyms the real name stays a candidate
    // (a documented quirk).
    case Feature::EngTableName: return without(list, {shown_table(item, cell.use_synonyms_table)});
    // Likewise the shown words of all fields: with field synonyms the real names stay candidates.
    case Feature::EngFieldName: return without(list, shown_fields(item, cell.use_synonyms_field));
    case Feature::DefTableName: return without(list, {item.table});
    case Feature::DefFieldName: return without(list, item.fields);
  }
  throw std::invalid_argument("corrupt_candidates: not a Feature");
}

Pair build_pair(const CellSettings& cell, const Item& item, const std::string& corrupt_word) {
  Pair p;
  p.item = item;
  p.sql = sql(item);
  p.corrupt_word = corrupt_word;
  const std::string eng = english(item, cell.use_synonyms_field, cell.use_synonyms_table);
  const std::string create = create_statement(item);
  std::string corrupt_eng = eng, corrupt_create = create;
  switch (cell.feature) {
    case Feature::EngTableName:
      p.clean_word = shown_table(item, cell.use_synonyms_table);
      p.answer_word = item.table;
      corrupt_eng = replace_all(eng, p.clean_word, corrupt_word);
      break;
    case Feature::EngFieldName:
      p.clean_word = shown_fields(item, cell.use_synonyms_field).front();
      p.answer_word = item.fields.front();
      corrupt_eng = replace_all(eng, p.clean_word, corrupt_word);
      break;
    case Feature::DefTableName:
      p.clean_word = item.table;
      p.answer_word = item.table;
      corrupt_create = replace_all(create, p.clean_word, corrupt_word);
      break;
    case Feature::DefFieldName:
      p.clean_word = item.fields.front();
      p.answer_word = item.fields.front();
      corrupt_create = replace_all(create, p.clean_word, corrupt_word);
      break;
  }
  p.clean_prompt = make_prompt(eng, create);
  p.corrupt_prompt = make_prompt(corrupt_eng, corrupt_create);
  // The SQL is "SELECT f1, ... FROM t": the first field follows "SELECT", the table ends the text.
  p.answer_offset = is_table_feature(cell.feature) ? p.sql.size() - item.table.size() - 1
                                                   : std::string("SELECT").size();
  return p;
}

Pair draw_pair(const CellSettings& cell, Rng& rng) {
  const Item item = draw_item(rng, cell.num_fields);
  const auto candidates = corrupt_candidates(cell, item);
  if (candidates.empty())
    throw InputError(cell_key_string(cell) + ": no corrupt word left to draw (see validate)");
  return build_pair(cell, item, candidates[rng.below(candidates.size())]);
}

}  // namespace teap::tinysql
