// kvlab plot: paper figures from the results store, through gnuplot.
#include <fmt/format.h>

#include <memory>

#include "cli/commands.h"
#include "plots/plot.h"

namespace kvlab::cli {

void add_plot(CLI::App& app, Action& action) {
  auto req = std::make_shared<plots::PlotRequest>();
  auto db = std::make_shared<std::filesystem::path>("kvlab-results.sqlite");
  auto* cmd = app.add_subcommand("plot", "Make a paper figure (PDF/PNG/SVG/LaTeX) from runs in the results store");
  cmd->footer(
      "Kinds:\n"
      "  error-vs-ratio     compress runs: a point per method at its compression ratio, a line per method\n"
      "                     family; --metric attn_kl (default), key_error, value_error, attn_output_error\n"
      "  pareto             compress runs: every method as a point, and the frontier no method beats on\n"
      "                     both ratio and the metric\n"
      "  accuracy-vs-ratio  eval runs: accuracy (or agreement when the run has no task) with the\n"
      "                     uncompressed baseline as a dashed line\n"
      "  layer-error        one compress run: --metric key_error (default) per layer, a bar per method\n"
      "                     (--style lines: a line per method)\n"
      "  heatmap            one analyze run: --matrix key.cka (default), value.cka, key.token_cosine, ...\n"
      "  eigen-rank         one analyze run: rank fraction per energy level vs group size (xKV Fig. 2)\n"
      "  spectra            one analyze run: energy kept vs rank / columns per group size, K and V;\n"
      "                     --metric eigenvalue draws the normalized eigenvalues on a log scale instead\n"
      "  needle             eval runs of a ruler:niah* task (one per length, or --depth sweeps): --metric\n"
      "                     accuracy (default) of --method, per needle depth × context length cell\n\n"
      "The editable gnuplot script (.gp) and its data (.dat) are written beside the figure.\n"
      "Example: kvlab plot error-vs-ratio --run 3 --run 4 --out fig/kl-vs-ratio.pdf");
  cmd->add_option("kind", req->kind, "Figure kind")->required()->check(CLI::IsMember(plots::plot_kinds()));
  cmd->add_option("--run", req->runs, "Run(s): id, uuid prefix or latest (default: latest of the kind)");
  cmd->add_option("--metric", req->metric, "Metric to plot (default per kind)");
  cmd->add_option("--matrix", req->matrix, "Matrix of an analyze run (heatmap)")->capture_default_str();
  cmd->add_option("--style", req->style, "layer-error: bars (default) or lines")->check(CLI::IsMember({"bars", "lines"}));
  cmd->add_option("--method", req->method, "needle: the method to draw (a spec or baseline; default: the only one)");
  cmd->add_option("--size", req->size, "single or double column")->check(CLI::IsMember({"single", "double"}))
      ->capture_default_str();
  cmd->add_option("--title", req->title, "Title (papers usually caption instead)");
  cmd->add_option("--db", *db, "Results store")->capture_default_str();
  cmd->add_option("--out", req->out, "Figure: .pdf, .png, .svg or .tex")->required();
  cmd->callback([req, db, &action] {
    action = [req, db] {
      const results::Store store(*db, /*must_exist=*/true);
      fmt::print("{}\n", plots::plot(store, *req));
    };
  });
}

}  // namespace kvlab::cli
