// Paper figures from the results store through gnuplot: every figure is written as an editable
// gnuplot script (<out>.gp) and its data (<out>.dat) beside the rendered file, so a figure can
// be restyled without kvlab. Terminal from the extension: .pdf (pdfcairo), .png (pngcairo),
// .svg (svg), .tex (cairolatex). Styles differ by dash type and point shape as well as colour,
// so figures print in greyscale; sizes fit one column (3.5 in) or two (7 in).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "results/store.h"

namespace kvlab::plots {

struct PlotRequest {
  // error-vs-ratio   compress runs: one point per method (x ratio, y `metric`, default attn_kl), a
  //                  line per method family — the quality-vs-bytes frontier of a paper's figure
  // pareto           compress runs: every method as a point and the frontier no method beats on
  //                  both ratio and `metric` — quality vs bytes across families
  // accuracy-vs-ratio eval runs: y = `metric` (default accuracy, else agreement), with the
  //                  uncompressed baseline as a horizontal line
  // layer-error      one compress run: `metric` (default key_error) per layer, clustered bars (a
  //                  bar per method) or, with `style` lines, a line per method
  // heatmap          one analyze run: matrix `matrix` (default key.cka) of layer × layer
  // eigen-rank       one analyze run: rank fraction for each energy level vs group size, K and V
  // spectra          one analyze run: energy kept vs rank fraction (`metric` cumulative, the
  //                  default) or the normalized eigenvalues λ_k/Σλ (`metric` eigenvalue), the mean
  //                  over a group size's groups, a line per kind (K, V) and group size
  // needle           eval runs of one task at one or more lengths: `metric` (default accuracy) of
  //                  `method` averaged per cell of needle depth (10 % bins, or the depths themselves
  //                  when they are at most 12 whole percentages, as `eval --depth` sweeps give) ×
  //                  task length; a cell with no sample is blank
  std::string kind;
  std::vector<std::string> runs = {"latest"};  // run references (id, uuid prefix, latest)
  std::string metric;                          // "" = the kind's default
  std::string matrix = "key.cka";
  std::string style;                           // layer-error: bars (default) | lines
  std::string method;                          // needle: the method ("baseline" or a spec; "" = the only one)
  std::string size = "single";                 // single | double (column)
  std::string title;                           // "" = none (papers caption their figures)
  std::filesystem::path out;                   // fig.pdf | .png | .svg | .tex
};

// Writes <out>.gp and <out>.dat, runs gnuplot and checks it made `out`. Returns a one-line
// description. Errors name the run, metric or matrix that is missing, or gnuplot's message.
std::string plot(const results::Store& store, const PlotRequest& request);

// The kinds, for --help.
std::vector<std::string> plot_kinds();

}  // namespace kvlab::plots
