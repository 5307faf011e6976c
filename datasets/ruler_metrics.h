// RULER's scorers (NVIDIA/RULER scripts/eval/evaluate.py and scripts/eval/synthetic/constants.py)
// and xKV's ShadowKV-derived variants (abdelfattah-lab/xKV evaluate/data/metrics.py), one sample at
// a time. `prediction` is the generated continuation after input + answer prefix, as decoded; every
// function applies its own suite's post-processing first. Values are in [0, 1]; a task's score is
// task_score() (task_metrics.h) of them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvlab::datasets {

// RULER: strip; every character in [\x00-\x1f] → "\n"; strip again. (kvpress deletes those
// characters instead; substring scores can differ only when a reference spans one.)
std::string ruler_postprocess(std::string_view prediction);

// |{r : lower(r) ⊂ lower(pred)}| / |refs| (niah, vt, cwe, fwe). kvlab::Error when refs is empty.
double string_match_all(std::string_view prediction, const std::vector<std::string>& references);
// max_r [lower(r) ⊂ lower(pred)] (qa).
double string_match_part(std::string_view prediction, const std::vector<std::string>& references);

// ---- xKV's variants, named as such (not RULER's official scores) ----

// strip; remove "<|eot_id|>", "</s>", "</s", "</" (in that order); [\x00-\x1f] → "\n"; strip.
std::string xkv_postprocess(std::string_view prediction);
// niah_single_*, niah_multikey_*: after xkv_postprocess and SQuAD normalization of both sides, 1 if
// the prediction starts with the reference or the reference is one of its whitespace tokens.
double xkv_needle_score(std::string_view prediction, std::string_view reference);
// niah_multiquery, niah_multivalue: share of references among re.findall(r"\d+", normalize(pred)).
double xkv_multi_number(std::string_view prediction, const std::vector<std::string>& references);
// vt, fwe, cwe: share of lowercased references among re.findall(r"\b\w+\b", lower(pred)).
double xkv_multi_words(std::string_view prediction, const std::vector<std::string>& references);
// qa: 1 if some reference ⊂ prediction or the prediction ⊂ some reference (case-insensitive, after
// xkv_postprocess). An empty prediction is inside every reference, so it scores 1.
double xkv_string_match_part(std::string_view prediction, const std::vector<std::string>& references);

}  // namespace kvlab::datasets
