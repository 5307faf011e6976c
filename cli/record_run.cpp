#include "cli/record_run.h"

#include "cli/commands.h"
#include "linalg/cpu/blas_core.h"
#include "results/import.h"
#include "results/metrics.h"
#include "results/store.h"

namespace kvlab::cli {
namespace {

namespace n = results::metric_name;

// The report's own provenance plus what only the live run knows: a fresh uuid, the time, host,
// the command line, the device and the BLAS library, core and threads.
results::RunInfo live(results::RunInfo info, results::RunKind kind, const std::string& device, const std::string& uuid) {
  const auto now = results::current_run_info(kind, command_line());
  info.kind = kind;
  info.uuid = uuid.empty() ? now.uuid : uuid;
  info.created = now.created;
  info.host = now.host;
  info.command_line = now.command_line;
  if (info.kvlab_version.empty()) info.kvlab_version = now.kvlab_version;
  if (info.revision.empty()) info.revision = now.revision;
  info.device = device;
  info.provenance["blas"] = linalg::blas::summary();
  return info;
}

}  // namespace

std::int64_t record_compress(const std::filesystem::path& db, const nlohmann::json& report, const std::filesystem::path& origin,
                             const std::string& device, const std::string& uuid) {
  if (db.empty()) return 0;
  results::Store store(db);
  return store.write_run(live(results::compress_run_info(report), results::RunKind::compress, device, uuid),
                         [&](results::RunWriter& w) { results::add_compress_report(w, report, origin.string()); });
}

std::int64_t record_analysis(const std::filesystem::path& db, const nlohmann::json& report, const std::filesystem::path& origin,
                             const std::string& device, const std::string& uuid) {
  if (db.empty()) return 0;
  results::Store store(db);
  return store.write_run(live(results::analysis_run_info(report), results::RunKind::analyze, device, uuid),
                         [&](results::RunWriter& w) { results::add_analysis_report(w, report, origin.string()); });
}

std::int64_t record_eval(const std::filesystem::path& db, const nlohmann::json& report, const std::string& uuid) {
  if (db.empty()) return 0;
  results::RunInfo info;
  info.model = report["model"]["id"].get<std::string>();
  info.model_hash = report["model"].value("hash", "");
  info.provenance = {{"model", report["model"]}, {"options", report["options"]}, {"tokenizer", report["tokenizer"]},
                     {"chat_template", report["chat_template"]}, {"metrics", report["metrics"]},
                     {"task", report.value("task", nlohmann::json(nullptr))}};
  info = live(std::move(info), results::RunKind::eval, report["model"]["device"].get<std::string>(), uuid);
  results::Store store(db);
  const std::string task = report["options"]["prompts"].get<std::string>();
  // eval.json's keys are the metric names, except a sample's "score" (accuracy), "exact"
  // (exact_match) and "kl" (answer_kl: KL of the answer, apart from compress's attention KL).
  return store.write_run(info, [&](results::RunWriter& w) {
    for (const auto& m : report["methods"])
      for (const char* name : {n::agreement, n::exact_match, n::compression_ratio, n::bytes, n::seconds, n::compress_seconds})
        w.add_metric(m["spec"].get<std::string>(), name, m[name].get<double>());
    for (const auto& m : report["methods"])  // eval.json written before quest ran in eval lacks it
      if (m.contains(n::loaded_bytes_per_step))
        w.add_metric(m["spec"].get<std::string>(), n::loaded_bytes_per_step, m[n::loaded_bytes_per_step].get<double>());
    if (report.contains("timing") && !report["samples"].empty())  // per prompt, shared by every method
      w.add_metric("baseline", n::prefill_seconds,
                   report["timing"][n::prefill_seconds].get<double>() / static_cast<double>(report["samples"].size()));
    if (report.contains("task") && report["task"].is_object()) {  // task accuracy, the baseline's too
      w.add_metric("baseline", n::accuracy, report["task"]["baseline_accuracy"].get<double>());
      for (const auto& m : report["methods"]) w.add_metric(m["spec"].get<std::string>(), n::accuracy, m[n::accuracy].get<double>());
      for (const auto& s : report["samples"]) {
        const auto id = s["id"].get<std::string>();
        w.add_sample_metric("baseline", task, id, n::accuracy, s["baseline"]["score"].get<double>());
        for (const auto& m : s["methods"])
          w.add_sample_metric(m["spec"].get<std::string>(), task, id, n::accuracy, m["score"].get<double>());
      }
    }
    for (const auto& m : report["methods"]) w.add_metric(m["spec"].get<std::string>(), n::answer_kl, m["kl"].get<double>());
    // What a sample is, for depth × length figures: method "" (the sample itself, not a method).
    for (const auto& s : report["samples"])
      for (const char* name : {n::needle_depth, n::target_tokens})
        if (s.contains(name)) w.add_sample_metric("", task, s["id"].get<std::string>(), name, s[name].get<double>());
    for (const auto& s : report["samples"])
      for (const auto& m : s["methods"]) {
        const auto spec = m["spec"].get<std::string>(), id = s["id"].get<std::string>();
        w.add_sample_metric(spec, task, id, n::agreement, m[n::agreement].get<double>());
        w.add_sample_metric(spec, task, id, n::exact_match, m["exact"].get<bool>() ? 1.0 : 0.0);
        w.add_sample_metric(spec, task, id, n::answer_kl, m["kl"].get<double>());
      }
  });
}

}  // namespace kvlab::cli
