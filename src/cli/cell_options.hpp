// Owns the command-line options that name a cell of the grid and its batches (generator flags,
// batch size and count, seed), shared by `generate` and `attribute`.
#pragma once

#include <cstdint>
#include <string>

#include "tinysql/corrupt.hpp"

namespace CLI {
class App;
}

namespace teap::cli {

struct CellArgs {
  std::string feature;
  bool novel = false, syn_field = false, syn_table = false;
  int num_fields = 2;
  int batch_size = 30;
  int batches = 1;
  std::string seed = "0";
};

void add_cell_options(CLI::App* sub, CellArgs& args, int default_batches);

// The validated cell; bad values are InputErrors naming the option.
tinysql::CellSettings cell_settings(const CellArgs& args);
uint64_t parse_seed(const std::string& text);

}  // namespace teap::cli
