#include "cli/cell_result.hpp"

namespace teap::cli {

void set_result_parameters(report::ResultParameters& p, const runner::CellResult& r, eap::MetricPairing pairing,
                           int top_n) {
  p.top_n_edges = top_n;
  if (pairing == eap::MetricPairing::Notebook) {
    p.clean_logit_diff = r.last_batch.clean_ld;
    p.corrupt_logit_diff = r.last_batch.corrupt_ld;
    p.clean_metric = r.last_batch.clean_metric;
    p.corrupt_metric = r.last_batch.corrupt_metric;
    p.extra["cell_clean_logit_diff"] = r.baselines.clean_ld;
    p.extra["cell_corrupt_logit_diff"] = r.baselines.corrupt_ld;
    p.extra["cell_clean_metric"] = r.clean_metric;
    p.extra["cell_corrupt_metric"] = r.corrupt_metric;
    return;
  }
  p.clean_logit_diff = r.baselines.clean_ld;
  p.corrupt_logit_diff = r.baselines.corrupt_ld;
  p.clean_metric = r.clean_metric;
  p.corrupt_metric = r.corrupt_metric;
}

}  // namespace teap::cli
