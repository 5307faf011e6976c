#include "datasets/ruler_metrics.h"

#include <algorithm>

#include "core/error.h"
#include "datasets/longbench_metrics.h"
#include "datasets/py_str.h"

namespace kvlab::datasets {

namespace {

std::string controls_to_newlines(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) <= 0x1F) c = '\n';
  }
  return out;
}

void require_refs(const std::vector<std::string>& refs, std::string_view metric) {
  if (refs.empty()) fail("{}: no reference answers", metric);
}

}  // namespace

std::string ruler_postprocess(std::string_view prediction) {
  return py::strip(controls_to_newlines(py::strip(prediction)));
}

double string_match_all(std::string_view prediction, const std::vector<std::string>& references) {
  require_refs(references, "string_match_all");
  const std::string pred = py::lower(ruler_postprocess(prediction));
  double hits = 0;
  for (const auto& r : references) hits += py::contains(pred, py::lower(r)) ? 1.0 : 0.0;
  return hits / static_cast<double>(references.size());
}

double string_match_part(std::string_view prediction, const std::vector<std::string>& references) {
  require_refs(references, "string_match_part");
  const std::string pred = py::lower(ruler_postprocess(prediction));
  for (const auto& r : references) {
    if (py::contains(pred, py::lower(r))) return 1.0;
  }
  return 0.0;
}

std::string xkv_postprocess(std::string_view prediction) {
  std::string s = py::strip(prediction);
  for (const char* token : {"<|eot_id|>", "</s>", "</s", "</"}) s = py::replace_all(s, token, "");
  return py::strip(controls_to_newlines(s));
}

double xkv_needle_score(std::string_view prediction, std::string_view reference) {
  const std::string pred = normalize_answer(xkv_postprocess(prediction));
  const std::string gt = normalize_answer(reference);
  // prediction[:len(gt)] == gt[:len(gt)] (code points; equal to a byte prefix test on UTF-8).
  if (pred.starts_with(gt)) return 1.0;
  const auto tokens = py::split(pred);
  return std::find(tokens.begin(), tokens.end(), gt) != tokens.end() ? 1.0 : 0.0;
}

double xkv_multi_number(std::string_view prediction, const std::vector<std::string>& references) {
  require_refs(references, "xkv multi_number");
  const auto numbers = py::find_decimal_runs(normalize_answer(prediction));
  double hits = 0;
  for (const auto& r : references) hits += std::find(numbers.begin(), numbers.end(), r) != numbers.end() ? 1.0 : 0.0;
  return hits / static_cast<double>(references.size());
}

double xkv_multi_words(std::string_view prediction, const std::vector<std::string>& references) {
  require_refs(references, "xkv multi_words");
  const auto words = py::find_word_runs(py::lower(prediction));
  double hits = 0;
  for (const auto& r : references) {
    hits += std::find(words.begin(), words.end(), py::lower(r)) != words.end() ? 1.0 : 0.0;
  }
  return hits / static_cast<double>(references.size());
}

double xkv_string_match_part(std::string_view prediction, const std::vector<std::string>& references) {
  require_refs(references, "xkv string_match_part");
  const std::string pred = py::lower(xkv_postprocess(prediction));
  for (const auto& r : references) {
    const std::string ref = py::lower(r);
    if (py::contains(pred, ref) || py::contains(ref, pred)) return 1.0;
  }
  return 0.0;
}

}  // namespace kvlab::datasets
