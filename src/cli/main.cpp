// The `tinysql-eap` executable: subcommands, logging, and the mapping of errors to exit codes
// (0 success, 2 bad usage or input with one line naming the culprit, 1 anything else).
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "cli/commands.hpp"
#include "model/denormal.hpp"
#include "util/error.hpp"
#include "version.hpp"

namespace {

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("teap");
  logger->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tinysql-eap: edge attribution patching sweeps over TinySQL models", "tinysql-eap"};
  app.set_version_flag("--version", TEAP_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  const char* log_help = "trace, debug, info, warn, error, critical or off (before or after the subcommand)";
  const auto log_levels = CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"});
  app.add_option("--log-level", log_level, log_help)->check(log_levels)->capture_default_str();

  std::map<CLI::App*, teap::cli::Run> runs;
  auto add = [&](teap::cli::Run (*adder)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    teap::cli::Run run = adder(app);
    runs[app.get_subcommands({}).at(before)] = std::move(run);
  };
  add(teap::cli::add_tokenize_command);
  add(teap::cli::add_generate_command);
  add(teap::cli::add_make_model_command);
  add(teap::cli::add_inspect_command);
  add(teap::cli::add_complete_command);
  add(teap::cli::add_attribute_command);
  add(teap::cli::add_run_command);
  add(teap::cli::add_status_command);
  add(teap::cli::add_train_command);
  add(teap::cli::add_eval_command);
  add(teap::cli::add_reduce_command);
  add(teap::cli::add_plot_command);
  // `tinysql-eap run JOB --log-level debug` as well as `tinysql-eap --log-level debug run JOB`.
  for (CLI::App* sub : app.get_subcommands({})) sub->add_option("--log-level", log_level, log_help)->check(log_levels);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion&) {
    std::printf("tinysql-eap %s\n", TEAP_VERSION);
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "tinysql-eap: %s (see --help)\n", e.what());
    return 2;
  }

  setup_logging(log_level);
  // Denormal floats slow the contraction 13-19x on some checkpoints; flushed, no score changes.
  teap::model::flush_denormals();
  try {
    for (auto* sub : app.get_subcommands()) runs.at(sub)();
    std::fflush(stdout);
    return 0;
  } catch (const teap::ReportedElsewhere& e) {
    return e.code;
  } catch (const teap::InputError& e) {
    const std::string what = e.what();
    std::fprintf(stderr, "tinysql-eap: error: %s\n", what.substr(0, what.find('\n')).c_str());
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the user gave that is in the way (a file where a folder must go, a missing parent,
    // no permission) is bad input; anything else (a full disk) is a failure.
    const std::error_code c = e.code();
    const bool input = c == std::errc::not_a_directory || c == std::errc::file_exists || c == std::errc::is_a_directory ||
                       c == std::errc::no_such_file_or_directory || c == std::errc::permission_denied ||
                       c == std::errc::read_only_file_system;
    std::string where = e.path1().string();
    if (!e.path2().empty()) where += " -> " + e.path2().string();
    std::fprintf(stderr, "tinysql-eap: %s: %s: %s\n", input ? "error" : "failure", where.c_str(), c.message().c_str());
    return input ? 2 : 1;
  } catch (const std::exception& e) {
    // LibTorch's messages go on with a stack trace of its own frames: useless to a user, and
    // the contract is one line.
    const std::string what = e.what();
    const std::string first = what.substr(0, what.find('\n'));
    spdlog::debug("{}", what);
    std::fprintf(stderr, "tinysql-eap: failure: %s\n", first.c_str());
    return 1;
  }
}
