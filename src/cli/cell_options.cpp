#include "cli/cell_options.hpp"

#include <CLI/CLI.hpp>

#include <charconv>

#include "util/error.hpp"

namespace teap::cli {

void add_cell_options(CLI::App* sub, CellArgs& args, int default_batches) {
  args.batches = default_batches;
  sub->add_option("--feature", args.feature, "EngTableName, EngFieldName, DefTableName or DefFieldName")->required();
  sub->add_flag("--novel", args.novel, "corrupt with novel names (words the models never saw in that role)");
  sub->add_flag("--syn-field", args.syn_field, "the English shows field synonyms");
  sub->add_flag("--syn-table", args.syn_table, "the English shows the table synonym");
  sub->add_option("--num-fields", args.num_fields,
                  "fields per table, 1 to 19 (with 1 the English reads \"show me the and price from ...\", as the "
                  "reference's prompts do)")
      ->capture_default_str();
  sub->add_option("--batch-size", args.batch_size, "items per batch")->capture_default_str();
  sub->add_option("--batches", args.batches, "batches 0 .. M-1")->capture_default_str();
  sub->add_option("--seed", args.seed, "seed of every draw, 0 to 2^64-1")->capture_default_str();
}

// Parsed here rather than by CLI11, which lets "-1" and values past 2^64-1 wrap silently.
uint64_t parse_seed(const std::string& text) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end)
    throw InputError("--seed " + text + " is not an integer from 0 to 18446744073709551615");
  return value;
}

tinysql::CellSettings cell_settings(const CellArgs& args) {
  tinysql::CellSettings cell;
  cell.feature = tinysql::parse_feature(args.feature);
  cell.use_novel_names = args.novel;
  cell.use_synonyms_field = args.syn_field;
  cell.use_synonyms_table = args.syn_table;
  cell.num_fields = args.num_fields;
  tinysql::validate(cell);
  if (args.batch_size < 1) throw InputError("--batch-size " + std::to_string(args.batch_size) + " is not at least 1");
  if (args.batches < 1) throw InputError("--batches " + std::to_string(args.batches) + " is not at least 1");
  parse_seed(args.seed);
  return cell;
}

}  // namespace teap::cli
