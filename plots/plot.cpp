#include "plots/plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "results/metrics.h"

namespace kvlab::plots {
namespace {

namespace fs = std::filesystem;
using results::Metric;
using results::Scope;
namespace metric_name = results::metric_name;

// One plotted line: a name and its points, in x order.
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};

std::string gp_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return out + "\"";
}

// Method family: the method names of a chain, without parameters ("snapkv+kivi").
std::string family(const std::string& spec) {
  std::string out;
  std::size_t at = 0;
  while (at <= spec.size()) {
    const auto plus = std::min(spec.find('+', at), spec.size());
    const auto stage = spec.substr(at, plus - at);
    if (!out.empty()) out += '+';
    out += stage.substr(0, stage.find(':'));
    at = plus + 1;
  }
  return out;
}

std::string terminal_for(const fs::path& out, const std::string& size) {
  const bool wide = size == "double";
  if (size != "single" && size != "double") fail("--size '{}': expected single or double", size);
  const auto ext = out.extension().string();
  const std::string inches = wide ? "7in,3in" : "3.5in,2.6in";
  if (ext == ".pdf") return fmt::format("pdfcairo enhanced font 'Helvetica,9' size {}", inches);
  if (ext == ".tex") return fmt::format("cairolatex pdf size {}", inches);
  if (ext == ".png") return fmt::format("pngcairo enhanced font 'Helvetica,9' size {}", wide ? "2100,900" : "1050,780");
  if (ext == ".svg") return fmt::format("svg enhanced font 'Helvetica,9' size {}", wide ? "700,300" : "350,260");
  fail("{}: the figure's extension picks the format: .pdf, .png, .svg or .tex", out.string());
}

// Shared style: greyscale-safe line styles (dash type and point shape vary with colour).
std::string preamble(const PlotRequest& r, const fs::path& out) {
  std::string s = fmt::format("# kvlab plot {} — edit freely and rerun: gnuplot {}\n", r.kind, out.stem().string() + ".gp");
  s += fmt::format("set terminal {}\nset output {}\n", terminal_for(out, r.size), gp_string(out.filename().string()));
  s += "set encoding utf8\nset border 3\nset tics nomirror\nset grid lc rgb '#dddddd'\nset key top right samplen 2 spacing 1.1 noenhanced\n";
  const char* colours[] = {"#000000", "#377eb8", "#e41a1c", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf"};
  for (int i = 0; i < 8; ++i)
    s += fmt::format("set style line {} lc rgb '{}' lw 1.5 dt {} pt {} ps 0.8\n", i + 1, colours[i], i % 5 + 1, i + 4);
  if (!r.title.empty()) s += fmt::format("set title {} noenhanced\n", gp_string(r.title));
  return s;
}

// Writes series as gnuplot data blocks (one index per series, name in a comment) and the plot
// command for them.
std::string series_plot(const std::vector<Series>& series, const std::string& dat_name, std::string& dat,
                        const char* style = "linespoints") {
  std::string cmd = "plot ";
  for (std::size_t i = 0; i < series.size(); ++i) {
    dat += fmt::format("# {}\n", series[i].name);
    for (const auto& [x, y] : series[i].points) dat += fmt::format("{:.9g} {:.9g}\n", x, y);
    dat += "\n\n";
    cmd += fmt::format("{}{} index {} using 1:2 with {} ls {} title {}", i ? ", \\\n     " : "", gp_string(dat_name), i,
                       style, i % 8 + 1, gp_string(series[i].name));
  }
  return cmd + "\n";
}

std::vector<results::Run> runs_of(const results::Store& store, const PlotRequest& r, results::RunKind kind) {
  std::vector<results::Run> out;
  for (const auto& ref : r.runs) out.push_back(store.resolve(ref, kind));
  if (out.empty()) fail("plot {}: no runs given", r.kind);
  return out;
}

double run_metric(const std::vector<Metric>& metrics, const std::string& method, const std::string& name, bool* found) {
  for (const auto& m : metrics)
    if (m.scope == Scope::run && m.method == method && m.name == name) {
      *found = true;
      return m.value;
    }
  *found = false;
  return NAN;
}

// Errors and KL divergences span orders of magnitude: a log axis. A name the metrics table lacks
// gets one when it says error or KL.
bool log_axis(const std::string& metric) {
  using results::Unit;
  if (const auto* info = results::find_metric(metric)) return info->unit == Unit::relative || info->unit == Unit::nats;
  return metric.find("kl") != std::string::npos || metric.find("error") != std::string::npos;
}

// error-vs-ratio and accuracy-vs-ratio: a point per method, lines per family.
std::string ratio_figure(const results::Store& store, const PlotRequest& r, results::RunKind kind,
                         const std::string& default_metric, std::string& dat, const std::string& dat_name) {
  std::map<std::string, Series> families;
  std::string metric = r.metric.empty() ? default_metric : r.metric;
  std::optional<double> baseline;
  for (const auto& run : runs_of(store, r, kind)) {
    const auto metrics = store.metrics(run.id);
    if (kind == results::RunKind::eval && r.metric.empty()) {  // accuracy when the run has a task
      bool any = false;
      for (const auto& m : metrics) any |= m.name == metric_name::accuracy;
      if (!any) metric = metric_name::agreement;
    }
    std::set<std::string> methods;
    for (const auto& m : metrics)
      if (m.scope == Scope::run) methods.insert(m.method);
    for (const auto& method : methods) {
      bool has_y = false, has_x = false;
      const double y = run_metric(metrics, method, metric, &has_y);
      if (method == "baseline") {
        if (has_y) baseline = y;
        continue;
      }
      const double x = run_metric(metrics, method, metric_name::compression_ratio, &has_x);
      if (has_x && has_y) families[family(method)].points.emplace_back(x, y);
    }
  }
  if (r.kind == "pareto") {
    // The frontier: points no other point beats on both axes (higher ratio and a better metric),
    // swept from the highest ratio down.
    const bool lower_better = results::metric_direction(metric) == results::Direction::lower_better;
    std::vector<std::pair<double, double>> all;
    for (const auto& [name, s] : families) all.insert(all.end(), s.points.begin(), s.points.end());
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    Series frontier{"Pareto frontier", {}};
    for (const auto& p : all)
      if (frontier.points.empty() || (lower_better ? p.second < frontier.points.back().second
                                                   : p.second > frontier.points.back().second))
        frontier.points.push_back(p);
    std::reverse(frontier.points.begin(), frontier.points.end());
    families["~frontier"] = frontier;  // sorts last: drawn over the families
  }
  if (families.empty())
    fail("plot {}: no method of run(s) {} has both {} and '{}'", r.kind, fmt::join(r.runs, ", "), metric_name::compression_ratio,
         metric);
  std::vector<Series> series;
  for (auto& [name, s] : families) {
    if (name != "~frontier") s.name = name;
    std::sort(s.points.begin(), s.points.end());
    series.push_back(s);
  }
  // noenhanced: metric names hold underscores, which enhanced text would read as subscripts.
  std::string s = fmt::format("set xlabel '{}'\nset ylabel {} noenhanced\n",
                              results::metric_label(metric_name::compression_ratio), gp_string(metric));
  if (log_axis(metric)) s += "set logscale y\n";
  if (baseline) s += fmt::format("set arrow from graph 0, first {0} to graph 1, first {0} nohead dt 2 lc rgb '#555555'\n"
                                 "set label 'uncompressed' at graph 0.02, first {0} offset 0,0.6 font ',8'\n", *baseline);
  return s + series_plot(series, dat_name, dat);
}

// Per-layer error: clustered bars (a cluster per layer, a bar per method, each with its own fill
// pattern so that it prints in greyscale), or a line per method with `style` lines.
std::string layer_figure(const results::Store& store, const PlotRequest& r, std::string& dat, const std::string& dat_name) {
  const auto run = runs_of(store, r, results::RunKind::compress).front();
  const std::string metric = r.metric.empty() ? metric_name::key_error : r.metric;
  const std::string style = r.style.empty() ? "bars" : r.style;
  if (style != "bars" && style != "lines") fail("plot layer-error: --style '{}': expected bars or lines", style);
  std::map<std::string, Series> by_method;
  for (const auto& m : store.metrics(run.id))
    if (m.scope == Scope::layer && m.name == metric) by_method[m.method].points.emplace_back(m.layer, m.value);
  if (by_method.empty()) fail("plot layer-error: run {} has no per-layer '{}'", run.id, metric);
  std::vector<Series> series;
  for (auto& [name, s] : by_method) {
    s.name = name.size() > 40 ? name.substr(0, 37) + "..." : name;
    std::sort(s.points.begin(), s.points.end());
    series.push_back(s);
  }
  const std::string labels = fmt::format("set xlabel 'layer'\nset ylabel {} noenhanced\nset key outside right\n", gp_string(metric));
  if (style == "lines") return labels + series_plot(series, dat_name, dat);
  // One row per layer: the layer, then each method's value (NaN where a method lacks the layer).
  std::set<int> layers;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) layers.insert(static_cast<int>(x));
  dat += "# layer";
  for (const auto& s : series) dat += " | " + s.name;
  dat += "\n";
  for (const int layer : layers) {
    dat += std::to_string(layer);
    for (const auto& s : series) {
      const auto it = std::find_if(s.points.begin(), s.points.end(), [&](const auto& p) { return p.first == layer; });
      dat += it == s.points.end() ? " NaN" : fmt::format(" {:.9g}", it->second);
    }
    dat += "\n";
  }
  // Label every layer up to 16, else every 4th, so 32- and 80-layer models stay legible.
  const int every = layers.size() > 16 ? 4 : 1;
  std::string cmd = "plot ";
  for (std::size_t i = 0; i < series.size(); ++i)
    cmd += fmt::format("{}{} using {}{} ls {} fs pattern {} border lc rgb '#000000' title {}", i ? ", \\\n     " : "",
                       gp_string(dat_name), i + 2, i ? "" : fmt::format(":xtic(int($1) % {} == 0 ? stringcolumn(1) : '')", every),
                       i % 8 + 1, i % 8, gp_string(series[i].name));
  return labels + "set style data histograms\nset style histogram clustered gap 1\nset boxwidth 0.9 relative\n"
                  "set grid noxtics\nset yrange [0:*]\n" + cmd + "\n";
}

std::string heatmap_figure(const results::Store& store, const PlotRequest& r, std::string& dat, const std::string& dat_name) {
  const auto run = runs_of(store, r, results::RunKind::analyze).front();
  for (const auto& m : store.matrices(run.id)) {
    if (m.name != r.matrix) continue;
    for (std::int64_t i = 0; i < m.rows; ++i) {
      for (std::int64_t j = 0; j < m.cols; ++j) {
        const double v = m.data[i * m.cols + j];
        dat += std::isnan(v) ? "NaN " : fmt::format("{:.6g} ", v);
      }
      dat += "\n";
    }
    // cubehelix runs dark to light monotonically, so the map reads the same in greyscale.
    return fmt::format(
        "set xlabel 'layer'\nset ylabel 'layer'\nset size ratio -1\nset palette cubehelix negative\n"
        "set cblabel {} noenhanced\nset xrange [-0.5:{}]\nset yrange [-0.5:{}]\nunset grid\n"
        "plot {} matrix with image notitle\n",
        gp_string(r.matrix), m.cols - 0.5, m.rows - 0.5, gp_string(dat_name));
  }
  std::string names;
  for (const auto& m : store.matrices(run.id)) names += (names.empty() ? "" : ", ") + m.name;
  fail("plot heatmap: run {} has no matrix '{}' (it has: {})", run.id, r.matrix, names.empty() ? "none" : names);
}

std::string eigen_figure(const results::Store& store, const PlotRequest& r, std::string& dat, const std::string& dat_name) {
  const auto run = runs_of(store, r, results::RunKind::analyze).front();
  static const std::regex name(R"(eigen_rank_fraction_g(\d+)_e([0-9.]+))");
  std::map<std::string, Series> lines;
  for (const auto& m : store.metrics(run.id)) {
    std::smatch match;
    if (m.scope != Scope::run || !std::regex_match(m.name, match, name)) continue;
    lines[fmt::format("{} {}%", m.method == "key" ? "K" : "V", std::stod(match[2]) * 100)].points.emplace_back(
        std::stod(match[1]), m.value);
  }
  if (lines.empty()) fail("plot eigen-rank: run {} has no eigen_rank_fraction_g*_e* metrics", run.id);
  std::vector<Series> series;
  for (auto& [n, s] : lines) {
    s.name = n;
    std::sort(s.points.begin(), s.points.end());
    series.push_back(s);
  }
  return "set xlabel 'group size (layers)'\nset ylabel 'rank / columns for the energy level'\nset logscale x 2\n"
         "set key top left\n" + series_plot(series, dat_name, dat);
}

// Spectra: for each "<kind>.spectrum.g<G>" matrix (a row of descending eigenvalues per group),
// the mean over its groups of the cumulative energy fraction (or of λ_k/Σλ) at rank fraction
// (k+1)/columns, so that group sizes with different column counts share one axis.
std::string spectra_figure(const results::Store& store, const PlotRequest& r, std::string& dat, const std::string& dat_name) {
  const auto run = runs_of(store, r, results::RunKind::analyze).front();
  const std::string metric = r.metric.empty() ? "cumulative" : r.metric;
  if (metric != "cumulative" && metric != "eigenvalue")
    fail("plot spectra: --metric '{}': expected cumulative (energy kept) or eigenvalue (λ_k / Σλ)", metric);
  static const std::regex name(R"((key|value)\.spectrum\.g(\d+))");
  std::map<std::pair<std::string, int>, Series> lines;  // (kind, G) → line, in that order
  for (const auto& m : store.matrices(run.id)) {
    std::smatch match;
    if (!std::regex_match(m.name, match, name) || m.rows == 0 || m.cols == 0) continue;
    std::vector<double> sum(static_cast<std::size_t>(m.cols), 0.0);
    int groups = 0;
    for (std::int64_t g = 0; g < m.rows; ++g) {
      const double* row = &m.data[static_cast<std::size_t>(g * m.cols)];
      double total = 0;
      for (std::int64_t k = 0; k < m.cols; ++k) total += std::max(row[k], 0.0);  // rounding negatives are zero
      if (!(total > 0)) continue;  // an all-zero group has no spectrum to draw
      ++groups;
      double kept = 0;
      for (std::int64_t k = 0; k < m.cols; ++k) {
        const double share = std::max(row[k], 0.0) / total;
        kept += share;
        sum[static_cast<std::size_t>(k)] += metric == "cumulative" ? std::min(kept, 1.0) : share;
      }
    }
    if (groups == 0) continue;
    const int g = std::stoi(match[2]);
    Series& line = lines[{match[1], g}];
    line.name = fmt::format("{} G={}", match[1] == "key" ? "K" : "V", g);
    for (std::int64_t k = 0; k < m.cols; ++k) {
      const double y = sum[static_cast<std::size_t>(k)] / groups;
      if (metric == "eigenvalue" && !(y > 0)) continue;  // log axis
      line.points.emplace_back(static_cast<double>(k + 1) / static_cast<double>(m.cols), y);
    }
  }
  if (lines.empty())
    fail("plot spectra: run {} has no spectra (matrices key.spectrum.g*, recorded by `kvlab analyze` with the Gram pass)", run.id);
  std::vector<Series> series;
  for (auto& [key, line] : lines) series.push_back(std::move(line));
  std::string s = "set xlabel 'rank / columns (G·H·D)'\nset logscale x 10\nset key bottom right\n";
  s += metric == "cumulative" ? "set ylabel 'energy kept'\nset yrange [0:1.02]\n"
                              : "set ylabel 'λ_k / Σλ (mean over groups)'\nset logscale y 10\nset format y '10^{%L}'\n";
  return s + series_plot(series, dat_name, dat, "lines");
}

// Needle depth × length: the sample-level `needle_depth` (percent) and `target_tokens` that eval
// runs record for generated tasks (method ""), against `metric` of the chosen method.
std::string needle_figure(const results::Store& store, const PlotRequest& r, std::string& dat, const std::string& dat_name) {
  const std::string metric = r.metric.empty() ? metric_name::accuracy : r.metric;
  struct Cell {
    double sum = 0;
    int n = 0;
  };
  struct Observation {
    double depth, length, value;
  };
  // Per method, the samples that have a depth, a length and the metric.
  std::map<std::string, std::vector<Observation>> by_method;
  for (const auto& run : runs_of(store, r, results::RunKind::eval)) {
    std::map<std::pair<std::string, std::string>, double> depth, length;  // (task, sample) →
    std::map<std::string, std::map<std::pair<std::string, std::string>, double>> values;  // method → sample →
    for (const auto& m : store.metrics(run.id, {.scope = Scope::sample, .method = {}, .name = {}})) {
      const std::pair<std::string, std::string> id{m.task, m.sample};
      if (m.method.empty() && m.name == metric_name::needle_depth) depth[id] = m.value;
      else if (m.method.empty() && m.name == metric_name::target_tokens) length[id] = m.value;
      else if (!m.method.empty() && m.name == metric) values[m.method][id] = m.value;
    }
    for (const auto& [name, samples] : values)
      for (const auto& [id, value] : samples)
        if (depth.count(id) && length.count(id)) by_method[name].push_back({depth[id], length[id], value});
  }
  std::vector<std::string> methods, compressed;
  for (const auto& [name, observations] : by_method) {
    methods.push_back(name);
    if (name != "baseline") compressed.push_back(name);
  }
  if (methods.empty())
    fail("plot needle: run(s) {} have no samples with a needle depth, a length and '{}'; needle depths are recorded "
         "by `kvlab eval --task ruler:niah_*`",
         fmt::join(r.runs, ", "), metric);
  std::string method = r.method;
  if (method.empty()) {  // the only compressed method, if there is exactly one
    if (compressed.size() != 1)
      fail("plot needle: say which method with --method (the runs have: {})", fmt::join(methods, ", "));
    method = compressed.front();
  }
  const std::vector<Observation>& seen = by_method[method];
  if (seen.empty())
    fail("plot needle: no method '{}' in run(s) {} (they have: {})", method, fmt::join(r.runs, ", "), fmt::join(methods, ", "));
  // Rows: the depths themselves when they are a few whole percentages (a --depth sweep), else
  // 10 % bins (RULER's random depths, measured); columns: the lengths.
  std::set<double> depths, lengths;
  for (const auto& o : seen) depths.insert(o.depth), lengths.insert(o.length);
  const bool binned = depths.size() > 12 || std::any_of(depths.begin(), depths.end(), [](double d) {
                        return std::abs(d - std::round(d)) > 1e-9;
                      });
  std::vector<std::string> row_labels;
  std::map<double, std::size_t> row_of;
  if (binned) {
    for (int b = 0; b < 10; ++b) row_labels.push_back(fmt::format("{}–{}", 10 * b, 10 * b + 10));
  } else {
    for (const double d : depths) row_of[d] = row_labels.size(), row_labels.push_back(fmt::format("{:g}", d));
  }
  const auto row = [&](double d) { return binned ? static_cast<std::size_t>(std::clamp(d / 10.0, 0.0, 9.0)) : row_of[d]; };
  std::map<double, std::size_t> col_of;
  for (const double l : lengths) col_of.emplace(l, col_of.size());
  std::vector<std::vector<Cell>> cells(row_labels.size(), std::vector<Cell>(lengths.size()));
  for (const auto& o : seen) {
    Cell& c = cells[row(o.depth)][col_of[o.length]];
    c.sum += o.value;
    ++c.n;
  }
  dat += fmt::format("# {} of {}: rows needle depth (%) {}, columns length (tokens) {}\n", metric, method,
                     fmt::join(row_labels, " | "), fmt::join(lengths, " | "));
  for (const auto& cells_row : cells) {
    for (const auto& c : cells_row) dat += c.n ? fmt::format("{:.6g} ", c.sum / c.n) : "NaN ";
    dat += "\n";
  }
  std::string xtics, ytics;
  for (const auto& [l, i] : col_of) xtics += fmt::format("{}'{:g}' {}", xtics.empty() ? "" : ", ", l, i);
  for (std::size_t i = 0; i < row_labels.size(); ++i) ytics += fmt::format("{}'{}' {}", i ? ", " : "", row_labels[i], i);
  const auto* info = results::find_metric(metric);
  const bool fraction = info && info->unit == results::Unit::fraction;  // cell means lie in [0, 1]
  // Depth 0 % at the top, as needle-in-a-haystack figures draw it; cubehelix reads in greyscale.
  return fmt::format(
      "set xlabel '{}'\nset ylabel '{}'\nset xtics ({})\nset ytics ({})\n"
      "set xrange [-0.5:{}]\nset yrange [{}:-0.5]\nset palette cubehelix\nset cblabel {} noenhanced\n{}unset grid\n"
      "set title {} noenhanced\nplot {} matrix with image notitle\n",
      results::metric_label(metric_name::target_tokens), results::metric_label(metric_name::needle_depth), xtics, ytics,
      lengths.size() - 0.5, row_labels.size() - 0.5, gp_string(metric), fraction ? "set cbrange [0:1]\n" : "",
      gp_string(r.title.empty() ? method : r.title), gp_string(dat_name));
}

}  // namespace

std::vector<std::string> plot_kinds() {
  return {"error-vs-ratio", "pareto", "accuracy-vs-ratio", "layer-error", "heatmap", "eigen-rank", "spectra", "needle"};
}

std::string plot(const results::Store& store, const PlotRequest& r) {
  if (r.out.empty()) fail("plot: --out is required");
  const fs::path out = fs::absolute(r.out);
  const fs::path gp = fs::path(out).replace_extension(".gp"), dat = fs::path(out).replace_extension(".dat");
  std::string data, body;
  if (r.kind == "error-vs-ratio" || r.kind == "pareto")
    body = ratio_figure(store, r, results::RunKind::compress, metric_name::attn_kl, data, dat.filename());
  else if (r.kind == "accuracy-vs-ratio")
    body = ratio_figure(store, r, results::RunKind::eval, metric_name::accuracy, data, dat.filename());
  else if (r.kind == "layer-error") body = layer_figure(store, r, data, dat.filename());
  else if (r.kind == "heatmap") body = heatmap_figure(store, r, data, dat.filename());
  else if (r.kind == "eigen-rank") body = eigen_figure(store, r, data, dat.filename());
  else if (r.kind == "spectra") body = spectra_figure(store, r, data, dat.filename());
  else if (r.kind == "needle") body = needle_figure(store, r, data, dat.filename());
  else fail("plot: unknown kind '{}' (known: {})", r.kind, fmt::join(plot_kinds(), ", "));
  fs::create_directories(out.parent_path());
  core::write_file_atomic(dat, data);
  core::write_file_atomic(gp, preamble(r, out) + body);
  fs::remove(out);
  const auto log = fs::path(out).replace_extension(".gnuplot.log");
  const auto command = fmt::format("cd {} && gnuplot {} >{} 2>&1", gp_string(out.parent_path().string()),
                                   gp_string(gp.filename().string()), gp_string(log.string()));
  const int rc = std::system(command.c_str());
  std::ifstream in(log);
  std::string message((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove(log);
  if (rc != 0 || !fs::exists(out))
    fail("plot {}: gnuplot failed (is gnuplot installed? Debian: gnuplot-nox): {}", r.kind,
         message.empty() ? fmt::format("exit status {}", rc) : message.substr(0, 400));
  return fmt::format("wrote {} (script {}, data {})", out.string(), gp.filename().string(), dat.filename().string());
}

}  // namespace kvlab::plots
