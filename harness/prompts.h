// Prompts for `kvlab dump`: where they come from (a JSONL file, or one text file) and how
// they become token ids with an exact context/question boundary.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "harness/tokenizer/chat_template.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {

struct Prompt {
  std::string id{};        // HDF5-safe sample id (letters, digits, '_', '-', '.')
  std::string context{};   // the long part whose cache gets compressed
  std::string question{};  // asked after the context (may be empty)
  std::string system{};    // system prompt for templates that take one ("" = the template's default)
  std::string answer_prefix{};         // text the answer starts with, after the template's generation
                                     // prompt (RULER: "The special magic number is"); may be empty
  std::vector<std::string> answers{};  // references for task metrics (empty: fidelity only)
};

// One JSON object per line: {"context": ..., "question": ..., "id": ..., "system": ...,
// "answer_prefix": ..., "answers": [...] (or "answer": "...")}; "prompt" is accepted for
// "context"; only the context is required. Blank lines are skipped. Ids default to
// s0, s1, ... by line order; duplicates and unsafe ids are errors naming the line.
std::vector<Prompt> load_prompts_jsonl(const std::filesystem::path& path);
// The whole file as one context (id "s0"), with `question` after it.
Prompt prompt_from_text(const std::filesystem::path& path, std::string question = {});

enum class Truncation { end, middle };  // drop the context's last tokens, or its middle (LongBench's rule)
Truncation parse_truncation(std::string_view name);  // "end" | "middle"

// How the rendered prompt becomes tokens (docs/tokenizers.md §12). apart: the context part and the
// question part encoded separately, as kvpress does (its pipeline tokenizes context and question
// apart), so the boundary is exact but a word split across it is two tokens; whole: the prompt
// encoded at once, the boundary found by byte offsets (encode_chat_whole).
enum class Tokenization { apart, whole };
Tokenization parse_tokenization(std::string_view name);  // "apart" | "whole"

struct TokenizedPrompt {
  std::vector<std::int32_t> tokens;  // [T] the whole prompt: template head, context, question, template tail,
                                     // answer prefix
  std::int64_t context_end = 0;      // tokens [0, context_end) are the context part
  std::int64_t dropped = 0;          // context tokens removed to fit max_tokens
  std::string rendered;              // the prompt as the template rendered it (before the answer prefix)
  std::size_t context_bytes = 0;     // rendered[0, context_bytes) is the context part
};

// Renders `prompt` with `chat_template` and tokenizes it per `tokenization` (encode_chat or
// encode_chat_whole: exactly one BOS). When the result exceeds max_tokens (> 0), context tokens are
// dropped per `truncation`; the question part is never cut (an error when it alone does not fit).
TokenizedPrompt tokenize_prompt(const Tokenizer& tokenizer, const ChatFormat& chat_template, const Prompt& prompt,
                                std::int64_t max_tokens, Truncation truncation,
                                Tokenization tokenization = Tokenization::apart);

}  // namespace kvlab::harness
