// The only file that includes sentencepiece: built as a MODULE and opened with dlopen (see
// sentencepiece_library.h for why). Errors come back as strings — no exceptions cross the
// module boundary.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "harness/tokenizer/sentencepiece_library.h"

namespace kvlab::harness::spm {
namespace {

std::string message(const sentencepiece::util::Status& status) { return status.ok() ? "" : status.ToString(); }

class SpProcessor final : public Processor {
 public:
  sentencepiece::SentencePieceProcessor sp;
  int piece_size() const override { return sp.GetPieceSize(); }
  int piece_to_id(std::string_view piece) const override { return sp.PieceToId(piece); }
  std::string id_to_piece(int id) const override { return sp.IdToPiece(id); }
  bool is_control(int id) const override { return sp.IsControl(id); }
  bool is_unknown(int id) const override { return sp.IsUnknown(id); }
  bool is_byte(int id) const override { return sp.IsByte(id); }
  int bos_id() const override { return sp.bos_id(); }
  int eos_id() const override { return sp.eos_id(); }
  std::string encode(std::string_view text, std::vector<int>* ids) const override {
    return message(sp.Encode(text, ids));
  }
  std::string decode(const std::vector<int>& ids, std::string* text) const override {
    return message(sp.Decode(ids, text));
  }
};

// Feeds the corpus to the trainer line by line, without a temporary file.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(std::string_view text) : text_(text) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    while (at_ <= text_.size()) {
      const std::size_t nl = std::min(text_.find('\n', at_), text_.size());
      line_.assign(text_.substr(at_, nl - at_));
      at_ = nl + 1;
      if (!line_.empty()) return;
    }
    done_ = true;
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::string_view text_;
  std::size_t at_ = 0;
  std::string line_;
  bool done_ = false;
};

class SpLibrary final : public Library {
 public:
  std::unique_ptr<Processor> load(std::string_view serialized, std::string* error) const override {
    auto p = std::make_unique<SpProcessor>();
    *error = message(p->sp.LoadFromSerializedProto(serialized));
    if (!error->empty()) return nullptr;
    return p;
  }
  std::string train(const std::unordered_map<std::string, std::string>& args, std::string_view corpus,
                    std::string* model) const override {
    LineIterator lines(corpus);
    return message(sentencepiece::SentencePieceTrainer::Train(args, &lines, model));
  }
  void set_random_seed(unsigned seed) const override { sentencepiece::SetRandomGeneratorSeed(seed); }
};

}  // namespace
}  // namespace kvlab::harness::spm

extern "C" __attribute__((visibility("default"))) const kvlab::harness::spm::Library* kvlab_sentencepiece_library() {
  static const kvlab::harness::spm::SpLibrary library;
  return &library;
}
