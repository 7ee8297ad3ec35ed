// Owns how a cell's faithfulness reads on its page: caption lines (F of the consistent circuit with
// its spread and edge count, the empty and full baselines, the area under F(k), which nodes were
// scored and what was never ablated; or why there is no F) and the F(k) curve, drawn by plotly on
// a log-k axis. Both read the result JSON's `faithfulness` object (report/faithfulness_json.hpp)
// rather than the computation, so whatever wrote that object, the page says the same.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace teap::report {

// Plain-text lines, first the headline ("Faithfulness F of the consistent circuit ..."). A
// mistyped or missing value reads as "n/a": the page is drawn from a file, not checked here.
std::vector<std::string> faithfulness_lines(const nlohmann::ordered_json& f);

// <div id="faithfulness"> with the lines; "" when `f` is null.
std::string faithfulness_caption_html(const nlohmann::ordered_json& f);

// <div id="faithfulness-curve" data-points="N"> and the script drawing F(k) with plotly (already
// loaded by the page), the consistent circuit as one more point at its edge count, the empty and
// full baselines as dashed lines; "" when there is no curve with a finite F to draw.
std::string faithfulness_curve_html(const nlohmann::ordered_json& f);

// One line for the SVG's description ("F(consistent) = 0.83 ± 0.05, 12 edges"), "" when null.
std::string faithfulness_headline(const nlohmann::ordered_json& f);

}  // namespace teap::report
