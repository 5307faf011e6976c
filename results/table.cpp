#include "results/table.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <fmt/ranges.h>

#include "core/error.h"
#include "results/metrics.h"

namespace kvlab::results {

namespace {

// The columns papers print (the table's paper columns, in its order), then the rest.
std::vector<std::string> default_columns(const std::set<std::string>& present) {
  std::vector<std::string> out;
  for (const auto& info : metric_table())
    if (info.paper_column && present.contains(std::string(info.name))) out.emplace_back(info.name);
  for (const auto& name : present)
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  return out;
}

// One number format per column: integers as integers, the rest with 4 significant digits.
bool integral_column(const Table& t, std::size_t c) {
  for (const auto& row : t.rows)
    if (row.values[c] && (std::fabs(*row.values[c]) >= 1e15 || *row.values[c] != std::floor(*row.values[c])))
      return false;
  return true;
}

std::string display(double v, bool integral) { return integral ? fmt::format("{:.0f}", v) : fmt::format("{:.4g}", v); }

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';  // a quote is doubled
    out += c;
  }
  out += '"';
  return out;
}

bool several_runs(const Table& t) { return t.runs.size() > 1; }

std::string render_csv(const Table& t) {
  std::string out = "run,uuid,method";
  for (const auto& m : t.metrics) {
    out += ',';
    out += csv_field(m);
  }
  out += "\n";
  std::map<RunId, std::string> uuids;
  for (const auto& r : t.runs) uuids[r.id] = r.uuid;
  for (const auto& row : t.rows) {
    out += fmt::format("{},{},{}", row.run, uuids[row.run], csv_field(row.method));
    for (const auto& v : row.values) out += v ? fmt::format(",{}", *v) : ",";  // shortest round-trip form
    out += "\n";
  }
  return out;
}

std::string render_json(const Table& t) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& r : t.runs)
    runs.push_back({{"id", r.id}, {"uuid", r.uuid}, {"kind", to_string(r.kind)}, {"created", r.created},
                    {"revision", r.revision}, {"command_line", r.command_line}, {"model", r.model}, {"dump", r.dump}});
  nlohmann::json directions = nlohmann::json::object();
  for (const auto& m : t.metrics) directions[m] = std::string(to_string(metric_direction(m)));
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : t.rows) {
    nlohmann::json values = nlohmann::json::object();
    for (std::size_t c = 0; c < t.metrics.size(); ++c)
      values[t.metrics[c]] = row.values[c] ? nlohmann::json(*row.values[c]) : nlohmann::json(nullptr);
    rows.push_back({{"run", row.run}, {"method", row.method}, {"values", std::move(values)}});
  }
  return nlohmann::json{{"runs", runs}, {"metrics", t.metrics}, {"better", directions}, {"rows", rows}}.dump(1) + "\n";
}

// The shared shape of the two paper formats: cells as text, best cells marked.
struct Styled {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> cells;
};

template <typename Escape, typename Bold, typename Header>
Styled style(const Table& t, Escape escape, Bold bold, Header header, const std::string& missing,
             const std::string& method_prefix, const std::string& method_suffix) {
  Styled s;
  if (several_runs(t)) s.header.push_back("Run");
  s.header.push_back("Method");
  for (const auto& m : t.metrics) s.header.push_back(header(m, direction_arrow(metric_direction(m))));
  std::vector<std::set<std::size_t>> best(t.metrics.size());
  std::vector<bool> integral(t.metrics.size());
  for (std::size_t c = 0; c < t.metrics.size(); ++c) {
    const auto rows = best_rows(t, c);
    best[c] = {rows.begin(), rows.end()};
    integral[c] = integral_column(t, c);
  }
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    std::vector<std::string> line;
    if (several_runs(t)) line.push_back(std::to_string(row.run));
    line.push_back(fmt::format("{}{}{}", method_prefix, escape(row.method.empty() ? "-" : row.method), method_suffix));
    for (std::size_t c = 0; c < t.metrics.size(); ++c) {
      if (!row.values[c]) {
        line.push_back(missing);
        continue;
      }
      const std::string text = display(*row.values[c], integral[c]);
      line.push_back(best[c].contains(r) ? bold(text) : text);
    }
    s.cells.push_back(std::move(line));
  }
  return s;
}

std::string render_markdown(const Table& t) {
  const auto s = style(
      t, markdown_escape, [](const std::string& x) { return fmt::format("**{}**", x); },
      [](const std::string& m, std::string_view arrow) {
        return arrow.empty() ? markdown_escape(m) : fmt::format("{} {}", markdown_escape(m), arrow);
      },
      "–", "", "");
  auto line = [](const std::vector<std::string>& cells) {
    std::string out = "|";
    for (const auto& c : cells) out += " " + c + " |";
    return out + "\n";
  };
  std::string out = line(s.header) + "|";
  const std::size_t text_columns = several_runs(t) ? 2 : 1;
  for (std::size_t c = 0; c < s.header.size(); ++c) out += c < text_columns ? " --- |" : " ---: |";
  out += "\n";
  for (const auto& row : s.cells) out += line(row);
  out += "\n↓ lower is better, ↑ higher is better; best value per column in bold.\n";
  return out;
}

std::string render_latex(const Table& t) {
  // Method specs go in \texttt; inside it the escapes below still apply (\_ and friends).
  const auto s = style(
      t, latex_escape, [](const std::string& x) { return fmt::format("\\textbf{{{}}}", x); },
      [](const std::string& m, std::string_view arrow) {
        const std::string a = arrow == "↓" ? " $\\downarrow$" : arrow == "↑" ? " $\\uparrow$" : "";
        return latex_escape(m) + a;
      },
      "--", "\\texttt{", "}");
  const std::size_t text_columns = several_runs(t) ? 2 : 1;
  std::string spec(text_columns, 'l');
  spec += std::string(t.metrics.size(), 'r');
  std::string out = "% kvlab results export (booktabs): best value per column in bold;\n"
                    "% $\\downarrow$ lower is better, $\\uparrow$ higher is better. Needs \\usepackage{booktabs}.\n";
  out += fmt::format("\\begin{{tabular}}{{{}}}\n\\toprule\n", spec);
  auto line = [](const std::vector<std::string>& cells) {
    std::string row;
    for (std::size_t i = 0; i < cells.size(); ++i) row += (i ? " & " : "") + cells[i];
    return row + " \\\\\n";
  };
  out += line(s.header) + "\\midrule\n";
  for (const auto& row : s.cells) out += line(row);
  out += "\\bottomrule\n\\end{tabular}\n";
  return out;
}

std::string render_text(const Table& t) {
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> header;
  if (several_runs(t)) header.push_back("run");
  for (const auto& m : t.metrics) {
    const auto arrow = direction_arrow(metric_direction(m));
    header.push_back(arrow.empty() ? m : fmt::format("{} {}", m, arrow));
  }
  header.push_back("method");
  std::vector<bool> integral(t.metrics.size());
  for (std::size_t c = 0; c < t.metrics.size(); ++c) integral[c] = integral_column(t, c);
  for (const auto& row : t.rows) {
    std::vector<std::string> line;
    if (several_runs(t)) line.push_back(std::to_string(row.run));
    for (std::size_t c = 0; c < t.metrics.size(); ++c)
      line.push_back(row.values[c] ? display(*row.values[c], integral[c]) : "-");
    line.push_back(row.method.empty() ? "-" : row.method);  // last: specs are long, never cut
    cells.push_back(std::move(line));
  }
  // Widths in display columns (fmt pads by display width; arrows are one column wide).
  std::vector<std::size_t> width(header.size());
  auto columns = [](const std::string& s) {  // UTF-8 code points: every character here is one column
    return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
  };
  for (std::size_t c = 0; c < header.size(); ++c) {
    width[c] = columns(header[c]);
    for (const auto& line : cells) width[c] = std::max(width[c], columns(line[c]));
  }
  auto put = [&](const std::vector<std::string>& line) {
    std::string out;
    for (std::size_t c = 0; c < line.size(); ++c) {
      if (c) out += "  ";
      out += c + 1 == line.size() ? line[c] : fmt::format("{:>{}}", line[c], width[c]);
    }
    return out + "\n";
  };
  std::string out = put(header);
  for (const auto& line : cells) out += put(line);
  return out;
}

}  // namespace

Table build_table(const Store& store, const std::vector<Run>& runs, const std::vector<std::string>& metrics) {
  Table t;
  t.runs = runs;
  // run → method → metric → value, methods in the store's (sorted) order.
  std::vector<std::pair<RunId, std::vector<std::pair<std::string, std::map<std::string, double>>>>> data;
  std::set<std::string> present;
  for (const auto& run : runs) {
    auto& methods = data.emplace_back(run.id, decltype(data)::value_type::second_type{}).second;
    for (const auto& m : store.metrics(run.id, MetricFilter{Scope::run, {}, {}})) {
      if (methods.empty() || methods.back().first != m.method) methods.emplace_back(m.method, std::map<std::string, double>{});
      methods.back().second[m.name] = m.value;
      present.insert(m.name);
    }
  }
  if (metrics.empty()) {
    t.metrics = default_columns(present);
  } else {
    for (const auto& m : metrics)
      if (!present.contains(m))
        fail("no run of the export has metric '{}' (they have: {})", m,
             fmt::join(std::vector<std::string>(present.begin(), present.end()), ", "));
    t.metrics = metrics;
  }
  for (const auto& [run, methods] : data)
    for (const auto& [method, values] : methods) {
      Table::Row row{run, method, {}};
      for (const auto& name : t.metrics) {
        const auto it = values.find(name);
        row.values.push_back(it == values.end() ? std::nullopt : std::optional<double>(it->second));
      }
      t.rows.push_back(std::move(row));
    }
  return t;
}

TableFormat parse_table_format(std::string_view text) {
  if (text == "csv") return TableFormat::csv;
  if (text == "json") return TableFormat::json;
  if (text == "markdown" || text == "md") return TableFormat::markdown;
  if (text == "latex" || text == "tex") return TableFormat::latex;
  if (text == "text") return TableFormat::text;
  fail("unknown table format '{}' (known: csv, json, markdown, latex, text)", text);
}

std::string render_table(const Table& table, TableFormat format) {
  switch (format) {
    case TableFormat::csv: return render_csv(table);
    case TableFormat::json: return render_json(table);
    case TableFormat::markdown: return render_markdown(table);
    case TableFormat::latex: return render_latex(table);
    case TableFormat::text: return render_text(table);
  }
  return "";
}

std::vector<std::size_t> best_rows(const Table& table, std::size_t column) {
  const auto direction = metric_direction(table.metrics.at(column));
  if (direction == Direction::none) return {};
  std::optional<double> best;
  for (const auto& row : table.rows)
    if (const auto& v = row.values[column]; v)
      if (!best || (direction == Direction::lower_better ? *v < *best : *v > *best)) best = *v;
  std::vector<std::size_t> rows;
  if (!best) return rows;
  for (std::size_t r = 0; r < table.rows.size(); ++r)
    if (table.rows[r].values[column] == best) rows.push_back(r);
  return rows;
}

std::string latex_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '\\': out += "\\textbackslash{}"; break;
      case '{': out += "\\{"; break;
      case '}': out += "\\}"; break;
      case '_': out += "\\_"; break;
      case '&': out += "\\&"; break;
      case '%': out += "\\%"; break;
      case '$': out += "\\$"; break;
      case '#': out += "\\#"; break;
      case '^': out += "\\textasciicircum{}"; break;
      case '~': out += "\\textasciitilde{}"; break;
      case '<': out += "\\textless{}"; break;
      case '>': out += "\\textgreater{}"; break;
      case '|': out += "\\textbar{}"; break;
      default: out += c;
    }
  }
  return out;
}

std::string markdown_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (std::string_view("\\|*_`[]<>#").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace kvlab::results
