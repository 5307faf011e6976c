// A thin RAII layer over the SQLite C API: a connection, prepared statements and a
// transaction guard. Every failure throws kvlab::Error naming the database file and the
// SQL at fault, so callers never check return codes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace kvlab::results::sql {

class Database;

// One prepared statement. Parameters are 1-based (SQLite's convention), columns 0-based.
class Statement {
 public:
  Statement(Database& db, std::string_view sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, int value) { return bind(index, static_cast<std::int64_t>(value)); }
  Statement& bind(int index, double value);
  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  Statement& bind_blob(int index, const void* data, std::size_t bytes);
  Statement& bind_null(int index);

  // Advances: true while a row is available, false when done.
  bool step();
  // step() for statements that return no rows.
  void run();
  void reset();  // rewinds and clears bindings, for reuse in a loop

  bool is_null(int column) const;
  std::int64_t integer(int column) const;
  double real(int column) const;
  std::string text(int column) const;  // "" for NULL
  std::vector<unsigned char> blob(int column) const;

 private:
  Database& db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_;
};

class Database {
 public:
  // Opens (create = true: creates) the file. Sets a busy timeout so that concurrent
  // writers wait for each other instead of failing with SQLITE_BUSY.
  Database(const std::filesystem::path& path, bool create);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs one or more statements that return no rows.
  void exec(std::string_view sql);
  // The first column of the first row of a query, as an integer (0 if no row).
  std::int64_t scalar(std::string_view sql);
  std::int64_t last_insert_rowid() const;
  bool table_has_column(const std::string& table, const std::string& column);

  const std::filesystem::path& path() const { return path_; }
  sqlite3* handle() const { return db_; }
  // "<path>: <sqlite message>" for error reports.
  std::string error_message() const;

 private:
  sqlite3* db_ = nullptr;
  std::filesystem::path path_;
};

// BEGIN IMMEDIATE on construction (takes the write lock up front, so two writers never
// deadlock upgrading read locks); ROLLBACK on destruction unless commit() was called.
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Database& db_;
  bool done_ = false;
};

}  // namespace kvlab::results::sql
