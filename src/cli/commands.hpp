// Owns the subcommands of `tinysql-eap`. Each add_* registers one subcommand on the app and
// returns the function that runs it after parsing; bad input throws teap::InputError (exit 2),
// anything else escapes as another exception (exit 1).
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace teap::cli {

using Run = std::function<void()>;

Run add_tokenize_command(CLI::App& app);
Run add_generate_command(CLI::App& app);
Run add_make_model_command(CLI::App& app);
Run add_inspect_command(CLI::App& app);
Run add_complete_command(CLI::App& app);
Run add_attribute_command(CLI::App& app);
Run add_run_command(CLI::App& app);
Run add_status_command(CLI::App& app);
Run add_train_command(CLI::App& app);
Run add_eval_command(CLI::App& app);
Run add_reduce_command(CLI::App& app);
Run add_plot_command(CLI::App& app);

// The reducer behind `reduce` (cmd_reduce.cpp), callable at the end of `run`: writes the cells'
// JSON and Sankey files and OUT/index.html, prints what is incomplete, returns the index path.
// top_n 0 takes each cell's top_n from the manifest.
struct QualityOptions {
  std::optional<double> min_effect_vs_clean, min_effect_vs_spread, min_accuracy;  // unset: the sweep's (job's [quality])
  bool include_flagged = false;  // flagged cells join colour scales and cross-cell tables
};
struct ReduceOptions {
  int top_n = 0;  // 0: each cell's top_n from the manifest
  bool signed_rank = false;
  // plotly.js (4.6 MB) inside every page, instead of once per folder as DEST/plotly.min.js.
  bool self_contained = false;
  QualityOptions quality;
  // Another sweep folder of the same cells scored by another method (reduce --compare): a
  // "Methods compared" section on the summary and DEST/compare-<its name>.json.
  std::string compare_with;
  // Where the results go (reduce --out): cells/, index.html, plotly.min.js; empty: the sweep folder.
  std::string dest;
};
std::string reduce_sweep(const std::string& out, const ReduceOptions& options = {});

}  // namespace teap::cli
