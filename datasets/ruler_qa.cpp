// Question answering over many documents (RULER's qa.py): qa_1 from SQuAD, qa_2 from HotpotQA.
// Sample i asks question i of the file; the haystack is `units` documents: the gold ones, then
// same-article paragraphs, then random others (the whole corpus cycled once units ≥ its size),
// shuffled and written "Document {i}:\n{doc}", joined by "\n\n".
#include <algorithm>
#include <unordered_set>

#include "core/error.h"
#include "datasets/rng.h"
#include "datasets/ruler_families.h"

namespace kvlab::datasets::detail {

namespace {

class Qa final : public Family {
 public:
  explicit Qa(const FamilyInput& in) : in_(in), spec_(*in.spec) {
    const QaFormat want = spec_.task == RulerTask::qa_1 ? QaFormat::squad : QaFormat::hotpotqa;
    const char* what = want == QaFormat::squad ? "a SQuAD JSON file (RULER: dev-v2.0.json)"
                                               : "a HotpotQA JSON file (RULER: hotpot_dev_distractor_v1.json)";
    if (!in_.resources.qa) fail("ruler:{} needs {}", spec_.name, what);
    if (in_.resources.qa->format() != want) fail("ruler:{} needs {}; {} was read in the other format", spec_.name, what, in_.resources.qa->source());
  }

  const QaItem& item(std::int64_t index) const {
    const auto& items = in_.resources.qa->items();
    if (index < 0 || index >= static_cast<std::int64_t>(items.size())) {
      fail("ruler:{}: sample {} asks question {} but {} has {} usable questions", spec_.name, index, index,
           in_.resources.qa->source(), items.size());
    }
    return items[static_cast<std::size_t>(index)];
  }

  std::int64_t min_units(std::int64_t index) const override { return static_cast<std::int64_t>(item(index).gold.size()); }
  std::int64_t probe_units() const override { return 10; }

  Built build(std::int64_t index, std::int64_t units) const override {
    const QaItem& q = item(index);
    const auto& docs = in_.resources.qa->documents();
    const auto n_docs = static_cast<std::int64_t>(docs.size());
    const auto n_gold = static_cast<std::int64_t>(q.gold.size());
    const auto n_more = static_cast<std::int64_t>(q.more.size());
    Rng rng({in_.stream, name_hash("qa"), static_cast<std::uint64_t>(index)});
    std::vector<std::int64_t> chosen;
    if (units < n_docs) {
      chosen = q.gold;
      if (units - n_gold > n_more) {
        chosen.insert(chosen.end(), q.more.begin(), q.more.end());
        std::unordered_set<std::int64_t> taken(chosen.begin(), chosen.end());
        std::vector<std::int64_t> others;
        for (std::int64_t d = 0; d < n_docs; ++d) {
          if (!taken.count(d)) others.push_back(d);
        }
        for (const auto i : rng.sample(static_cast<std::int64_t>(others.size()), units - n_gold - n_more)) {
          chosen.push_back(others[static_cast<std::size_t>(i)]);
        }
      } else {
        for (const auto i : rng.sample(n_more, units - n_gold)) chosen.push_back(q.more[static_cast<std::size_t>(i)]);
      }
    } else {
      for (std::int64_t k = 0; k < units; ++k) chosen.push_back(k % n_docs);  // DOCS repeated, sliced
    }
    rng.shuffle(chosen);

    const std::unordered_set<std::int64_t> gold(q.gold.begin(), q.gold.end());
    std::vector<Piece> pieces;
    pieces.reserve(chosen.size());
    for (std::size_t i = 0; i < chosen.size(); ++i) {
      pieces.push_back({fmt::format("Document {}:\n{}", i + 1, docs[static_cast<std::size_t>(chosen[i])]),
                        gold.count(chosen[i]) > 0});
    }
    std::vector<NeedlePlacement> placed;
    const std::string haystack = join_pieces(pieces, "\n\n", placed);
    const RulerTemplate t = ruler_template(RulerFamily::qa);
    Built b = assemble("", t.task_template, t.answer_prefix, haystack, {{"query", q.question}}, std::move(placed));
    b.answers = q.answers;
    return b;
  }

 private:
  FamilyInput in_;
  const RulerTaskSpec& spec_;
};

}  // namespace

std::unique_ptr<Family> make_qa(const FamilyInput& in) { return std::make_unique<Qa>(in); }

}  // namespace kvlab::datasets::detail
