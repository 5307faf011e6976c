// Template filling, context/question splitting and needle insertion shared by the RULER families.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "datasets/py_str.h"
#include "datasets/ruler_families.h"

namespace kvlab::datasets::detail {

std::string fill(std::string_view text, const Fills& fills) {
  std::string out(text);
  for (const auto& [name, value] : fills) {
    std::string key;  // built by appends: GCC 12 warns falsely (-Wrestrict) on "{" + std::string(name)
    key.reserve(name.size() + 2);
    key.append("{").append(name).append("}");
    out = py::replace_all(out, key, value);
  }
  return out;
}

Built assemble(std::string_view prefix, std::string_view task_template, std::string_view answer_prefix,
               std::string_view haystack, const Fills& fills, std::vector<NeedlePlacement> needles) {
  const std::size_t at = task_template.find("{context}");
  if (at == std::string_view::npos) fail("RULER template without {{context}}: {}", task_template);
  const std::string head = fill(task_template.substr(0, at), fills);
  const std::string rest = fill(task_template.substr(at + 9), fills);
  std::size_t q = 0;  // the whitespace between the haystack and the question stays with the context
  while (q < rest.size() && (rest[q] == '\n' || rest[q] == ' ')) ++q;

  Built b;
  b.context.reserve(prefix.size() + head.size() + haystack.size() + q);
  b.context.append(prefix);
  b.context.append(head);
  b.haystack_begin = static_cast<std::int64_t>(b.context.size());
  b.context.append(haystack);
  b.haystack_end = static_cast<std::int64_t>(b.context.size());
  b.context.append(rest.substr(0, q));
  b.question = rest.substr(q);
  b.answer_prefix = fill(answer_prefix, fills);
  const double size = std::max<double>(1.0, static_cast<double>(haystack.size()));
  for (auto& n : needles) {
    n.depth = static_cast<double>(n.offset) / size;
    n.offset += b.haystack_begin;
  }
  b.needles = std::move(needles);
  return b;
}

std::string join_pieces(const std::vector<Piece>& pieces, std::string_view sep, std::vector<NeedlePlacement>& needles) {
  std::size_t total = 0;
  for (const auto& p : pieces) total += p.text.size() + sep.size();
  std::string out;
  out.reserve(total);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (i > 0) out.append(sep);
    if (pieces[i].needle) needles.push_back({pieces[i].text, static_cast<std::int64_t>(out.size()), 0});
    out.append(pieces[i].text);
  }
  return out;
}

const std::vector<int>& ruler_depths() {
  static const std::vector<int> depths = [] {
    std::vector<int> d;
    for (int i = 0; i < 40; ++i) d.push_back(static_cast<int>(std::nearbyint(100.0 * i / 39.0)));  // half-to-even
    return d;
  }();
  return depths;
}

std::string insert_at_sentence_depths(const std::vector<std::string>& sentences, const std::vector<std::string>& needles,
                                      std::vector<double> depths_percent, std::vector<NeedlePlacement>& placed) {
  const auto n_sents = static_cast<std::int64_t>(sentences.size());
  std::vector<std::int64_t> positions;
  for (const double d : depths_percent) {
    positions.push_back(std::clamp<std::int64_t>(static_cast<std::int64_t>(static_cast<double>(n_sents) * (d / 100.0)),
                                                 0, n_sents));
  }
  std::sort(positions.begin(), positions.end());
  positions.insert(positions.begin(), 0);
  positions.push_back(n_sents);
  std::vector<Piece> pieces;
  for (std::size_t i = 1; i < positions.size(); ++i) {
    std::string chunk;
    for (std::int64_t s = positions[i - 1]; s < positions[i]; ++s) {
      if (!chunk.empty()) chunk += ' ';
      chunk += sentences[static_cast<std::size_t>(s)];
    }
    if (!chunk.empty()) pieces.push_back({std::move(chunk), false});
    if (i - 1 < needles.size()) pieces.push_back({needles[i - 1], true});
  }
  return join_pieces(pieces, " ", placed);
}

}  // namespace kvlab::datasets::detail
