#include "harness/tokenizer/sp_model_proto.h"

#include <cstdint>
#include <functional>

#include "core/error.h"

namespace kvlab::harness {
namespace {

struct Field {
  std::uint32_t number;
  std::uint32_t wire;    // 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
  std::uint64_t varint;  // the value for wire type 0
  std::string_view bytes;  // the payload for wire type 2
  std::string_view whole;  // tag + payload, for copying
};

class WireReader {
 public:
  WireReader(std::string_view data, std::string_view source) : data_(data), source_(source) {}

  bool next(Field& f) {
    if (at_ == data_.size()) return false;
    const std::size_t start = at_;
    const std::uint64_t tag = varint();
    f.number = static_cast<std::uint32_t>(tag >> 3);
    f.wire = static_cast<std::uint32_t>(tag & 7);
    f.varint = 0;
    f.bytes = {};
    switch (f.wire) {
      case 0: f.varint = varint(); break;
      case 1: skip(8); break;
      case 5: skip(4); break;
      case 2: {
        const std::uint64_t n = varint();
        if (n > data_.size() - at_) bad();
        f.bytes = data_.substr(at_, n);
        at_ += n;
        break;
      }
      default: bad();
    }
    f.whole = data_.substr(start, at_ - start);
    return true;
  }

 private:
  [[noreturn]] void bad() const { fail("{}: not a sentencepiece model (malformed protobuf at byte {})", source_, at_); }
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ >= data_.size()) bad();
      const auto b = static_cast<unsigned char>(data_[at_++]);
      v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    bad();
  }
  void skip(std::size_t n) {
    if (n > data_.size() - at_) bad();
    at_ += n;
  }
  std::string_view data_, source_;
  std::size_t at_ = 0;
};

void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void for_each_field(std::string_view data, std::string_view source, const std::function<void(const Field&)>& f) {
  WireReader r(data, source);
  Field field;
  while (r.next(field)) f(field);
}

}  // namespace

SpModelFlags read_sp_model_flags(std::string_view serialized, std::string_view source) {
  SpModelFlags flags;
  for_each_field(serialized, source, [&](const Field& top) {
    if (top.wire != 2) return;
    if (top.number == 2) {
      for_each_field(top.bytes, source, [&](const Field& f) {
        if (f.wire != 0) return;
        if (f.number == 3) flags.model_type = static_cast<int>(f.varint);
        if (f.number == 35) flags.byte_fallback = f.varint != 0;
      });
    } else if (top.number == 3) {
      for_each_field(top.bytes, source, [&](const Field& f) {
        if (f.wire != 0) return;
        if (f.number == 3) flags.add_dummy_prefix = f.varint != 0;
        if (f.number == 4) flags.remove_extra_whitespaces = f.varint != 0;
      });
    }
  });
  return flags;
}

std::string sp_model_without_dummy_prefix(std::string_view serialized, std::string_view source) {
  // Tag of NormalizerSpec field 3 (varint) followed by the value 0.
  static constexpr char kNoDummyPrefix[] = {0x18, 0x00};
  std::string out;
  out.reserve(serialized.size() + 8);
  bool patched = false;
  const auto put_spec = [&](std::string_view spec) {
    put_varint(out, (3u << 3) | 2u);
    put_varint(out, spec.size() + sizeof kNoDummyPrefix);
    out.append(spec);
    out.append(kNoDummyPrefix, sizeof kNoDummyPrefix);
    patched = true;
  };
  for_each_field(serialized, source, [&](const Field& top) {
    if (top.number == 3 && top.wire == 2) {
      put_spec(top.bytes);
    } else {
      out.append(top.whole);
    }
  });
  if (!patched) put_spec({});
  return out;
}

}  // namespace kvlab::harness
