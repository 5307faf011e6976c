// Each figure kind renders from a small store fixture: gnuplot exits 0, the file has its
// format's signature and a non-trivial size, and the editable .gp/.dat are written beside it.
// The data file is checked against the fixture (the values plotted are the values stored).
#include "plots/plot.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/error_of.h"

namespace kvlab::plots {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class Plots : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("gnuplot --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot is not installed (gnuplot-nox)";
    dir_ = fs::temp_directory_path() / fmt::format("kvlab_plots_{}", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    store_ = std::make_unique<results::Store>(dir_ / "r.sqlite");
    store_->write_run(results::current_run_info(results::RunKind::compress, "test"), [](results::RunWriter& w) {
      for (int rk : {8, 16, 32}) {
        const auto m = fmt::format("svd:rk={}", rk);
        w.add_metric(m, "compression_ratio", 64.0 / rk);
        w.add_metric(m, "attn_kl", 1.0 / rk);
        w.add_metric(m, "head_error", 0.5 / rk);  // a name the metrics table lacks
        for (int l = 0; l < 4; ++l) w.add_layer_metric(m, l, "key_error", 0.1 * l + 1.0 / rk);
      }
      w.add_metric("snapkv:keep=0.5+kivi:bits=4", "compression_ratio", 7.5);
      w.add_metric("snapkv:keep=0.5+kivi:bits=4", "attn_kl", 0.2);
    });
    store_->write_run(results::current_run_info(results::RunKind::eval, "test"), [](results::RunWriter& w) {
      w.add_metric("baseline", "accuracy", 0.9);
      w.add_metric("xkv:g=4,rk=8", "compression_ratio", 6.0);
      w.add_metric("xkv:g=4,rk=8", "accuracy", 0.7);
      w.add_metric("xkv:g=4,rk=16", "compression_ratio", 3.0);
      w.add_metric("xkv:g=4,rk=16", "accuracy", 0.85);
    });
    store_->write_run(results::current_run_info(results::RunKind::analyze, "test"), [](results::RunWriter& w) {
      results::Matrix m{"key.cka", 3, 3, {1, 0.8, 0.5, 0.8, 1, 0.7, 0.5, 0.7, 1}};
      w.add_matrix(m);
      for (int g : {1, 2, 4})
        for (const char* kind : {"key", "value"}) w.add_metric(kind, fmt::format("eigen_rank_fraction_g{}_e0.95", g), 0.1 * g);
      // Two groups of four columns: energy shares (0.75, 0.25, 0, 0) and (0.25, 0.25, 0.25, 0.25).
      w.add_matrix(results::Matrix{"key.spectrum.g1", 2, 4, {3, 1, 0, 0, 1, 1, 1, 1}});
      w.add_matrix(results::Matrix{"value.spectrum.g2", 1, 8, {4, 2, 1, 1, 0, 0, 0, -1e-9}});
    });
    // Run 4: needle samples (depth %, length, accuracy of snapkv; the baseline always scores 1).
    store_->write_run(results::current_run_info(results::RunKind::eval, "test"), [](results::RunWriter& w) {
      const std::tuple<double, double, double> samples[] = {{0, 4096, 1}, {0, 4096, 0}, {50, 4096, 1}, {50, 8192, 0}, {100, 8192, 1}};
      int i = 0;
      for (const auto& [depth, length, accuracy] : samples) {
        const auto id = fmt::format("s{}", i++);
        w.add_sample_metric("", "ruler:niah_single_1", id, "needle_depth", depth);
        w.add_sample_metric("", "ruler:niah_single_1", id, "target_tokens", length);
        w.add_sample_metric("baseline", "ruler:niah_single_1", id, "accuracy", 1);
        w.add_sample_metric("snapkv:keep=0.5", "ruler:niah_single_1", id, "accuracy", accuracy);
        w.add_sample_metric("snapkv:keep=0.5", "ruler:niah_single_1", id, "answer_kl", 0.1);
      }
    });
    // Run 5: 13 distinct random depths (0, 5, …, 60) → 10 % bins; accuracy 1 below 30 %.
    store_->write_run(results::current_run_info(results::RunKind::eval, "test"), [](results::RunWriter& w) {
      for (int d = 0; d <= 60; d += 5) {
        const auto id = fmt::format("d{}", d);
        w.add_sample_metric("", "ruler:niah_single_1", id, "needle_depth", d);
        w.add_sample_metric("", "ruler:niah_single_1", id, "target_tokens", 4096);
        w.add_sample_metric("xkv:g=4", "ruler:niah_single_1", id, "accuracy", d < 30 ? 1 : 0);
      }
    });
    // Run 6: two measured depths, 3.7 % and 52.5 %.
    store_->write_run(results::current_run_info(results::RunKind::eval, "test"), [](results::RunWriter& w) {
      for (const double d : {3.7, 52.5}) {
        const auto id = fmt::format("m{}", d);
        w.add_sample_metric("", "ruler:niah_single_1", id, "needle_depth", d);
        w.add_sample_metric("", "ruler:niah_single_1", id, "target_tokens", 4096);
        w.add_sample_metric("xkv:g=4", "ruler:niah_single_1", id, "accuracy", d < 30 ? 1 : 0);
      }
    });
  }
  void TearDown() override { fs::remove_all(dir_); }

  PlotRequest request(const std::string& kind, const std::string& run, const std::string& file) const {
    PlotRequest r;
    r.kind = kind;
    r.runs = {run};
    r.out = dir_ / file;
    return r;
  }
  fs::path dir_;
  std::unique_ptr<results::Store> store_;
};

TEST_F(Plots, EveryKindRendersInEveryFormat) {
  const std::vector<std::pair<std::string, std::string>> kinds = {
      {"error-vs-ratio", "1"}, {"pareto", "1"}, {"layer-error", "1"}, {"accuracy-vs-ratio", "2"}, {"heatmap", "3"}, {"eigen-rank", "3"},
      {"spectra", "3"}, {"needle", "4"}};
  for (const auto& [kind, run] : kinds)
    for (const std::string ext : {".pdf", ".png", ".svg"}) {
      const auto r = request(kind, run, kind + ext);
      plot(*store_, r);
      const auto bytes = read(r.out);
      EXPECT_GT(bytes.size(), 1000u) << kind << ext;
      if (ext == ".pdf") {
        EXPECT_EQ(bytes.substr(0, 4), "%PDF") << kind;
      } else if (ext == ".png") {
        EXPECT_EQ(bytes.substr(1, 3), "PNG") << kind;
      } else {
        EXPECT_THAT(bytes.substr(0, 200), HasSubstr("<svg")) << kind;
      }
      EXPECT_TRUE(fs::exists(fs::path(r.out).replace_extension(".gp"))) << kind;
      EXPECT_TRUE(fs::exists(fs::path(r.out).replace_extension(".dat"))) << kind;
    }
}

TEST_F(Plots, DataFilesHoldTheStoredValues) {
  plot(*store_, request("error-vs-ratio", "1", "f.pdf"));
  const auto dat = read(dir_ / "f.dat");
  // svd family sorted by ratio: 2 (rk=32), 4 (rk=16), 8 (rk=8); the chain is its own family.
  EXPECT_THAT(dat, HasSubstr("# snapkv+kivi\n7.5 0.2\n"));
  EXPECT_THAT(dat, HasSubstr("# svd\n2 0.03125\n4 0.0625\n8 0.125\n"));
  // The frontier by hand, from the highest ratio down: (8, 0.125); (7.5, 0.2) is worse at a lower
  // ratio, dominated; (4, 0.0625) and (2, 0.03125) each improve the KL. Frontier: 2, 4, 8.
  plot(*store_, request("pareto", "1", "p.pdf"));
  EXPECT_THAT(read(dir_ / "p.dat"), HasSubstr("# Pareto frontier\n2 0.03125\n4 0.0625\n8 0.125\n"));
  plot(*store_, request("accuracy-vs-ratio", "2", "a.pdf"));
  EXPECT_THAT(read(dir_ / "a.gp"), HasSubstr("first 0.9"));  // the baseline line
  // layer-error: a row per layer, a column per method (std::map order: rk=16, rk=32, rk=8).
  plot(*store_, request("layer-error", "1", "l.pdf"));
  EXPECT_THAT(read(dir_ / "l.dat"), HasSubstr("\n0 0.0625 0.03125 0.125\n1 0.1625 0.13125 0.225\n"));
  auto lines = request("layer-error", "1", "ll.pdf");
  lines.style = "lines";
  plot(*store_, lines);
  EXPECT_THAT(read(dir_ / "ll.dat"), HasSubstr("# svd:rk=8\n0 0.125\n1 0.225\n2 0.325\n3 0.425\n"));
  plot(*store_, request("heatmap", "3", "h.pdf"));
  EXPECT_EQ(read(dir_ / "h.dat"), "1 0.8 0.5 \n0.8 1 0.7 \n0.5 0.7 1 \n");
}

TEST_F(Plots, SpectraAreMeansOverGroupsAtRankFractions) {
  plot(*store_, request("spectra", "3", "s.pdf"));
  const auto dat = read(dir_ / "s.dat");
  // Cumulative energy per group: (0.75, 1, 1, 1) and (0.25, 0.5, 0.75, 1); their mean at k/4.
  EXPECT_THAT(dat, HasSubstr("# K G=1\n0.25 0.5\n0.5 0.75\n0.75 0.875\n1 1\n"));
  // One group of eight: shares 0.5, 0.25, 0.125, 0.125, then zeros (a rounding negative clamped).
  EXPECT_THAT(dat, HasSubstr("# V G=2\n0.125 0.5\n0.25 0.75\n0.375 0.875\n0.5 1\n0.625 1\n"));
  auto r = request("spectra", "3", "e.pdf");
  r.metric = "eigenvalue";
  plot(*store_, r);
  // Mean shares (0.5, 0.25, 0.125, 0.125); zero shares are left off the log axis.
  EXPECT_THAT(read(dir_ / "e.dat"), HasSubstr("# K G=1\n0.25 0.5\n0.5 0.25\n0.75 0.125\n1 0.125\n"));
  EXPECT_THAT(read(dir_ / "e.dat"), HasSubstr("# V G=2\n0.125 0.5\n0.25 0.25\n0.375 0.125\n0.5 0.125\n\n"));
  r.metric = "rank";
  EXPECT_THROW(plot(*store_, r), Error);
}

TEST_F(Plots, NeedleCellsAverageTheSamplesAtEachDepthAndLength) {
  plot(*store_, request("needle", "4", "n.pdf"));  // snapkv, the only compressed method
  // Rows: depths 0, 50, 100 (few distinct: used as they are); columns 4096, 8192.
  EXPECT_THAT(read(dir_ / "n.dat"), testing::EndsWith("\n0.5 NaN \n1 0 \nNaN 1 \n"));
  EXPECT_THAT(read(dir_ / "n.gp"), HasSubstr("set xtics ('4096' 0, '8192' 1)"));
  auto r = request("needle", "4", "b.pdf");
  r.method = "baseline";
  plot(*store_, r);
  EXPECT_THAT(read(dir_ / "b.dat"), testing::EndsWith("\n1 NaN \n1 1 \nNaN 1 \n"));
  plot(*store_, request("needle", "5", "bins.pdf"));  // 13 distinct depths: 10 % bins, 100 % at the bottom
  EXPECT_THAT(read(dir_ / "bins.dat"), testing::EndsWith("\n1 \n1 \n1 \n0 \n0 \n0 \n0 \nNaN \nNaN \nNaN \n"));
  plot(*store_, request("needle", "6", "measured.pdf"));  // few depths, but measured (not whole): bins
  EXPECT_THAT(read(dir_ / "measured.dat"), testing::EndsWith("\n1 \nNaN \nNaN \nNaN \nNaN \n0 \nNaN \nNaN \nNaN \nNaN \n"));
  r = request("needle", "2", "x.pdf");  // an eval run without needle depths
  EXPECT_THAT(core::error_of([&] { plot(*store_, r); }), HasSubstr("have no samples with a needle depth"));
  r = request("needle", "4", "x.pdf");
  r.method = "nope";
  EXPECT_THAT(core::error_of([&] { plot(*store_, r); }), HasSubstr("no method 'nope' in run(s) 4 (they have: baseline, snapkv:keep=0.5)"));
}

// Axes from the metrics table (results/metrics.h): errors and KL on a log axis, ratios and
// fractions not, a name the table lacks on one when it says error or KL; a fraction's colours
// span [0, 1].
TEST_F(Plots, AxesFollowTheMetricsTable) {
  const auto script = [&](const std::string& kind, const std::string& run, const std::string& metric) {
    auto r = request(kind, run, "axes.svg");
    r.metric = metric;
    plot(*store_, r);
    return read(dir_ / "axes.gp");
  };
  const auto kl = script("error-vs-ratio", "1", "");  // attn_kl, in nats
  EXPECT_THAT(kl, HasSubstr("set logscale y\n"));
  EXPECT_THAT(kl, HasSubstr("set xlabel 'compression ratio (16-bit dense / stored bytes)'\n"));
  EXPECT_THAT(script("error-vs-ratio", "1", "compression_ratio"), Not(HasSubstr("logscale")));
  EXPECT_THAT(script("error-vs-ratio", "1", "head_error"), HasSubstr("set logscale y\n"));
  EXPECT_THAT(script("accuracy-vs-ratio", "2", ""), Not(HasSubstr("logscale")));
  const auto needle = script("needle", "4", "");  // accuracy
  EXPECT_THAT(needle, HasSubstr("set cbrange [0:1]\n"));
  EXPECT_THAT(needle, HasSubstr("set xlabel 'context length (tokens)'\nset ylabel 'needle depth (%)'\n"));
  EXPECT_THAT(script("needle", "4", "answer_kl"), Not(HasSubstr("cbrange")));
}

TEST_F(Plots, ErrorsNameWhatIsMissing) {
  auto r = request("heatmap", "3", "x.pdf");
  r.matrix = "value.cka";
  try {
    plot(*store_, r);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no matrix 'value.cka' (it has: key.cka, key.spectrum.g1, value.spectrum.g2)"));
  }
  EXPECT_THROW(plot(*store_, request("pie", "1", "x.pdf")), Error);
  EXPECT_THROW(plot(*store_, request("error-vs-ratio", "1", "x.jpg")), Error);
  r = request("error-vs-ratio", "1", "x.pdf");
  r.metric = "accuracy";
  EXPECT_THROW(plot(*store_, r), Error);
}

}  // namespace
}  // namespace kvlab::plots
