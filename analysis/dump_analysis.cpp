#include "analysis/dump_analysis.h"

#include <cmath>
#include <fmt/format.h>

#include "analysis/energy_rank.h"
#include "core/atomic_file.h"
#include "core/error.h"

namespace kvlab::analysis {
namespace {

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json matrix_json(const Eigen::MatrixXd& m) {
  nlohmann::json rows = nlohmann::json::array();
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (Eigen::Index j = 0; j < m.cols(); ++j) row.push_back(number(m(i, j)));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string csv_number(double v) { return std::isfinite(v) ? fmt::format("{:.9g}", v) : "nan"; }

std::string matrix_csv(const Eigen::MatrixXd& m) {
  std::string out = "layer";
  for (Eigen::Index j = 0; j < m.cols(); ++j) out += fmt::format(",{}", j);
  out += '\n';
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    out += std::to_string(i);
    for (Eigen::Index j = 0; j < m.cols(); ++j) {
      out += ',';
      out += csv_number(m(i, j));
    }
    out += '\n';
  }
  return out;
}

// Mean of the first off-diagonal (layer l vs l+1): the number xKV's argument rests on.
double adjacent_mean(const Eigen::MatrixXd& m) {
  if (m.rows() < 2) return std::nan("");
  double s = 0;
  for (Eigen::Index l = 0; l + 1 < m.rows(); ++l) s += m(l, l + 1);
  return s / double(m.rows() - 1);
}

void write_kind_tables(const std::filesystem::path& dir, const KindReport& report) {
  const auto& r = report.result;
  const std::string prefix = std::string(core::to_string(report.kind)) + "_";
  auto put = [&](const std::string& name, const std::string& text) { core::write_file_atomic(dir / (prefix + name), text); };
  put("token_cosine.csv", matrix_csv(r.token_cosine));
  std::string heads = "head,layer_i,layer_j,cosine\n";
  for (std::size_t h = 0; h < r.head_token_cosine.size(); ++h)
    for (Eigen::Index i = 0; i < r.head_token_cosine[h].rows(); ++i)
      for (Eigen::Index j = 0; j < r.head_token_cosine[h].cols(); ++j)
        heads += fmt::format("{},{},{},{}\n", h, i, j, csv_number(r.head_token_cosine[h](i, j)));
  put("head_token_cosine.csv", heads);
  if (r.cka.size() == 0) return;  // the Gram pass was skipped
  put("cka.csv", matrix_csv(r.cka));
  put("channel_cosine.csv", matrix_csv(r.channel_cosine));
  std::string ranks = "group_size,first_layer,energy,rank,rank_fraction\n";
  std::string means = "group_size,energy,mean_rank_fraction\n";
  std::string spectra = "group_size,first_layer,index,eigenvalue,cumulative_energy\n";
  for (const auto& entry : r.eigen_rank) {
    for (std::size_t e = 0; e < r.energies.size(); ++e)
      means += fmt::format("{},{},{}\n", entry.group_size, r.energies[e], csv_number(entry.mean_rank_fraction[e]));
    for (const auto& g : entry.groups) {
      for (std::size_t e = 0; e < r.energies.size(); ++e)
        ranks += fmt::format("{},{},{},{},{}\n", g.size, g.first_layer, r.energies[e], g.rank[e],
                             csv_number(g.rank_fraction[e]));
      const auto cumulative = cumulative_energy(g.spectrum);
      for (std::size_t k = 0; k < g.spectrum.size(); ++k)
        spectra += fmt::format("{},{},{},{},{}\n", g.size, g.first_layer, k, csv_number(g.spectrum[k]),
                               csv_number(cumulative[k]));
    }
  }
  put("eigen_rank.csv", ranks);
  put("eigen_rank_mean.csv", means);
  put("spectra.csv", spectra);
}

}  // namespace

CrossLayerResult analyze_dump(const core::DumpReader& dump, const std::string& sample_id, core::KvKind kind,
                              const AnalysisOptions& options, linalg::Backend& backend) {
  if (kind != core::KvKind::key && kind != core::KvKind::value)
    fail("analysis covers keys and values, not '{}'", core::to_string(kind));
  const auto& info = dump.info();
  const auto meta = dump.sample(sample_id);
  LayerShape shape{info.num_layers, info.num_kv_heads, info.head_dim, meta.num_tokens};
  RowReader reader = [&](int layer, std::int64_t t0, std::int64_t n, std::span<float> out) {
    dump.read_rows(sample_id, layer, kind, t0, n, out);
  };
  return analyze_cross_layer(shape, reader, options, backend);
}

nlohmann::json to_json(const CrossLayerResult& r) {
  nlohmann::json j;
  j["shape"] = {{"layers", r.shape.layers}, {"heads", r.shape.heads}, {"head_dim", r.shape.head_dim},
                {"tokens", r.shape.tokens}};
  j["token_cosine"] = matrix_json(r.token_cosine);
  j["token_cosine_note"] = "mean over tokens of cos(x_t^i, x_t^j) on whole-layer rows; zero rows excluded pairwise";
  j["head_token_cosine"] = nlohmann::json::array();
  for (const auto& m : r.head_token_cosine) j["head_token_cosine"].push_back(matrix_json(m));
  j["zero_rows"] = r.zero_rows;
  j["timings"] = {{"means_and_cosines", r.timings.means_and_cosines},
                  {"cross_products", r.timings.cross_products},
                  {"similarity", r.timings.similarity},
                  {"eigen_rank", r.timings.eigen_rank}};
  if (r.timings.cross_products > 0) j["cross_product_gflops"] = r.cross_product_flops / r.timings.cross_products / 1e9;
  if (r.cka.size() == 0) return j;
  j["cka"] = matrix_json(r.cka);
  j["cka_note"] = "linear CKA, column-centred, feature space: |X~'Y~|_F^2 / (|X~'X~|_F |Y~'Y~|_F)";
  j["channel_cosine"] = matrix_json(r.channel_cosine);
  j["channel_cosine_note"] =
      "xKV notebook variant: cosine_similarity(dim=0), one cosine per channel over tokens (uncentred), averaged over channels";
  j["energies"] = r.energies;
  j["min_kept_sigma_ratio"] = number(r.min_kept_sigma_ratio);
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& entry : r.eigen_rank) {
    nlohmann::json e{{"group_size", entry.group_size}, {"mean_rank_fraction", entry.mean_rank_fraction}};
    e["groups"] = nlohmann::json::array();
    for (const auto& g : entry.groups)
      e["groups"].push_back({{"first_layer", g.first_layer}, {"rank", g.rank}, {"rank_fraction", g.rank_fraction},
                             {"gram_side", std::string(to_string(g.side))}, {"gram_order", g.gram_order},
                             {"spectrum", g.spectrum}});
    ranks.push_back(std::move(e));
  }
  j["eigen_rank"] = std::move(ranks);
  j["eigen_rank_note"] =
      "gram_side: the Gram eigen-solved per group, column (G*H*D square) or token (T x T, chosen when T < G*H*D; "
      "same non-zero eigenvalues); spectrum entries from gram_order on are zero padding";
  return j;
}

nlohmann::json write_report(const std::filesystem::path& dir, const nlohmann::json& context,
                            const std::vector<KindReport>& kinds) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("cannot create output directory {}: {}", dir.string(), ec.message());
  nlohmann::json doc;
  doc["input"] = context;
  for (const auto& k : kinds) {
    write_kind_tables(dir, k);
    auto j = to_json(k.result);
    j["seconds"] = k.seconds;
    doc["kinds"][std::string(core::to_string(k.kind))] = std::move(j);
  }
  core::write_file_atomic(dir / "analysis.json", doc.dump(1) + "\n");
  return doc;
}

std::string summary_table(const std::vector<KindReport>& kinds) {
  std::string out;
  for (const auto& k : kinds) {
    const auto& r = k.result;
    out += fmt::format("{} ({} layers, {} tokens, {:.1f} s)\n", core::to_string(k.kind), r.shape.layers,
                       r.shape.tokens, k.seconds);
    out += fmt::format("  adjacent layers: token cosine {:.3f}", adjacent_mean(r.token_cosine));
    if (r.cka.size() != 0)
      out += fmt::format(", channel cosine {:.3f}, CKA {:.3f}", adjacent_mean(r.channel_cosine), adjacent_mean(r.cka));
    out += "\n";
    if (r.eigen_rank.empty()) continue;
    out += "  eigen-rank (fraction of columns kept)\n    G ";
    for (double e : r.energies) out += fmt::format(" {:>8}", fmt::format("{:g}%", 100 * e));
    out += "\n";
    for (const auto& entry : r.eigen_rank) {
      out += fmt::format("    {:<2}", entry.group_size);
      for (double f : entry.mean_rank_fraction) out += fmt::format(" {:>8.3f}", f);
      out += "\n";
    }
  }
  return out;
}

}  // namespace kvlab::analysis
