#include "datasets/ruler_tasks.h"

#include <string>

#include "core/error.h"

namespace kvlab::datasets {

namespace {

RulerTaskSpec niah(RulerTask t, std::string_view name, HaystackKind h, NeedleType k, NeedleType v, int nk, int nv,
                   int nq) {
  RulerTaskSpec s{t, name, RulerFamily::niah, h, 128, "string_match_all"};
  s.key_type = k;
  s.value_type = v;
  s.num_keys = nk;
  s.num_values = nv;
  s.num_queries = nq;
  return s;
}

std::vector<RulerTaskSpec> make_specs() {
  using H = HaystackKind;
  using N = NeedleType;
  using T = RulerTask;
  return {
      niah(T::niah_single_1, "niah_single_1", H::noise, N::words, N::numbers, 1, 1, 1),
      niah(T::niah_single_2, "niah_single_2", H::essay, N::words, N::numbers, 1, 1, 1),
      niah(T::niah_single_3, "niah_single_3", H::essay, N::words, N::uuids, 1, 1, 1),
      niah(T::niah_multikey_1, "niah_multikey_1", H::essay, N::words, N::numbers, 4, 1, 1),
      niah(T::niah_multikey_2, "niah_multikey_2", H::needle, N::words, N::numbers, 1, 1, 1),
      niah(T::niah_multikey_3, "niah_multikey_3", H::needle, N::uuids, N::uuids, 1, 1, 1),
      niah(T::niah_multivalue, "niah_multivalue", H::essay, N::words, N::numbers, 1, 4, 1),
      niah(T::niah_multiquery, "niah_multiquery", H::essay, N::words, N::numbers, 1, 1, 4),
      RulerTaskSpec{T::vt, "vt", RulerFamily::variable_tracking, H::noise, 30, "string_match_all"},
      RulerTaskSpec{T::cwe, "cwe", RulerFamily::common_words, H::none, 120, "string_match_all"},
      RulerTaskSpec{T::fwe, "fwe", RulerFamily::freq_words, H::none, 50, "string_match_all"},
      RulerTaskSpec{T::qa_1, "qa_1", RulerFamily::qa, H::none, 32, "string_match_part"},
      RulerTaskSpec{T::qa_2, "qa_2", RulerFamily::qa, H::none, 32, "string_match_part"},
  };
}

}  // namespace

const std::vector<RulerTaskSpec>& ruler_task_specs() {
  static const std::vector<RulerTaskSpec> specs = make_specs();
  return specs;
}

const RulerTaskSpec& ruler_task_spec(RulerTask task) {
  for (const auto& s : ruler_task_specs()) {
    if (s.task == task) return s;
  }
  fail("unknown RULER task id {}", static_cast<int>(task));
}

RulerTask parse_ruler_task(std::string_view name) {
  std::string_view bare = name;
  if (bare.starts_with("ruler:")) bare.remove_prefix(6);
  std::string known;
  for (const auto& s : ruler_task_specs()) {
    if (s.name == bare) return s.task;
    known += known.empty() ? "" : ", ";
    known += s.name;
  }
  fail("unknown RULER task '{}'; known tasks: {}", name, known);
}

RulerTemplate ruler_template(RulerFamily family) {
  switch (family) {
    case RulerFamily::niah:
      return {"Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
              "I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic "
              "{type_needle_v} for {query} mentioned in the provided text?",
              " The special magic {type_needle_v} for {query} mentioned in the provided text are"};
    case RulerFamily::variable_tracking:
      return {"Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
              "Question: Find all variables that are assigned the value {query} in the text above.",
              " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
              "assigned the value {query}, they are: "};
    case RulerFamily::common_words:
      return {"Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
              "ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above "
              "list?",
              " Answer: The top 10 words that appear most often in the list are:"};
    case RulerFamily::freq_words:
      return {"Read the following coded text and track the frequency of each coded word. Find the three most "
              "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
              "the dots '....'. What are the three most frequently appeared words in the above coded text?",
              " Answer: According to the coded text above, the three most frequently appeared words are:"};
    case RulerFamily::qa:
      return {"Answer the question based on the given documents. Only give me the answer and do not output any "
              "other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the "
              "given documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}",
              " Answer:"};
  }
  fail("unknown RULER family {}", static_cast<int>(family));
}

}  // namespace kvlab::datasets
