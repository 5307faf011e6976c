#include "harness/tokenizer/clean_up_decoding.h"

#include <array>
#include <utility>

namespace kvlab::harness {
namespace {

class CleanUpDecoding final : public Tokenizer {
 public:
  explicit CleanUpDecoding(std::unique_ptr<Tokenizer> inner) : inner_(std::move(inner)) {}
  std::vector<std::int32_t> encode(std::string_view text, bool add_special) const override {
    return inner_->encode(text, add_special);
  }
  std::vector<std::int32_t> encode_continuation(std::string_view text) const override {
    return inner_->encode_continuation(text);
  }
  std::string decode(std::span<const std::int32_t> ids, bool skip_special) const override {
    return clean_up_tokenization(inner_->decode(ids, skip_special));
  }
  int vocab_size() const override { return inner_->vocab_size(); }
  std::optional<std::int32_t> token_id(std::string_view token) const override { return inner_->token_id(token); }
  std::string token(std::int32_t id) const override { return inner_->token(id); }
  bool is_special(std::int32_t id) const override { return inner_->is_special(id); }
  std::string token_bytes(std::int32_t id) const override { return inner_->token_bytes(id); }
  std::optional<std::int32_t> bos_id() const override { return inner_->bos_id(); }
  std::string describe() const override { return inner_->describe() + ", clean_up_tokenization_spaces"; }

 private:
  std::unique_ptr<Tokenizer> inner_;
};

// Python's str.replace(old, new): every non-overlapping occurrence, left to right.
void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  std::size_t at = 0;
  for (std::size_t hit = s.find(from); hit != std::string::npos; hit = s.find(from, at)) {
    out.append(s, at, hit - at);
    out += to;
    at = hit + from.size();
  }
  out.append(s, at, std::string::npos);
  s = std::move(out);
}

}  // namespace

std::string clean_up_tokenization(std::string_view text) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 10> kReplacements = {{
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
  }};
  std::string out(text);
  for (const auto& [from, to] : kReplacements) replace_all(out, from, to);
  return out;
}

std::unique_ptr<Tokenizer> with_clean_up_decoding(std::unique_ptr<Tokenizer> inner) {
  return std::make_unique<CleanUpDecoding>(std::move(inner));
}

}  // namespace kvlab::harness
