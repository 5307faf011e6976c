#include "harness/tokenizer/spm_json_tokenizer.h"

#include <fmt/format.h>

#include "core/error.h"
#include "harness/tokenizer/nfc.h"
#include "harness/tokenizer/token_offsets.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {
namespace {

// Every non-overlapping occurrence of `pattern` (non-empty), left to right, replaced by `content`.
std::string replace_all(std::string_view text, std::string_view pattern, std::string_view content) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (true) {
    const std::size_t hit = text.find(pattern, i);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(i, hit - i));
    out.append(content);
    i = hit + pattern.size();
  }
  out.append(text.substr(i));
  return out;
}

std::vector<char32_t> code_points(std::string_view s) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) out.push_back(next_code_point(s, i));
  return out;
}

std::string from_code_points(const std::vector<char32_t>& cps, std::size_t begin, std::size_t end) {
  std::string out;
  for (std::size_t i = begin; i < end; ++i) append_utf8(out, cps[i]);
  return out;
}

// HF's ByteFallback decoder: a token "<0xXX>" (exactly 6 bytes) is a byte; a run of bytes that is
// valid UTF-8 becomes one string, otherwise one U+FFFD per byte (decoders/byte_fallback.rs).
std::optional<unsigned char> byte_token(std::string_view t) {
  if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return std::nullopt;
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<unsigned char>(hi * 16 + lo);
}

std::vector<std::string> byte_fallback(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string bytes;
  const auto flush = [&] {
    if (bytes.empty()) return;
    if (!first_invalid_utf8(bytes)) {
      out.push_back(bytes);
    } else {
      for (std::size_t i = 0; i < bytes.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
    }
    bytes.clear();
  };
  for (std::string& t : tokens) {
    if (const auto b = byte_token(t)) {
      bytes.push_back(static_cast<char>(*b));
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  return out;
}

}  // namespace

std::string spm_normalize(const std::vector<SpmNormalizerStep>& steps, std::string_view text) {
  std::string s(text);
  for (const SpmNormalizerStep& step : steps) {
    switch (step.kind) {
      case SpmNormalizerStep::Kind::prepend:
        if (!s.empty()) s = step.content + s;  // normalizers/prepend.rs: never on an empty string
        break;
      case SpmNormalizerStep::Kind::replace:
        s = replace_all(s, step.pattern, step.content);
        break;
      case SpmNormalizerStep::Kind::nfc:
        s = to_nfc(s);
        break;
      case SpmNormalizerStep::Kind::nfkc:
        s = to_nfkc(s);
        break;
    }
  }
  return s;
}

std::string spm_decode_tokens(const std::vector<SpmDecoderStep>& steps, std::vector<std::string> tokens) {
  for (const SpmDecoderStep& step : steps) {
    switch (step.kind) {
      case SpmDecoderStep::Kind::replace:
        for (std::string& t : tokens) t = replace_all(t, step.pattern, step.content);
        break;
      case SpmDecoderStep::Kind::byte_fallback:
        tokens = byte_fallback(std::move(tokens));
        break;
      case SpmDecoderStep::Kind::fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case SpmDecoderStep::Kind::strip: {
        // decoders/strip.rs: per token, up to `start` leading and `stop` trailing `content` chars.
        const char32_t c = code_points(step.content).front();
        for (std::string& t : tokens) {
          const std::vector<char32_t> cps = code_points(t);
          std::size_t begin = 0, end = cps.size();
          while (begin < std::min(step.start, cps.size()) && cps[begin] == c) ++begin;
          for (std::size_t i = 0; i < step.stop && end > begin && cps[end - 1] == c; ++i) --end;
          t = from_code_points(cps, begin, end);
        }
        break;
      }
      case SpmDecoderStep::Kind::metaspace: {
        // pre_tokenizers/metaspace.rs (Decoder): the replacement becomes a space, and in the
        // first token it is removed unless prepend_scheme is never.
        const char32_t r = code_points(step.metaspace.replacement).front();
        for (std::size_t i = 0; i < tokens.size(); ++i) {
          std::string out;
          for (const char32_t cp : code_points(tokens[i])) {
            if (cp != r) {
              append_utf8(out, cp);
            } else if (!(i == 0 && step.metaspace.prepend_scheme != PrependScheme::never)) {
              out += ' ';
            }
          }
          tokens[i] = std::move(out);
        }
        break;
      }
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

SpmJsonTokenizer::SpmJsonTokenizer(SpmJsonTokenizerParts parts) : p_(std::move(parts)) {
  std::vector<AddedToken> raw, normalized;
  std::int32_t max_id = p_.model->max_id();
  for (const AddedToken& t : p_.added_tokens) {
    if (t.normalized) {
      // Matched against the normalized text as its own normalized form (added_vocabulary.rs).
      AddedToken n = t;
      n.content = spm_normalize(p_.normalizer, t.content);
      normalized.push_back(std::move(n));
    } else {
      raw.push_back(t);
    }
  }
  for (const std::int32_t id : p_.prefix) max_id = std::max(max_id, id);
  for (const std::int32_t id : p_.suffix) max_id = std::max(max_id, id);
  added_ = AddedTokenIndex(p_.added_tokens, max_id);
  raw_matcher_ = AddedTokenMatcher(std::move(raw));
  normalized_matcher_ = AddedTokenMatcher(std::move(normalized));
  for (const SpmNormalizerStep& step : p_.normalizer) {
    if (step.kind != SpmNormalizerStep::Kind::prepend) no_prepend_.push_back(step);
  }
}

std::vector<std::string> SpmJsonTokenizer::pre_tokenize(std::string_view normalized, bool at_start) const {
  std::vector<std::string> words;
  if (normalized.empty()) return words;
  std::vector<std::string> pieces = p_.splits.split(normalized);  // no Split steps: the whole text
  if (!p_.metaspace) return pieces;
  const MetaspaceConfig& m = *p_.metaspace;
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    std::string s = replace_all(pieces[k], " ", m.replacement);
    // pre_tokenizers/metaspace.rs: prepend unless the piece already starts with the replacement;
    // "first" only for the piece that starts at offset 0 of the original input.
    const bool first = at_start && k == 0;
    const bool prepend = !s.starts_with(m.replacement) &&
                         (m.prepend_scheme == PrependScheme::always || (m.prepend_scheme == PrependScheme::first && first));
    if (prepend) s = m.replacement + s;
    if (!m.split) {
      words.push_back(std::move(s));
      continue;
    }
    // Split on the replacement, MergedWithNext: every replacement starts a new word.
    std::size_t begin = 0;
    for (std::size_t hit = s.find(m.replacement, 1); hit != std::string::npos; hit = s.find(m.replacement, hit + 1)) {
      if (hit > begin) words.push_back(s.substr(begin, hit - begin));
      begin = hit;
    }
    words.push_back(s.substr(begin));
  }
  return words;
}

void SpmJsonTokenizer::encode_plain(std::string_view normalized, bool at_start, std::vector<std::int32_t>& ids) const {
  for (const TextSegment& seg : normalized_matcher_.split(normalized)) {
    if (seg.token >= 0) {
      ids.push_back(seg.token);
      continue;
    }
    for (const std::string& word : pre_tokenize(normalized.substr(seg.begin, seg.end - seg.begin), at_start && seg.begin == 0)) {
      p_.model->encode_word(word, ids);
    }
  }
}

std::vector<std::int32_t> SpmJsonTokenizer::encode_impl(std::string_view text, bool add_special, bool at_start) const {
  if (const auto bad = first_invalid_utf8(text)) fail("tokenizer input is not valid UTF-8 (byte {})", *bad);
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3 + p_.prefix.size() + p_.suffix.size() + 1);
  if (add_special) ids.insert(ids.end(), p_.prefix.begin(), p_.prefix.end());
  for (const TextSegment& seg : raw_matcher_.split(text)) {
    if (seg.token >= 0) {
      ids.push_back(seg.token);
      continue;
    }
    // Each segment is normalized on its own: with a Prepend normalizer every segment, also the
    // one after a literal "<s>", starts with "▁" (the legacy rule, docs/tokenizers.md §11). The
    // start of a continuation is the middle of a text: no Prepend there.
    const std::string_view raw = text.substr(seg.begin, seg.end - seg.begin);
    const bool continued = !at_start && seg.begin == 0;
    const std::string normalized = spm_normalize(continued ? no_prepend_ : p_.normalizer, raw);
    encode_plain(normalized, at_start && seg.begin == 0, ids);
  }
  if (add_special) ids.insert(ids.end(), p_.suffix.begin(), p_.suffix.end());
  return ids;
}

std::vector<std::int32_t> SpmJsonTokenizer::encode(std::string_view text, bool add_special) const {
  return encode_impl(text, add_special, /*at_start=*/true);
}

std::vector<std::int32_t> SpmJsonTokenizer::encode_continuation(std::string_view text) const {
  return encode_impl(text, /*add_special=*/false, /*at_start=*/false);
}

std::string SpmJsonTokenizer::decode(std::span<const std::int32_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const std::int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) fail("decode: token id {} is outside the vocabulary [0, {})", id, vocab_size());
    if (const AddedToken* t = added_.by_id(id)) {
      if (!(skip_special && t->special)) tokens.push_back(t->content);
      continue;
    }
    if (const std::string* tok = p_.model->token(id)) tokens.push_back(*tok);
  }
  if (!p_.has_decoder) {
    std::string out;
    for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return utf8_lossy(out);
  }
  return utf8_lossy(spm_decode_tokens(p_.decoder, std::move(tokens)));
}

std::optional<std::int32_t> SpmJsonTokenizer::token_id(std::string_view token) const {
  if (const auto id = added_.by_content(token)) return id;
  return p_.model->id(token);
}

std::string SpmJsonTokenizer::token(std::int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("token id {} is outside the vocabulary [0, {})", id, vocab_size());
  if (const AddedToken* t = added_.by_id(id)) return t->content;
  const std::string* tok = p_.model->token(id);
  return tok ? *tok : std::string();
}

std::string SpmJsonTokenizer::token_bytes(std::int32_t id) const {
  const std::string tok = token(id);  // checks the range; an added token's content
  if (added_.by_id(id)) return tok;
  return metaspace_piece_bytes(tok, p_.metaspace ? p_.metaspace->replacement : std::string(kMetaspaceMarker),
                               p_.model->byte_fallback());
}

bool SpmJsonTokenizer::is_special(std::int32_t id) const {
  const AddedToken* t = added_.by_id(id);
  return t && t->special;
}

std::optional<std::int32_t> SpmJsonTokenizer::bos_id() const {
  if (p_.prefix.empty()) return std::nullopt;
  return p_.prefix.front();
}

std::string SpmJsonTokenizer::describe() const {
  std::string normalizer;
  for (const SpmNormalizerStep& s : p_.normalizer) {
    static constexpr const char* kNames[] = {"Prepend", "Replace", "NFC", "NFKC"};
    if (!normalizer.empty()) normalizer += '+';
    normalizer += kNames[static_cast<int>(s.kind)];
  }
  std::string out = fmt::format("{} sentencepiece-style BPE, {} tokens, normalizer {}, pre-tokenizer ", p_.source, vocab_size(),
                                normalizer.empty() ? "none" : normalizer);
  if (p_.has_splits) out += p_.metaspace ? "Split+" : "Split";
  if (p_.metaspace) {
    static constexpr const char* kSchemes[] = {"always", "first", "never"};
    out += fmt::format("Metaspace({}{})", kSchemes[static_cast<int>(p_.metaspace->prepend_scheme)],
                       p_.metaspace->split ? ", split" : "");
  } else if (!p_.has_splits) {
    out += "none";
  }
  if (p_.model->byte_fallback()) out += ", byte_fallback";
  if (p_.model->ignore_merges()) out += ", ignore_merges";
  if (const auto bos = bos_id()) out += fmt::format(", BOS {}", token(*bos));
  return out;
}

}  // namespace kvlab::harness
