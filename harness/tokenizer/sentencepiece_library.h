// Debian's libsentencepiece behind an interface, loaded at run time with dlopen.
//
// Why: libsentencepiece.so.0 is built with a bundled protobuf-lite 3.14 and exports its
// symbols; libtorch loads the system libprotobuf 3.21. Linked into one process, libprotobuf's
// static initialisers bind to sentencepiece's copies and the program crashes before main (and
// linking libprotobuf first makes sentencepiece abort on the version check). So sentencepiece
// lives in a separate module (sentencepiece_module.cpp) opened with RTLD_LOCAL | RTLD_DEEPBIND:
// its symbols stay out of the global scope and it binds to its own protobuf. Nothing here
// includes a sentencepiece header.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvlab::harness::spm {

// One loaded model: the subset of sentencepiece::SentencePieceProcessor kvlab uses.
class Processor {
 public:
  virtual ~Processor() = default;
  virtual int piece_size() const = 0;
  virtual int piece_to_id(std::string_view piece) const = 0;
  virtual std::string id_to_piece(int id) const = 0;
  virtual bool is_control(int id) const = 0;
  virtual bool is_unknown(int id) const = 0;
  virtual bool is_byte(int id) const = 0;
  virtual int bos_id() const = 0;  // −1 when the model has none
  virtual int eos_id() const = 0;
  // Return "" on success, else sentencepiece's status message.
  virtual std::string encode(std::string_view text, std::vector<int>* ids) const = 0;
  virtual std::string decode(const std::vector<int>& ids, std::string* text) const = 0;
};

class Library {
 public:
  virtual ~Library() = default;
  // A processor for a serialized ModelProto (tokenizer.model's bytes); null with `error` set
  // when sentencepiece rejects it.
  virtual std::unique_ptr<Processor> load(std::string_view serialized, std::string* error) const = 0;
  // Trains a model on `corpus` (one sentence per non-empty line) with trainer flags `args`
  // (sentencepiece's names, e.g. {"model_type", "bpe"}); "" on success with the serialized
  // model in *model, else the trainer's message.
  virtual std::string train(const std::unordered_map<std::string, std::string>& args, std::string_view corpus,
                            std::string* model) const = 0;
  virtual void set_random_seed(unsigned seed) const = 0;
};

// The module, opened on first use: $KVLAB_SENTENCEPIECE_MODULE, else the path the build wrote
// it to. A missing or broken module is a kvlab::Error naming the path and dlerror().
const Library& library();

}  // namespace kvlab::harness::spm

// The module's one export.
extern "C" const kvlab::harness::spm::Library* kvlab_sentencepiece_library();
