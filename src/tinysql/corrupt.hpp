// Owns the four corruption features of the reference's CorruptFeatureTestGenerator that work, the
// settings of a grid cell, and the making of one clean/corrupt text pair (no tokens: see batch.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tinysql/item.hpp"
#include "tinysql/rng.hpp"

namespace teap::tinysql {

enum class Feature { EngTableName, EngFieldName, DefTableName, DefFieldName };

// All four, in the spec's order.
const std::vector<Feature>& all_features();
const char* feature_name(Feature feature);
// Exact, case-sensitive names; anything else is an InputError listing the valid names.
Feature parse_feature(const std::string& name);
bool is_def_feature(Feature feature);

struct CellSettings {
  Feature feature = Feature::EngTableName;
  bool use_novel_names = false;
  bool use_synonyms_field = false;
  bool use_synonyms_table = false;
  int num_fields = 2;
};

// InputError unless num_fields is 1..19 and the feature has a corrupt word to draw for every item.
// (DefFieldName, and EngFieldName without field synonyms, exclude all of the item's fields from the
// 19 clean names: without --novel that needs num_fields <= 18; the reference would crash there.)
void validate(const CellSettings& cell);

// "feature=DefFieldName;novel=0;syn_field=1;syn_table=0;num_fields=2": the cell's identity for
// seeding; cell_key is its fnv1a64.
std::string cell_key_string(const CellSettings& cell);
uint64_t cell_key(const CellSettings& cell);

// One clean/corrupt pair as text.
struct Pair {
  Item item;
  std::string clean_prompt, corrupt_prompt;  // each ends in exactly one space
  std::string sql;                           // shared: the corrupt prompt keeps the clean answer
  std::string clean_word, corrupt_word;
  std::string answer_word;                   // the real name the model should write
  size_t answer_offset = 0;                  // byte offset in `sql` of the space before answer_word
};

// The list the corrupt word is drawn from uniformly, per the spec's table: the novel list when
// use_novel_names, else the clean list, minus the feature's excluded words. In list order.
std::vector<std::string> corrupt_candidates(const CellSettings& cell, const Item& item);

// The pair for `item` with `corrupt_word`: plain replace-all of the clean word by the corrupt word
// in the English (Eng features) or the CREATE statement (Def features), as the reference does.
Pair build_pair(const CellSettings& cell, const Item& item, const std::string& corrupt_word);

// draw_item, then corrupt_candidates[below(size)], then build_pair.
Pair draw_pair(const CellSettings& cell, Rng& rng);

// Python's str.replace(from, to): every non-overlapping occurrence, left to right.
std::string replace_all(const std::string& text, const std::string& from, const std::string& to);

}  // namespace teap::tinysql
