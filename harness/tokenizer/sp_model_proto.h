// Just enough of SentencePiece's ModelProto wire format to read the flags kvlab needs and to
// derive a copy with add_dummy_prefix off, without the protobuf headers (Debian's
// libsentencepiece-dev does not ship sentencepiece_model.pb.h). Field numbers from
// sentencepiece_model.proto: ModelProto.trainer_spec = 2, .normalizer_spec = 3;
// TrainerSpec.model_type = 3, .byte_fallback = 35; NormalizerSpec.add_dummy_prefix = 3,
// .remove_extra_whitespaces = 4 (both default true).
#pragma once

#include <string>
#include <string_view>

namespace kvlab::harness {

struct SpModelFlags {
  int model_type = 1;  // 1 unigram, 2 bpe, 3 word, 4 char
  bool byte_fallback = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
};

// Throws kvlab::Error naming `source` when the bytes are not a well-formed protobuf message.
SpModelFlags read_sp_model_flags(std::string_view serialized, std::string_view source);

// `serialized` with NormalizerSpec.add_dummy_prefix = false (a later field value wins in
// protobuf, so it is appended to the normalizer_spec message; all other fields are kept).
std::string sp_model_without_dummy_prefix(std::string_view serialized, std::string_view source);

}  // namespace kvlab::harness
