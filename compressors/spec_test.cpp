// The spec grammar on a hand-made method table (so the grammar is tested apart from any
// method), then the round trip over every registered method's defaults.
#include "compressors/spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using ::testing::HasSubstr;

MethodTable test_table() {
  MethodDef alpha{"alpha", StageKind::transform, "a transform", {}, {}};
  alpha.params = {{"a", ParamType::integer, "4", "an integer", {}, 1, 1000},
                  {"b", ParamType::real, "0.5", "a fraction", {}, 0, 1},
                  {"c", ParamType::integer, "0", "derived: 2·a when not given", {}, 0, 1e9},
                  {"mode", ParamType::choice, "x", "a choice", {"x", "y"}},
                  {"name", ParamType::text, "", "free text", {}}};
  alpha.resolve = [](StageSpec& s, const std::vector<std::string>& given) {
    if (std::find(given.begin(), given.end(), "c") == given.end()) s.set("c", std::to_string(2 * s.get_int("a")));
  };
  MethodDef evict{"evict", StageKind::eviction, "an eviction", {{"keep", ParamType::real, "0.25", "", {}, 0, 1}}, {}};
  MethodDef quant{"quant", StageKind::quantizer, "a quantizer", {{"bits", ParamType::choice, "2", "", {"2", "4"}}}, {}};
  return {alpha, evict, quant};
}

using testing::error_of;

TEST(Spec, FillsDefaultsResolvesAndPrintsCanonically) {
  const auto t = test_table();
  EXPECT_EQ(parse_spec("alpha", t).to_string(), "alpha:a=4,b=0.5,c=8,mode=x,name=");
  EXPECT_EQ(parse_spec(" alpha : mode=y , a=3 ", t).to_string(), "alpha:a=3,b=0.5,c=6,mode=y,name=");
  EXPECT_EQ(parse_spec("alpha:a=3,c=1", t).to_string(), "alpha:a=3,b=0.5,c=1,mode=x,name=");  // given wins
  EXPECT_EQ(parse_spec("alpha:b=.25", t).stages[0].get_real("b"), 0.25);
  EXPECT_EQ(parse_spec("evict:keep=0.5+alpha+quant:bits=4", t).to_string(),
            "evict:keep=0.5+alpha:a=4,b=0.5,c=8,mode=x,name=+quant:bits=4");
}

TEST(Spec, ParsePrintParseRoundTrips) {
  const auto t = test_table();
  for (const char* s : {"alpha", "alpha:a=7,b=1,mode=y,name=run1", "evict+quant", "evict:keep=0.1+alpha:c=3+quant:bits=4",
                        "alpha:b=0.30000000000000004"}) {
    const auto once = parse_spec(s, t).to_string();
    EXPECT_EQ(parse_spec(once, t).to_string(), once) << s;
  }
}

TEST(Spec, ErrorsNameWhatIsWrongAndListWhatIsAllowed) {
  const auto t = test_table();
  EXPECT_THAT(error_of([&] { parse_spec("beta", t); }), HasSubstr("known: alpha, evict, quant"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:z=1", t); }), HasSubstr("unknown key 'z' (allowed: a, b, c, mode, name)"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:a=x", t); }), HasSubstr("'a' needs an integer"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:a=0", t); }), HasSubstr("outside [1, 1000]"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:b=1.5", t); }), HasSubstr("'b'"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:b=nan", t); }), HasSubstr("needs a number"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:mode=z", t); }), HasSubstr("not one of: x, y"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:a=1,a=2", t); }), HasSubstr("given twice"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:a", t); }), HasSubstr("not KEY=VALUE"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:", t); }), HasSubstr("nothing after ':'"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha++quant", t); }), HasSubstr("empty stage"));
  EXPECT_THAT(error_of([&] { parse_spec("", t); }), HasSubstr("empty compressor spec"));
  EXPECT_THAT(error_of([&] { parse_spec("quant+alpha", t); }), HasSubstr("comes after a quantizer"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha+alpha", t); }), HasSubstr("at most one transform"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:a=1..4:1", t); }), HasSubstr("is a sweep"));
  EXPECT_THAT(error_of([&] { parse_spec("alpha:name=a:b", t); }), HasSubstr("may not contain"));
}

TEST(Spec, SweepsExpandToTheGridLastKeyFastest) {
  const auto t = test_table();
  const auto range = expand_sweep("alpha:a=1..7:2", t);
  ASSERT_EQ(range.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(range[i].stages[0].get_int("a"), 1 + 2 * static_cast<std::int64_t>(i));
    EXPECT_EQ(range[i].stages[0].get_int("c"), 2 * range[i].stages[0].get_int("a"));  // resolved per variant
  }
  const auto grid = expand_sweep("alpha:a=[2,3],mode=[x,y]+quant:bits=[2,4]", t);
  ASSERT_EQ(grid.size(), 8u);
  EXPECT_EQ(grid[0].to_string(), "alpha:a=2,b=0.5,c=4,mode=x,name=+quant:bits=2");
  EXPECT_EQ(grid[1].to_string(), "alpha:a=2,b=0.5,c=4,mode=x,name=+quant:bits=4");
  EXPECT_EQ(grid[7].to_string(), "alpha:a=3,b=0.5,c=6,mode=y,name=+quant:bits=4");
  const auto reals = expand_sweep("alpha:b=0..1:0.25", t);  // the end point survives rounding
  ASSERT_EQ(reals.size(), 5u);
  EXPECT_EQ(reals[4].stages[0].get_real("b"), 1.0);
  EXPECT_EQ(expand_sweep("alpha", t).size(), 1u);
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:a=1..4", t); }), HasSubstr("needs a step"));
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:a=4..1:1", t); }), HasSubstr("A ≤ B"));
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:mode=x..y:1", t); }), HasSubstr("cannot take a range"));
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:a=[1,0]", t); }), HasSubstr("outside [1, 1000]"));
  // An integer key's range must hold integers: 1..3:1.5 would round 1.5 to 2 behind the user's back.
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:a=1..3:1.5", t); }), HasSubstr("takes integers"));
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:a=1.5..3:1", t); }), HasSubstr("takes integers"));
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:a=[1.5]", t); }), HasSubstr("integer"));
  EXPECT_EQ(expand_sweep("alpha:b=0.25..0.75:0.25", t).size(), 3u);  // a real key's range may be fractional
}

// Found by fuzz/spec_fuzz (fuzz/crashes/spec/): a range whose value count exceeds every integer
// (or is infinite) is the "at most 10000" error, not an undefined double → integer conversion.
TEST(Spec, HugeRangesAreRejectedBeforeCountingThem) {
  const auto t = test_table();
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:a=1..1001:0.1", t); }), HasSubstr("at most 10000"));
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:b=0..1e300:1e-300", t); }), HasSubstr("at most 10000"));
  EXPECT_THAT(error_of([&] { expand_sweep("alpha:b=-1e308..1e308:1", t); }), HasSubstr("at most 10000"));
  EXPECT_THAT(error_of([&] { expand_sweep("svd:rk=27..2255222222222222222222222222222222222222222222222222222222222222222222222222:.3"); }),
              HasSubstr("at most 10000"));
}

TEST(Spec, FormatRealIsShortestRoundTrip) {
  EXPECT_EQ(format_real(0.1), "0.1");
  EXPECT_EQ(format_real(2.0), "2");
  EXPECT_EQ(format_real(1e-5), "1e-05");
  EXPECT_EQ(std::stod(format_real(0.30000000000000004)), 0.30000000000000004);
}

TEST(Spec, EveryRegisteredMethodRoundTripsItsDefaultsAndDocumentsItsKeys) {
  const auto help = describe_methods();
  for (const auto& m : methods()) {
    const auto once = parse_spec(m.name).to_string();
    EXPECT_EQ(parse_spec(once).to_string(), once) << m.name;
    EXPECT_THAT(help, HasSubstr("  " + m.name + " (")) << m.name;
    for (const auto& p : m.params) {
      EXPECT_FALSE(p.help.empty()) << m.name << "." << p.key << " has no help";
      EXPECT_THAT(help, HasSubstr(p.key + "=")) << m.name << "." << p.key;
    }
  }
}

}  // namespace
}  // namespace kvlab::compressors
