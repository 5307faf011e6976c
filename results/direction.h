// Which way is better, per metric: the one table that export (bold best), compare and check
// (worse/better) consult. A metric with no direction is informational: shown, never bold,
// never a regression.
#pragma once

#include <string_view>

namespace kvlab::results {

enum class Direction { lower_better, higher_better, none };

// Exact names first, then suffix rules ("*_error", "*_accuracy", …). See direction.cpp.
Direction metric_direction(std::string_view metric);

// "↓" / "↑" / "" for table headers.
std::string_view direction_arrow(Direction direction);

}  // namespace kvlab::results
