
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/parse_json.h"
#include "core/read_file.h"
#include "harness/tokenizer/clean_up_decoding.h"
#include "harness/tokenizer/sentencepiece_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"
#include "harness/tokenizer/tokenizer_json.h"

namespace kvlab::harness {

namespace {

std::unique_ptr<Tokenizer> load_tokenizer_files(const std::filesystem::path& model_dir) {
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

// tokenizer_config.json's clean_up_tokenization_spaces; absent (or no config) is false, the
// default of transformers' PreTrainedTokenizerBase.__init__ (tokenization_utils_base.py).
bool asks_for_clean_up(const std::filesystem::path& model_dir) {
  const auto config_file = model_dir / "tokenizer_config.json";
  if (!std::filesystem::exists(config_file)) return false;
  const auto config = core::parse_json(core::read_file(config_file, "tokenizer file"), config_file.string());
  if (!config.is_object()) fail("{}: expected a JSON object", config_file.string());
  const auto it = config.find("clean_up_tokenization_spaces");
  if (it == config.end() || it->is_null()) return false;
  if (!it->is_boolean())
    fail("{}: clean_up_tokenization_spaces must be true or false, got {}", config_file.string(), it->dump());
  return it->get<bool>();
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir) {
  auto tokenizer = load_tokenizer_files(model_dir);
  return asks_for_clean_up(model_dir) ? with_clean_up_decoding(std::move(tokenizer)) : std::move(tokenizer);
}

}  // namespace kvlab::harness
