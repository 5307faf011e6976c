#include "core/kv_dump.h"

#include <gmock/gmock.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <iterator>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "core/block_checksum.h"
#include "core/error.h"
#include "core/error_of.h"
#include "core/version.h"

namespace kvlab::core {

// Parameterised test names and failure messages show "f16", not the enum's bytes.
static void PrintTo(DType dtype, std::ostream* out) { *out << to_string(dtype); }

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------------
// Fixtures and helpers

// A fresh directory per test, removed afterwards.
class KvDumpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = fmt::format("kvlab_{}_{}_{}", test->test_suite_name(), test->name(), ::getpid());
    std::replace(name.begin(), name.end(), '/', '_');  // parameterised tests have '/' in their names
    dir_ = fs::temp_directory_path() / name;
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path file(const std::string& name) const { return dir_ / name; }
  fs::path dir_;
};

DumpInfo make_info(DType dtype, int layers = 4, int kv_heads = 2, int q_heads = 4, int head_dim = 8, int d_model = 0) {
  DumpInfo info;
  info.num_layers = layers;
  info.num_kv_heads = kv_heads;
  info.num_q_heads = q_heads;
  info.head_dim = head_dim;
  info.d_model = d_model;
  info.dtype = dtype;
  info.model_id = "synthetic";
  info.model_config = R"({"hidden_size": 32})";
  info.tokenizer = "none";
  info.chat_template = "none";
  return info;
}

SampleMeta make_meta(const std::string& id, std::int64_t tokens, int window, bool attn_in = false) {
  SampleMeta meta;
  meta.id = id;
  meta.num_tokens = tokens;
  meta.context_end = tokens - 2;
  meta.query_window = window;
  meta.has_attn_in = attn_in;
  for (std::int64_t t = 0; t < tokens; ++t) {
    meta.tokens.push_back(static_cast<std::int32_t>(1000 + 7 * t));
    meta.positions.push_back(t + 3);
  }
  return meta;
}

// One layer's tensors, f32, as handed to the writer.
struct LayerData {
  std::vector<float> key, value, query, attn_in;
};

// Deterministic KV-like values, bounded away from 0 so that relative errors are meaningful.
std::vector<float> random_values(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> values(n);
  for (float& v : values) {
    v = normal(rng);
    if (std::fabs(v) < 1e-3f) v = 1e-3f;
  }
  return values;
}

LayerData make_layer(const DumpInfo& info, const SampleMeta& meta, int layer) {
  const auto seed = static_cast<std::uint32_t>(std::hash<std::string>{}(meta.id) + 17 * layer);
  const auto T = static_cast<std::size_t>(meta.num_tokens);
  const auto W = static_cast<std::size_t>(meta.query_window);
  LayerData d;
  d.key = random_values(T * static_cast<std::size_t>(info.kv_row_width()), seed);
  d.value = random_values(T * static_cast<std::size_t>(info.kv_row_width()), seed + 1);
  d.query = random_values(W * static_cast<std::size_t>(info.q_row_width()), seed + 2);
  if (meta.has_attn_in) d.attn_in = random_values(T * static_cast<std::size_t>(info.d_model), seed + 3);
  return d;
}

void write_sample(DumpWriter& writer, const DumpInfo& info, const SampleMeta& meta) {
  writer.begin_sample(meta);
  for (int l = 0; l < info.num_layers; ++l) {
    const LayerData d = make_layer(info, meta, l);
    writer.write_layer(l, d.key, d.value, d.query, d.attn_in);
  }
  writer.end_sample();
}

void write_dump(const fs::path& path, const DumpInfo& info, const std::vector<SampleMeta>& samples) {
  DumpWriter writer(path, info);
  for (const auto& meta : samples) write_sample(writer, info, meta);
  writer.commit();
}

// What a reader must return for `values` stored as `dtype`: exact for f32, else the value
// rounded to the 16-bit format.
std::vector<float> stored(DType dtype, const std::vector<float>& values) {
  if (dtype == DType::f32) return values;
  std::vector<std::uint16_t> bits(values.size());
  std::vector<float> back(values.size());
  f32_to_16bit(dtype, values, bits);
  bits16_to_f32(dtype, bits, back);
  return back;
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  return names;
}

// Opens a dump read-write with the raw HDF5 API and hands the file id to `edit`.
void edit_with_hdf5(const fs::path& path, const std::function<void(hid_t)>& edit) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  edit(file);
  ASSERT_GE(H5Fclose(file), 0);
}

// Recomputes a dataset's block checksums from its stored bytes, as another tool that writes the
// format would: the file is then consistent, whatever its values.
void restamp_checksums(hid_t d) {
  const hid_t type = H5Dget_type(d);
  const hid_t space = H5Dget_space(d);
  std::vector<hsize_t> dims(static_cast<std::size_t>(H5Sget_simple_extent_ndims(space)));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  const auto rows = static_cast<std::int64_t>(dims[0]);
  const std::size_t row_bytes = H5Tget_size(type) * static_cast<std::size_t>(H5Sget_simple_extent_npoints(space)) /
                                std::max<std::size_t>(dims[0], 1);
  std::vector<std::byte> bytes(row_bytes * dims[0]);
  ASSERT_GE(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()), 0);
  std::int64_t block_rows = 0;
  const hid_t rows_attr = H5Aopen(d, "xxh3_block_rows", H5P_DEFAULT);
  ASSERT_GE(H5Aread(rows_attr, H5T_NATIVE_INT64, &block_rows), 0);
  H5Aclose(rows_attr);
  std::vector<std::uint64_t> hashes;
  for (std::int64_t r0 = 0; r0 < rows; r0 += block_rows)
    hashes.push_back(block_hash(std::span(bytes).subspan(static_cast<std::size_t>(r0) * row_bytes,
                                                         static_cast<std::size_t>(std::min(block_rows, rows - r0)) * row_bytes)));
  const hid_t attr = H5Aopen(d, "xxh3_64", H5P_DEFAULT);
  EXPECT_GE(H5Awrite(attr, H5T_NATIVE_UINT64, hashes.data()), 0);
  H5Aclose(attr);
  H5Sclose(space);
  H5Tclose(type);
}

// Overwrites one element of a dataset with raw bits (its own type as the memory type, so
// HDF5 stores the bits unchanged; little-endian host). With `restamp` its checksums are
// recomputed (a consistent file with odd values), without it the change is silent corruption.
void poke_bits(const fs::path& path, const std::string& dataset, std::vector<hsize_t> index, std::uint32_t bits,
               bool restamp = true) {
  edit_with_hdf5(path, [&](hid_t file) {
    const hid_t d = H5Dopen2(file, dataset.c_str(), H5P_DEFAULT);
    const hid_t type = H5Dget_type(d);
    const hid_t space = H5Dget_space(d);
    std::vector<hsize_t> one(index.size(), 1);
    H5Sselect_hyperslab(space, H5S_SELECT_SET, index.data(), nullptr, one.data(), nullptr);
    const hsize_t n = 1;
    const hid_t memory = H5Screate_simple(1, &n, nullptr);
    EXPECT_GE(H5Dwrite(d, type, memory, space, H5P_DEFAULT, &bits), 0);
    if (restamp) restamp_checksums(d);
    H5Sclose(memory);
    H5Sclose(space);
    H5Tclose(type);
    H5Dclose(d);
  });
}

// Replaces a dataset by an f32 one of another shape, or an int32 one.
void replace_dataset(const fs::path& path, const std::string& dataset, std::vector<hsize_t> dims, hid_t type) {
  edit_with_hdf5(path, [&](hid_t file) {
    ASSERT_GE(H5Ldelete(file, dataset.c_str(), H5P_DEFAULT), 0);
    const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    const hid_t d = H5Dcreate2(file, dataset.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(d, 0);
    H5Dclose(d);
    H5Sclose(space);
  });
}

void set_format_version(const fs::path& path, std::int64_t version) {
  edit_with_hdf5(path, [&](hid_t file) {
    const hid_t attr = H5Aopen(file, "format_version", H5P_DEFAULT);
    EXPECT_GE(H5Awrite(attr, H5T_NATIVE_INT64, &version), 0);
    H5Aclose(attr);
  });
}

// ---------------------------------------------------------------------------------------------
// Round trips

class KvDumpRoundTrip : public KvDumpTest, public ::testing::WithParamInterface<DType> {};

TEST_P(KvDumpRoundTrip, ValuesAreStoredAtTheDumpPrecision) {
  const DType dtype = GetParam();
  const DumpInfo info = make_info(dtype, 3, 2, 4, 16, 24);
  const SampleMeta meta = make_meta("s0", 40, 8, true);
  const fs::path path = file("dump.h5");
  write_dump(path, info, {meta});

  const DumpReader reader(path);
  EXPECT_EQ(reader.info().dtype, dtype);
  EXPECT_EQ(reader.info().num_layers, 3);
  EXPECT_EQ(reader.info().d_model, 24);
  // The format's rounding bound: half an ulp relative to the value, 2^-11 (f16) / 2^-8 (bf16).
  const double bound = dtype == DType::f16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
  for (int l = 0; l < info.num_layers; ++l) {
    const LayerData in = make_layer(info, meta, l);
    const std::pair<KvKind, const std::vector<float>*> kinds[] = {
        {KvKind::key, &in.key}, {KvKind::value, &in.value}, {KvKind::query, &in.query}, {KvKind::attn_in, &in.attn_in}};
    for (const auto& [kind, values] : kinds) {
      const FloatTensor out = reader.read_layer("s0", l, kind);
      ASSERT_EQ(out.data, stored(dtype, *values)) << "layer " << l << " " << to_string(kind);
      if (dtype == DType::f32) continue;
      for (std::size_t i = 0; i < values->size(); ++i)
        ASSERT_LE(std::fabs(out.data[i] - (*values)[i]), bound * std::fabs((*values)[i])) << i;
    }
  }
  EXPECT_EQ(reader.read_layer("s0", 1, KvKind::key).shape, (Shape{40, 2, 16}));
  EXPECT_EQ(reader.read_layer("s0", 1, KvKind::query).shape, (Shape{8, 4, 16}));
  EXPECT_EQ(reader.read_layer("s0", 1, KvKind::attn_in).shape, (Shape{40, 24}));
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, KvDumpRoundTrip, ::testing::Values(DType::f32, DType::f16, DType::bf16),
                         [](const auto& param_info) { return std::string(to_string(param_info.param)); });

// Big enough for several chunks (2 MiB = 1024 rows of 8 × 128 halves) and several read slabs.
TEST_F(KvDumpTest, ReadRowsOfATokenRangeEqualsTheLayerSlice) {
  const DumpInfo info = make_info(DType::f16, 2, 8, 8, 128);
  const SampleMeta meta = make_meta("long", 5000, 16);
  const fs::path path = file("dump.h5");
  write_dump(path, info, {meta});

  const DumpReader reader(path);
  const FloatTensor whole = reader.read_layer("long", 1, KvKind::value);
  ASSERT_EQ(whole.data, stored(DType::f16, make_layer(info, meta, 1).value));
  const std::int64_t width = info.kv_row_width();
  for (const auto& [t0, n] : std::vector<std::pair<std::int64_t, std::int64_t>>{{1500, 2100}, {1024, 1024}, {4999, 1}, {7, 0}}) {
    std::vector<float> rows(static_cast<std::size_t>(n * width));
    reader.read_rows("long", 1, KvKind::value, t0, n, rows);
    EXPECT_TRUE(std::equal(rows.begin(), rows.end(), whole.data.begin() + t0 * width)) << t0 << "+" << n;
  }
  std::vector<float> rows(static_cast<std::size_t>(10 * width));
  EXPECT_THAT(error_of([&] { reader.read_rows("long", 1, KvKind::value, 4995, 10, rows); }),
              HasSubstr("rows [4995, 5005) outside [0, 5000)"));
  EXPECT_THAT(error_of([&] { reader.read_rows("long", 1, KvKind::value, 0, 9, rows); }), HasSubstr("output holds"));
}

TEST_F(KvDumpTest, ChunksAreTokenBlocksOfAboutTwoMiB) {
  const DumpInfo info = make_info(DType::f16, 1, 8, 8, 128);
  const fs::path path = file("dump.h5");
  write_dump(path, info, {make_meta("s", 3000, 16)});
  const auto chunk_of = [&](const char* dataset) {
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t d = H5Dopen2(file, dataset, H5P_DEFAULT);
    const hid_t dcpl = H5Dget_create_plist(d);
    std::vector<hsize_t> chunk(3);
    EXPECT_EQ(H5Pget_chunk(dcpl, 3, chunk.data()), 3);
    H5Pclose(dcpl);
    H5Dclose(d);
    H5Fclose(file);
    return chunk;
  };
  EXPECT_EQ(chunk_of("/samples/s/layers/0/key"), (std::vector<hsize_t>{1024, 8, 128}));  // 1024 rows × 2 KiB
  EXPECT_EQ(chunk_of("/samples/s/layers/0/query"), (std::vector<hsize_t>{16, 8, 128}));   // clamped to W
}

TEST_F(KvDumpTest, MultipleSamplesKeepTheirMetadataAndData) {
  const DumpInfo info = make_info(DType::bf16);
  SampleMeta synthetic;  // no tokens, default positions, empty query window
  synthetic.id = "a.synthetic-0";
  synthetic.num_tokens = 12;
  synthetic.context_end = 12;
  const std::vector<SampleMeta> samples = {make_meta("s_2", 30, 4), synthetic, make_meta("s_10", 17, 17)};
  const fs::path path = file("dump.h5");
  write_dump(path, info, samples);

  const DumpReader reader(path);
  EXPECT_EQ(reader.sample_ids(), (std::vector<std::string>{"a.synthetic-0", "s_10", "s_2"}));
  for (const auto& want : samples) {
    const SampleMeta got = reader.sample(want.id);
    EXPECT_EQ(got.num_tokens, want.num_tokens);
    EXPECT_EQ(got.context_end, want.context_end);
    EXPECT_EQ(got.query_window, want.query_window);
    EXPECT_EQ(got.tokens, want.tokens);
    EXPECT_FALSE(got.has_attn_in);
    if (want.positions.empty()) {
      ASSERT_EQ(got.positions.size(), 12u);
      EXPECT_EQ(got.positions.back(), 11);
    } else {
      EXPECT_EQ(got.positions, want.positions);
    }
  }
  // Interleaved reads across samples (the reader keeps one sample's datasets open at a time).
  for (int round = 0; round < 2; ++round)
    for (const auto& meta : samples)
      for (int l = 0; l < info.num_layers; ++l)
        ASSERT_EQ(reader.read_layer(meta.id, l, KvKind::key).data, stored(DType::bf16, make_layer(info, meta, l).key));
  EXPECT_EQ(reader.read_layer("a.synthetic-0", 0, KvKind::query).shape, (Shape{0, 4, 8}));
  EXPECT_THAT(error_of([&] { reader.sample("nope"); }), HasSubstr("no sample 'nope'"));
  EXPECT_THAT(error_of([&] { reader.read_layer("nope", 0, KvKind::key); }), HasSubstr("no sample 'nope'"));
  EXPECT_THAT(error_of([&] { reader.read_layer("s_2", 4, KvKind::key); }), HasSubstr("layer 4 out of range"));
}

TEST_F(KvDumpTest, AttnInIsOptionalPerSample) {
  const DumpInfo info = make_info(DType::f32, 2, 2, 4, 8, 16);
  const SampleMeta with = make_meta("with", 10, 2, true);
  const SampleMeta without = make_meta("without", 10, 2, false);
  const fs::path path = file("dump.h5");
  write_dump(path, info, {with, without});

  const DumpReader reader(path);
  EXPECT_TRUE(reader.sample("with").has_attn_in);
  EXPECT_FALSE(reader.sample("without").has_attn_in);
  EXPECT_EQ(reader.read_layer("with", 1, KvKind::attn_in).data, make_layer(info, with, 1).attn_in);
  EXPECT_THAT(error_of([&] { reader.read_layer("without", 1, KvKind::attn_in); }), HasSubstr("has no attn_in"));
}

TEST_F(KvDumpTest, ProvenanceRoundTripsAndIsFilledWhenEmpty) {
  DumpInfo info = make_info(DType::f16, 1);
  info.model_id = "meta-llama/Llama-3.1-8B";
  info.model_config = "{\"note\": \"" + std::string(100000, 'x') + "\"}";  // over HDF5's 64 KiB attribute limit
  info.tokenizer = "tokenizer.json sha256 abc";
  info.chat_template = "llama3 — «ünïcode»";
  info.kvlab_version = "9.9.9";
  info.git_revision = "deadbeef";
  info.created_utc = "2024-01-02T03:04:05Z";
  const fs::path given = file("given.h5");
  write_dump(given, info, {make_meta("s", 4, 1)});
  const DumpInfo read = DumpReader(given).info();
  EXPECT_EQ(read.model_id, info.model_id);
  EXPECT_EQ(read.model_config, info.model_config);
  EXPECT_EQ(read.tokenizer, info.tokenizer);
  EXPECT_EQ(read.chat_template, info.chat_template);
  EXPECT_EQ(read.kvlab_version, "9.9.9");
  EXPECT_EQ(read.git_revision, "deadbeef");
  EXPECT_EQ(read.created_utc, "2024-01-02T03:04:05Z");
  EXPECT_EQ(read.key_norm, "");  // not set: no attribute, read back as ""
  EXPECT_EQ(read.query_norm, "");

  // Qwen3's: the keys and queries are after k_norm / q_norm (and before RoPE).
  info.key_norm = kKeyNormBeforeRope;
  info.query_norm = kQueryNormBeforeRope;
  const fs::path normed = file("normed.h5");
  write_dump(normed, info, {make_meta("s", 4, 1)});
  EXPECT_EQ(DumpReader(normed).info().key_norm, "k_norm before RoPE");
  EXPECT_EQ(DumpReader(normed).info().query_norm, "q_norm before RoPE");
  EXPECT_TRUE(read.layer_windows.empty());  // not set: no attribute
  EXPECT_EQ(read.layer_rope, "");

  // Gemma's: a window on some layers (0: full attention), and sliding layers rotating otherwise.
  info.layer_windows.assign(info.num_layers, 0);
  info.layer_windows.front() = 4096;
  info.layer_rope = "sliding layers: default θ=10000; full-attention layers: linear θ=1e+06 factor=8";
  const fs::path windowed = file("windowed.h5");
  write_dump(windowed, info, {make_meta("s", 4, 1)});
  EXPECT_EQ(DumpReader(windowed).info().layer_windows, info.layer_windows);
  EXPECT_EQ(DumpReader(windowed).info().layer_rope, info.layer_rope);
  EXPECT_TRUE(DumpReader(windowed).info().layer_rope_configs.empty());  // a version before issue 22: words only

  // The machine-readable per-layer RoPE (layer_rope_config): read back per layer, the configs
  // written once each ({"configs": [...], "layers": [...]}, checked with HDF5's own reader).
  info.num_layers = 3;  // one local layer and two global ones: an index past the configs is then possible
  info.layer_windows.assign(3, 0);
  info.layer_windows.front() = 4096;
  const std::string local = R"({"rope_theta":10000.0})",
                    global = R"({"rope_scaling":{"factor":8.0,"rope_type":"linear"},"rope_theta":1000000.0})";
  info.layer_rope_configs.assign(info.num_layers, global);
  info.layer_rope_configs.front() = local;
  const fs::path per_layer = file("per_layer.h5");
  write_dump(per_layer, info, {make_meta("s", 4, 1)});
  EXPECT_EQ(DumpReader(per_layer).info().layer_rope_configs, info.layer_rope_configs);
  // A malformed layer_rope_config is refused when the dump opens, naming the attribute.
  const auto set_ropes = [&](const std::string& text) {
    edit_with_hdf5(per_layer, [&](hid_t f) {
      ASSERT_GE(H5Adelete(f, "layer_rope_config"), 0);
      const hid_t type = H5Tcopy(H5T_C_S1);
      H5Tset_size(type, text.size());
      H5Tset_cset(type, H5T_CSET_UTF8);
      const hid_t space = H5Screate(H5S_SCALAR);
      const hid_t attr = H5Acreate2(f, "layer_rope_config", type, space, H5P_DEFAULT, H5P_DEFAULT);
      EXPECT_GE(H5Awrite(attr, type, text.data()), 0);
      H5Aclose(attr);
      H5Sclose(space);
      H5Tclose(type);
    });
  };
  std::string layers = "0";
  for (int l = 1; l < info.num_layers; ++l) layers += ",1";
  set_ropes(fmt::format(R"({{"configs":[{},{}],"layers":[{}]}})", local, global, layers));
  EXPECT_EQ(DumpReader(per_layer).info().layer_rope_configs, info.layer_rope_configs);  // written by hand: the format
  set_ropes(fmt::format(R"({{"configs":[{}],"layers":[{}]}})", local, layers));
  EXPECT_THAT(error_of([&] { DumpReader r(per_layer); }), HasSubstr("is not an index into its 1 configs"));
  set_ropes(fmt::format(R"({{"configs":[{},{}],"layers":[0]}})", local, global));
  EXPECT_THAT(error_of([&] { DumpReader r(per_layer); }), HasSubstr("layer_rope_config lists 1 layers"));
  set_ropes("sliding layers: words");
  EXPECT_THAT(error_of([&] { DumpReader r(per_layer); }), HasSubstr("layer_rope_config"));
  info.layer_rope = "";  // the writer names the attribute in words for readers before issue 22
  write_dump(file("per_layer_words.h5"), info, {make_meta("s", 4, 1)});
  EXPECT_EQ(DumpReader(file("per_layer_words.h5")).info().layer_rope, "per-layer RoPE: see layer_rope_config");
  info.layer_rope_configs.pop_back();
  EXPECT_THAT(error_of([&] { write_dump(file("bad_ropes.h5"), info, {make_meta("s", 4, 1)}); }),
              HasSubstr("layer_rope_configs has"));
  info.layer_rope_configs.assign(info.num_layers, "[1]");
  EXPECT_THAT(error_of([&] { write_dump(file("bad_ropes.h5"), info, {make_meta("s", 4, 1)}); }),
              HasSubstr("not a JSON object"));
  info.layer_rope_configs.clear();
  info.layer_windows.push_back(7);
  EXPECT_THAT(error_of([&] { write_dump(file("bad_windows.h5"), info, {make_meta("s", 4, 1)}); }),
              HasSubstr("layer_windows has"));

  const fs::path filled = file("filled.h5");
  write_dump(filled, make_info(DType::f16, 1), {make_meta("s", 4, 1)});
  const DumpInfo auto_info = DumpReader(filled).info();
  EXPECT_EQ(auto_info.kvlab_version, kVersion);
  EXPECT_EQ(auto_info.git_revision, kGitRevision);
  EXPECT_TRUE(std::regex_match(auto_info.created_utc, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")))
      << auto_info.created_utc;
}

// h5py writes numpy byte strings as fixed-length attributes; the reader takes those too.
TEST_F(KvDumpTest, FixedLengthStringAttributesRead) {
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(DType::f16, 1), {make_meta("s", 4, 1)});
  const auto set_fixed = [&](const char* name, const std::string& text, H5T_str_t pad) {
    edit_with_hdf5(path, [&](hid_t f) {
      ASSERT_GE(H5Adelete(f, name), 0);
      const hid_t type = H5Tcopy(H5T_C_S1);
      H5Tset_size(type, 24);
      H5Tset_strpad(type, pad);
      H5Tset_cset(type, H5T_CSET_UTF8);
      const hid_t space = H5Screate(H5S_SCALAR);
      const hid_t attr = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
      std::string padded = text;
      padded.resize(24, pad == H5T_STR_SPACEPAD ? ' ' : '\0');
      EXPECT_GE(H5Awrite(attr, type, padded.data()), 0);
      H5Aclose(attr);
      H5Sclose(space);
      H5Tclose(type);
    });
  };
  set_fixed("model_id", "fixed-id", H5T_STR_NULLPAD);
  set_fixed("tokenizer", "spaced", H5T_STR_SPACEPAD);
  set_fixed("dtype", "float16", H5T_STR_NULLTERM);
  const DumpReader reader(path);
  EXPECT_EQ(reader.info().model_id, "fixed-id");
  EXPECT_EQ(reader.info().tokenizer, "spaced");
  EXPECT_EQ(reader.info().dtype, DType::f16);
}

// One reader shared by threads that read different samples and layers at once.
TEST_F(KvDumpTest, ReaderCanBeSharedByThreads) {
  const DumpInfo info = make_info(DType::bf16, 4, 2, 4, 8);
  const std::vector<SampleMeta> samples = {make_meta("a", 300, 4), make_meta("b", 200, 4)};
  const fs::path path = file("dump.h5");
  write_dump(path, info, samples);
  const DumpReader reader(path);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches = 0;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      for (int round = 0; round < 20; ++round) {
        const SampleMeta& meta = samples[static_cast<std::size_t>(round + i) % 2];
        const int layer = (round + i) % info.num_layers;
        if (reader.read_layer(meta.id, layer, KvKind::value).data != stored(DType::bf16, make_layer(info, meta, layer).value))
          ++mismatches;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches, 0);
}

// RAII closes every HDF5 object, on success and on error paths.
TEST_F(KvDumpTest, AllHdf5HandlesAreClosed) {
  const fs::path path = file("dump.h5");
  const DumpInfo info = make_info(DType::f16, 2, 2, 4, 8, 8);
  write_dump(path, info, {make_meta("a", 20, 2, true), make_meta("b", 20, 2)});
  {
    DumpWriter uncommitted(file("other.h5"), info);
    uncommitted.begin_sample(make_meta("a", 20, 2));
    EXPECT_THROW(uncommitted.write_layer(0, {}, {}, {}), Error);
  }
  {
    const DumpReader reader(path);
    reader.read_layer("a", 1, KvKind::attn_in);
    reader.read_layer("b", 0, KvKind::query);
    reader.sample("a");
    reader.sample_ids();
    EXPECT_THROW(reader.read_layer("b", 0, KvKind::attn_in), Error);
    EXPECT_THROW(reader.sample("c"), Error);
  }
  EXPECT_THROW(DumpReader{file("missing.h5")}, Error);
  EXPECT_EQ(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

// ---------------------------------------------------------------------------------------------
// Atomic writes

TEST_F(KvDumpTest, UncommittedWriterLeavesNoFileAndNoTempFile) {
  const DumpInfo info = make_info(DType::f16);
  {
    DumpWriter writer(file("dump.h5"), info);
    write_sample(writer, info, make_meta("s", 8, 2));
    EXPECT_EQ(files_in(dir_).size(), 1u);  // the temporary file
  }
  EXPECT_TRUE(files_in(dir_).empty());
  {
    DumpWriter writer(file("dump.h5"), info);
    writer.begin_sample(make_meta("s", 8, 2));
  }
  EXPECT_TRUE(files_in(dir_).empty());
}

TEST_F(KvDumpTest, CommitReplacesAnExistingFileAndLeavesNoTempFile) {
  const fs::path path = file("dump.h5");
  std::ofstream(path) << "old content";
  write_dump(path, make_info(DType::f32, 1), {make_meta("s", 8, 2)});
  EXPECT_EQ(files_in(dir_), (std::vector<std::string>{"dump.h5"}));
  EXPECT_EQ(DumpReader(path).sample_ids(), (std::vector<std::string>{"s"}));
}

TEST_F(KvDumpTest, WriterFailsWhenTheDirectoryIsMissing) {
  EXPECT_THAT(error_of([&] { DumpWriter(file("no/such/dir/dump.h5"), make_info(DType::f16)); }),
              HasSubstr("no/such/dir/dump.h5"));
}

// ---------------------------------------------------------------------------------------------
// Writer validation

TEST_F(KvDumpTest, WriterValidatesShapesOrderAndIds) {
  const DumpInfo info = make_info(DType::f16, 2, 2, 4, 8);
  const SampleMeta meta = make_meta("s", 10, 3);
  const LayerData d = make_layer(info, meta, 0);
  DumpWriter writer(file("dump.h5"), info);

  EXPECT_THAT(error_of([&] { writer.write_layer(0, d.key, d.value, d.query); }), HasSubstr("begin_sample"));
  EXPECT_THAT(error_of([&] { writer.begin_sample(make_meta("bad/id", 10, 3)); }), HasSubstr("invalid sample id 'bad/id'"));
  EXPECT_THAT(error_of([&] { writer.begin_sample(make_meta(".", 10, 3)); }), HasSubstr("invalid sample id"));
  EXPECT_THAT(error_of([&] { writer.begin_sample(make_meta("", 10, 3)); }), HasSubstr("invalid sample id"));
  SampleMeta bad_window = meta;
  bad_window.query_window = 11;
  EXPECT_THAT(error_of([&] { writer.begin_sample(bad_window); }), HasSubstr("query_window 11 outside [0, 10]"));
  SampleMeta bad_tokens = meta;
  bad_tokens.tokens.pop_back();
  EXPECT_THAT(error_of([&] { writer.begin_sample(bad_tokens); }), HasSubstr("9 tokens but num_tokens = 10"));
  EXPECT_THAT(error_of([&] { writer.begin_sample(make_meta("s", 10, 3, true)); }), HasSubstr("d_model is 0"));

  writer.begin_sample(meta);
  EXPECT_THAT(error_of([&] { writer.begin_sample(make_meta("t", 10, 3)); }), HasSubstr("sample s was begun but not ended"));
  const std::vector<float> short_key(d.key.begin(), d.key.end() - 1);
  EXPECT_THAT(error_of([&] { writer.write_layer(0, short_key, d.value, d.query); }),
              HasSubstr("key has 159 values, expected 160 ([10, 2, 8])"));
  EXPECT_THAT(error_of([&] { writer.write_layer(0, d.key, d.value, d.value); }), HasSubstr("query has 160 values, expected 96"));
  EXPECT_THAT(error_of([&] { writer.write_layer(0, d.key, d.value, d.query, d.key); }), HasSubstr("attn_in has 160 values"));
  EXPECT_THAT(error_of([&] { writer.write_layer(2, d.key, d.value, d.query); }), HasSubstr("layer 2: layer out of range"));
  writer.write_layer(1, d.key, d.value, d.query);
  EXPECT_THAT(error_of([&] { writer.write_layer(1, d.key, d.value, d.query); }), HasSubstr("layer 1: layer written twice"));
  EXPECT_THAT(error_of([&] { writer.end_sample(); }), HasSubstr("sample s ended without layer 0"));
  EXPECT_THAT(error_of([&] { writer.commit(); }), HasSubstr("sample s is not ended"));
  writer.write_layer(0, d.key, d.value, d.query);
  writer.end_sample();
  EXPECT_THAT(error_of([&] { writer.begin_sample(meta); }), HasSubstr("sample written twice"));
  EXPECT_THAT(error_of([&] { writer.end_sample(); }), HasSubstr("without begin_sample"));
  writer.commit();
  EXPECT_THAT(error_of([&] { writer.begin_sample(make_meta("t", 10, 3)); }), HasSubstr("already committed"));
  EXPECT_THAT(error_of([&] { DumpWriter(file("x.h5"), make_info(DType::f16, 0)); }), HasSubstr("num_layers=0"));
}

// A rejected layer leaves no trace: it can be written again and the dump reads back fine.
TEST_F(KvDumpTest, WriterRejectsNonFiniteValuesNamingTheElement) {
  const DumpInfo info = make_info(DType::f16, 2, 2, 4, 8);
  const SampleMeta meta = make_meta("s", 10, 3);
  const LayerData d = make_layer(info, meta, 1);
  const fs::path path = file("dump.h5");
  DumpWriter writer(path, info);
  writer.begin_sample(meta);
  writer.write_layer(0, make_layer(info, meta, 0).key, make_layer(info, meta, 0).value, make_layer(info, meta, 0).query);

  LayerData bad = d;
  bad.key[(5 * 2 + 1) * 8 + 3] = std::numeric_limits<float>::quiet_NaN();  // token 5, head 1, dim 3
  std::string message = error_of([&] { writer.write_layer(1, bad.key, bad.value, bad.query); });
  EXPECT_THAT(message, HasSubstr("layer 1 key (/samples/s/layers/1/key)"));
  EXPECT_THAT(message, HasSubstr("non-finite value nan at token 5, head 1, dim 3"));
  EXPECT_THAT(message, HasSubstr(path.string()));

  bad = d;
  bad.query[(2 * 4 + 3) * 8] = -std::numeric_limits<float>::infinity();  // window row 2 = token 9, head 3
  EXPECT_THAT(error_of([&] { writer.write_layer(1, bad.key, bad.value, bad.query); }),
              HasSubstr("non-finite value -inf at token 9 (query window row 2), head 3, dim 0"));

  bad = d;
  bad.value[8] = 1e6f;  // finite in f32, infinite in f16
  EXPECT_THAT(error_of([&] { writer.write_layer(1, bad.key, bad.value, bad.query); }),
              HasSubstr("value 1000000 at token 0, head 1, dim 0 overflows float16"));

  writer.write_layer(1, d.key, d.value, d.query);
  writer.end_sample();
  writer.commit();
  EXPECT_EQ(DumpReader(path).read_layer("s", 1, KvKind::value).data, stored(DType::f16, d.value));
}

// ---------------------------------------------------------------------------------------------
// Reader errors

TEST_F(KvDumpTest, MissingLayerNamesFileAndDataset) {
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(DType::f16), {make_meta("s0", 6, 2)});
  edit_with_hdf5(path, [](hid_t f) { ASSERT_GE(H5Ldelete(f, "/samples/s0/layers/3/key", H5P_DEFAULT), 0); });
  edit_with_hdf5(path, [](hid_t f) { ASSERT_GE(H5Ldelete(f, "/samples/s0/layers/2", H5P_DEFAULT), 0); });
  const DumpReader reader(path);
  for (const int layer : {3, 2}) {
    const std::string message = error_of([&] { reader.read_layer("s0", layer, KvKind::key); });
    EXPECT_THAT(message, HasSubstr(path.string()));
    EXPECT_THAT(message, HasSubstr(fmt::format("missing dataset /samples/s0/layers/{}/key", layer)));
  }
  EXPECT_NO_THROW(reader.read_layer("s0", 3, KvKind::value));
}

TEST_F(KvDumpTest, WrongShapeNamesBothShapes) {
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(DType::f32), {make_meta("s0", 6, 2)});
  replace_dataset(path, "/samples/s0/layers/1/key", {6, 2, 9}, H5T_IEEE_F32LE);
  replace_dataset(path, "/samples/s0/layers/1/query", {2, 4}, H5T_IEEE_F32LE);
  const DumpReader reader(path);
  EXPECT_THAT(error_of([&] { reader.read_layer("s0", 1, KvKind::key); }),
              HasSubstr(path.string() + ": /samples/s0/layers/1/key: wrong shape [6, 2, 9] expected [6, 2, 8]"));
  EXPECT_THAT(error_of([&] { reader.read_layer("s0", 1, KvKind::query); }),
              HasSubstr("wrong shape [2, 4] expected [2, 4, 8]"));
}

TEST_F(KvDumpTest, WrongDtypeIsAnError) {
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(DType::f16), {make_meta("s0", 6, 2)});
  replace_dataset(path, "/samples/s0/layers/0/value", {6, 2, 8}, H5T_STD_I32LE);
  replace_dataset(path, "/samples/s0/layers/1/value", {6, 2, 8}, H5T_IEEE_F32LE);
  const DumpReader reader(path);
  EXPECT_THAT(error_of([&] { reader.read_layer("s0", 0, KvKind::value); }),
              HasSubstr("/samples/s0/layers/0/value: dtype is an HDF5 type"));
  EXPECT_THAT(error_of([&] { reader.read_layer("s0", 1, KvKind::value); }),
              HasSubstr("/samples/s0/layers/1/value: dtype is float32, expected float16"));
}

TEST_F(KvDumpTest, UnknownFormatVersionNamesBothVersions) {
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(DType::f16), {make_meta("s0", 6, 2)});
  set_format_version(path, 99);
  const std::string message = error_of([&] { DumpReader reader(path); });
  EXPECT_THAT(message, HasSubstr(path.string()));
  EXPECT_THAT(message, HasSubstr("format_version 99 is not supported (this kvlab reads versions 1 to 2)"));
}

class KvDumpNonFinite : public KvDumpTest, public ::testing::WithParamInterface<DType> {};

// NaN/Inf bit patterns of each storage type, written straight into the file.
TEST_P(KvDumpNonFinite, ReaderNamesTokenAndHead) {
  const DType dtype = GetParam();
  const std::uint32_t nan = dtype == DType::f32 ? 0x7FC00000u : dtype == DType::f16 ? 0x7E00u : 0x7FC0u;
  const std::uint32_t inf = dtype == DType::f32 ? 0x7F800000u : dtype == DType::f16 ? 0x7C00u : 0x7F80u;
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(dtype, 2, 2, 4, 8, 12), {make_meta("s0", 6, 2, true)});
  poke_bits(path, "/samples/s0/layers/1/key", {5, 1, 3}, nan);
  poke_bits(path, "/samples/s0/layers/0/query", {1, 2, 0}, inf);
  poke_bits(path, "/samples/s0/layers/0/attn_in", {4, 7}, nan);
  const DumpReader reader(path);

  const std::string message = error_of([&] { reader.read_layer("s0", 1, KvKind::key); });
  EXPECT_THAT(message, HasSubstr(path.string() + ": /samples/s0/layers/1/key: non-finite value nan"));
  EXPECT_THAT(message, HasSubstr("at token 5, head 1, dim 3"));
  std::vector<float> rows(2 * 2 * 8);
  EXPECT_THAT(error_of([&] { reader.read_rows("s0", 1, KvKind::key, 4, 2, rows); }), HasSubstr("token 5, head 1"));
  EXPECT_NO_THROW(reader.read_rows("s0", 1, KvKind::key, 0, 2, rows));
  EXPECT_THAT(error_of([&] { reader.read_layer("s0", 0, KvKind::query); }),
              HasSubstr("non-finite value inf at token 5 (query window row 1), head 2, dim 0"));
  EXPECT_THAT(error_of([&] { reader.read_layer("s0", 0, KvKind::attn_in); }), HasSubstr("at token 4, column 7"));
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, KvDumpNonFinite, ::testing::Values(DType::f32, DType::f16, DType::bf16),
                         [](const auto& param_info) { return std::string(to_string(param_info.param)); });

TEST_F(KvDumpTest, TruncatedFileIsAClearError) {
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(DType::f16), {make_meta("s0", 200, 8)});
  const fs::path half = file("half.h5");
  fs::copy_file(path, half);
  fs::resize_file(half, fs::file_size(path) / 2);
  ::testing::internal::CaptureStderr();
  const std::string message = error_of([&] { DumpReader reader(half); });
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");  // no HDF5 error-stack dump
  EXPECT_THAT(message, HasSubstr(half.string() + ": cannot open the HDF5 file (truncated or corrupt?)"));
  EXPECT_THAT(message, HasSubstr("truncated file"));  // HDF5's own innermost reason
}

TEST_F(KvDumpTest, NotAnHdf5FileIsAClearError) {
  const fs::path text = file("notes.h5");
  std::ofstream(text) << "this is not HDF5\n";
  const fs::path empty = file("empty.h5");
  std::ofstream{empty};
  EXPECT_THAT(error_of([&] { DumpReader reader(text); }), HasSubstr(text.string() + ": not an HDF5 file"));
  EXPECT_THAT(error_of([&] { DumpReader reader(empty); }), HasSubstr(empty.string() + ": not an HDF5 file"));
  EXPECT_THAT(error_of([&] { DumpReader reader(file("missing.h5")); }), HasSubstr("missing.h5: no such file"));
}

TEST_F(KvDumpTest, PlainHdf5FileIsNotADump) {
  const fs::path path = file("plain.h5");
  H5Fclose(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  EXPECT_THAT(error_of([&] { DumpReader reader(path); }), HasSubstr("not a kvlab dump (no format_version"));
}

// The thread-safe HDF5 keeps one error stack per thread, each printing by default: errors in
// a new thread must be silent too.
TEST_F(KvDumpTest, Hdf5ErrorsArePrintedInNoThread) {
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(DType::f16), {make_meta("s0", 6, 2)});
  const fs::path half = file("half.h5");
  fs::copy_file(path, half);
  fs::resize_file(half, fs::file_size(path) / 2);
  edit_with_hdf5(path, [](hid_t f) { ASSERT_GE(H5Ldelete(f, "/samples/s0/layers/3/key", H5P_DEFAULT), 0); });
  ::testing::internal::CaptureStderr();
  std::thread([&] {
    EXPECT_THROW(DumpReader reader(half), Error);
    const DumpReader reader(path);
    EXPECT_THROW(reader.read_layer("s0", 3, KvKind::key), Error);
    EXPECT_THROW(reader.sample("missing"), Error);
  }).join();
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

// ---------------------------------------------------------------------------------------------
// Integrity: corrupt files, full disks, interrupted writers (issue 19)

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A child still running after this long is hung (a corrupt heap once made libhdf5 loop forever
// in H5HG_read): SIGALRM ends it and the test reports the hang. Reading these dumps takes
// milliseconds, so the watchdog is far from any real run, sanitizers included.
constexpr unsigned kChildWatchdogSeconds = 120;

// Runs `body` in a forked child and returns its wait status: a crash in libhdf5 then fails one
// test instead of ending the test binary. The child leaves through exit(), so HDF5's exit
// handlers run as they do at the end of a kvlab command.
int status_of_child(const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(kChildWatchdogSeconds);
    std::exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

std::string describe(int status) {
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) return fmt::format("hung (still running after {} s)", kChildWatchdogSeconds);
  return WIFSIGNALED(status) ? fmt::format("killed by signal {}", WTERMSIG(status))
                             : fmt::format("exit code {}", WEXITSTATUS(status));
}

// Child outcomes of reading a whole dump.
constexpr int kSameData = 0, kKvlabError = 2, kOtherData = 3;

// Everything a dump holds, read through DumpReader and compared with what write_dump wrote.
int read_everything(const fs::path& path, const DumpInfo& info, const std::vector<SampleMeta>& samples) {
  try {
    const DumpReader reader(path);
    if (reader.info().model_id != info.model_id || reader.info().model_config != info.model_config ||
        reader.info().head_dim != info.head_dim || reader.info().num_layers != info.num_layers)
      return kOtherData;
    for (const SampleMeta& meta : samples) {
      const SampleMeta read = reader.sample(meta.id);
      if (read.tokens != meta.tokens || read.positions != meta.positions || read.context_end != meta.context_end)
        return kOtherData;
      for (int l = 0; l < info.num_layers; ++l) {
        const LayerData d = make_layer(info, meta, l);
        if (reader.read_layer(meta.id, l, KvKind::key).data != stored(info.dtype, d.key) ||
            reader.read_layer(meta.id, l, KvKind::value).data != stored(info.dtype, d.value) ||
            reader.read_layer(meta.id, l, KvKind::query).data != stored(info.dtype, d.query))
          return kOtherData;
      }
    }
    return kSameData;
  } catch (const Error&) {
    return kKvlabError;
  }
}

// Item 1: string attributes live in the checksummed object headers, never in the global heap
// (which HDF5 does not checksum, and where a bad object size crashed libhdf5 and h5py).
TEST_F(KvDumpTest, StringAttributesStayOutOfTheUncheckedGlobalHeap) {
  const fs::path path = file("dump.h5");
  DumpInfo info = make_info(DType::f16, 1);
  info.model_id = "org/unique-model-id-for-this-test";
  const std::vector<SampleMeta> samples = {make_meta("s", 4, 1)};
  write_dump(path, info, samples);
  const std::string bytes = read_bytes(path);
  EXPECT_EQ(bytes.find("GCOL"), std::string::npos) << "the file has a global heap collection";
  // The bytes just before the text: the size field of its global heap object when strings were
  // variable-length (the reported crash), now part of the checksummed attribute message.
  const std::size_t at = bytes.find(info.model_id);
  ASSERT_NE(at, std::string::npos);
  ASSERT_GE(at, 8u);
  for (const std::size_t offset : {std::size_t{1}, std::size_t{4}, std::size_t{8}}) {
    std::string corrupt = bytes;
    corrupt[at - offset] = static_cast<char>(corrupt[at - offset] ^ 0x40);
    const fs::path bad = file(fmt::format("bad{}.h5", offset));
    write_bytes(bad, corrupt);
    const int status = status_of_child([&] { return read_everything(bad, info, samples); });
    EXPECT_TRUE(exited_with(status, kKvlabError)) << "byte " << offset << " before model_id: " << describe(status);
  }
}

// A version 2 file with a variable-length string is refused before the heap is followed.
TEST_F(KvDumpTest, Version2RefusesVariableLengthStrings) {
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(DType::f16, 1), {make_meta("s", 4, 1)});
  edit_with_hdf5(path, [](hid_t f) {
    ASSERT_GE(H5Adelete(f, "tokenizer"), 0);
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(f, "tokenizer", type, space, H5P_DEFAULT, H5P_DEFAULT);
    const char* text = "variable";
    EXPECT_GE(H5Awrite(attr, type, &text), 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
  });
  EXPECT_THAT(error_of([&] { DumpReader reader(path); }),
              HasSubstr(": /: attribute tokenizer is a variable-length string; format version 2"));
}

// A config.json too big for an object header message (64 KiB) still round-trips: the 1.10
// format moves large attributes to dense (fractal heap, checksummed) storage.
TEST_F(KvDumpTest, LargeModelConfigRoundTrips) {
  const fs::path path = file("dump.h5");
  DumpInfo info = make_info(DType::f16, 1);
  info.model_config = "{\"pad\": \"" + std::string(200000, 'x') + "\"}";
  write_dump(path, info, {make_meta("s", 4, 1)});
  EXPECT_EQ(DumpReader(path).info().model_config, info.model_config);
}

// Item 4: one changed byte anywhere in the file is an error or changes nothing: never different
// numbers, never a crash. Each in a child process: every byte of the first 48 after the signature
// of the superblock, each chunk index and heap (a byte changed in a version 1 chunk index made a
// layer read as zeros) and every 53rd byte elsewhere (object headers, raw data).
bool near_signature(const std::string& bytes, std::size_t i) {
  for (const char* signature : {"\x89HDF", "FAHD", "FADB", "EAHD", "EAIB", "EADB", "BTHD", "BTIN", "BTLF", "TREE",
                                "HEAP", "SNOD", "GCOL"}) {
    const std::size_t at = bytes.rfind(signature, i);
    if (at != std::string::npos && i - at < 48) return true;
  }
  return false;
}

TEST_F(KvDumpTest, EveryChangedByteIsAnErrorOrHarmless) {
  const fs::path path = file("dump.h5");
  const DumpInfo info = make_info(DType::f16, 2, 2, 4, 8);
  const std::vector<SampleMeta> samples = {make_meta("s0", 6, 2)};
  write_dump(path, info, samples);
  const std::string bytes = read_bytes(path);
  ASSERT_EQ(read_everything(path, info, samples), kSameData);
  const fs::path bad = file("bad.h5");
  std::vector<std::string> wrong;
  std::size_t tried = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i % 53 != 0 && !near_signature(bytes, i)) continue;
    ++tried;
    std::string corrupt = bytes;
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5A);
    write_bytes(bad, corrupt);
    const int status = status_of_child([&] { return read_everything(bad, info, samples); });
    if (!exited_with(status, kSameData) && !exited_with(status, kKvlabError))
      wrong.push_back(fmt::format("byte {}: {}", i, exited_with(status, kOtherData) ? "other data" : describe(status)));
  }
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " of " << tried << " bytes, e.g. " << wrong.front();
  std::printf("changed %zu of %zu bytes, one at a time\n", tried, bytes.size());
}

// Item 4: values changed behind the checksums (here through HDF5 itself, so every HDF5
// structure stays valid) are an error naming the dataset and the rows, for whole-layer and
// token-range reads; blocks that were not touched still read.
TEST_F(KvDumpTest, ChangedValuesAreAChecksumErrorNamingTheDataset) {
  const fs::path path = file("dump.h5");
  const DumpInfo info = make_info(DType::bf16, 2, 2, 4, 64);
  const SampleMeta meta = make_meta("s0", 20000, 4);  // 256-byte rows: 8192-row blocks
  write_dump(path, info, {meta});
  poke_bits(path, "/samples/s0/layers/1/key", {9000, 1, 3}, 0x3F80u, /*restamp=*/false);  // 1.0
  const DumpReader reader(path);
  const std::string message = error_of([&] { reader.read_layer("s0", 1, KvKind::key); });
  EXPECT_THAT(message, HasSubstr(path.string() + ": /samples/s0/layers/1/key: checksum mismatch in rows [8192, 16384)"));
  std::vector<float> rows(static_cast<std::size_t>(10 * info.kv_row_width()));
  EXPECT_THAT(error_of([&] { reader.read_rows("s0", 1, KvKind::key, 8995, 10, rows); }), HasSubstr("checksum mismatch"));
  reader.read_rows("s0", 1, KvKind::key, 100, 10, rows);
  const std::vector<float> expected = stored(DType::bf16, make_layer(info, meta, 1).key);
  EXPECT_TRUE(std::equal(rows.begin(), rows.end(), expected.begin() + 100 * info.kv_row_width()));
  EXPECT_NO_THROW(reader.read_layer("s0", 0, KvKind::key));
}

// Item 5: shapes and attributes are checked against each other before a caller sizes anything
// from them: a root head_dim (or a sample's num_tokens) that disagrees with the datasets is
// an error from sample(), which the analysis calls before it allocates L × T × H·D.
TEST_F(KvDumpTest, HeaderDisagreeingWithTheDatasetsIsAnErrorBeforeAnyRead) {
  const fs::path path = file("dump.h5");
  write_dump(path, make_info(DType::f16, 2, 2, 4, 8), {make_meta("s0", 6, 2)});
  // Delete and re-create: HDF5 1.10 cannot rewrite an attribute in place in dense storage.
  const auto set_int = [&](const char* object, const char* name, std::int64_t value) {
    edit_with_hdf5(path, [&](hid_t f) {
      ASSERT_GE(H5Adelete_by_name(f, object, name, H5P_DEFAULT), 0) << object << " " << name;
      const hid_t space = H5Screate(H5S_SCALAR);
      const hid_t attr = H5Acreate_by_name(f, object, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      EXPECT_GE(H5Awrite(attr, H5T_NATIVE_INT64, &value), 0) << object << " " << name;
      H5Aclose(attr);
      H5Sclose(space);
    });
  };
  set_int("/", "head_dim", 1 << 28);
  {
    const DumpReader reader(path);  // the root alone is consistent
    EXPECT_THAT(error_of([&] { reader.sample("s0"); }),
                HasSubstr("/samples/s0/layers/0/key: wrong shape [6, 2, 8] expected [6, 2, 268435456]"));
  }
  set_int("/", "head_dim", 8);
  set_int("/samples/s0", "num_tokens", std::int64_t{1} << 40);
  EXPECT_THAT(error_of([&] { DumpReader(path).sample("s0"); }), HasSubstr("attribute num_tokens = 1099511627776 is out of range"));
}

// Item 3: a full disk is an error, and the process then exits normally (it crashed in HDF5's
// exit handlers); no temporary file stays. A real full disk: a small tmpfs mounted in the
// child's own mount namespace (as root, or in a user namespace where the kernel allows it).
// Sizes from 64 KiB to just under the whole dump hit every stage: the root, the layers, the
// final flush.
TEST_F(KvDumpTest, FullDiskIsAnErrorAndTheProcessExitsCleanly) {
  const DumpInfo info = make_info(DType::f16, 4, 8, 8, 64);
  const std::vector<SampleMeta> samples = {make_meta("s0", 2000, 8), make_meta("s1", 2000, 8)};
  const fs::path full = file("full.h5");
  write_dump(full, info, samples);
  const std::uintmax_t size = fs::file_size(full);
  constexpr int kNoMount = 77, kNoError = 1, kTwoLines = 4, kTempLeft = 5;
  for (const std::uintmax_t limit : {std::uintmax_t{65536}, size / 8, size / 2, size - 65536, size - 4096}) {
    const fs::path disk = file("disk");
    fs::create_directories(disk);
    const int status = status_of_child([&] {
      const uid_t uid = ::getuid();
      if (::unshare(CLONE_NEWNS) != 0) {
        if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return kNoMount;
        std::ofstream("/proc/self/setgroups") << "deny";
        std::ofstream("/proc/self/uid_map") << fmt::format("0 {} 1", uid);
      }
      ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr);
      if (::mount("tmpfs", disk.c_str(), "tmpfs", 0, fmt::format("size={}", limit).c_str()) != 0) return kNoMount;
      try {
        write_dump(disk / "dump.h5", info, samples);
        return kNoError;
      } catch (const Error& e) {
        if (!files_in(disk).empty()) return kTempLeft;
        return std::string(e.what()).find('\n') == std::string::npos ? 0 : kTwoLines;  // errors are one line
      }
    });
    if (exited_with(status, kNoMount)) GTEST_SKIP() << "cannot mount a tmpfs here (no root, no user namespaces)";
    EXPECT_TRUE(exited_with(status, 0)) << "disk of " << limit << " bytes for a dump of " << size << ": "
                                        << describe(status);
  }
}

// Item 6: SIGTERM and SIGINT while a dump is being written remove its temporary file; the
// process still ends by the signal (exit status of the signal, as a shell or scheduler expects).
// A signal this process inherited as ignored (nohup; SIGINT of a background job started without
// job control, as CI scripts may start the tests) stays ignored (temp_file_cleanup.cpp): the
// process survives it and the unfinished writer removes its file on the way out.
TEST_F(KvDumpTest, SignalsRemoveTheTemporaryFile) {
  const DumpInfo info = make_info(DType::f16, 2);
  for (const int sig : {SIGTERM, SIGINT}) {
    struct sigaction disposition {};
    ::sigaction(sig, nullptr, &disposition);
    const bool ignored = disposition.sa_handler == SIG_IGN;
    const fs::path path = file(fmt::format("dump-{}.h5", sig));
    const int status = status_of_child([&] {
      DumpWriter writer(path, info);
      write_sample(writer, info, make_meta("s0", 50, 2));
      if (files_in(dir_).size() != 1) return 5;  // the temporary file exists before the signal
      ::raise(sig);
      return 6;  // reached only when the signal is ignored
    });
    if (ignored)
      EXPECT_TRUE(exited_with(status, 6)) << describe(status);
    else
      EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << describe(status);
    EXPECT_TRUE(files_in(dir_).empty()) << fmt::format("{}", fmt::join(files_in(dir_), " "));
  }
}

// Format version 1 files (variable-length strings, no checksums, the 1.8-compatible HDF5
// format) still read. Built here with the raw HDF5 API exactly as the version 1 writer did.
void write_version1_dump(const fs::path& path, const DumpInfo& info, const SampleMeta& meta) {
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hid_t scalar = H5Screate(H5S_SCALAR);
  const auto put_int = [&](hid_t object, const char* name, std::int64_t value) {
    const hid_t a = H5Acreate2(object, name, H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &value);
    H5Aclose(a);
  };
  const hid_t vlen = H5Tcopy(H5T_C_S1);
  H5Tset_size(vlen, H5T_VARIABLE);
  H5Tset_cset(vlen, H5T_CSET_UTF8);
  const auto put_string = [&](const char* name, const std::string& value) {
    const hid_t a = H5Acreate2(f, name, vlen, scalar, H5P_DEFAULT, H5P_DEFAULT);
    const char* text = value.c_str();
    H5Awrite(a, vlen, &text);
    H5Aclose(a);
  };
  put_int(f, "format_version", 1);
  put_string("model_id", info.model_id);
  put_string("model_config", info.model_config);
  put_string("dtype", "float32");
  put_int(f, "num_layers", info.num_layers);
  put_int(f, "num_kv_heads", info.num_kv_heads);
  put_int(f, "num_q_heads", info.num_q_heads);
  put_int(f, "head_dim", info.head_dim);
  put_int(f, "d_model", 0);
  H5Gclose(H5Gcreate2(f, "/samples", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  const hid_t sample = H5Gcreate2(f, ("/samples/" + meta.id).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  put_int(sample, "num_tokens", meta.num_tokens);
  put_int(sample, "context_end", meta.context_end);
  put_int(sample, "query_window", meta.query_window);
  put_int(sample, "has_attn_in", 0);
  const auto put_data = [&](hid_t parent, const char* name, std::vector<hsize_t> dims, hid_t file_type, hid_t memory_type,
                            const void* data) {
    const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dims.size() > 1) {
      std::vector<hsize_t> chunk = dims;
      chunk[0] = std::max<hsize_t>(1, dims[0] / 2);
      H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
    }
    const hid_t d = H5Dcreate2(parent, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Dwrite(d, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
  };
  const auto T = static_cast<hsize_t>(meta.num_tokens), W = static_cast<hsize_t>(meta.query_window);
  put_data(sample, "tokens", {T}, H5T_STD_I32LE, H5T_NATIVE_INT32, meta.tokens.data());
  put_data(sample, "positions", {T}, H5T_STD_I64LE, H5T_NATIVE_INT64, meta.positions.data());
  const hid_t layers = H5Gcreate2(sample, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  for (int l = 0; l < info.num_layers; ++l) {
    const hid_t group = H5Gcreate2(layers, std::to_string(l).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const LayerData d = make_layer(info, meta, l);
    const auto H = static_cast<hsize_t>(info.num_kv_heads), Q = static_cast<hsize_t>(info.num_q_heads),
               D = static_cast<hsize_t>(info.head_dim);
    put_data(group, "key", {T, H, D}, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, d.key.data());
    put_data(group, "value", {T, H, D}, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, d.value.data());
    put_data(group, "query", {W, Q, D}, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, d.query.data());
    H5Gclose(group);
  }
  H5Gclose(layers);
  H5Gclose(sample);
  H5Tclose(vlen);
  H5Sclose(scalar);
  H5Fclose(f);
}

TEST_F(KvDumpTest, Version1DumpsStillRead) {
  const fs::path path = file("v1.h5");
  const DumpInfo info = make_info(DType::f32, 3, 2, 4, 8);
  const SampleMeta meta = make_meta("s0", 30, 4);
  write_version1_dump(path, info, meta);
  EXPECT_EQ(read_everything(path, info, {meta}), kSameData);
  std::vector<float> rows(static_cast<std::size_t>(7 * info.kv_row_width()));
  DumpReader(path).read_rows("s0", 2, KvKind::value, 11, 7, rows);
  const std::vector<float> value = make_layer(info, meta, 2).value;
  EXPECT_TRUE(std::equal(rows.begin(), rows.end(), value.begin() + 11 * info.kv_row_width()));
}

// ---------------------------------------------------------------------------------------------
// h5py interoperability: f32 and f16 dumps open in plain h5py as float32/float16 (bf16 as
// uint16 plus its dtype attribute), with kvlab's values.

bool h5py_available() {
  return fs::exists("/usr/bin/python3") && std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") == 0;
}

// Values exactly representable in every storage type: multiples of 1/4 in [-32, 32).
std::vector<float> exact_values(std::size_t n, float offset) {
  std::vector<float> values(n);
  for (std::size_t i = 0; i < n; ++i) values[i] = static_cast<float>(static_cast<int>(i % 256) - 128) / 4 + offset;
  return values;
}

class H5pyInterop : public KvDumpTest, public ::testing::WithParamInterface<DType> {};

TEST_P(H5pyInterop, PlainH5pyReadsTheDump) {
  if (!h5py_available()) GTEST_SKIP() << "/usr/bin/python3 with h5py is not available";
  const DType dtype = GetParam();
  const DumpInfo info = make_info(dtype, 2, 2, 4, 8);
  const SampleMeta meta = make_meta("s0", 40, 4);
  const fs::path path = file("dump.h5");
  DumpWriter writer(path, info);
  writer.begin_sample(meta);
  for (int l = 0; l < info.num_layers; ++l) {
    const auto kv = static_cast<std::size_t>(meta.num_tokens * info.kv_row_width());
    const auto q = static_cast<std::size_t>(meta.query_window * info.q_row_width());
    writer.write_layer(l, exact_values(kv, static_cast<float>(l)), exact_values(kv, 0.5f), exact_values(q, -1.0f));
  }
  writer.end_sample();
  writer.commit();

  const std::string command =
      fmt::format("/usr/bin/python3 '{}/core/h5py_check.py' '{}' {}", KVLAB_SOURCE_DIR, path.string(), to_string(dtype));
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, H5pyInterop, ::testing::Values(DType::f32, DType::f16, DType::bf16),
                         [](const auto& param_info) { return std::string(to_string(param_info.param)); });

}  // namespace
}  // namespace kvlab::core
