// The prompt hash of eval.json against FNV-1a 64 computed outside kvlab (Python), over each
// token id's 4 little-endian bytes:
//   python3 -c "import struct,functools as f;print('fnv1a64:%016x'%f.reduce(lambda h,b:((h^b)*0x100000001b3)%2**64,struct.pack('<4i',1,15043,3186,128000),14695981039346656037))"
// The basis 14695981039346656037 is FNV's published offset basis (core/fnv1a.h).
#include "harness/eval_report.h"

#include <gtest/gtest.h>

namespace kvlab::harness {
namespace {

TEST(EvalReport, PromptHashIsFnv1a64OfTheTokensLittleEndianBytes) {
  EXPECT_EQ(prompt_hash({1, 15043, 3186, 128000}), "fnv1a64:cfa0cfab81e2bf66");
  // No tokens: no bytes folded in, the offset basis itself.
  EXPECT_EQ(prompt_hash({}), "fnv1a64:cbf29ce484222325");
}

}  // namespace
}  // namespace kvlab::harness
