// Owns turning one cell's reduced result into the notebook's JSON `parameters`, shared by
// `reduce` (a sweep's cells) and `attribute` (one cell on one process), so that both write the
// same numbers under the same keys for every metric pairing.
#pragma once

#include "eap/metric.hpp"
#include "report/notebook_json.hpp"
#include "runner/unit.hpp"

namespace teap::cli {

// top_n_edges and the notebook's four values: the cell's (baselines, mean metrics over batches);
// for metric_pairing notebook, the last batch's, as the notebook's JSON held them, with the cell's
// values added to `extra` as cell_clean_logit_diff, cell_corrupt_logit_diff, cell_clean_metric,
// cell_corrupt_metric.
void set_result_parameters(report::ResultParameters& p, const runner::CellResult& r, eap::MetricPairing pairing,
                           int top_n);

}  // namespace teap::cli
