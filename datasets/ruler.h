// RULER-style task generators (NVIDIA/RULER's 13 synthetic tasks, re-implemented in C++, seeded).
//
// What follows RULER (see docs/tasks.md §1): templates and answer prefixes verbatim,
// the niah singular rewrite, needle sentences, key/value types (7-digit numbers, "{word}-{word}",
// version-4 UUIDs), the noise haystack, essay insertion at RULER's 40 depths, vt chains with the
// one-shot example, cwe's repeat counts and one-shot example (both switch below 4096 tokens), fwe's
// zeta(α) counts and vocabulary size, qa's document selection and "Document {i}:" format, and the
// sizing contract: tokens(prompt) + tokens_to_generate (+ the chat template's tokens) ≤
// max_seq_length, counted with the evaluated model's own tokenizer.
//
// Where kvlab differs, on purpose (all of it recorded in each sample or fixed by the seed):
//   - own RNG (datasets/rng.h), one stream per (seed, task, sample): sample i is a pure function of
//     (task, options, resources, tokenizer, i); RULER's Python/NumPy streams are not reproduced;
//   - RULER re-seeds some shuffles with the same seed on every sample (needle order, cwe list, fwe
//     text, qa documents): kvlab uses the sample's stream;
//   - words come from a WordList (Debian's wamerican by default), not wonderwords;
//   - sentences are split by the rule in haystack.h, not NLTK punkt; empty sentence chunks are
//     skipped when needles are joined in (RULER leaves a double space);
//   - each sample is sized by its own search (ruler_sizing.h), not one probe search plus back-off;
//   - distractor keys (niah_multikey_2/3) never equal a real key, values within a sample are
//     distinct, the vt one-shot example's names differ from the sample's;
//   - vt's one-shot example always uses the noise haystack; its statement positions are drawn once
//     per (seed, task), names and value per sample (RULER: generated once, names replaced per sample).
//
// The split: context = everything up to the question (instructions, one-shot examples, haystack and
// the newline(s) after it); question = the template's text after that; answer_prefix = the task's
// answer prefix (goes inside the assistant turn). context + question + answer_prefix is exactly the
// text RULER formats with its "base" model template.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "datasets/haystack.h"
#include "datasets/qa_corpus.h"
#include "datasets/ruler_tasks.h"
#include "datasets/task_sample.h"
#include "datasets/word_lists.h"

namespace kvlab::datasets {

struct RulerOptions {
  // Tokens: tokens(context + question + answer_prefix) + tokens_to_generate + reserved_tokens must
  // not exceed this (RULER's max_seq_length). Samples land as close below it as the haystack's
  // granularity allows (one noise line, essay word, distractor needle, listed word or document).
  std::int64_t max_seq_length = 4096;
  std::int64_t reserved_tokens = 0;  // tokens the chat template adds (RULER counts its model template)
  int tokens_to_generate = 0;        // 0: the task's RULER default (niah 128, vt 30, cwe 120, fwe 50, qa 32)
  std::uint64_t seed = 42;           // RULER's --random_seed default
  // niah only: put every needle at this depth, in percent of the haystack [0, 100] (several needles
  // go together); unset: RULER's random depths (sentence depths for essays, random lines otherwise).
  std::optional<double> depth_percent;
  // niah_single_*/multikey_1/multivalue/multiquery and vt: use this haystack (noise or essay) instead
  // of the task's own; kvlab::Error for other tasks or kinds.
  std::optional<HaystackKind> haystack;
};

// What the tasks read. Only the ones a task uses must be set (RulerGenerator names what is missing).
struct RulerResources {
  std::shared_ptr<const WordList> words;       // niah "words" keys/values, cwe
  std::shared_ptr<const EssayHaystack> essay;  // essay haystacks
  std::shared_ptr<const QaCorpus> qa;          // qa_1: SQuAD format, qa_2: HotpotQA format
};

struct RulerResourcePaths {
  std::filesystem::path words = kDefaultWordFile;
  std::filesystem::path essay;  // any text file (RULER: Paul Graham's essays)
  std::filesystem::path qa;     // qa_1: SQuAD v2.0 dev JSON; qa_2: HotpotQA dev distractor JSON
};

// Loads what `task` needs under `options` (and nothing else); kvlab::Error naming a missing path.
RulerResources load_ruler_resources(RulerTask task, const RulerOptions& options, const RulerResourcePaths& paths);

class RulerGenerator {
 public:
  // Validates options and resources (kvlab::Error naming the task and what is missing) and, for vt,
  // sizes the one-shot example (500 tokens, as RULER).
  RulerGenerator(RulerTask task, RulerOptions options, RulerResources resources, CountTokens count_tokens);
  ~RulerGenerator();
  RulerGenerator(RulerGenerator&&) noexcept;
  RulerGenerator& operator=(RulerGenerator&&) noexcept;

  // Sample `index` (≥ 0): a pure function of the constructor's arguments and index. kvlab::Error when
  // the task cannot fit max_seq_length even with the smallest haystack, when the word list is too
  // small to fill it (cwe), or when a qa file has no question number `index`.
  TaskSample sample(std::int64_t index) const;
  std::vector<TaskSample> samples(std::int64_t count) const;  // samples 0 .. count−1

  const RulerTaskSpec& spec() const;
  const RulerOptions& options() const;
  HaystackKind haystack() const;           // the haystack in use
  std::int64_t tokens_to_generate() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvlab::datasets
