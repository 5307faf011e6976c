// Every metric kvlab records in the results store, in one table: its name, unit, which way is
// better, a label for listings and axes, and where its rows are (per run, layer, sample).
// Readers look metrics up here instead of spelling their names: compare and check (which way
// is worse), results export (bold best, arrows, the default columns and their order), plots
// (axis labels, log axes, colour ranges). Writers (results/import.cpp, cli/record_run.cpp)
// name what they record through the constants in metric_name.
//
// A name the table lacks (a newer writer, someone else's store) still works: its direction
// comes from its suffix ("niah_accuracy" ↑, "head_error" ↓, "*_seconds" none), else it is
// informational — shown, never bold, never a regression.
#pragma once

#include <span>
#include <string_view>

#include "results/records.h"

namespace kvlab::results {

enum class Direction { lower_better, higher_better, none };

enum class Unit {
  relative,    // ‖X − X̂‖_F / ‖X‖_F: dimensionless, ≥ 0, spans orders of magnitude
  nats,        // a KL divergence, ≥ 0, spans orders of magnitude
  fraction,    // a share in [0, 1]
  ratio,       // a quotient ≥ 0 (dense / stored bytes, σ_r / σ₁)
  bytes,
  seconds,     // wall time: depends on the machine and its load, so it never gates a check
  count,
  percent,     // 0–100
  tokens,
  similarity,  // a cosine or CKA, in [−1, 1]
};

// Where a metric's rows are: bits of MetricInfo::rows.
inline constexpr unsigned kPerRun = 1, kPerLayer = 2, kPerSample = 4;

struct MetricInfo {
  std::string_view name;   // exact, or a family whose <X> parts stand for numbers (see find_metric)
  Unit unit;
  Direction direction;
  std::string_view label;  // a phrase with its unit, for listings and figure axes
  unsigned rows;           // kPerRun | kPerLayer | kPerSample: the scopes writers record it at
  bool paper_column;       // a default column of `results export`; these come first, in table order

  bool recorded_at(Scope scope) const;  // Scope::task: never (no writer records per-task rows)
};

// The names, spelled once. const char* so that they pass where the store takes std::string.
namespace metric_name {
// compress (results/import.cpp: compress.json), per method
inline constexpr const char* key_error = "key_error";
inline constexpr const char* value_error = "value_error";
inline constexpr const char* attn_output_error = "attn_output_error";
inline constexpr const char* attn_kl = "attn_kl";
inline constexpr const char* compression_ratio = "compression_ratio";  // eval too
inline constexpr const char* authors_ratio = "authors_ratio";
inline constexpr const char* bytes = "bytes";  // eval too
inline constexpr const char* loaded_bytes_per_step = "loaded_bytes_per_step";  // = bytes unless the method selects per query (quest)
inline constexpr const char* kept_fraction = "kept_fraction";
inline constexpr const char* dense_fp16_bytes = "dense_fp16_bytes";
inline constexpr const char* compress_seconds = "compress_seconds";  // eval too
inline constexpr const char* score_seconds = "score_seconds";
// eval (cli/record_run.cpp: eval.json), per method; the first four also per sample
inline constexpr const char* accuracy = "accuracy";
inline constexpr const char* agreement = "agreement";
inline constexpr const char* exact_match = "exact_match";
inline constexpr const char* answer_kl = "answer_kl";
inline constexpr const char* seconds = "seconds";
inline constexpr const char* prefill_seconds = "prefill_seconds";
// eval, per sample of method "" (what the sample is, for needle figures)
inline constexpr const char* needle_depth = "needle_depth";
inline constexpr const char* target_tokens = "target_tokens";
// analyze (results/import.cpp: analysis.json), per kind (key, value)
inline constexpr const char* min_kept_sigma_ratio = "min_kept_sigma_ratio";
inline constexpr const char* zero_rows = "zero_rows";
inline constexpr const char* analysis_seconds = "analysis_seconds";
}  // namespace metric_name

// The table, paper columns first.
std::span<const MetricInfo> metric_table();

// The entry for `name`: an exact name, or a family ("eigen_rank_fraction_g<G>_e<E>" holds
// "eigen_rank_fraction_g4_e0.9"). nullptr when the table lacks it.
const MetricInfo* find_metric(std::string_view name);

// The entry's label; for names the table lacks, the name.
std::string_view metric_label(std::string_view name);

// The table's direction; for names it lacks, the suffix rules above.
Direction metric_direction(std::string_view metric);

// "↓" / "↑" / "" for table headers; "lower" / "higher" / "none" for JSON.
std::string_view direction_arrow(Direction direction);
std::string_view to_string(Direction direction);
std::string_view to_string(Unit unit);

}  // namespace kvlab::results
