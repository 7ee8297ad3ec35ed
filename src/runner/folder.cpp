#include "runner/folder.hpp"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::runner {
namespace fs = std::filesystem;

namespace {
std::string batch_name(const char* pattern, int batch) {
  char name[32];
  std::snprintf(name, sizeof name, pattern, batch);
  return name;
}
}  // namespace

std::string kind_unit_path(const std::string& out, const std::string& folder, const std::string& cell_id, int batch) {
  return out + "/" + folder + "/" + cell_id + "/" + batch_name("b%05d.h5", batch);
}

std::string unit_path(const std::string& out, const std::string& cell_id, int batch) {
  return kind_unit_path(out, "units", cell_id, batch);
}

std::string failure_path(const std::string& out, const std::string& cell_id, int batch, const std::string& kind) {
  return out + "/failed/" + cell_id + (kind == "score" ? "" : "." + kind) + batch_name(".b%05d.txt", batch);
}

void prepare_folder(const job::Job& job, const nlohmann::json& manifest, const Plan& plan, const Shard& shard) {
  const std::string& out = job.output;
  std::error_code ec;
  for (const char* sub : {"units", "failed", "logs", "cells"})
    if (fs::create_directories(fs::path(out) / sub, ec), ec) break;
  for (const auto& k : plan.kinds)
    if (!ec) fs::create_directories(fs::path(out) / k.folder, ec);
  if (ec || access(out.c_str(), W_OK) != 0)
    throw InputError(job.output_origin + ": " + out + ": the output folder cannot be created or written (" +
                     (ec ? ec.message() : std::string("not writable")) + ")");
  write_file_atomic(out + "/sweep.json", manifest.dump(2) + "\n");
  write_file_atomic(out + "/job.toml", job.text);

  // Half-written files of a killed run never carry a final name; remove them (this shard's only:
  // another shard may be writing its own right now).
  std::map<std::string, int> cell_index;
  for (size_t c = 0; c < job.cells.size(); ++c) cell_index[job.cells[c].id] = static_cast<int>(c);
  for (const auto& k : plan.kinds) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(out) / k.folder)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || name.find(".tmp.") == std::string::npos) continue;
      if (shard.count > 1) {
        const auto it = cell_index.find(e.path().parent_path().filename().string());
        int b = -1;
        if (it == cell_index.end() || std::sscanf(name.c_str(), "b%d.h5", &b) != 1 ||
            !shard.has(UnitRef{0, it->second, b}, job.settings.batches))
          continue;
      }
      fs::remove(e.path());
    }
  }
  for (const auto& p : plan.pending)
    fs::remove(failure_path(out, job.cells[p.unit.cell].id, p.unit.batch, plan.kinds[p.unit.kind].name));
}

}  // namespace teap::runner
