// One evaluation sample of any task suite (RULER-style generators, LongBench files), with the
// context, the question and the answer prefix kept apart so that a harness can compress the
// context alone (question-agnostic, as kvpress) or context + question (as SnapKV-style runs do).
//
// The prompt a model sees is context + question, then (inside the assistant turn, after the chat
// template's generation prompt) answer_prefix; only the continuation after answer_prefix is scored.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::datasets {

// Number of tokens `text` encodes to with the evaluated model's tokenizer (no BOS, no template).
// RULER sizes its inputs with the model's own tokenizer; tests pass a whitespace or byte counter.
using CountTokens = std::function<std::int64_t(std::string_view text)>;

// Where one inserted needle (niah sentence, vt statement, gold qa document) landed.
struct NeedlePlacement {
  std::string text;         // the inserted text, verbatim
  std::int64_t offset = 0;  // bytes from the start of TaskSample::context
  // Position in the haystack as a fraction in [0, 1]: (offset − haystack_begin) /
  // (haystack_end − haystack_begin), measured in bytes.
  double depth = 0;
};

struct TaskSample {
  std::string id;       // "<task>-<max_seq_length>-<index>" for generated samples (HDF5-safe); LongBench: its _id
  std::string task;     // "ruler:niah_single_1", "longbench:hotpotqa"
  std::string context;  // the long part whose KV cache gets compressed (instructions before it included)
  std::string question;       // everything after the context in the user turn
  std::string answer_prefix;  // the start of the answer, after the generation prompt; may be empty
  std::vector<std::string> answers;      // references
  std::vector<std::string> all_classes;  // LongBench classification labels (trec, lsht); else empty
  std::string metric;  // the suite's scorer for this task: "string_match_all", "qa_f1_score", ...
  std::int64_t max_new_tokens = 0;  // tokens to generate (RULER's tokens_to_generate, LongBench's maxlen)

  // Provenance and sizing.
  std::int64_t index = 0;           // sample number within the task
  std::uint64_t seed = 0;           // generator seed (0 for files)
  std::int64_t target_tokens = 0;   // RULER max_seq_length it was sized for (0: not sized)
  std::int64_t reserved_tokens = 0; // tokens set aside for the chat template when sizing
  std::int64_t tokens = 0;          // CountTokens(prompt_text()) at generation (0: not counted)
  double depth_percent = -1;        // requested needle depth in percent; −1: RULER's random depths
  std::int64_t haystack_units = 0;  // noise units / essay words / distractor needles / words / documents
  std::int64_t haystack_begin = 0;  // bytes: the haystack is context[haystack_begin, haystack_end)
  std::int64_t haystack_end = 0;
  std::vector<NeedlePlacement> needles;
  std::int64_t length = 0;  // LongBench's `length` field (words, or characters for zh)
  std::string language;     // LongBench's `language` ("en" | "zh"); "en" for generated tasks

  std::string prompt_text() const { return context + question + answer_prefix; }
};

// One line of JSON with every field (for prediction files and caches); from_json reverses it and
// names the missing or mistyped field.
std::string to_json(const TaskSample& sample);
TaskSample task_sample_from_json(std::string_view json);

}  // namespace kvlab::datasets
