// The results database schema and its migrations. The schema version is SQLite's
// PRAGMA user_version; migration i takes version i to i+1. Opening a database applies the
// missing ones, in order, in one transaction (all or nothing), so every file kvlab can open
// ends up at kSchemaVersion. A file newer than this build is refused rather than guessed at.
#pragma once

#include <string_view>
#include <vector>

#include "results/sqlite.h"

namespace kvlab::results {

struct Migration {
  int to_version;        // the version after this step
  std::string_view why;  // one line, for the history
  std::string_view sql;
};

// The ordered steps: [0] creates v1, [1] takes v1 to v2, …
const std::vector<Migration>& migrations();

inline constexpr int kSchemaVersion = 2;

// Sets WAL mode and applies the missing migrations. Throws naming the file when it is newer
// than kSchemaVersion or a step fails (then the file is left at its old version).
void migrate(sql::Database& db);

}  // namespace kvlab::results
