// `tinysql-eap plot FILE.json...`: draws a result JSON again (ours or one the notebook wrote) as
// the Sankey HTML page and/or the SVG, named after the JSON file. The pages of a folder share one
// plotly.min.js beside them unless --self-contained.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "report/diff.hpp"
#include "report/notebook_json.hpp"
#include "report/sankey.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::cli {
namespace fs = std::filesystem;

namespace {

// A metadata / parameters value as text, whatever its JSON type.
std::string text_of(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object() || !obj.contains(key)) return "";
  const auto& v = obj[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_number_float()) {
    char b[64];
    std::snprintf(b, sizeof b, "%.4f", v.get<double>());
    return b;
  }
  if (v.is_null()) return "";
  return v.dump();
}

report::PageInfo page_info(const std::string& path, const report::LoadedResult& r) {
  const auto& m = r.doc["metadata"];
  const auto& p = r.doc["parameters"];
  report::PageInfo info;
  info.title = fs::path(path).filename().string();
  std::string line;
  if (!text_of(m, "model").empty()) line += "BM" + text_of(m, "model");
  if (!text_of(m, "commandset").empty()) line += " CS" + text_of(m, "commandset");
  if (!text_of(m, "feature_name").empty()) line += " " + text_of(m, "feature_name");
  if (!text_of(m, "use_novel_names").empty())
    line += ": novel names " + text_of(m, "use_novel_names") + ", synonyms field " + text_of(m, "use_synonyms_field") +
            ", synonyms table " + text_of(m, "use_synonyms_table");
  if (!text_of(m, "hf_model").empty()) line += "; " + text_of(m, "hf_model");
  if (!line.empty()) info.lines.push_back(line);
  std::string ld;
  if (!text_of(p, "clean_logit_diff").empty())
    ld = "LD clean " + text_of(p, "clean_logit_diff") + ", LD corrupt " + text_of(p, "corrupt_logit_diff");
  if (!ld.empty()) info.lines.push_back(ld);
  info.lines.push_back(std::to_string(r.edges.size()) + " edges" +
                       (text_of(p, "top_n_edges").empty() ? "" : " (top-n " + text_of(p, "top_n_edges") + ")") +
                       (text_of(m, "source").empty() ? "" : "; written by " + text_of(m, "source") + " at " +
                                                               text_of(m, "timestamp")));
  // A result reduce wrote for an evaluated cell: its F lines and F(k) curve, as on reduce's page.
  if (r.doc.contains("faithfulness") && r.doc["faithfulness"].is_object())
    info.faithfulness = nlohmann::ordered_json::parse(r.doc["faithfulness"].dump());
  return info;
}

}  // namespace

Run add_plot_command(CLI::App& app) {
  struct Args {
    std::vector<std::string> files, formats = {"html", "svg"};
    std::string out;
    bool self_contained = false;
    bool diff = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("plot", "Draw result JSON files (ours or the notebook's) again as Sankey HTML / SVG");
  sub->add_option("FILE", a->files, "result JSON files (eap_results.*.json)")->required();
  sub->add_flag("--diff", a->diff, "draw two results A.json B.json of one architecture as one difference Sankey");
  sub->add_option("--out", a->out, "folder for the pictures (default: beside each JSON)");
  // One value per --format (comma separated, or the option repeated): the files after it stay files.
  sub->add_option("--format", a->formats, "html, svg or both (comma separated)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->delimiter(',')
      ->check(CLI::IsMember({"html", "svg"}))
      ->capture_default_str();
  sub->add_flag("--self-contained", a->self_contained,
                "put plotly.js (4.6 MB) into every HTML page so that it opens alone, instead of one plotly.min.js "
                "beside the pages");
  return [a] {
    bool html = false, svg = false;
    for (const auto& f : a->formats) (f == "html" ? html : svg) = true;
    if (a->diff) {  // diff-<A>-vs-<B>.html / .svg (report/diff.hpp)
      const std::string js = html ? report::load_plotly_js() : "";
      for (const auto& p : report::write_diff(a->files, a->out, html, svg, a->self_contained ? js : "",
                                              a->self_contained ? "" : "plotly.min.js")) {
        if (html && !a->self_contained && fs::path(p).extension() == ".html")
          write_if_changed((fs::path(p).parent_path() / "plotly.min.js").string(), js);
        std::printf("%s\n", p.c_str());
      }
      return;
    }
    // Read every file first: a bad one fails before anything is written.
    std::vector<report::LoadedResult> results;
    for (const auto& f : a->files) results.push_back(report::read_result(f));
    const std::string js = html ? report::load_plotly_js() : "";
    if (!a->out.empty()) {
      std::error_code ec;
      fs::create_directories(a->out, ec);
      if (ec || !fs::is_directory(a->out))
        throw InputError("--out " + a->out + ": cannot be created as a folder (" +
                         (ec ? ec.message() : std::string("a file is in the way")) + ")");
    }
    // Where each input's pictures go; two inputs may not share one (the second would overwrite).
    std::vector<fs::path> stems;
    std::map<std::string, std::string> taken;
    for (const auto& f : a->files) {
      const fs::path in(f);
      const fs::path dir = a->out.empty() ? (in.has_parent_path() ? in.parent_path() : fs::path(".")) : fs::path(a->out);
      stems.push_back(dir / (in.extension() == ".json" ? in.stem().string() : in.filename().string()));
      const std::string key = fs::weakly_canonical(stems.back()).string();
      if (taken.count(key))
        throw InputError(f + ": its pictures would overwrite those of " + taken[key] + " (" + stems.back().string() +
                         ".*): give the files other names or draw them separately");
      taken[key] = f;
    }
    for (size_t i = 0; i < a->files.size(); ++i) {
      const fs::path dir = stems[i].parent_path();
      const std::string stem = stems[i].filename().string();
      const report::Sankey s = report::build_sankey(results[i].edges);
      const report::PageInfo info = page_info(a->files[i], results[i]);
      if (html) {
        const std::string p = (dir / (stem + ".html")).string();
        if (!a->self_contained) write_if_changed((dir / "plotly.min.js").string(), js);
        write_file_atomic(p, a->self_contained ? report::sankey_html(s, info, js)
                                               : report::sankey_html(s, info, "", "plotly.min.js"));
        std::printf("%s\n", p.c_str());
      }
      if (svg) {
        const std::string p = (dir / (stem + ".svg")).string();
        write_file_atomic(p, report::sankey_svg(s, info));
        std::printf("%s\n", p.c_str());
      }
    }
  };
}

}  // namespace teap::cli
