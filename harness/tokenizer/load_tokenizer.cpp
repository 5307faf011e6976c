
#include "core/error.h"
#include "core/read_file.h"
#include "harness/tokenizer/sentencepiece_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"
#include "harness/tokenizer/tokenizer_json.h"

namespace kvlab::harness {

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir) {
  const auto json_file = model_dir / "tokenizer.json";
  const auto sp_file = model_dir / "tokenizer.model";
  const bool has_json = std::filesystem::exists(json_file);
  const bool has_sp = std::filesystem::exists(sp_file);
  if (has_json && has_sp) {
    // Mistral repos ship both; their tokenizer.json is a sentencepiece conversion (Metaspace,
    // byte_fallback), not byte-level, and tokenizer.model is the reference (docs/tokenizers.md §9).
    const std::string text = core::read_file(json_file, "tokenizer file");
    if (!tokenizer_json_is_byte_level(text)) return load_sentencepiece(sp_file);
    return parse_tokenizer_json(text, json_file.string());
  }
  // Alone, a SentencePiece-style tokenizer.json (Metaspace / Prepend, byte_fallback) is read by
  // kvlab's own pipeline (spm_json_tokenizer.h, docs/tokenizers.md §11).
  if (has_json) return parse_any_tokenizer_json(core::read_file(json_file, "tokenizer file"), json_file.string());
  if (has_sp) return load_sentencepiece(sp_file);
  fail("{}: no tokenizer.json or tokenizer.model in this folder", model_dir.string());
}

}  // namespace kvlab::harness
