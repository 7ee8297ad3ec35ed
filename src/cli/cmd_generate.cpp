// `tinysql-eap generate`: the clean/corrupt pairs a cell of the grid will feed the model, for
// looking at by eye. Output is a pure function of the arguments (byte-identical across runs).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/cell_options.hpp"
#include "cli/commands.hpp"
#include "tinysql/batch.hpp"
#include "model/hf_cache.hpp"
#include "tokenizer/tokenizer.hpp"
#include "util/error.hpp"

namespace teap::cli {

namespace {

std::string join_ids(const std::vector<int>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
  return out;
}

std::string json_line(int batch, int index, const tinysql::Example& ex) {
  nlohmann::ordered_json j;
  j["batch"] = batch;
  j["index"] = index;
  j["clean"] = ex.clean_text;
  j["corrupt"] = ex.corrupt_text;
  j["clean_word"] = ex.clean_word;
  j["corrupt_word"] = ex.corrupt_word;
  j["clean_token_id"] = ex.clean_token_id;
  j["corrupt_token_id"] = ex.corrupt_token_id;
  j["answer"] = ex.answer_word;
  j["answer_token_id"] = ex.answer_token_id;
  j["prompt_position"] = ex.prompt_position;
  j["answer_position"] = ex.answer_position;
  j["clean_input_ids"] = ex.clean_input_ids;
  j["corrupt_input_ids"] = ex.corrupt_input_ids;
  return j.dump() + "\n";
}

std::string text_block(int batch, int index, const tinysql::Example& ex) {
  std::string out = "batch " + std::to_string(batch) + " item " + std::to_string(index) + "\n";
  out += "  clean:   " + ex.clean_text + "\n";
  out += "  corrupt: " + ex.corrupt_text + "\n";
  out += "  words:   clean '" + ex.clean_word + "' (" + std::to_string(ex.clean_token_id) + "), corrupt '" +
         ex.corrupt_word + "' (" + std::to_string(ex.corrupt_token_id) + "), answer '" + ex.answer_word + "' (" +
         std::to_string(ex.answer_token_id) + ")\n";
  out += "  positions: prompt " + std::to_string(ex.prompt_position) + ", answer " +
         std::to_string(ex.answer_position) + " (of " + std::to_string(ex.clean_ids.size()) + " tokens)\n";
  out += "  clean input ids:   " + join_ids(ex.clean_input_ids) + "\n";
  out += "  corrupt input ids: " + join_ids(ex.corrupt_input_ids) + "\n\n";
  return out;
}

}  // namespace

Run add_generate_command(CLI::App& app) {
  struct Args {
    std::string tokenizer;
    CellArgs cell;
    std::string format = "jsonl";
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("generate", "Print the clean/corrupt prompt pairs of a cell, batch by batch");
  sub->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.json, vocab.json/encoder.json, a model folder holding one, or a repository id in the Hugging Face cache")
      ->required();
  add_cell_options(sub, args->cell, 1);
  sub->add_option("--format", args->format, "jsonl (one object per item) or text")
      ->check(CLI::IsMember({"jsonl", "text"}))
      ->capture_default_str();
  return [args] {
    // Checked before loading the tokenizer so that a typo fails at once.
    const tinysql::CellSettings cell = cell_settings(args->cell);
    const uint64_t seed = parse_seed(args->cell.seed);
    const auto tok = tokenizer::Tokenizer::load(model::resolve_tokenizer_path(args->tokenizer));
    spdlog::debug("generate {} with tokenizer {} ({})", tinysql::cell_key_string(cell), tok.source(), tok.family());
    for (int b = 0; b < args->cell.batches; ++b) {
      const auto batch = tinysql::make_batch(tok, cell, seed, b, args->cell.batch_size);
      std::string out;
      for (size_t i = 0; i < batch.examples.size(); ++i) {
        const int index = static_cast<int>(i);
        const auto& ex = batch.examples[i];
        out += args->format == "jsonl" ? json_line(b, index, ex) : text_block(b, index, ex);
      }
      std::fwrite(out.data(), 1, out.size(), stdout);
    }
  };
}

}  // namespace teap::cli
