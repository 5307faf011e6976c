#include "harness/tokenizer/tokenizer_json.h"

#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/parse_json.h"
#include "core/read_file.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;

// Field access that names the file and the JSON path of whatever is missing or mistyped.
struct Reader {
  std::string source;

  [[noreturn]] void bad(std::string_view path, std::string_view what) const { fail("{}: {}: {}", source, path, what); }

  const json& field(const json& obj, const std::string& key, std::string_view path) const {
    if (!obj.is_object()) bad(path, "expected an object");
    const auto it = obj.find(key);
    if (it == obj.end()) bad(fmt::format("{}.{}", path, key), "missing");
    return *it;
  }
  std::string string(const json& v, std::string_view path) const {
    if (!v.is_string()) bad(path, fmt::format("expected a string, got {}", v.type_name()));
    return v.get<std::string>();
  }
  bool flag(const json& obj, const std::string& key, bool fallback, std::string_view path) const {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) bad(fmt::format("{}.{}", path, key), "expected true or false");
    return it->get<bool>();
  }
  std::int32_t id(const json& v, std::string_view path) const {
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > INT32_MAX) {
      bad(path, fmt::format("expected a token id (non-negative integer), got {}", v.dump()));
    }
    return v.get<std::int32_t>();
  }
  std::string type(const json& obj, std::string_view path) const {
    return string(field(obj, "type", path), fmt::format("{}.type", path));
  }
};

std::vector<std::pair<std::string, std::string>> read_merges(const Reader& r, const json& model) {
  const json& merges = r.field(model, "merges", "model");
  if (!merges.is_array()) r.bad("model.merges", "expected a list");
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    const std::string path = fmt::format("model.merges[{}]", i);
    if (m.is_string()) {
      // Legacy form: split on the single space; exactly two parts (HF convert_merges_to_hashmap).
      const std::string s = m.get<std::string>();
      const std::size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        r.bad(path, fmt::format("legacy merge {:?} does not split on ' ' into exactly 2 parts", s));
      }
      out.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      r.bad(path, fmt::format("expected \"a b\" or [\"a\", \"b\"], got {}", m.dump()));
    }
  }
  return out;
}

std::unique_ptr<BpeModel> read_model(const Reader& r, const json& root) {
  const auto it = root.find("model");
  if (it == root.end() || it->is_null()) r.bad("model", "missing");
  const json& model = *it;
  if (!model.is_object()) r.bad("model", "expected an object");
  // Files saved by old tokenizers versions may omit the type; vocab + merges identify a BPE.
  const std::string type = model.contains("type") ? r.type(model, "model") : "BPE";
  if (type != "BPE") r.bad("model.type", fmt::format("{:?} is not supported (only \"BPE\")", type));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto f = model.find(key);
    if (f != model.end() && !f->is_null() && !(f->is_string() && f->get<std::string>().empty())) {
      r.bad(fmt::format("model.{}", key), "not supported (only SentencePiece-style and byte-level BPE)");
    }
  }
  if (const auto d = model.find("dropout"); d != model.end() && !d->is_null() && !(d->is_number() && d->get<double>() == 0)) {
    r.bad("model.dropout", "BPE dropout makes encoding random; only null is supported");
  }

  const json& vocab_json = r.field(model, "vocab", "model");
  if (!vocab_json.is_object()) r.bad("model.vocab", "expected an object of token → id");
  Vocab vocab;
  vocab.reserve(vocab_json.size());
  for (const auto& [token, id] : vocab_json.items()) vocab.emplace(token, r.id(id, fmt::format("model.vocab[{:?}]", token)));

  std::optional<std::int32_t> unk;
  if (const auto u = model.find("unk_token"); u != model.end() && !u->is_null()) {
    const std::string name = r.string(*u, "model.unk_token");
    const auto f = vocab.find(name);
    if (f == vocab.end()) r.bad("model.unk_token", fmt::format("{:?} is not in the vocab", name));
    unk = f->second;
  }
  // byte_fallback / fuse_unk: SentencePiece conversions set both (huggingface/tokenizers
  // tokenizers/src/models/bpe/model.rs); a byte-level vocabulary never needs them.
  return std::make_unique<BpeModel>(std::move(vocab), read_merges(r, model), r.flag(model, "ignore_merges", false, "model"),
                                    unk, r.source, r.flag(model, "byte_fallback", false, "model"),
                                    r.flag(model, "fuse_unk", false, "model"));
}

std::vector<AddedToken> read_added_tokens(const Reader& r, const json& root) {
  std::vector<AddedToken> out;
  const auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return out;
  if (!it->is_array()) r.bad("added_tokens", "expected a list");
  for (std::size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const std::string path = fmt::format("added_tokens[{}]", i);
    AddedToken a;
    a.id = r.id(r.field(t, "id", path), path + ".id");
    a.content = r.string(r.field(t, "content", path), path + ".content");
    if (a.content.empty()) r.bad(path + ".content", "empty");
    a.single_word = r.flag(t, "single_word", false, path);
    a.lstrip = r.flag(t, "lstrip", false, path);
    a.rstrip = r.flag(t, "rstrip", false, path);
    a.normalized = r.flag(t, "normalized", false, path);
    a.special = r.flag(t, "special", false, path);
    out.push_back(std::move(a));
  }
  return out;
}

// true when the normalizer is NFC; null → false; anything else is an error.
bool read_normalizer(const Reader& r, const json& n, const std::string& path) {
  if (n.is_null()) return false;
  const std::string type = r.type(n, path);
  if (type == "NFC") return true;
  if (type == "Sequence") {
    const json& list = r.field(n, "normalizers", path);
    if (!list.is_array()) r.bad(path + ".normalizers", "expected a list");
    bool nfc = false;
    for (std::size_t i = 0; i < list.size(); ++i) nfc |= read_normalizer(r, list[i], fmt::format("{}.normalizers[{}]", path, i));
    return nfc;
  }
  r.bad(path + ".type", fmt::format("normalizer {:?} is not supported (only null, NFC or a Sequence of NFC)", type));
}

SplitBehavior read_behavior(const Reader& r, const json& step, const std::string& path) {
  const std::string b = r.string(r.field(step, "behavior", path), path + ".behavior");
  if (b == "Isolated") return SplitBehavior::isolated;
  if (b == "Removed") return SplitBehavior::removed;
  if (b == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (b == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (b == "Contiguous") return SplitBehavior::contiguous;
  r.bad(path + ".behavior", fmt::format("unknown split behavior {:?}", b));
}

void read_pre_tokenizer(const Reader& r, const json& p, const std::string& path, PreTokenizer& out) {
  const std::string type = r.type(p, path);
  if (type == "Sequence") {
    const json& list = r.field(p, "pretokenizers", path);
    if (!list.is_array()) r.bad(path + ".pretokenizers", "expected a list");
    for (std::size_t i = 0; i < list.size(); ++i) read_pre_tokenizer(r, list[i], fmt::format("{}.pretokenizers[{}]", path, i), out);
  } else if (type == "Split") {
    if (out.has_byte_level()) r.bad(path, "a Split after ByteLevel is not supported (ByteLevel must come last)");
    const json& pattern = r.field(p, "pattern", path);
    const std::string where = fmt::format("{} {}.pattern", r.source, path);
    if (pattern.is_object() && pattern.contains("Regex")) {
      out.add_split(RegexSplitter(r.string(pattern["Regex"], path + ".pattern.Regex"), where), read_behavior(r, p, path),
                    r.flag(p, "invert", false, path));
    } else if (pattern.is_object() && pattern.contains("String")) {
      out.add_split(RegexSplitter(r.string(pattern["String"], path + ".pattern.String"), where, /*literal=*/true),
                    read_behavior(r, p, path), r.flag(p, "invert", false, path));
    } else {
      r.bad(path + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
    }
  } else if (type == "ByteLevel") {
    if (out.has_byte_level()) r.bad(path, "a second ByteLevel step");
    // HF's defaults when a field is absent: add_prefix_space and use_regex true.
    out.add_byte_level(r.flag(p, "add_prefix_space", true, path), r.flag(p, "use_regex", true, path));
  } else {
    r.bad(path + ".type", fmt::format("pre-tokenizer {:?} is not supported (only Split, ByteLevel, Sequence)", type));
  }
}

// Ids of one TemplateProcessing "single" template: the ones before $A into prefix, after into suffix.
void read_template(const Reader& r, const json& p, const std::string& path, std::vector<std::int32_t>& prefix,
                   std::vector<std::int32_t>& suffix) {
  const json& specials = p.contains("special_tokens") ? p["special_tokens"] : json::object();
  const auto special_ids = [&](const std::string& name, const std::string& where) {
    if (!specials.is_object() || !specials.contains(name)) r.bad(where, fmt::format("special token {:?} is not in {}.special_tokens", name, path));
    const json& ids = r.field(specials[name], "ids", fmt::format("{}.special_tokens[{:?}]", path, name));
    if (!ids.is_array()) r.bad(fmt::format("{}.special_tokens[{:?}].ids", path, name), "expected a list");
    std::vector<std::int32_t> out;
    for (const json& id : ids) out.push_back(r.id(id, fmt::format("{}.special_tokens[{:?}].ids", path, name)));
    return out;
  };
  const json& single = r.field(p, "single", path);
  bool seen_a = false;
  const auto add = [&](const std::vector<std::int32_t>& ids) {
    auto& target = seen_a ? suffix : prefix;
    target.insert(target.end(), ids.begin(), ids.end());
  };
  const auto sequence = [&](const std::string& id, const std::string& where) {
    if (id != "A") r.bad(where, fmt::format("sequence ${} in the single template (only $A)", id));
    if (seen_a) r.bad(where, "$A appears twice");
    seen_a = true;
  };
  if (single.is_string()) {
    // String form "<|begin_of_text|> $A": pieces separated by spaces, "$A" / "$A:0" / "$" the text.
    std::istringstream in(single.get<std::string>());
    std::string piece;
    while (in >> piece) {
      if (piece[0] == '$') {
        const std::string id = piece.substr(1, piece.find(':') == std::string::npos ? std::string::npos : piece.find(':') - 1);
        sequence(id.empty() ? "A" : id, path + ".single");
      } else {
        const std::string name = piece.substr(0, piece.find(':'));
        add(special_ids(name, path + ".single"));
      }
    }
  } else if (single.is_array()) {
    for (std::size_t i = 0; i < single.size(); ++i) {
      const json& item = single[i];
      const std::string where = fmt::format("{}.single[{}]", path, i);
      if (item.is_object() && item.contains("SpecialToken")) {
        add(special_ids(r.string(r.field(item["SpecialToken"], "id", where + ".SpecialToken"), where + ".SpecialToken.id"), where));
      } else if (item.is_object() && item.contains("Sequence")) {
        sequence(r.string(r.field(item["Sequence"], "id", where + ".Sequence"), where + ".Sequence.id"), where);
      } else {
        r.bad(where, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
      }
    }
  } else {
    r.bad(path + ".single", "expected a list or a string");
  }
  if (!seen_a) r.bad(path + ".single", "no $A (the text) in the template");
}

void read_post_processor(const Reader& r, const json& p, const std::string& path, std::vector<std::int32_t>& prefix,
                         std::vector<std::int32_t>& suffix) {
  if (p.is_null()) return;
  const std::string type = r.type(p, path);
  if (type == "ByteLevel") return;  // adjusts offsets only; never changes ids (docs/tokenizers.md §1)
  if (type == "TemplateProcessing") {
    read_template(r, p, path, prefix, suffix);
  } else if (type == "Sequence") {
    const json& list = r.field(p, "processors", path);
    if (!list.is_array()) r.bad(path + ".processors", "expected a list");
    for (std::size_t i = 0; i < list.size(); ++i) read_post_processor(r, list[i], fmt::format("{}.processors[{}]", path, i), prefix, suffix);
  } else {
    r.bad(path + ".type", fmt::format("post-processor {:?} is not supported (only ByteLevel, TemplateProcessing, Sequence)", type));
  }
}

void check_decoder(const Reader& r, const json& d, const std::string& path) {
  if (d.is_null()) return;  // treated as ByteLevel: the model is byte-level either way
  const std::string type = r.type(d, path);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = r.field(d, "decoders", path);
    if (!list.is_array()) r.bad(path + ".decoders", "expected a list");
    for (std::size_t i = 0; i < list.size(); ++i) check_decoder(r, list[i], fmt::format("{}.decoders[{}]", path, i));
    return;
  }
  r.bad(path + ".type", fmt::format("decoder {:?} is not supported (only ByteLevel)", type));
}

// ---- SentencePiece-style files (spm_json_tokenizer.h, docs/tokenizers.md §11) ----

// One code point, as HF's `char` fields (Metaspace replacement, Strip content) require.
std::string one_char(const Reader& r, const json& v, const std::string& path) {
  const std::string s = r.string(v, path);
  if (s.empty() || first_invalid_utf8(s)) r.bad(path, "expected one character");
  std::size_t i = 0;
  next_code_point(s, i);
  if (i != s.size()) r.bad(path, fmt::format("expected one character, got {:?}", s));
  return s;
}

// A Replace pattern: {"String": s} only. A {"Regex": ...} pattern is refused.
std::string literal_pattern(const Reader& r, const json& step, const std::string& path) {
  const json& pattern = r.field(step, "pattern", path);
  if (pattern.is_object() && pattern.contains("String")) {
    std::string s = r.string(pattern["String"], path + ".pattern.String");
    if (s.empty()) r.bad(path + ".pattern.String", "empty");
    return s;
  }
  if (pattern.is_object() && pattern.contains("Regex")) r.bad(path + ".pattern", "a Regex pattern is not supported (only {\"String\": ...})");
  r.bad(path + ".pattern", "expected {\"String\": ...}");
}

void read_spm_normalizer(const Reader& r, const json& n, const std::string& path, std::vector<SpmNormalizerStep>& out) {
  if (n.is_null()) return;
  const std::string type = r.type(n, path);
  if (type == "Sequence") {
    const json& list = r.field(n, "normalizers", path);
    if (!list.is_array()) r.bad(path + ".normalizers", "expected a list");
    for (std::size_t i = 0; i < list.size(); ++i) read_spm_normalizer(r, list[i], fmt::format("{}.normalizers[{}]", path, i), out);
  } else if (type == "Prepend") {
    out.push_back({SpmNormalizerStep::Kind::prepend, "", r.string(r.field(n, "prepend", path), path + ".prepend")});
  } else if (type == "Replace") {
    out.push_back({SpmNormalizerStep::Kind::replace, literal_pattern(r, n, path), r.string(r.field(n, "content", path), path + ".content")});
  } else if (type == "NFC") {
    out.push_back({SpmNormalizerStep::Kind::nfc, "", ""});
  } else if (type == "NFKC") {
    out.push_back({SpmNormalizerStep::Kind::nfkc, "", ""});
  } else {
    r.bad(path + ".type", fmt::format("normalizer {:?} is not supported (only Prepend, Replace, NFC, NFKC, Sequence)", type));
  }
}

// Metaspace's fields as pre_tokenizers/metaspace.rs reads them: prepend_scheme defaults to
// "always"; the legacy add_prefix_space: false means "never" (HF refuses it beside another
// declared scheme); split defaults to true.
MetaspaceConfig read_metaspace(const Reader& r, const json& p, const std::string& path) {
  MetaspaceConfig m;
  m.replacement = one_char(r, r.field(p, "replacement", path), path + ".replacement");
  const auto scheme = p.find("prepend_scheme");
  if (scheme != p.end() && !scheme->is_null()) {
    const std::string s = r.string(*scheme, path + ".prepend_scheme");
    if (s == "always") {
      m.prepend_scheme = PrependScheme::always;
    } else if (s == "first") {
      m.prepend_scheme = PrependScheme::first;
    } else if (s == "never") {
      m.prepend_scheme = PrependScheme::never;
    } else {
      r.bad(path + ".prepend_scheme", fmt::format("unknown prepend_scheme {:?} (always, first, never)", s));
    }
  }
  if (!r.flag(p, "add_prefix_space", true, path)) {
    if (scheme != p.end() && !scheme->is_null() && m.prepend_scheme != PrependScheme::never) {
      r.bad(path + ".add_prefix_space", "false does not match the declared prepend_scheme");
    }
    m.prepend_scheme = PrependScheme::never;
  }
  m.split = r.flag(p, "split", true, path);
  return m;
}

void read_spm_pre_tokenizer(const Reader& r, const json& p, const std::string& path, SpmJsonTokenizerParts& out) {
  if (p.is_null()) return;
  const std::string type = r.type(p, path);
  if (out.metaspace) r.bad(path, "a step after Metaspace is not supported (Metaspace must come last)");
  if (type == "Sequence") {
    const json& list = r.field(p, "pretokenizers", path);
    if (!list.is_array()) r.bad(path + ".pretokenizers", "expected a list");
    for (std::size_t i = 0; i < list.size(); ++i) read_spm_pre_tokenizer(r, list[i], fmt::format("{}.pretokenizers[{}]", path, i), out);
  } else if (type == "Metaspace") {
    out.metaspace = read_metaspace(r, p, path);
  } else if (type == "Split") {
    read_pre_tokenizer(r, p, path, out.splits);
    out.has_splits = true;
  } else {
    r.bad(path + ".type", fmt::format("pre-tokenizer {:?} is not supported in a SentencePiece-style file (only Metaspace, Split, Sequence)", type));
  }
}

void read_spm_decoder(const Reader& r, const json& d, const std::string& path, std::vector<SpmDecoderStep>& out) {
  const std::string type = r.type(d, path);
  SpmDecoderStep step;
  if (type == "Sequence") {
    const json& list = r.field(d, "decoders", path);
    if (!list.is_array()) r.bad(path + ".decoders", "expected a list");
    for (std::size_t i = 0; i < list.size(); ++i) read_spm_decoder(r, list[i], fmt::format("{}.decoders[{}]", path, i), out);
    return;
  } else if (type == "Replace") {
    step.kind = SpmDecoderStep::Kind::replace;
    step.pattern = literal_pattern(r, d, path);
    step.content = r.string(r.field(d, "content", path), path + ".content");
  } else if (type == "ByteFallback") {
    step.kind = SpmDecoderStep::Kind::byte_fallback;
  } else if (type == "Fuse") {
    step.kind = SpmDecoderStep::Kind::fuse;
  } else if (type == "Strip") {
    step.kind = SpmDecoderStep::Kind::strip;
    step.content = one_char(r, r.field(d, "content", path), path + ".content");
    for (auto [key, target] : {std::pair{"start", &step.start}, std::pair{"stop", &step.stop}}) {
      const json& v = r.field(d, key, path);
      if (!v.is_number_unsigned()) r.bad(fmt::format("{}.{}", path, key), "expected a non-negative integer");
      *target = v.get<std::size_t>();
    }
  } else if (type == "Metaspace") {
    step.kind = SpmDecoderStep::Kind::metaspace;
    step.metaspace = read_metaspace(r, d, path);
  } else {
    r.bad(path + ".type",
          fmt::format("decoder {:?} is not supported in a SentencePiece-style file (only Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)", type));
  }
  out.push_back(std::move(step));
}

// Whether any "type" inside `v` (objects and lists, recursively) is one of `types`.
bool mentions_type(const json& v, std::initializer_list<std::string_view> types) {
  if (v.is_object()) {
    if (const auto t = v.find("type"); t != v.end() && t->is_string()) {
      for (const std::string_view x : types) {
        if (t->get<std::string>() == x) return true;
      }
    }
    for (const auto& [key, item] : v.items()) {
      if (mentions_type(item, types)) return true;
    }
  } else if (v.is_array()) {
    for (const json& item : v) {
      if (mentions_type(item, types)) return true;
    }
  }
  return false;
}

bool is_spm_style(const json& root) {
  if (mentions_type(root.value("pre_tokenizer", json()), {"ByteLevel"})) return false;
  if (mentions_type(root.value("decoder", json()), {"ByteLevel"})) return false;
  const json model = root.value("model", json());
  if (model.is_object() && model.value("byte_fallback", json()) == true) return true;
  return mentions_type(root.value("normalizer", json()), {"Prepend", "Replace"}) ||
         mentions_type(root.value("pre_tokenizer", json()), {"Metaspace"}) ||
         mentions_type(root.value("decoder", json()), {"Metaspace", "ByteFallback", "Fuse", "Strip", "Replace"});
}

std::unique_ptr<SpmJsonTokenizer> parse_spm_root(const Reader& r, const json& root) {
  SpmJsonTokenizerParts parts;
  parts.source = std::filesystem::path(r.source).filename().string();
  parts.model = read_model(r, root);
  parts.added_tokens = read_added_tokens(r, root);
  read_spm_normalizer(r, root.value("normalizer", json()), "normalizer", parts.normalizer);
  read_spm_pre_tokenizer(r, root.value("pre_tokenizer", json()), "pre_tokenizer", parts);
  read_post_processor(r, root.value("post_processor", json()), "post_processor", parts.prefix, parts.suffix);
  std::int32_t max_id = parts.model->max_id();
  for (const AddedToken& t : parts.added_tokens) max_id = std::max(max_id, t.id);
  for (const auto* ids : {&parts.prefix, &parts.suffix}) {
    for (const std::int32_t id : *ids) {
      if (id > max_id) r.bad("post_processor", fmt::format("special token id {} is beyond the vocabulary (largest id {})", id, max_id));
    }
  }
  const json decoder = root.value("decoder", json());
  parts.has_decoder = !decoder.is_null();
  if (parts.has_decoder) read_spm_decoder(r, decoder, "decoder", parts.decoder);
  return std::make_unique<SpmJsonTokenizer>(std::move(parts));
}

}  // namespace

std::unique_ptr<BpeTokenizer> parse_tokenizer_json(std::string_view json_text, std::string_view source) {
  const Reader r{std::string(source)};
  const json root = core::parse_json(json_text, source);
  if (!root.is_object()) fail("{}: expected a JSON object at the top level", source);

  BpeTokenizerParts parts;
  parts.source = std::filesystem::path(source).filename().string();
  parts.model = read_model(r, root);
  parts.added_tokens = read_added_tokens(r, root);
  parts.nfc = read_normalizer(r, root.value("normalizer", json()), "normalizer");
  const json pre = root.value("pre_tokenizer", json());
  if (pre.is_null()) r.bad("pre_tokenizer", "null; a byte-level BPE needs a ByteLevel pre-tokenizer");
  read_pre_tokenizer(r, pre, "pre_tokenizer", parts.pre_tokenizer);
  if (!parts.pre_tokenizer.ends_with_byte_level()) {
    r.bad("pre_tokenizer", "does not end with ByteLevel; only byte-level BPE tokenizers are supported");
  }
  read_post_processor(r, root.value("post_processor", json()), "post_processor", parts.prefix, parts.suffix);
  std::int32_t max_id = parts.model->max_id();
  for (const AddedToken& t : parts.added_tokens) max_id = std::max(max_id, t.id);
  for (const auto* ids : {&parts.prefix, &parts.suffix}) {
    for (const std::int32_t id : *ids) {
      if (id > max_id) r.bad("post_processor", fmt::format("special token id {} is beyond the vocabulary (largest id {})", id, max_id));
    }
  }
  check_decoder(r, root.value("decoder", json()), "decoder");
  return std::make_unique<BpeTokenizer>(std::move(parts));
}

namespace {

bool mentions_byte_level(const json& step) {
  if (!step.is_object()) return false;
  if (step.value("type", json()) == "ByteLevel") return true;
  const auto list = step.find("pretokenizers");
  if (list == step.end() || !list->is_array()) return false;
  for (const json& s : *list) {
    if (mentions_byte_level(s)) return true;
  }
  return false;
}

}  // namespace

std::unique_ptr<BpeTokenizer> load_tokenizer_json(const std::filesystem::path& file) {
  return parse_tokenizer_json(core::read_file(file, "tokenizer file"), file.string());
}

std::unique_ptr<SpmJsonTokenizer> parse_spm_tokenizer_json(std::string_view json_text, std::string_view source) {
  const Reader r{std::string(source)};
  const json root = core::parse_json(json_text, source);
  if (!root.is_object()) fail("{}: expected a JSON object at the top level", source);
  return parse_spm_root(r, root);
}

std::unique_ptr<Tokenizer> parse_any_tokenizer_json(std::string_view json_text, std::string_view source) {
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!root.is_discarded() && root.is_object() && is_spm_style(root)) return parse_spm_root(Reader{std::string(source)}, root);
  return parse_tokenizer_json(json_text, source);
}

bool tokenizer_json_is_spm_style(std::string_view json_text) {
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  return !root.is_discarded() && root.is_object() && is_spm_style(root);
}

bool tokenizer_json_is_byte_level(std::string_view json_text) {
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) return true;
  return mentions_byte_level(root.value("pre_tokenizer", json()));
}

}  // namespace kvlab::harness
