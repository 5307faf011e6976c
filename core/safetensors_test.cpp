// safetensors reader/writer. Oracles: the raw bytes we lay out by hand (independent of the
// writer) for the reader, and the dtype's own rounding (f32_to_16bit then bits16_to_f32) for
// the 16-bit round trips; every malformed file must raise kvlab::Error naming the file (and the
// tensor where one is at fault).
#include "core/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"

namespace kvlab::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / fmt::format("kvlab_st_{}_{}", test->name(), ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A file laid out by hand: 8-byte LE size (or `size_field` when given), header text, data.
  fs::path raw(const std::string& name, const std::string& header, const std::string& data,
               std::int64_t size_field = -1) {
    std::string bytes(8, '\0');
    const auto n = static_cast<std::uint64_t>(size_field < 0 ? static_cast<std::int64_t>(header.size()) : size_field);
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    bytes += header;
    bytes += data;
    const auto path = dir_ / name;
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path;
  }

  // Expects opening `path` to fail with a message containing every fragment.
  static void expect_error(const fs::path& path, const std::vector<std::string>& fragments) {
    try {
      Checkpoint ckpt(path);
      ADD_FAILURE() << "opened " << path << " without error";
    } catch (const Error& e) {
      for (const auto& f : fragments) EXPECT_THAT(e.what(), HasSubstr(f));
    }
  }

  fs::path dir_;
};

std::vector<float> random_values(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 3.f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

// Round trip in each dtype: values come back exactly as the dtype's rounding gives them
// (f32: bit-exact); shapes, dtype strings, names and metadata are preserved, including a 0-rank
// and an empty tensor (docs/models.md §3.2).
TEST_F(Safetensors, RoundTripEachDtype) {
  std::map<std::string, TensorToWrite> tensors;
  tensors["a.f32"] = {{3, 5}, random_values(15, 1), DType::f32};
  tensors["b.f16"] = {{2, 3, 4}, random_values(24, 2), DType::f16};
  tensors["c.bf16"] = {{7}, random_values(7, 3), DType::bf16};
  tensors["scalar"] = {{}, {2.5f}, DType::f16};
  tensors["empty"] = {{0, 4}, {}, DType::bf16};
  const auto path = dir_ / "model.safetensors";
  write_safetensors(path, tensors, {{"format", "pt"}, {"note", "tiny"}});

  // Header padded to a multiple of 8 with spaces (the writer rule, docs/models.md §3.3).
  std::ifstream in(path, std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);

  for (const auto& open_path : {path, dir_}) {  // the file itself and its directory
    Checkpoint ckpt(open_path);
    EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a.f32", "b.f16", "c.bf16", "empty", "scalar"}));
    EXPECT_EQ(ckpt.metadata().at("note"), "tiny");
    EXPECT_EQ(ckpt.dtype("a.f32"), "F32");
    EXPECT_EQ(ckpt.dtype("b.f16"), "F16");
    EXPECT_EQ(ckpt.dtype("c.bf16"), "BF16");
    for (const auto& [name, t] : tensors) {
      SCOPED_TRACE(name);
      EXPECT_TRUE(ckpt.has(name));
      EXPECT_EQ(ckpt.shape(name), t.shape);
      std::vector<float> expected = t.data;
      if (t.dtype != DType::f32) {
        std::vector<std::uint16_t> bits(expected.size());
        f32_to_16bit(t.dtype, t.data, bits);
        bits16_to_f32(t.dtype, bits, expected);
      }
      const auto got = ckpt.tensor(name);
      EXPECT_EQ(got.shape, t.shape);
      EXPECT_EQ(got.data, expected);  // exact: no arithmetic between write and read
    }
    EXPECT_FALSE(ckpt.has("missing"));
    try {
      (void)ckpt.tensor("missing");
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("'missing'"));
    }
  }
}

// A hand-built file (not the writer's output): unordered offsets in the header, no padding,
// unaligned data. The reader must sort by offset, and read exactly the bytes we placed.
TEST_F(Safetensors, ReadsHandBuiltFile) {
  const std::vector<float> x = {1.f, -2.f, 3.5f};
  const std::uint16_t half_one = 0x3C00, half_minus_two = 0xC000;  // IEEE half 1.0, -2.0
  std::string data;
  data.append(reinterpret_cast<const char*>(&half_one), 2);
  data.append(reinterpret_cast<const char*>(&half_minus_two), 2);
  data += f32_bytes(x);
  const auto path = raw("hand.safetensors",
                        R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[4,16]},)"
                        R"("h":{"dtype":"F16","shape":[2,1],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}})",
                        data);
  Checkpoint ckpt(path);
  EXPECT_EQ(ckpt.tensor("x").data, x);
  EXPECT_EQ(ckpt.tensor("h").data, (std::vector<float>{1.f, -2.f}));
  EXPECT_EQ(ckpt.shape("h"), (Shape{2, 1}));
  // raw() is the stored bytes, untouched: the half bits and the f32 bytes as laid out above.
  const auto h = ckpt.raw("h");
  ASSERT_EQ(h.size(), 4u);
  EXPECT_EQ(std::memcmp(h.data(), data.data(), 4), 0);
  const auto xr = ckpt.raw("x");
  ASSERT_EQ(xr.size(), 12u);
  EXPECT_EQ(std::memcmp(xr.data(), data.data() + 4, 12), 0);
}

TEST_F(Safetensors, OtherDtypesAreListedButNotConverted) {
  const auto path = raw("i64.safetensors", R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})",
                        std::string(16, '\0'));
  Checkpoint ckpt(path);
  EXPECT_EQ(ckpt.dtype("ids"), "I64");
  try {
    (void)ckpt.tensor("ids");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'ids'"));
    EXPECT_THAT(e.what(), HasSubstr("I64"));
  }
}

// model.safetensors.index.json with two shards; a directory opens through its index.
TEST_F(Safetensors, ShardedIndex) {
  write_safetensors(dir_ / "model-00001-of-00002.safetensors", {{"w1", {{2, 2}, {1, 2, 3, 4}, DType::f32}}});
  write_safetensors(dir_ / "model-00002-of-00002.safetensors",
                    {{"w2", {{3}, {5, 6, 7}, DType::bf16}}, {"w3", {{1}, {8}, DType::f16}}});
  std::ofstream(dir_ / "model.safetensors.index.json")
      << R"({"metadata":{"total_size":28,"format":"pt"},"weight_map":{"w1":"model-00001-of-00002.safetensors",)"
         R"("w2":"model-00002-of-00002.safetensors","w3":"model-00002-of-00002.safetensors"}})";
  Checkpoint ckpt(dir_);
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"w1", "w2", "w3"}));
  EXPECT_EQ(ckpt.tensor("w1").data, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(ckpt.tensor("w2").data, (std::vector<float>{5, 6, 7}));  // small integers: exact in bf16
  EXPECT_EQ(ckpt.tensor("w3").data, (std::vector<float>{8}));
}

TEST_F(Safetensors, ShardedIndexErrors) {
  write_safetensors(dir_ / "a.safetensors", {{"w1", {{1}, {1}, DType::f32}}});
  std::ofstream(dir_ / "missing.json") << R"({"weight_map":{"w1":"a.safetensors","w2":"b.safetensors"}})";
  expect_error(dir_ / "missing.json", {"missing.json", "b.safetensors", "w2"});
  std::ofstream(dir_ / "wrong.json") << R"({"weight_map":{"w9":"a.safetensors"}})";
  expect_error(dir_ / "wrong.json", {"wrong.json", "'w9'", "a.safetensors"});
  std::ofstream(dir_ / "escape.json") << R"({"weight_map":{"w1":"../a.safetensors"}})";
  expect_error(dir_ / "escape.json", {"escape.json", "w1"});
  std::ofstream(dir_ / "nomap.json") << R"({"metadata":{}})";
  expect_error(dir_ / "nomap.json", {"nomap.json", "weight_map"});
  fs::create_directories(dir_ / "emptydir");
  expect_error(dir_ / "emptydir", {"emptydir", "model.safetensors"});
}

const std::string kGoodHeader = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

TEST_F(Safetensors, TruncatedFiles) {
  {  // empty file
    const auto path = dir_ / "empty.safetensors";
    std::ofstream(path, std::ios::binary).flush();
    expect_error(path, {"empty.safetensors", "truncated"});
  }
  {  // shorter than the 8-byte size field
    const auto path = dir_ / "short.safetensors";
    std::ofstream(path, std::ios::binary) << "abc";
    expect_error(path, {"short.safetensors", "truncated"});
  }
  // Header cut short: the size field promises more than the file holds.
  expect_error(raw("cuthdr.safetensors", kGoodHeader.substr(0, 20), "", static_cast<std::int64_t>(kGoodHeader.size())),
               {"cuthdr.safetensors", "truncated"});
  // Data cut short: the tensor's END lies past the end of the file.
  expect_error(raw("cutdata.safetensors", kGoodHeader, std::string(5, '\0')), {"cutdata.safetensors", "truncated", "'t'"});
  // The good file itself opens.
  EXPECT_NO_THROW(Checkpoint(raw("good.safetensors", kGoodHeader, std::string(8, '\0'))));
}

TEST_F(Safetensors, HeaderTooBig) {
  expect_error(raw("big.safetensors", kGoodHeader, std::string(8, '\0'), 100'000'001), {"big.safetensors", "100000000"});
}

TEST_F(Safetensors, NotJson) {
  expect_error(raw("nobrace.safetensors", "[1,2]", ""), {"nobrace.safetensors", "'{'"});
  expect_error(raw("garbage.safetensors", "{not json", ""), {"garbage.safetensors", "JSON"});
  expect_error(raw("meta.safetensors", R"({"__metadata__":{"format":1}})", ""), {"meta.safetensors", "__metadata__"});
  expect_error(raw("dup.safetensors",
                   R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                   R"("t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                   std::string(8, '\0')),
               {"dup.safetensors", "'t'", "twice"});
  expect_error(raw("noshape.safetensors", R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", std::string(4, '\0')),
               {"noshape.safetensors", "'t'", "shape"});
  expect_error(raw("negshape.safetensors", R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                   std::string(4, '\0')),
               {"negshape.safetensors", "'t'", "shape"});
}

TEST_F(Safetensors, BadDtype) {
  expect_error(raw("dtype.safetensors", R"({"t":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})",
                   std::string(8, '\0')),
               {"dtype.safetensors", "'t'", "F31"});
}

TEST_F(Safetensors, SizeMismatch) {
  // 3 F32 elements need 12 bytes, the offsets give 8.
  expect_error(raw("size.safetensors", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                   std::string(8, '\0')),
               {"size.safetensors", "'t'", "12"});
  // Bytes after the last tensor that no entry indexes.
  expect_error(raw("tail.safetensors", kGoodHeader, std::string(12, '\0')), {"tail.safetensors", "not indexed"});
}

TEST_F(Safetensors, OverlappingAndHoleyOffsets) {
  expect_error(raw("overlap.safetensors",
                   R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                   std::string(12, '\0')),
               {"overlap.safetensors", "'b'", "overlapping"});
  expect_error(raw("hole.safetensors",
                   R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                   R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                   std::string(12, '\0')),
               {"hole.safetensors", "'b'", "hole"});
  expect_error(raw("start.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                   std::string(8, '\0')),
               {"start.safetensors", "'a'", "hole"});
}

TEST_F(Safetensors, WriterRejectsMismatchedDataAndLeavesNoFile) {
  const auto path = dir_ / "bad.safetensors";
  try {
    write_safetensors(path, {{"w", {{2, 2}, {1, 2, 3}, DType::f32}}});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'w'"));
  }
  EXPECT_FALSE(fs::exists(path));
}

}  // namespace
}  // namespace kvlab::core
