#include "model/hf_cache.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "model/printable.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::model {

namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// "~" and "~/x" as the shell and Python's expanduser read them.
std::string expand_home(const std::string& p) {
  if (p.empty() || p[0] != '~' || (p.size() > 1 && p[1] != '/')) return p;
  return env("HOME") + p.substr(1);
}

bool is_hex40(const std::string& s) {
  if (s.size() != 40) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  return true;
}

// Hugging Face's own rule for a repository id's parts: letters, digits, '-', '_', '.', and neither
// ".." nor a leading or trailing '-' / '.'.
bool is_id_part(const std::string& s) {
  if (s.empty() || s.size() > 96 || s.find("..") != std::string::npos) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
          c == '_' || c == '.'))
      return false;
  return s.front() != '-' && s.front() != '.' && s.back() != '-' && s.back() != '.';
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

std::string hf_hub_cache_dir() {
  if (auto v = env("HF_HUB_CACHE"); !v.empty()) return expand_home(v);
  if (auto v = env("HUGGINGFACE_HUB_CACHE"); !v.empty()) return expand_home(v);
  if (auto v = env("HF_HOME"); !v.empty()) return (fs::path(expand_home(v)) / "hub").string();
  if (auto v = env("XDG_CACHE_HOME"); !v.empty())
    return (fs::path(expand_home(v)) / "huggingface" / "hub").string();
  return (fs::path(expand_home("~/.cache")) / "huggingface" / "hub").string();
}

std::string resolve_model_path(const std::string& name_or_path, const std::string& revision) {
  std::error_code ec;
  if (fs::is_directory(name_or_path, ec)) return name_or_path;
  if (fs::exists(name_or_path, ec))
    fail_input(name_or_path, "is a file; expected a model folder or a repository id org/name");

  const auto slash = name_or_path.find('/');
  if (slash == std::string::npos || !is_id_part(name_or_path.substr(0, slash)) ||
      !is_id_part(name_or_path.substr(slash + 1)))
    fail_input(name_or_path, "no such folder, and not a repository id of the form org/name");

  const std::string cache = hf_hub_cache_dir();
  const fs::path repo = fs::path(cache) / ("models--" + name_or_path.substr(0, slash) + "--" +
                                           name_or_path.substr(slash + 1));
  if (!fs::is_directory(repo, ec))
    fail_input(name_or_path, "no such folder, and not in the Hugging Face cache (looked for " +
                                 repo.string() + "; nothing is downloaded)");

  const std::string rev = revision.empty() ? "main" : revision;
  if (rev.find("..") != std::string::npos || rev.front() == '/')
    fail_input(name_or_path,
               "revision '" + printable(rev) + "' is not a branch, tag or commit name");

  std::string commit;
  const fs::path ref = repo / "refs" / rev;
  if (fs::is_regular_file(ref, ec)) {
    commit = trim(read_file(ref.string(), kMaxSmallFile));
    if (!is_hex40(commit))
      fail_input(ref.string(), "not a commit hash (a broken Hugging Face cache entry)");
  } else if (is_hex40(rev)) {
    commit = rev;
    if (!fs::is_directory(repo / "snapshots" / commit, ec))
      fail_input(name_or_path, "commit " + rev + " is not in the Hugging Face cache (looked for " +
                                   (repo / "snapshots" / commit).string() +
                                   "; nothing is downloaded)");
  } else {
    fail_input(name_or_path, "revision '" + printable(rev) +
                                 "' is not in the Hugging Face cache (looked for " + ref.string() +
                                 "; nothing is downloaded)");
  }

  const fs::path snapshot = repo / "snapshots" / commit;
  if (!fs::is_directory(snapshot, ec))
    fail_input(ref.string(), "cache entry without a snapshot: names commit " + commit + ", but " +
                                 snapshot.string() + " does not exist");
  return snapshot.string();
}

std::string resolve_tokenizer_path(const std::string& name_or_path, const std::string& revision) {
  std::error_code ec;
  if (fs::exists(name_or_path, ec)) return name_or_path;
  // A path-looking name that is not there gets the tokenizer's own "no such file" message.
  const bool pathlike = name_or_path.empty() || name_or_path[0] == '/' || name_or_path[0] == '.' ||
                        std::count(name_or_path.begin(), name_or_path.end(), '/') != 1;
  if (pathlike) return name_or_path;
  return resolve_model_path(name_or_path, revision);
}

}  // namespace teap::model
