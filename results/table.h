// Method × metric tables of one or more runs (whole-run metrics), and their rendering as
// CSV, JSON, Markdown and LaTeX (booktabs). Markdown and LaTeX print the best value of each
// column in bold, the best judged by the metric's direction (results/metrics.h); columns
// without a direction have no bold.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "results/store.h"

namespace kvlab::results {

struct Table {
  struct Row {
    RunId run = 0;
    std::string method;
    std::vector<std::optional<double>> values;  // per column; nullopt: the run lacks it
  };
  std::vector<Run> runs;
  std::vector<std::string> metrics;  // the columns
  std::vector<Row> rows;             // run order, then method order
};

// `metrics` empty: every whole-run metric of the runs, the usual paper columns first (errors,
// KL, ratio, bytes), then the rest alphabetically. A named metric no run has is an error
// listing the ones available.
Table build_table(const Store& store, const std::vector<Run>& runs, const std::vector<std::string>& metrics = {});

// text: aligned columns for a terminal (no bold).
enum class TableFormat { csv, json, markdown, latex, text };
TableFormat parse_table_format(std::string_view text);

std::string render_table(const Table& table, TableFormat format);

// The rows holding the best value of column `column` (ties all count); empty when the metric
// has no direction or the column is empty.
std::vector<std::size_t> best_rows(const Table& table, std::size_t column);

// Text made safe for LaTeX body text (\_, \&, \%, \textbackslash{}, …) and for a Markdown
// table cell (|, *, _, `, \ … backslash-escaped).
std::string latex_escape(std::string_view text);
std::string markdown_escape(std::string_view text);

}  // namespace kvlab::results
