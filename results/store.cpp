#include "results/store.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <random>

#include "core/error.h"
#include "core/version.h"
#include "results/schema.h"
#include "results/sqlite.h"

namespace kvlab::results {

namespace {

constexpr const char* kRunColumns =
    "id, uuid, kind, created, kvlab_version, revision, command_line, host, device, seeds, model, model_hash, dump, "
    "dump_hash, status, tags, notes, provenance";

nlohmann::json parse_json_column(const std::string& text, const char* column, RunId id) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) fail("run {}: column {} holds invalid JSON", id, column);
  return j;
}

Run read_run(const sql::Statement& s) {
  Run r;
  r.id = s.integer(0);
  r.uuid = s.text(1);
  r.kind = parse_run_kind(s.text(2));
  r.created = s.text(3);
  r.kvlab_version = s.text(4);
  r.revision = s.text(5);
  r.command_line = s.text(6);
  r.host = s.text(7);
  r.device = s.text(8);
  r.seeds = parse_json_column(s.text(9), "seeds", r.id).get<std::vector<std::uint64_t>>();
  r.model = s.text(10);
  r.model_hash = s.text(11);
  r.dump = s.text(12);
  r.dump_hash = s.text(13);
  r.status = s.text(14);
  r.tags = parse_json_column(s.text(15), "tags", r.id).get<std::vector<std::string>>();
  r.notes = s.text(16);
  r.provenance = parse_json_column(s.text(17), "provenance", r.id);
  return r;
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() < 19 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string format_utc(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

}  // namespace

// ---- RunWriter -------------------------------------------------------------------------

RunWriter::RunWriter(Store& store, RunInfo info) : store_(&store), info_(std::move(info)) {}

void RunWriter::add_metric(Metric metric) {
  if (committed_) fail("run {}: metric '{}' added after commit", info_.uuid, metric.name);
  if (metric.name.empty()) fail("run {}: a metric of method '{}' has no name", info_.uuid, metric.method);
  if (!std::isfinite(metric.value)) return;
  metrics_.push_back(std::move(metric));
}

void RunWriter::add_metric(const std::string& method, const std::string& name, double value) {
  add_metric(Metric{method, Scope::run, -1, "", "", name, value});
}

void RunWriter::add_layer_metric(const std::string& method, int layer, const std::string& name, double value) {
  add_metric(Metric{method, Scope::layer, layer, "", "", name, value});
}

void RunWriter::add_sample_metric(const std::string& method, const std::string& task, const std::string& sample,
                                  const std::string& name, double value) {
  add_metric(Metric{method, Scope::sample, -1, task, sample, name, value});
}

void RunWriter::add_matrix(Matrix matrix) {
  if (committed_) fail("run {}: matrix '{}' added after commit", info_.uuid, matrix.name);
  if (matrix.rows < 0 || matrix.cols < 0 || static_cast<std::int64_t>(matrix.data.size()) != matrix.rows * matrix.cols)
    fail("run {}: matrix '{}' is {}×{} but holds {} values", info_.uuid, matrix.name, matrix.rows, matrix.cols,
         matrix.data.size());
  matrices_.push_back(std::move(matrix));
}

RunId RunWriter::commit() {
  if (committed_) fail("run {} was already committed", info_.uuid);
  if (info_.uuid.empty()) info_.uuid = random_uuid();
  if (info_.created.empty()) info_.created = utc_timestamp();
  const RunId id = store_->insert(info_, metrics_, matrices_);
  committed_ = true;
  metrics_.clear();
  matrices_.clear();
  return id;
}

// ---- Store -----------------------------------------------------------------------------

Store::Store(const std::filesystem::path& path, bool must_exist) : path_(path) {
  if (must_exist && !std::filesystem::exists(path))
    fail("no results database at {} (runs are recorded there; give --db FILE or import outputs with `kvlab results "
         "import`)",
         path.string());
  db_ = std::make_unique<sql::Database>(path, !must_exist);
  migrate(*db_);
}

Store::~Store() = default;
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;

int Store::schema_version() const { return static_cast<int>(db_->scalar("PRAGMA user_version")); }

RunId Store::write_run(RunInfo info, const std::function<void(RunWriter&)>& fill) {
  RunWriter writer(*this, std::move(info));
  fill(writer);
  return writer.commit();
}

RunId Store::insert(const RunInfo& info, const std::vector<Metric>& metrics, const std::vector<Matrix>& matrices) {
  sql::Transaction tx(*db_);
  {
    sql::Statement s(*db_,
                     "INSERT INTO runs (uuid, kind, created, kvlab_version, revision, command_line, host, device, "
                     "seeds, model, model_hash, dump, dump_hash, status, tags, notes, provenance) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)");
    s.bind(1, info.uuid).bind(2, to_string(info.kind)).bind(3, info.created).bind(4, info.kvlab_version);
    s.bind(5, info.revision).bind(6, info.command_line).bind(7, info.host).bind(8, info.device);
    s.bind(9, nlohmann::json(info.seeds).dump()).bind(10, info.model).bind(11, info.model_hash);
    s.bind(12, info.dump).bind(13, info.dump_hash).bind(14, info.status);
    s.bind(15, nlohmann::json(info.tags).dump()).bind(16, info.notes).bind(17, info.provenance.dump());
    try {
      s.run();
    } catch (const Error& e) {
      if (find_uuid(info.uuid)) fail("run {} is already in {}", info.uuid, path_.string());
      throw;
    }
  }
  const RunId id = db_->last_insert_rowid();
  sql::Statement m(*db_,
                   "INSERT INTO metrics (run_id, method, scope, layer, task, sample, name, value) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  for (const auto& row : metrics) {
    m.bind(1, id).bind(2, row.method).bind(3, to_string(row.scope));
    if (row.layer >= 0) m.bind(4, row.layer); else m.bind_null(4);
    if (!row.task.empty()) m.bind(5, row.task); else m.bind_null(5);
    if (!row.sample.empty()) m.bind(6, row.sample); else m.bind_null(6);
    m.bind(7, row.name).bind(8, row.value);
    try {
      m.run();
    } catch (const Error& e) {
      fail("run {}: cannot store metric '{}' of method '{}' (scope {}, layer {}, task '{}', sample '{}'): {}",
           info.uuid, row.name, row.method, to_string(row.scope), row.layer, row.task, row.sample, e.what());
    }
    m.reset();
  }
  sql::Statement x(*db_, "INSERT INTO matrices (run_id, name, rows, cols, data) VALUES (?1, ?2, ?3, ?4, ?5)");
  for (const auto& matrix : matrices) {
    // Raw float64 in the host's byte order (little-endian on every platform kvlab targets).
    x.bind(1, id).bind(2, matrix.name).bind(3, matrix.rows).bind(4, matrix.cols);
    x.bind_blob(5, matrix.data.data(), matrix.data.size() * sizeof(double));
    try {
      x.run();
    } catch (const Error& e) {
      fail("run {}: cannot store matrix '{}': {}", info.uuid, matrix.name, e.what());
    }
    x.reset();
  }
  tx.commit();
  return id;
}

std::vector<Run> Store::runs(std::optional<RunKind> kind) const {
  sql::Statement s(*db_, fmt::format("SELECT {} FROM runs WHERE ?1 IS NULL OR kind = ?1 ORDER BY id", kRunColumns));
  if (kind) s.bind(1, to_string(*kind)); else s.bind_null(1);
  std::vector<Run> out;
  while (s.step()) out.push_back(read_run(s));
  return out;
}

std::optional<Run> Store::find_run(RunId id) const {
  sql::Statement s(*db_, fmt::format("SELECT {} FROM runs WHERE id = ?1", kRunColumns));
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_run(s);
}

std::optional<Run> Store::find_uuid(const std::string& uuid) const {
  sql::Statement s(*db_, fmt::format("SELECT {} FROM runs WHERE uuid = ?1", kRunColumns));
  s.bind(1, uuid);
  if (!s.step()) return std::nullopt;
  return read_run(s);
}

Run Store::resolve(const std::string& ref, std::optional<RunKind> kind) const {
  const std::string of_kind = kind ? fmt::format(" {}", to_string(*kind)) : "";
  if (ref == "latest") {
    sql::Statement s(*db_, fmt::format("SELECT {} FROM runs WHERE ?1 IS NULL OR kind = ?1 ORDER BY id DESC LIMIT 1",
                                       kRunColumns));
    if (kind) s.bind(1, to_string(*kind)); else s.bind_null(1);
    if (!s.step()) fail("{} holds no{} runs", path_.string(), of_kind);
    return read_run(s);
  }
  if (all_digits(ref)) {
    if (auto r = find_run(std::stoll(ref))) return *r;
    fail("{} has no run {}", path_.string(), ref);
  }
  if (ref.size() < 4) fail("run reference '{}': give a run id, 'latest', or at least 4 characters of a uuid", ref);
  sql::Statement s(*db_, fmt::format("SELECT {} FROM runs WHERE substr(uuid, 1, length(?1)) = ?1 ORDER BY id LIMIT 2",
                                     kRunColumns));
  s.bind(1, ref);
  if (!s.step()) fail("{} has no run '{}' (give a run id, 'latest', or a uuid prefix)", path_.string(), ref);
  Run run = read_run(s);
  if (s.step()) fail("run reference '{}' is ambiguous in {} (runs {} and {}); give more of the uuid", ref,
                     path_.string(), run.id, s.integer(0));
  return run;
}

std::vector<Metric> Store::metrics(RunId run, const MetricFilter& filter) const {
  sql::Statement s(*db_,
                   "SELECT method, scope, layer, task, sample, name, value FROM metrics WHERE run_id = ?1 "
                   "AND (?2 IS NULL OR scope = ?2) AND (?3 IS NULL OR method = ?3) AND (?4 IS NULL OR name = ?4) "
                   "ORDER BY method, scope, ifnull(task, ''), ifnull(layer, -1), ifnull(sample, ''), name");
  s.bind(1, run);
  if (filter.scope) s.bind(2, to_string(*filter.scope)); else s.bind_null(2);
  if (!filter.method.empty()) s.bind(3, filter.method); else s.bind_null(3);
  if (!filter.name.empty()) s.bind(4, filter.name); else s.bind_null(4);
  std::vector<Metric> out;
  while (s.step()) {
    Metric m;
    m.method = s.text(0);
    m.scope = parse_scope(s.text(1));
    m.layer = s.is_null(2) ? -1 : static_cast<int>(s.integer(2));
    m.task = s.text(3);
    m.sample = s.text(4);
    m.name = s.text(5);
    m.value = s.real(6);
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<Matrix> Store::matrices(RunId run) const {
  sql::Statement s(*db_, "SELECT name, rows, cols, data FROM matrices WHERE run_id = ?1 ORDER BY name");
  s.bind(1, run);
  std::vector<Matrix> out;
  while (s.step()) {
    Matrix m{s.text(0), s.integer(1), s.integer(2), {}};
    const auto bytes = s.blob(3);
    if (static_cast<std::int64_t>(bytes.size()) != m.rows * m.cols * static_cast<std::int64_t>(sizeof(double)))
      fail("{}: matrix '{}' of run {} holds {} bytes, not {}×{} doubles", path_.string(), m.name, run, bytes.size(),
           m.rows, m.cols);
    m.data.resize(static_cast<std::size_t>(m.rows * m.cols));
    if (!bytes.empty()) std::memcpy(m.data.data(), bytes.data(), bytes.size());
    out.push_back(std::move(m));
  }
  return out;
}

RunTotals Store::totals(RunId run) const {
  sql::Statement s(*db_,
                   "SELECT (SELECT count(DISTINCT method) FROM metrics WHERE run_id = ?1), "
                   "(SELECT count(*) FROM metrics WHERE run_id = ?1), (SELECT count(*) FROM matrices WHERE run_id = ?1)");
  s.bind(1, run);
  s.step();
  return {s.integer(0), s.integer(1), s.integer(2)};
}

StoreCounts Store::counts() const {
  return {db_->scalar("SELECT count(*) FROM runs"), db_->scalar("SELECT count(*) FROM metrics"),
          db_->scalar("SELECT count(*) FROM matrices")};
}

// ---- helpers ---------------------------------------------------------------------------

std::string utc_timestamp() { return format_utc(std::time(nullptr)); }

std::string utc_timestamp(std::filesystem::file_time_type time) {
  const auto system = std::chrono::file_clock::to_sys(time);
  return format_utc(std::chrono::system_clock::to_time_t(system));
}

std::string random_uuid() {
  std::random_device device;
  std::mt19937_64 rng((std::uint64_t{device()} << 32) ^ device() ^
                      static_cast<std::uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count()));
  std::uint64_t hi = rng(), lo = rng();
  hi = (hi & ~0xF000ULL) | 0x4000ULL;                        // version 4
  lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xFFFF, hi & 0xFFFF, lo >> 48,
                     lo & 0xFFFFFFFFFFFFULL);
}

RunInfo current_run_info(RunKind kind, const std::string& command_line) {
  RunInfo info;
  info.uuid = random_uuid();
  info.kind = kind;
  info.created = utc_timestamp();
  info.kvlab_version = kVersion;
  info.revision = kGitRevision;
  info.command_line = command_line;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) info.host = host;
  return info;
}

}  // namespace kvlab::results
