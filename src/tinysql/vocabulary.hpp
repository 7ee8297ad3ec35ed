// Owns the word lists of the TinySQL experiment (spec tinysql-corrupt.md, "Vocabulary"), in the
// spec's order: the order is part of the contract, since draws are indices into these lists.
#pragma once

#include <string>
#include <vector>

namespace teap::tinysql {

const std::vector<std::string>& table_names();         // 7 clean table names
const std::vector<std::string>& table_synonyms();      // table_synonyms()[i] stands for table_names()[i]
const std::vector<std::string>& novel_table_names();   // 5
const std::vector<std::string>& field_names();         // 19 clean field names
const std::vector<std::string>& field_synonyms();      // field_synonyms()[i] stands for field_names()[i]
const std::vector<std::string>& novel_field_names();   // 5
const std::vector<std::string>& field_types();         // 5 SQL types

// The synonym of a clean table / field name; an unknown name is a std::invalid_argument (a
// programming error: names only ever come from the lists above).
const std::string& table_synonym(const std::string& table);
const std::string& field_synonym(const std::string& field);

}  // namespace teap::tinysql
