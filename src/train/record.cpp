#include "train/record.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <system_error>

#include "util/error.hpp"
#include "util/files.hpp"
#include "version.hpp"

namespace teap::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json settings_object(const TrainSettings& s0) {
  const TrainSettings s = resolved(s0);
  return json{
      {"recipe", kRecipeVersion},
      {"family", "gpt_neo"},
      {"tokenizer", "gpt2"},
      {"vocab_size", 50257},
      {"layers", s.layers},
      {"heads", s.heads},
      {"d_model", s.d_model},
      {"d_mlp", s.d_mlp},
      {"window", s.window},
      {"max_positions", s.max_positions},
      {"steps", s.steps},
      {"batch_size", s.batch_size},
      {"lr", s.lr},
      {"warmup", s.warmup},
      {"min_lr_ratio", s.min_lr_ratio},
      {"beta1", s.beta1},
      {"beta2", s.beta2},
      {"eps", s.eps},
      {"weight_decay", s.weight_decay},
      {"clip", s.clip},
      {"seed", s.seed},
      {"min_fields", s.data.min_fields},
      {"max_fields", s.data.max_fields},
      {"p_syn_table", s.data.p_syn_table},
      {"p_syn_field", s.data.p_syn_field},
  };
}

// "steps 300 (wanted 400), lr 0.001 (wanted 0.002)": the first few keys that differ.
std::string differences(const json& have, const json& want) {
  std::string out;
  int n = 0;
  for (const auto& [key, value] : want.items()) {
    const auto it = have.find(key);
    if (it != have.end() && *it == value) continue;
    if (n++ == 3) return out + ", ...";
    out += (out.empty() ? "" : ", ") + key + " " + (it == have.end() ? std::string("absent") : it->dump()) +
           " (wanted " + value.dump() + ")";
  }
  for (const auto& [key, value] : have.items())
    if (!want.contains(key)) {
      if (n++ == 3) return out + ", ...";
      out += (out.empty() ? "" : ", ") + key + " " + value.dump() + " (not a setting now)";
    }
  return out;
}

bool is_weight_file(const std::string& name) {
  return name == "model.safetensors" || name == "model.safetensors.index.json" ||
         (name.rfind("model-", 0) == 0 && name.size() > 12 && name.substr(name.size() - 12) == ".safetensors");
}

}  // namespace

std::string settings_json(const TrainSettings& s) { return settings_object(s).dump(); }

OutputAction check_output(const std::string& out, const TrainSettings& s, bool force) {
  std::error_code ec;
  const fs::path dir(out);
  if (!fs::exists(dir, ec)) return OutputAction::Train;
  if (!fs::is_directory(dir, ec)) fail_input(out, "exists and is not a folder");
  bool has_config = fs::exists(dir / "config.json", ec), has_weights = false;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (is_weight_file(e.path().filename().string())) has_weights = true;
  const bool has_record = fs::exists(dir / "training.json", ec);
  if (!has_config && !has_weights && !has_record) return OutputAction::Train;

  std::string why;
  if (has_record) {
    json record;
    try {
      record = json::parse(read_file((dir / "training.json").string(), kMaxJsonFile));
    } catch (const json::exception&) {
      record = json::object();
    }
    const json want = settings_object(s);
    const json have = record.is_object() && record.contains("settings") ? record["settings"] : json::object();
    if (have == want && has_config && fs::exists(dir / "model.safetensors", ec)) return OutputAction::Reuse;
    if (have == want)
      why = "holds a training record of these settings but no complete model (config.json, model.safetensors)";
    else if (!have.is_object() || have.empty())
      why = "holds a training.json without settings";
    else
      why = "holds a model trained with other settings: " + differences(have, want);
  } else {
    why = std::string("holds another model (") + (has_config ? "config.json" : "weights") + ", no training.json)";
  }
  if (!force) fail_input(out, why + "; pass --force to replace it");
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (is_weight_file(e.path().filename().string())) fs::remove(e.path());
  fs::remove(dir / "training.json", ec);
  return OutputAction::Train;
}

void write_record(const std::string& out, const TrainSettings& s, const TrainResult& r) {
  const json j{
      {"format", "tinysql-eap training record"},
      {"version", TEAP_VERSION},
      {"settings", settings_object(s)},
      {"seed", resolved(s).seed},
      {"threads", r.threads},
      {"steps", r.steps},
      {"parameters", r.parameters},
      {"first_loss", r.first_loss},
      {"final_loss", r.final_loss},
      {"final_token_accuracy", r.final_token_accuracy},
      {"holdout_items", r.holdout_items},
      {"holdout_exact_match", r.holdout_exact_match},
      {"seconds", r.seconds},
  };
  write_file_atomic((fs::path(out) / "training.json").string(), j.dump(2) + "\n");
}

}  // namespace teap::train
