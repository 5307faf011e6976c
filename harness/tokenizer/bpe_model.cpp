#include "harness/tokenizer/bpe_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <queue>

#include "core/error.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {
namespace {

std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
}

}  // namespace

BpeModel::BpeModel(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges,
                   std::optional<std::int32_t> unk, std::string_view source, bool byte_fallback, bool fuse_unk)
    : vocab_(std::move(vocab)), ignore_merges_(ignore_merges), unk_(unk), byte_fallback_(byte_fallback), fuse_unk_(fuse_unk) {
  std::int32_t max_id = -1;
  for (const auto& [token, id] : vocab_) {
    if (id < 0) fail("{}: model.vocab entry {:?} has negative id {}", source, token, id);
    max_id = std::max(max_id, id);
  }
  id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
  present_.assign(id_to_token_.size(), false);
  for (const auto& [token, id] : vocab_) {
    if (present_[id]) fail("{}: model.vocab id {} is used by both {:?} and {:?}", source, id, id_to_token_[id], token);
    id_to_token_[id] = token;
    present_[id] = true;
  }
  if (byte_fallback_) {
    byte_ids_.assign(256, -1);
    for (int b = 0; b < 256; ++b) {
      if (const auto i = id(fmt::format("<0x{:02X}>", b))) byte_ids_[b] = *i;
    }
  }
  merges_.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const auto ia = id(a), ib = id(b);
    if (!ia || !ib) {
      fail("{}: model.merges[{}] ({:?}, {:?}): part {:?} is not in the vocab", source, rank, a, b, !ia ? a : b);
    }
    const auto merged = id(a + b);
    if (!merged) fail("{}: model.merges[{}] ({:?}, {:?}): merged token {:?} is not in the vocab", source, rank, a, b, a + b);
    // A repeated merge takes its last rank: HF collects the merges into a map, later entries win.
    merges_.insert_or_assign(pair_key(*ia, *ib), Merge{static_cast<std::int32_t>(rank), *merged});
  }
}

std::optional<std::int32_t> BpeModel::id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::token(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size() || !present_[id]) return nullptr;
  return &id_to_token_[id];
}

std::vector<std::int32_t> BpeModel::merge_word(std::string_view word) const {
  struct Symbol {
    std::int32_t id;
    int prev, next;  // neighbour indices, -1 at the ends
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](std::int32_t symbol_id) {
    const int n = static_cast<int>(symbols.size());
    symbols.push_back({symbol_id, n - 1, -1, true});
    if (n > 0) symbols[n - 1].next = n;
  };
  bool previous_unk = false;  // the last symbol is an unk from an unknown character (fuse_unk)
  for (std::size_t i = 0; i < word.size();) {
    const std::size_t start = i;
    next_code_point(word, i);
    const std::string_view ch = word.substr(start, i - start);
    if (const auto sid = id(ch)) {
      add(*sid);
      previous_unk = false;
      continue;
    }
    if (byte_fallback_ && std::all_of(ch.begin(), ch.end(), [&](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; })) {
      for (const char c : ch) add(byte_ids_[static_cast<unsigned char>(c)]);
      previous_unk = false;
      continue;
    }
    if (!unk_) continue;  // HF drops a character with no id when there is no unk token
    if (!(fuse_unk_ && previous_unk)) add(*unk_);
    previous_unk = true;
  }

  // Candidate merges ordered by (rank, left position): the lowest rank first, ties leftmost.
  // Entries go stale when a neighbour changes; they are re-validated when popped.
  struct Candidate {
    std::int32_t rank;
    int pos;
    std::int32_t left, right;  // ids the pair had when queued
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push = [&](int pos) {
    if (pos < 0 || symbols[pos].next < 0) return;
    const Symbol& l = symbols[pos];
    const Symbol& r = symbols[l.next];
    const auto it = merges_.find(pair_key(l.id, r.id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, l.id, r.id});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push(i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = symbols[c.pos];
    if (!l.alive || l.next < 0 || l.id != c.left || symbols[l.next].id != c.right) continue;
    Symbol& r = symbols[l.next];
    l.id = merges_.at(pair_key(c.left, c.right)).result;
    r.alive = false;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = c.pos;
    push(l.prev);
    push(c.pos);
  }

  std::vector<std::int32_t> ids;
  for (const Symbol& s : symbols) {
    if (s.alive) ids.push_back(s.id);
  }
  return ids;
}

void BpeModel::encode_word(std::string_view word, std::vector<std::int32_t>& out) const {
  if (ignore_merges_) {
    if (const auto whole = id(word)) {
      out.push_back(*whole);
      return;
    }
  }
  {
    std::lock_guard lock(cache_mutex_);
    if (const auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<std::int32_t> ids = merge_word(word);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() > kCacheMaxWord) return;
  std::lock_guard lock(cache_mutex_);
  if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(ids));
}

}  // namespace kvlab::harness
