#include "harness/tokenizer/sentencepiece_tokenizer.h"

#include "core/error.h"
#include "core/read_file.h"
#include "harness/tokenizer/token_offsets.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 '▁', sentencepiece's space

std::unique_ptr<spm::Processor> load_processor(std::string_view serialized, const std::string& source) {
  std::string error;
  auto p = spm::library().load(serialized, &error);
  if (!p) fail("{}: not a sentencepiece model: {}", source, error);
  return p;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(std::string_view serialized, std::string source)
    : source_(std::move(source)),
      flags_(read_sp_model_flags(serialized, source_)),
      start_(load_processor(serialized, source_)),
      continued_(load_processor(sp_model_without_dummy_prefix(serialized, source_), source_)) {
  std::vector<AddedToken> specials;
  for (int id = 0; id < start_->piece_size(); ++id) {
    if (!start_->is_control(id) && !start_->is_unknown(id)) continue;
    const std::string piece = start_->id_to_piece(id);
    if (!piece.empty()) specials.push_back({.id = id, .content = piece, .special = true});
  }
  specials_ = AddedTokenMatcher(std::move(specials));
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<std::int32_t> SentencePieceTokenizer::encode_impl(std::string_view text, bool add_special,
                                                              bool at_text_start) const {
  if (const auto bad = first_invalid_utf8(text)) fail("tokenizer input is not valid UTF-8 (byte {})", *bad);
  std::vector<std::int32_t> ids;
  if (add_special && start_->bos_id() >= 0) ids.push_back(start_->bos_id());
  std::vector<int> piece_ids;
  for (const TextSegment& seg : specials_.split(text)) {
    if (seg.token >= 0) {
      ids.push_back(seg.token);
      continue;
    }
    const auto& processor = at_text_start && seg.begin == 0 ? *start_ : *continued_;
    const auto error = processor.encode(text.substr(seg.begin, seg.end - seg.begin), &piece_ids);
    if (!error.empty()) fail("{}: sentencepiece encode failed: {}", source_, error);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  }
  return ids;
}

std::vector<std::int32_t> SentencePieceTokenizer::encode(std::string_view text, bool add_special) const {
  return encode_impl(text, add_special, /*at_text_start=*/true);
}

std::vector<std::int32_t> SentencePieceTokenizer::encode_continuation(std::string_view text) const {
  return encode_impl(text, /*add_special=*/false, /*at_text_start=*/false);
}

void SentencePieceTokenizer::check_id(std::int32_t id) const {
  if (id < 0 || id >= start_->piece_size()) {
    fail("token id {} is outside the vocabulary [0, {}) of {}", id, start_->piece_size(), source_);
  }
}

std::string SentencePieceTokenizer::decode(std::span<const std::int32_t> ids, bool skip_special) const {
  // sentencepiece drops the leading "▁" of what it decodes (its dummy prefix). That is right
  // only for the first text emitted; a later run gets its space back.
  const bool strips = flags_.add_dummy_prefix || flags_.remove_extra_whitespaces;
  std::string out;
  std::vector<int> run;
  const auto flush = [&] {
    if (run.empty()) return;
    std::string text;
    const auto error = start_->decode(run, &text);
    if (!error.empty()) fail("{}: sentencepiece decode failed: {}", source_, error);
    if (!out.empty() && strips && !start_->is_byte(run.front()) && start_->id_to_piece(run.front()).starts_with(kSpace)) {
      out += ' ';
    }
    out += text;
    run.clear();
  };
  for (const std::int32_t id : ids) {
    check_id(id);
    if (is_special(id)) {
      flush();
      if (!skip_special) out += start_->id_to_piece(id);
    } else {
      run.push_back(id);
    }
  }
  flush();
  return utf8_lossy(out);
}

int SentencePieceTokenizer::vocab_size() const { return start_->piece_size(); }

std::optional<std::int32_t> SentencePieceTokenizer::token_id(std::string_view token) const {
  const int id = start_->piece_to_id(token);
  if (id < 0 || (start_->is_unknown(id) && start_->id_to_piece(id) != token)) return std::nullopt;
  return id;
}

std::string SentencePieceTokenizer::token_bytes(std::int32_t id) const {
  check_id(id);
  const std::string piece = start_->id_to_piece(id);
  if (is_special(id)) return piece;  // decode writes a control or unknown piece as its text
  return metaspace_piece_bytes(piece, kSpace, start_->is_byte(id));
}

std::string SentencePieceTokenizer::token(std::int32_t id) const {
  check_id(id);
  return start_->id_to_piece(id);
}

bool SentencePieceTokenizer::is_special(std::int32_t id) const {
  return id >= 0 && id < start_->piece_size() && (start_->is_control(id) || start_->is_unknown(id));
}

std::optional<std::int32_t> SentencePieceTokenizer::bos_id() const {
  if (start_->bos_id() < 0) return std::nullopt;
  return start_->bos_id();
}

std::string SentencePieceTokenizer::describe() const {
  static constexpr const char* kTypes[] = {"?", "unigram", "BPE", "word", "char"};
  const int t = flags_.model_type >= 1 && flags_.model_type <= 4 ? flags_.model_type : 0;
  std::string out = fmt::format("{} sentencepiece {}, {} pieces, {} special", std::filesystem::path(source_).filename().string(),
                                kTypes[t], vocab_size(), specials_.tokens().size());
  if (flags_.byte_fallback) out += ", byte_fallback";
  if (const auto bos = bos_id()) out += fmt::format(", BOS {}", token(*bos));
  return out;
}

std::unique_ptr<SentencePieceTokenizer> load_sentencepiece(const std::filesystem::path& file) {
  return std::make_unique<SentencePieceTokenizer>(core::read_file(file, "sentencepiece model"), file.string());
}

}  // namespace kvlab::harness
