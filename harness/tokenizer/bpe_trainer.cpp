#include "harness/tokenizer/bpe_trainer.h"

#include <cstdint>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "harness/tokenizer/byte_level.h"
#include "harness/tokenizer/nfc.h"
#include "harness/tokenizer/regex_splitter.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {
namespace {

using Key = std::uint64_t;
Key key(std::int32_t a, std::int32_t b) { return (static_cast<Key>(a) << 32) | static_cast<std::uint32_t>(b); }
std::int32_t left(Key k) { return static_cast<std::int32_t>(k >> 32); }
std::int32_t right(Key k) { return static_cast<std::int32_t>(k & 0xFFFFFFFFu); }

struct Word {
  std::vector<std::int32_t> symbols;
  std::int64_t count;
};

struct Entry {
  std::int64_t count;
  Key pair;
  // Max-heap order: the higher count first, then the smaller pair.
  bool operator<(const Entry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
};

}  // namespace

BpeTrainResult train_byte_level_bpe(std::string_view corpus_in, std::string_view regex, bool nfc, int n_tokens) {
  if (n_tokens < 256) fail("train_byte_level_bpe: n_tokens {} < 256 (the byte symbols alone)", n_tokens);
  if (const auto bad = first_invalid_utf8(corpus_in)) fail("tiny tokenizer corpus is not valid UTF-8 (byte {})", *bad);
  const std::string corpus = nfc ? to_nfc(corpus_in) : std::string(corpus_in);

  BpeTrainResult out;
  std::unordered_map<std::string, std::int32_t> ids;
  for (int b = 0; b < 256; ++b) {
    out.vocab.push_back(byte_level_encode(std::string(1, static_cast<char>(b))));
    ids.emplace(out.vocab.back(), b);
  }

  // Distinct words with their frequencies, in first-seen order (deterministic).
  std::vector<Word> words;
  {
    std::unordered_map<std::string_view, std::size_t> index;
    const RegexSplitter splitter(regex, "tiny tokenizer regex");
    for (const ByteSpan s : splitter.matches(corpus)) {
      const std::string_view w(corpus.data() + s.begin, s.end - s.begin);
      const auto [it, fresh] = index.try_emplace(w, words.size());
      if (fresh) {
        Word word{{}, 0};
        for (const char c : w) word.symbols.push_back(static_cast<unsigned char>(c));
        words.push_back(std::move(word));
      }
      ++words[it->second].count;
    }
  }

  std::unordered_map<Key, std::int64_t> counts;
  std::unordered_map<Key, std::vector<std::size_t>> where;  // words that contained the pair (may be stale)
  for (std::size_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w].symbols;
    for (std::size_t i = 0; i + 1 < s.size(); ++i) {
      const Key k = key(s[i], s[i + 1]);
      counts[k] += words[w].count;
      where[k].push_back(w);
    }
  }
  std::priority_queue<Entry> heap;
  for (const auto& [k, c] : counts) heap.push({c, k});

  std::unordered_set<Key> merged;  // a pair merged once is never merged again (one rank per pair)
  std::vector<std::size_t> seen(words.size(), SIZE_MAX);
  while (static_cast<int>(out.vocab.size()) < n_tokens && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const auto c = counts.find(top.pair);
    if (c == counts.end() || c->second != top.count || top.count <= 0 || merged.contains(top.pair)) continue;
    merged.insert(top.pair);
    const std::int32_t a = left(top.pair), b = right(top.pair);
    const std::string token = out.vocab[a] + out.vocab[b];
    out.merges.emplace_back(out.vocab[a], out.vocab[b]);
    std::int32_t id;
    if (const auto it = ids.find(token); it != ids.end()) {
      id = it->second;
    } else {
      id = static_cast<std::int32_t>(out.vocab.size());
      out.vocab.push_back(token);
      ids.emplace(token, id);
    }

    std::unordered_set<Key> touched;
    const std::vector<std::size_t> affected = std::move(where[top.pair]);
    where.erase(top.pair);
    for (const std::size_t w : affected) {
      if (seen[w] == out.merges.size()) continue;
      seen[w] = out.merges.size();
      Word& word = words[w];
      auto& s = word.symbols;
      bool has = false;
      for (std::size_t i = 0; i + 1 < s.size() && !has; ++i) has = s[i] == a && s[i + 1] == b;
      if (!has) continue;
      for (std::size_t i = 0; i + 1 < s.size(); ++i) {
        const Key k = key(s[i], s[i + 1]);
        counts[k] -= word.count;
        touched.insert(k);
      }
      std::vector<std::int32_t> next;
      next.reserve(s.size());
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          next.push_back(id);
          ++i;
        } else {
          next.push_back(s[i]);
        }
      }
      s = std::move(next);
      for (std::size_t i = 0; i + 1 < s.size(); ++i) {
        const Key k = key(s[i], s[i + 1]);
        counts[k] += word.count;
        touched.insert(k);
        where[k].push_back(w);
      }
    }
    for (const Key k : touched) {
      if (counts[k] > 0) heap.push({counts[k], k});
    }
  }
  return out;
}

}  // namespace kvlab::harness
