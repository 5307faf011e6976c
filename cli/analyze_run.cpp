#include "cli/analyze_run.h"

#include <fmt/format.h>

#include <chrono>
#include <memory>

#include "analysis/dump_analysis.h"
#include "cli/commands.h"
#include "cli/output_dir.h"
#include "cli/record_run.h"
#include "core/content_hash.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/version.h"
#include "linalg/cpu/blas_core.h"
#include "linalg/select_backend.h"
#include "core/stopwatch.h"

namespace kvlab::cli {

AnalyzeOutcome run_analyze(const AnalyzeRequest& request) {
  check_dump_path(request.dump);
  core::DumpReader dump(request.dump);
  const std::string sample = choose_sample(dump, request.sample);

  analysis::AnalysisOptions options;
  options.group_sizes = parse_group_sizes(request.groups, dump.info().num_layers, request.groups_given);
  options.energies = request.energies;
  options.token_block = request.token_block;
  options.precision = linalg::parse_gram_precision(request.precision);
  options.cka = !request.cosine_only;
  auto& backend = linalg::backend_for(request.device, request.threads);
  OutputDir out(request.out.empty() ? std::filesystem::path(request.dump.string() + ".analysis") : request.out,
                request.force);

  std::vector<core::KvKind> kinds;
  if (request.kind != "value") kinds.push_back(core::KvKind::key);
  if (request.kind != "key") kinds.push_back(core::KvKind::value);

  std::vector<analysis::KindReport> reports;
  for (auto kind : kinds) {
    std::unique_ptr<core::Progress> bar;
    std::string stage;
    std::int64_t reported = 0;
    options.on_progress = [&](const std::string& s, std::int64_t done, std::int64_t total) {
      if (s != stage) {
        stage = s;
        reported = 0;
        bar = std::make_unique<core::Progress>(fmt::format("{}: {}", core::to_string(kind), s), total);
      }
      bar->advance(done - reported);
      reported = done;
    };
    const auto start = std::chrono::steady_clock::now();
    auto result = analysis::analyze_dump(dump, sample, kind, options, backend);
    bar.reset();
    reports.push_back({kind, std::move(result),
                       core::seconds_since(start)});
  }

  nlohmann::json context{{"dump", request.dump.string()},
                         {"dump_hash", core::file_hash(request.dump)},
                         {"model_hash", dump.info().model_hash},
                         {"sample", sample},
                         {"model_id", dump.info().model_id},
                         {"group_sizes", options.group_sizes},
                         {"energies", options.energies},
                         {"precision", request.precision},
                         {"token_block", options.token_block},
                         {"blas_threads", backend.threads()},
                         {"blas", linalg::blas::summary()},
                         {"device", request.device},
                         {"command_line", command_line()},
                         {"kvlab_version", kVersion},
                         {"git_revision", kGitRevision}};
  const auto doc = analysis::write_report(out.staging(), context, reports);
  out.commit();
  const auto run = record_analysis(request.db, doc, out.path() / "analysis.json", request.device);

  std::string summary = fmt::format("dump {} sample {} ({})\n", request.dump.string(), sample, dump.info().model_id);
  summary += analysis::summary_table(reports);
  for (const auto& r : reports)
    if (r.result.min_kept_sigma_ratio < 4 * linalg::gram_sigma_floor(options.precision))
      summary += fmt::format(
          "warning: {} eigen-rank keeps components down to σ_r/σ₁ = {:.1e}, below {} Gram accuracy; rerun with "
          "--precision f64\n",
          core::to_string(r.kind), r.result.min_kept_sigma_ratio, linalg::to_string(options.precision));
  summary += fmt::format("wrote {}/analysis.json and CSV tables\n", out.path().string());
  return {out.path(), summary, run};
}

}  // namespace kvlab::cli
