// The BPE model of a byte-level tokenizer.json (docs/tokenizers.md §4): words arrive already
// in the byte-level alphabet; each starts as one symbol per character and the adjacent pair with
// the lowest merge rank (index in `merges`) is merged until none applies — ties go to the
// leftmost pair. With ignore_merges (Llama-3) a word that is itself in the vocab is emitted
// directly. Results are cached per word (thread-safe), so long texts with repeated words
// encode in time linear in their length.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kvlab::harness {

// Hash/equality that let unordered_map<std::string, ...> be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // `source` names the file in errors: a merge whose part (or whose concatenation) is not in the
  // vocab is a kvlab::Error naming the merge and its rank; so is a negative or duplicate id.
  // unk: emitted for a character missing from the vocab; without it such a character is
  // dropped, as HF does (byte-level vocabularies contain all 256 byte characters).
  // byte_fallback (SentencePiece-converted files): a character missing from the vocab becomes
  // its UTF-8 bytes as "<0xXX>" tokens when all of them are in the vocab, else unk.
  // fuse_unk: consecutive unknown characters give one unk. Both as huggingface/tokenizers
  // tokenizers/src/models/bpe/model.rs (merge_word).
  BpeModel(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges,
           std::optional<std::int32_t> unk, std::string_view source, bool byte_fallback = false, bool fuse_unk = false);
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-token written in the byte-level alphabet (valid UTF-8).
  void encode_word(std::string_view word, std::vector<std::int32_t>& out) const;

  std::optional<std::int32_t> id(std::string_view token) const;
  // The token string of `id`, or nullptr for an id the vocab does not have.
  const std::string* token(std::int32_t id) const;
  std::int32_t max_id() const { return static_cast<std::int32_t>(id_to_token_.size()) - 1; }
  std::size_t size() const { return vocab_.size(); }
  std::size_t merge_count() const { return merges_.size(); }
  bool ignore_merges() const { return ignore_merges_; }
  bool byte_fallback() const { return byte_fallback_; }
  bool fuse_unk() const { return fuse_unk_; }

 private:
  std::vector<std::int32_t> merge_word(std::string_view word) const;

  struct Merge {
    std::int32_t rank;
    std::int32_t result;  // id of the concatenation
  };
  Vocab vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> present_;
  std::unordered_map<std::uint64_t, Merge> merges_;  // key: (left id << 32) | right id
  bool ignore_merges_;
  std::optional<std::int32_t> unk_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  std::vector<std::int32_t> byte_ids_;  // "<0xXX>" ids by byte value, -1 where absent (byte_fallback)

  static constexpr std::size_t kCacheCapacity = 200'000;  // words; beyond it results are not cached
  static constexpr std::size_t kCacheMaxWord = 256;       // bytes; longer words (whole SentencePiece texts) are not cached
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace kvlab::harness
