#include "results/table.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

#include "core/error.h"
#include "results/test_support.h"

namespace kvlab::results {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::TempDir;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<std::string> split(const std::string& line, const std::string& sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t at; (at = line.find(sep, start)) != std::string::npos; start = at + sep.size())
    out.push_back(line.substr(start, at - start));
  out.push_back(line.substr(start));
  return out;
}

class TableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::make_unique<Store>(dir_ / "r.sqlite");
    RunInfo info;
    info.kind = RunKind::compress;
    // Methods sort as: "a_b&c%", "full", "svd:rk=4,rv=6".
    run_ = store_->write_run(info, [](RunWriter& w) {
      w.add_metric("svd:rk=4,rv=6", "key_error", 0.25);
      w.add_metric("svd:rk=4,rv=6", "compression_ratio", 4.0);
      w.add_metric("svd:rk=4,rv=6", "kept_fraction", 1.0);
      w.add_metric("full", "key_error", 0.0);
      w.add_metric("full", "compression_ratio", 1.0);
      w.add_metric("full", "kept_fraction", 1.0);
      w.add_metric("a_b&c%", "key_error", 0.125);
      w.add_metric("a_b&c%", "compression_ratio", 4.0);  // ties the svd row
      w.add_metric("a_b&c%", "kept_fraction", 0.5);
      w.add_metric("a_b&c%", "score_seconds", 1.5);
    });
  }
  Table table(std::vector<std::string> metrics = {}) {
    return build_table(*store_, {*store_->find_run(run_)}, metrics);
  }
  TempDir dir_;
  std::unique_ptr<Store> store_;
  RunId run_ = 0;
};

TEST_F(TableTest, ColumnsPutThePaperMetricsFirst) {
  const auto t = table();
  EXPECT_EQ(t.metrics, (std::vector<std::string>{"key_error", "compression_ratio", "kept_fraction", "score_seconds"}));
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(t.rows[0].method, "a_b&c%");
  EXPECT_FALSE(t.rows[1].values[3].has_value());  // full has no timing
  EXPECT_THAT([&] { table({"attn_kl"}); }, ::testing::ThrowsMessage<Error>(HasSubstr("attn_kl")));
}

TEST_F(TableTest, BestRowsFollowTheMetricDirection) {
  const auto t = table();
  EXPECT_EQ(best_rows(t, 0), std::vector<std::size_t>{1});        // key_error: lowest (full, 0)
  EXPECT_EQ(best_rows(t, 1), (std::vector<std::size_t>{0, 2}));   // ratio: highest, tied
  EXPECT_TRUE(best_rows(t, 2).empty());                           // kept_fraction: no direction
}

TEST_F(TableTest, LatexIsBooktabsWithBoldBestAndEscapes) {
  const auto text = render_table(table({"key_error", "compression_ratio", "kept_fraction"}), TableFormat::latex);
  const auto lines = lines_of(text);
  std::vector<std::string> body;
  bool in_table = false;
  for (const auto& l : lines) {
    if (l.starts_with("%")) continue;
    if (l.starts_with("\\begin{tabular}")) in_table = true;
    if (in_table) body.push_back(l);
  }
  ASSERT_EQ(body.size(), 9u) << text;
  EXPECT_EQ(body[0], "\\begin{tabular}{lrrr}");
  EXPECT_EQ(body[1], "\\toprule");
  EXPECT_EQ(body[2], "Method & key\\_error $\\downarrow$ & compression\\_ratio $\\uparrow$ & kept\\_fraction \\\\");
  EXPECT_EQ(body[3], "\\midrule");
  EXPECT_EQ(body[7], "\\bottomrule");
  EXPECT_EQ(body[8], "\\end{tabular}");

  const auto row_a = split(body[4].substr(0, body[4].size() - 3), " & ");
  const auto row_full = split(body[5].substr(0, body[5].size() - 3), " & ");
  const auto row_svd = split(body[6].substr(0, body[6].size() - 3), " & ");
  EXPECT_EQ(row_a[0], "\\texttt{a\\_b\\&c\\%}");
  EXPECT_EQ(row_a[1], "0.125");
  EXPECT_EQ(row_a[2], "\\textbf{4}");
  EXPECT_EQ(row_a[3], "0.5");
  EXPECT_EQ(row_full[1], "\\textbf{0}");
  EXPECT_EQ(row_full[2], "1");
  EXPECT_EQ(row_full[3], "1");  // no direction: never bold
  EXPECT_EQ(row_svd[0], "\\texttt{svd:rk=4,rv=6}");
  EXPECT_EQ(row_svd[1], "0.25");
  EXPECT_EQ(row_svd[2], "\\textbf{4}");
  EXPECT_THAT(text, Not(HasSubstr("a_b")));
}

TEST_F(TableTest, MarkdownBoldsTheBestAndEscapes) {
  const auto lines = lines_of(render_table(table({"key_error", "compression_ratio"}), TableFormat::markdown));
  ASSERT_GE(lines.size(), 5u);
  EXPECT_EQ(lines[0], "| Method | key\\_error ↓ | compression\\_ratio ↑ |");
  EXPECT_EQ(lines[1], "| --- | ---: | ---: |");
  EXPECT_EQ(lines[2], "| a\\_b&c% | 0.125 | **4** |");
  EXPECT_EQ(lines[3], "| full | **0** | 1 |");
  EXPECT_EQ(lines[4], "| svd:rk=4,rv=6 | 0.25 | **4** |");
}

TEST_F(TableTest, CsvAndJsonCarryFullPrecision) {
  RunInfo info;
  const RunId other = store_->write_run(info, [](RunWriter& w) { w.add_metric("svd:rk=4,rv=6", "key_error", 0.1 / 3); });
  const auto t = build_table(*store_, {*store_->find_run(run_), *store_->find_run(other)}, {"key_error"});
  const auto csv = lines_of(render_table(t, TableFormat::csv));
  ASSERT_EQ(csv.size(), 5u);
  EXPECT_EQ(csv[0], "run,uuid,method,key_error");
  EXPECT_THAT(csv[3], HasSubstr(",\"svd:rk=4,rv=6\",0.25"));
  EXPECT_THAT(csv[4], HasSubstr(",0.03333333333333333"));
  const auto j = nlohmann::json::parse(render_table(t, TableFormat::json));
  EXPECT_EQ(j["rows"].size(), 4u);
  EXPECT_EQ(j["better"]["key_error"], "lower");
  EXPECT_EQ(j["rows"][3]["values"]["key_error"].get<double>(), 0.1 / 3);
  // Two runs: LaTeX and Markdown gain a run column.
  EXPECT_THAT(render_table(t, TableFormat::latex), HasSubstr("\\begin{tabular}{llr}"));
  EXPECT_THAT(render_table(t, TableFormat::markdown), HasSubstr("| Run | Method | key\\_error ↓ |"));
}

TEST(Escape, LatexAndMarkdownSpecials) {
  EXPECT_EQ(latex_escape("a_b & 50% $x$ #1 {y} ~ ^ \\"),
            "a\\_b \\& 50\\% \\$x\\$ \\#1 \\{y\\} \\textasciitilde{} \\textasciicircum{} \\textbackslash{}");
  EXPECT_EQ(latex_escape("x<y|z>"), "x\\textless{}y\\textbar{}z\\textgreater{}");
  EXPECT_EQ(markdown_escape("a|b*c_d`e\\"), "a\\|b\\*c\\_d\\`e\\\\");
  EXPECT_EQ(parse_table_format("md"), TableFormat::markdown);
  EXPECT_THROW(parse_table_format("xlsx"), Error);
}

}  // namespace
}  // namespace kvlab::results
