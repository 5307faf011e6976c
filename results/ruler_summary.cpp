#include "results/ruler_summary.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <set>
#include <string_view>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "results/metrics.h"

namespace kvlab::results {

namespace {

using nlohmann::json;

constexpr std::string_view kPrefix = "ruler:";

// RULER's task order (NVIDIA/RULER scripts/synthetic.yaml; datasets/ruler_tasks.h holds the
// same list, but results/ does not depend on datasets/). Unknown names sort after, A–Z.
constexpr std::array<std::string_view, 13> kTaskOrder{
    "niah_single_1",   "niah_single_2",   "niah_single_3", "niah_multikey_1", "niah_multikey_2",
    "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2"};

std::size_t task_rank(const std::string& task) {
  const auto it = std::find(kTaskOrder.begin(), kTaskOrder.end(), task);
  return static_cast<std::size_t>(it - kTaskOrder.begin());  // kTaskOrder.size() when unknown
}

bool task_before(const std::string& a, const std::string& b) {
  return std::make_pair(task_rank(a), a) < std::make_pair(task_rank(b), b);
}

// Model, then "baseline" first, then the other methods A–Z.
using MethodKey = std::tuple<std::string, bool, std::string>;
MethodKey method_key(const std::string& model, const std::string& method) {
  return {model, method != "baseline", method};
}

// Newer: later created time, then larger id.
bool newer(const std::string& created_a, RunId a, const std::string& created_b, RunId b) {
  return std::tie(created_a, a) > std::tie(created_b, b);
}

// Why a run does not count, or "" when it does.
std::string skip_reason(const Run& run) {
  if (run.kind != RunKind::eval) return fmt::format("a {} run, not eval", to_string(run.kind));
  if (run.status != "ok") return fmt::format("status '{}'", run.status);
  const json& p = run.provenance;
  if (!p.is_object() || !p.contains("task") || p["task"].is_null()) return "prompts file (no task)";
  const json& task = p["task"];
  if (!task.is_object() || !task.contains("name") || !task["name"].is_string()) return "no task name in its provenance";
  const auto name = task["name"].get<std::string>();
  if (!name.starts_with(kPrefix)) return fmt::format("not a RULER task ({})", name);
  if (task.contains("depth_percent") && !task["depth_percent"].is_null())
    return fmt::format("fixed needle depth {} % (--depth), not RULER's depth sweep", task["depth_percent"].dump());
  return "";
}

std::int64_t task_length(const Run& run) {
  const json& task = run.provenance["task"];
  if (!task.contains("length") || !task["length"].is_number_integer() || task["length"].get<std::int64_t>() <= 0)
    fail("run {} ({}): provenance task.length {} is not a length > 0", run.id, task["name"].get<std::string>(),
         task.contains("length") ? task["length"].dump() : "(absent)");
  return task["length"].get<std::int64_t>();
}

std::string join_ids(const std::vector<RunId>& ids) { return fmt::format("{}", fmt::join(ids, ", ")); }

std::string model_label(const std::string& model) { return model.empty() ? "no model" : model; }

}  // namespace

double ruler_weighted_average(const std::vector<double>& averages, bool increasing) {
  if (averages.empty()) fail("a weighted average over no lengths");
  const double n = static_cast<double>(averages.size());
  const double total = n * (n + 1) / 2;  // 1 + 2 + … + n
  double sum = 0;
  for (std::size_t i = 0; i < averages.size(); ++i) {
    const double rank = static_cast<double>(i + 1);  // 1 = shortest
    sum += (increasing ? rank : n + 1 - rank) * averages[i];
  }
  return sum / total;
}

std::optional<std::size_t> ruler_effective_index(const std::vector<double>& averages, double threshold) {
  std::optional<std::size_t> last;
  for (std::size_t i = 0; i < averages.size() && averages[i] > threshold; ++i) last = i;
  return last;
}

RulerSummary summarize_ruler(const Store& store, const std::vector<Run>& runs, const RulerOptions& options) {
  if (!std::isfinite(options.threshold)) fail("RULER threshold {} is not a finite number", options.threshold);
  RulerSummary summary;
  summary.threshold = options.threshold;
  std::map<MethodKey, std::map<std::int64_t, std::map<std::string, RulerCell>>> cells;
  std::map<RunId, std::string> created;
  std::set<std::string> models;  // with RULER runs, for the filter's error message
  bool matched = false;
  for (const auto& run : runs) {
    auto reason = skip_reason(run);
    if (!options.model.empty() && run.model != options.model) {  // another model: not even a note
      if (reason.empty()) models.insert(run.model);
      continue;
    }
    if (!reason.empty()) {
      summary.skipped.push_back({run.id, std::move(reason)});
      continue;
    }
    models.insert(run.model);
    matched = true;
    const json& task = run.provenance["task"];
    const std::string name = task["name"].get<std::string>().substr(kPrefix.size());
    const std::int64_t length = task_length(run);
    const auto rows = store.metrics(run.id, MetricFilter{Scope::run, {}, metric_name::accuracy});
    if (rows.empty()) {
      summary.skipped.push_back({run.id, "no whole-run accuracy rows"});
      continue;
    }
    created[run.id] = run.created;
    const std::string scoring =
        task.contains("scoring") && task["scoring"].is_string() ? task["scoring"].get<std::string>() : "";
    for (const auto& m : rows) {
      if (!(m.value >= 0 && m.value <= 1))
        fail("run {} ({} at {}), method '{}': accuracy {} is outside [0, 1]", run.id, task["name"].get<std::string>(),
             length, m.method, m.value);
      RulerCell candidate{100 * m.value, run.id, run.created, scoring, {}};
      auto& slot = cells[method_key(run.model, m.method)][length];
      const auto it = slot.find(name);
      if (it == slot.end()) {
        slot.emplace(name, std::move(candidate));
      } else if (newer(candidate.created, candidate.run, it->second.created, it->second.run)) {
        candidate.superseded = std::move(it->second.superseded);
        candidate.superseded.push_back(it->second.run);
        it->second = std::move(candidate);
      } else {
        it->second.superseded.push_back(candidate.run);
      }
    }
  }
  if (!options.model.empty() && !matched)
    fail("no RULER eval run of model '{}' (models with RULER runs: {})", options.model,
         models.empty() ? std::string("none") : fmt::format("{}", fmt::join(models, ", ")));

  for (auto& [key, by_length] : cells) {
    RulerMethod m;
    m.model = std::get<0>(key);
    m.method = std::get<2>(key);
    std::set<std::string> tasks;
    for (const auto& [length, scores] : by_length)
      for (const auto& [task, cell] : scores) tasks.insert(task);
    m.tasks.assign(tasks.begin(), tasks.end());
    std::sort(m.tasks.begin(), m.tasks.end(), task_before);
    std::vector<double> averages;
    for (auto& [length, scores] : by_length) {
      RulerLength l;
      l.length = length;
      double sum = 0;
      for (auto& [task, cell] : scores) {
        std::sort(cell.superseded.begin(), cell.superseded.end(),
                  [&](RunId a, RunId b) { return newer(created[a], a, created[b], b); });
        sum += cell.score;
      }
      l.average = sum / static_cast<double>(scores.size());
      for (const auto& task : m.tasks)
        if (!scores.contains(task)) l.missing.push_back(task);
      l.scores = std::move(scores);
      m.complete = m.complete && l.complete();
      averages.push_back(l.average);
      m.lengths.push_back(std::move(l));
    }
    if (m.complete) {
      double sum = 0;
      for (double a : averages) sum += a;
      m.average = sum / static_cast<double>(averages.size());
      m.wavg_inc = ruler_weighted_average(averages, /*increasing=*/true);
      m.wavg_dec = ruler_weighted_average(averages, /*increasing=*/false);
      if (const auto k = ruler_effective_index(averages, options.threshold)) m.effective_length = m.lengths[*k].length;
    }
    summary.methods.push_back(std::move(m));
  }
  return summary;
}

std::vector<std::string> ruler_notes(const RulerSummary& summary) {
  std::vector<std::string> notes;
  // Newest-run choices, one line per (model, task, length, chosen run, superseded runs).
  std::map<std::tuple<std::string, std::int64_t, std::size_t, std::string, RunId, std::vector<RunId>>,
           std::pair<std::string, std::vector<std::string>>>
      choices;
  for (const auto& m : summary.methods)
    for (const auto& l : m.lengths)
      for (const auto& [task, cell] : l.scores)
        if (!cell.superseded.empty()) {
          auto& entry = choices[{m.model, l.length, task_rank(task), task, cell.run, cell.superseded}];
          entry.first = cell.created;
          entry.second.push_back(m.method);
        }
  for (const auto& [key, entry] : choices) {
    const auto& [model, length, rank, task, run, superseded] = key;
    notes.push_back(fmt::format("ruler:{} at {} ({}): newest run {} ({}) used over run(s) {}, for {}", task, length,
                                model_label(model), run, entry.first, join_ids(superseded),
                                fmt::join(entry.second, ", ")));
  }
  for (const auto& m : summary.methods) {
    if (!m.complete) {
      std::vector<std::string> gaps;
      for (const auto& l : m.lengths)
        if (!l.complete()) gaps.push_back(fmt::format("{} lacks {}", l.length, fmt::join(l.missing, ", ")));
      notes.push_back(fmt::format("{} / {}: incomplete ({}); its Avg, wAvg and effective length are left out",
                                  model_label(m.model), m.method, fmt::join(gaps, "; ")));
    }
    std::set<std::string> scorings;
    for (const auto& l : m.lengths)
      for (const auto& [task, cell] : l.scores) scorings.insert(cell.scoring.empty() ? "unknown" : cell.scoring);
    if (scorings.size() > 1)
      notes.push_back(fmt::format("{} / {}: its cells mix scoring variants ({})", model_label(m.model), m.method,
                                  fmt::join(scorings, ", ")));
  }
  // Skipped runs, grouped by reason (first appearance order).
  std::vector<std::pair<std::string, std::vector<RunId>>> by_reason;
  for (const auto& s : summary.skipped) {
    auto it = std::find_if(by_reason.begin(), by_reason.end(), [&](const auto& r) { return r.first == s.reason; });
    if (it == by_reason.end()) it = by_reason.insert(by_reason.end(), {s.reason, {}});
    it->second.push_back(s.run);
  }
  for (const auto& [reason, ids] : by_reason)
    notes.push_back(fmt::format("skipped run{} {}: {}", ids.size() > 1 ? "s" : "", join_ids(ids), reason));
  return notes;
}

RulerTables parse_ruler_tables(std::string_view text) {
  if (text == "scores") return RulerTables::scores;
  if (text == "summary") return RulerTables::summary;
  if (text == "both") return RulerTables::both;
  fail("unknown RULER table '{}' (known: scores, summary, both)", text);
}

namespace {

// A table of text cells; the first `text_columns` are labels (left-aligned), the rest numbers.
struct Grid {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::size_t text_columns = 1;
};

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

std::size_t display_columns(const std::string& s) {  // UTF-8 code points (every character here is one column)
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

std::string render_grid(const Grid& g, TableFormat format) {
  std::string out;
  switch (format) {
    case TableFormat::csv: {
      auto line = [&](const std::vector<std::string>& cells) {
        for (std::size_t i = 0; i < cells.size(); ++i) {
          if (i) out += ',';
          out += csv_field(cells[i]);
        }
        out += "\n";
      };
      line(g.header);
      for (const auto& r : g.rows) line(r);
      return out;
    }
    case TableFormat::markdown: {
      auto line = [&](const std::vector<std::string>& cells) {
        out += "|";
        for (const auto& c : cells) {
          out += ' ';
          out += markdown_escape(c);
          out += " |";
        }
        out += "\n";
      };
      line(g.header);
      out += "|";
      for (std::size_t c = 0; c < g.header.size(); ++c) out += c < g.text_columns ? " --- |" : " ---: |";
      out += "\n";
      for (const auto& r : g.rows) line(r);
      return out;
    }
    case TableFormat::latex: {
      std::string spec(g.text_columns, 'l');
      spec += std::string(g.header.size() - g.text_columns, 'r');
      out += fmt::format("\\begin{{tabular}}{{{}}}\n\\toprule\n", spec);
      auto line = [&](const std::vector<std::string>& cells) {
        for (std::size_t i = 0; i < cells.size(); ++i) {
          std::string cell = latex_escape(cells[i]);
          if (cell.starts_with("≥")) cell.replace(0, std::string_view("≥").size(), "$\\geq$");
          if (i) out += " & ";
          out += cell;
        }
        out += " \\\\\n";
      };
      line(g.header);
      out += "\\midrule\n";
      for (const auto& r : g.rows) line(r);
      out += "\\bottomrule\n\\end{tabular}\n";
      return out;
    }
    case TableFormat::text:
    case TableFormat::json: {  // json never gets here
      std::vector<std::size_t> width(g.header.size());
      for (std::size_t c = 0; c < g.header.size(); ++c) {
        width[c] = display_columns(g.header[c]);
        for (const auto& r : g.rows) width[c] = std::max(width[c], display_columns(r[c]));
      }
      auto line = [&](const std::vector<std::string>& cells) {
        std::string text;
        for (std::size_t c = 0; c < cells.size(); ++c) {
          const std::size_t pad = width[c] - display_columns(cells[c]);
          if (c) text += "  ";
          text += c < g.text_columns ? cells[c] + std::string(pad, ' ') : std::string(pad, ' ') + cells[c];
        }
        while (!text.empty() && text.back() == ' ') text.pop_back();
        out += text + "\n";
      };
      line(g.header);
      for (const auto& r : g.rows) line(r);
      return out;
    }
  }
  return out;
}

// Value formatting per format: full precision for CSV, RULER's 2 decimals for people.
struct Style {
  TableFormat format;
  bool csv() const { return format == TableFormat::csv; }
  std::string number(double v) const { return csv() ? fmt::format("{}", v) : fmt::format("{:.2f}", v); }
  std::string missing() const { return csv() ? "" : format == TableFormat::latex ? "--" : "–"; }
  std::string number(const std::optional<double>& v) const { return v ? number(*v) : missing(); }
  // A(L) of an incomplete length: marked '*' for people (CSV has a `complete` column).
  std::string average(const RulerLength& l) const { return number(l.average) + (l.complete() || csv() ? "" : "*"); }
};

bool several_models(const RulerSummary& s) {
  if (s.methods.empty()) return false;
  for (const auto& m : s.methods)
    if (m.model != s.methods.front().model) return true;
  return false;
}

Grid scores_grid(const RulerSummary& s, const Style& style) {
  const bool models = several_models(s);
  std::vector<std::string> tasks;
  for (const auto& m : s.methods)
    for (const auto& t : m.tasks)
      if (std::find(tasks.begin(), tasks.end(), t) == tasks.end()) tasks.push_back(t);
  std::sort(tasks.begin(), tasks.end(), task_before);
  Grid g;
  if (models) g.header.push_back(style.csv() ? "model" : "Model");
  g.header.push_back(style.csv() ? "method" : "Method");
  g.header.push_back(style.csv() ? "length" : "Length");
  g.text_columns = g.header.size();
  for (const auto& t : tasks) g.header.push_back(t);
  g.header.push_back(style.csv() ? "avg" : "Avg");
  if (style.csv()) g.header.push_back("complete");
  for (const auto& m : s.methods)
    for (const auto& l : m.lengths) {
      std::vector<std::string> row;
      if (models) row.push_back(m.model);
      row.push_back(m.method);
      row.push_back(std::to_string(l.length));
      for (const auto& t : tasks) {
        const auto it = l.scores.find(t);
        row.push_back(it == l.scores.end() ? style.missing() : style.number(it->second.score));
      }
      row.push_back(style.average(l));
      if (style.csv()) row.push_back(l.complete() ? "true" : "false");
      g.rows.push_back(std::move(row));
    }
  return g;
}

Grid summary_grid(const RulerSummary& s, const Style& style) {
  const bool models = several_models(s);
  std::set<std::int64_t> lengths;
  for (const auto& m : s.methods)
    for (const auto& l : m.lengths) lengths.insert(l.length);
  Grid g;
  if (models) g.header.push_back(style.csv() ? "model" : "Model");
  g.header.push_back(style.csv() ? "method" : "Method");
  g.text_columns = g.header.size();
  g.header.push_back(style.csv() ? "tasks" : "Tasks");
  for (auto l : lengths) g.header.push_back(std::to_string(l));
  if (style.csv()) {
    for (const char* h : {"avg", "wavg_inc", "wavg_dec", "effective_length", "complete"}) g.header.push_back(h);
  } else {
    for (const char* h : {"Avg", "wAvg inc", "wAvg dec", "Eff. length"}) g.header.push_back(h);
  }
  for (const auto& m : s.methods) {
    std::vector<std::string> row;
    if (models) row.push_back(m.model);
    row.push_back(m.method);
    row.push_back(std::to_string(m.tasks.size()));
    for (auto length : lengths) {
      const auto it = std::find_if(m.lengths.begin(), m.lengths.end(), [&](const auto& l) { return l.length == length; });
      row.push_back(it == m.lengths.end() ? style.missing() : style.average(*it));
    }
    row.push_back(style.number(m.average));
    row.push_back(style.number(m.wavg_inc));
    row.push_back(style.number(m.wavg_dec));
    if (style.csv()) {
      row.push_back(m.effective_length ? std::to_string(*m.effective_length) : "");
      row.push_back(m.complete ? "true" : "false");
    } else if (!m.complete) {
      row.push_back(style.missing());
    } else if (!m.effective_length) {
      row.push_back(fmt::format("<{}", m.lengths.front().length));  // not even the shortest passes
    } else if (*m.effective_length == m.lengths.back().length) {
      row.push_back(fmt::format("≥{}", *m.effective_length));  // every tested length passes
    } else {
      row.push_back(std::to_string(*m.effective_length));
    }
    g.rows.push_back(std::move(row));
  }
  return g;
}

json optional_json(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

std::string render_json(const RulerSummary& s) {
  json methods = json::array();
  for (const auto& m : s.methods) {
    json lengths = json::array();
    for (const auto& l : m.lengths) {
      json scores = json::object();
      for (const auto& [task, cell] : l.scores)
        scores[task] = {{"score", cell.score}, {"run", cell.run}, {"created", cell.created},
                        {"scoring", cell.scoring}, {"superseded", cell.superseded}};
      lengths.push_back({{"length", l.length}, {"average", l.average}, {"complete", l.complete()},
                         {"missing", l.missing}, {"scores", std::move(scores)}});
    }
    methods.push_back({{"model", m.model},
                       {"method", m.method},
                       {"tasks", m.tasks},
                       {"complete", m.complete},
                       {"lengths", std::move(lengths)},
                       {"average", optional_json(m.average)},
                       {"wavg_inc", optional_json(m.wavg_inc)},
                       {"wavg_dec", optional_json(m.wavg_dec)},
                       {"effective_length", m.effective_length ? json(*m.effective_length) : json(nullptr)}});
  }
  json skipped = json::array();
  for (const auto& k : s.skipped) skipped.push_back({{"run", k.run}, {"reason", k.reason}});
  return json{{"threshold", s.threshold}, {"methods", std::move(methods)}, {"skipped", std::move(skipped)},
              {"notes", ruler_notes(s)}}
             .dump(1) +
         "\n";
}

}  // namespace

std::string render_ruler(const RulerSummary& summary, TableFormat format, RulerTables tables) {
  if (format == TableFormat::json) return render_json(summary);
  const Style style{format};
  const bool scores = tables != RulerTables::summary, totals = tables != RulerTables::scores;
  if (format == TableFormat::csv) {
    std::string out;
    if (scores) out += render_grid(scores_grid(summary, style), format);
    if (scores && totals) out += "\n";
    if (totals) out += render_grid(summary_grid(summary, style), format);
    return out;
  }
  // Titles and notes: plain lines (text), paragraphs (Markdown) or % comments (LaTeX).
  const bool latex = format == TableFormat::latex, markdown = format == TableFormat::markdown;
  auto para = [&](const std::string& text) {
    if (latex) return "% " + text + "\n";
    return markdown ? markdown_escape(text) + "\n\n" : text + "\n";
  };
  bool incomplete = false;
  for (const auto& m : summary.methods) incomplete = incomplete || !m.complete;
  std::string out;
  if (latex) out += "% kvlab results ruler (booktabs: needs \\usepackage{booktabs})\n";
  if (scores) {
    out += para("RULER scores: 100 × accuracy per task and length; Avg = mean over the tasks at that length.");
    out += render_grid(scores_grid(summary, style), format);
    out += "\n";
  }
  if (totals) {
    out += para(fmt::format(
        "RULER summary: the per-length averages; Avg = their mean; wAvg inc / dec: weights 1..n / n..1 over the "
        "ascending lengths; Eff. length: the longest length up to which every average is > {:g}.",
        summary.threshold));
    out += render_grid(summary_grid(summary, style), format);
    out += "\n";
  }
  if (incomplete)
    out += para("* incomplete length: it lacks a task other lengths of the same method have; its average is over the "
                "tasks present and the method's Avg, wAvg and effective length are left out.");
  for (const auto& note : ruler_notes(summary))
    out += latex ? "% note: " + note + "\n" : markdown ? "- note: " + markdown_escape(note) + "\n" : "note: " + note + "\n";
  return out;
}

}  // namespace kvlab::results
