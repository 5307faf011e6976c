#include "results/sqlite.h"

#include <sqlite3.h>

#include <cstring>

#include "core/error.h"

namespace kvlab::results::sql {

namespace {
// Concurrent sweep shards may write to one file; a writer waits this long for the lock.
constexpr int kBusyTimeoutMs = 60'000;

std::string shorten(std::string_view sql) {
  std::string s(sql.substr(0, 80));
  for (char& c : s)
    if (c == '\n') c = ' ';
  return sql.size() > 80 ? s + "…" : s;
}
}  // namespace

Database::Database(const std::filesystem::path& path, bool create) : path_(path) {
  const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    const std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    fail("cannot open results database {}: {}", path.string(), message);
  }
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  sqlite3_extended_result_codes(db_, 1);
}

Database::~Database() { sqlite3_close(db_); }

std::string Database::error_message() const { return fmt::format("{}: {}", path_.string(), sqlite3_errmsg(db_)); }

void Database::exec(std::string_view sql) {
  const std::string text(sql);
  char* message = nullptr;
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string m = message ? message : sqlite3_errmsg(db_);
    sqlite3_free(message);
    fail("results database {}: {} (in: {})", path_.string(), m, shorten(sql));
  }
}

std::int64_t Database::scalar(std::string_view sql) {
  Statement s(*this, sql);
  return s.step() ? s.integer(0) : 0;
}

std::int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

bool Database::table_has_column(const std::string& table, const std::string& column) {
  Statement s(*this, "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2");
  s.bind(1, table).bind(2, column);
  return s.step() && s.integer(0) > 0;
}

Statement::Statement(Database& db, std::string_view sql) : db_(db), sql_(sql) {
  if (sqlite3_prepare_v2(db.handle(), sql_.data(), static_cast<int>(sql_.size()), &stmt_, nullptr) != SQLITE_OK)
    fail("results database {} (in: {})", db.error_message(), shorten(sql));
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

namespace {
void check_bind(int rc, Database& db, const std::string& sql) {
  if (rc != SQLITE_OK) fail("results database {} (binding in: {})", db.error_message(), shorten(sql));
}
}  // namespace

Statement& Statement::bind(int index, std::int64_t value) {
  check_bind(sqlite3_bind_int64(stmt_, index, value), db_, sql_);
  return *this;
}
Statement& Statement::bind(int index, double value) {
  check_bind(sqlite3_bind_double(stmt_, index, value), db_, sql_);
  return *this;
}
Statement& Statement::bind(int index, std::string_view text) {
  check_bind(sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8), db_, sql_);
  return *this;
}
Statement& Statement::bind_blob(int index, const void* data, std::size_t bytes) {
  check_bind(sqlite3_bind_blob64(stmt_, index, data, bytes, SQLITE_TRANSIENT), db_, sql_);
  return *this;
}
Statement& Statement::bind_null(int index) {
  check_bind(sqlite3_bind_null(stmt_, index), db_, sql_);
  return *this;
}

bool Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  fail("results database {} (in: {})", db_.error_message(), shorten(sql_));
}

void Statement::run() {
  while (step()) {
  }
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Statement::is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
std::int64_t Statement::integer(int column) const { return sqlite3_column_int64(stmt_, column); }
double Statement::real(int column) const { return sqlite3_column_double(stmt_, column); }
std::string Statement::text(int column) const {
  const auto* p = sqlite3_column_text(stmt_, column);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
           : std::string();
}
std::vector<unsigned char> Statement::blob(int column) const {
  const auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(stmt_, column));
  const auto n = static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column));
  return p ? std::vector<unsigned char>(p, p + n) : std::vector<unsigned char>();
}

Transaction::Transaction(Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

Transaction::~Transaction() {
  if (done_) return;
  // Never throw from a destructor: a failed rollback leaves SQLite to roll back on close.
  sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace kvlab::results::sql
