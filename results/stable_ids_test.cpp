// The stable ids kvlab derives from FNV-1a 64, pinned. The expected values come from an
// independent implementation of the published algorithm (Python: h = basis; for each byte
// h = ((h ^ byte) * 1099511628211) mod 2^64), run on the same bytes. A failure here is a
// compatibility break, not a value to update: name_hash seeds the generated task data,
// content_uuid decides whether a report was imported already, and sweep cell ids decide
// which cells of a stored sweep are done.
#include <gtest/gtest.h>

#include "datasets/rng.h"
#include "results/import.h"
#include "results/sweep_plan.h"

namespace kvlab {
namespace {

TEST(StableIds, TaskNameHashIsFnv1a) {
  using datasets::detail::name_hash;
  EXPECT_EQ(name_hash(""), 0xcbf29ce484222325ULL);  // the offset basis itself
  EXPECT_EQ(name_hash("niah_single_1"), 0x60c2b4ef34686fbaULL);
  EXPECT_EQ(name_hash("vt"), 0x08cf5007b5710667ULL);
  EXPECT_EQ(name_hash("qa_1"), 0xcb175e08147db9dbULL);
}

// content_uuid: FNV-1a of the bytes, then FNV-1a of the reversed bytes from the basis
// 0xcbf29ce484222325 ^ 0x9E3779B97F4A7C15.
TEST(StableIds, ContentUuidOfImportedReports) {
  EXPECT_EQ(results::content_uuid(""), "cbf29ce4-8422-2325-55c5-e55dfb685f30");
  EXPECT_EQ(results::content_uuid("abc"), "e71fa219-0541-574b-c163-bde3ce4bc410");
  EXPECT_EQ(results::content_uuid("{\"methods\": []}\n"), "318a5fe3-3925-1d71-979c-9cc3e6405320");
}

// A cell's id hashes its canonical text: kind, then "\x1f" key=value per axis, "\x1e" method
// per method, "\x1d" key=value per option (maps in key order). For the two cells below:
//   compress\x1fdump=a.h5\x1fmethod=svd:rk=4\x1fsample=\x1esvd:rk=4\x1ddevice=cpu
//   eval\x1flength=512\x1fmodel=tiny\x1ftask=ruler:vt\x1efull\x1esnapkv:keep=0.5\x1dquestion=in-context\x1dsamples=2
const char* kPinnedSweep = R"(
name: pin
compress:
  dumps: [a.h5]
  methods: ["svd:rk=4"]
  options: {device: cpu}
eval:
  models: [tiny]
  tasks: [ruler:vt]
  lengths: [512]
  samples: 2
  methods: [full, "snapkv:keep=0.5"]
  options: {question: in-context}
)";

TEST(StableIds, SweepCellIds) {
  const auto plan = results::parse_sweep(kPinnedSweep, "pin.yaml", "");  // no base: paths stay as written
  ASSERT_EQ(plan.cells.size(), 2u);
  EXPECT_EQ(plan.cells[0].id, "c2-10a5f0e6cf28ae54");
  EXPECT_EQ(plan.cells[1].id, "c2-fb60928bd01efcb2");
  // FNV-1a's loop from the offset basis 1469598103934665603 (the reference's with its last digit
  // dropped): the ids sweeps were written with up to b94864a, which resume still recognises.
  EXPECT_EQ(plan.cells[0].legacy_id, "cd9ff39c798d26c66");
  EXPECT_EQ(plan.cells[1].legacy_id, "c9b781ad96b35df40");
}

}  // namespace
}  // namespace kvlab
