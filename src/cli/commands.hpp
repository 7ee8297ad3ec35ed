// Owns the subcommands of `tinysql-eap`. Each add_* registers one subcommand on the app and
// returns the function that runs it after parsing; bad input throws teap::InputError (exit 2),
// anything else escapes as another exception (exit 1).
#pragma once

#include <functional>

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

}  // namespace teap::cli
