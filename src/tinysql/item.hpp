// Owns one clean TinySQL item: the random draws (table, fields, types) and the texts built from
// them (English request, SQL answer, CREATE statement, Alpaca-style prompt), as the reference does.
#pragma once

#include <string>
#include <vector>

#include "tinysql/rng.hpp"

namespace teap::tinysql {

struct Item {
  std::string table;                // a clean table name
  std::vector<std::string> fields;  // distinct clean field names, in draw order
  std::vector<std::string> types;   // one field type per field
};

// Draws, in this order: the table (below(7)), `num_fields` fields
// (sample_without_replacement(19, num_fields)), then one type per field (below(5) each).
// `num_fields` must be 1..19 (checked by the caller; std::invalid_argument here).
Item draw_item(Rng& rng, int num_fields);

// The words the English shows: the synonyms when the flag is set, else the real names.
std::string shown_table(const Item& item, bool use_synonyms_table);
std::vector<std::string> shown_fields(const Item& item, bool use_synonyms_field);

// "show me the {F} from the {T} table", F = the first n-1 shown fields joined by ", ", then
// " and ", then the last. With one field the list before " and " is empty, so this returns
// "show me the  and price ..." (two spaces) like the reference; the prompt's whitespace collapse
// then makes it "show me the and price ...", which is what the models were trained and tested on.
std::string english(const Item& item, bool use_synonyms_field, bool use_synonyms_table);

// "SELECT a, b FROM t" with the real names.
std::string sql(const Item& item);

// "CREATE TABLE t ( a INT, b CHAR )" with the real names.
std::string create_statement(const Item& item);

// Every run of whitespace becomes one space, both ends are trimmed, then one space is appended
// (Python's " ".join(s.split()) + " ").
std::string collapse_whitespace(const std::string& text);

// "### Instruction: {english} ### Context: {create} ### Response: " after collapse_whitespace.
std::string make_prompt(const std::string& english_text, const std::string& create_text);

}  // namespace teap::tinysql
