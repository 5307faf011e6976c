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

namespace kvlab::plots {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

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
      {"error-vs-ratio", "1"}, {"pareto", "1"}, {"layer-error", "1"}, {"accuracy-vs-ratio", "2"}, {"heatmap", "3"}, {"eigen-rank", "3"}};
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
  plot(*store_, request("heatmap", "3", "h.pdf"));
  EXPECT_EQ(read(dir_ / "h.dat"), "1 0.8 0.5 \n0.8 1 0.7 \n0.5 0.7 1 \n");
}

TEST_F(Plots, ErrorsNameWhatIsMissing) {
  auto r = request("heatmap", "3", "x.pdf");
  r.matrix = "value.cka";
  try {
    plot(*store_, r);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no matrix 'value.cka' (it has: key.cka)"));
  }
  EXPECT_THROW(plot(*store_, request("pie", "1", "x.pdf")), Error);
  EXPECT_THROW(plot(*store_, request("error-vs-ratio", "1", "x.jpg")), Error);
  r = request("error-vs-ratio", "1", "x.pdf");
  r.metric = "accuracy";
  EXPECT_THROW(plot(*store_, r), Error);
}

}  // namespace
}  // namespace kvlab::plots
