#include "core/content_hash.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "core/error.h"

namespace kvlab::core {
namespace {

namespace fs = std::filesystem;

class ContentHash : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("kvlab_hash_{}", ::testing::UnitTest::GetInstance()->random_seed() ^ getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& bytes) {
    const auto path = dir_ / name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  static std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
  }
  // The oracle: xxhsum's own file reader and printer (Debian package xxhash); "" if absent.
  static std::string xxhsum(const fs::path& file) {
    const auto cmd = fmt::format("xxhsum -H2 '{}' 2>/dev/null", file.string());
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), &pclose);
    char buf[256] = {};
    if (!pipe || !fgets(buf, sizeof buf, pipe.get())) return "";
    return std::string(buf).substr(0, 32);
  }
  static std::string one_shot(const std::string& bytes) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(bytes.data(), bytes.size()));
    std::string out;
    for (unsigned char b : c.digest) out += fmt::format("{:02x}", b);
    return out;
  }
  fs::path dir_;
};

// Sizes around the 8 MiB streaming block: the streamed hash must equal the one-shot hash of the
// whole buffer, whatever the block boundaries.
TEST_F(ContentHash, StreamedEqualsOneShotAcrossBlockBoundaries) {
  const std::size_t block = std::size_t{8} << 20;
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{240}, block - 1, block, block + 1, 2 * block + 17}) {
    const auto bytes = random_bytes(n, static_cast<unsigned>(n));
    EXPECT_EQ(file_hash(write("f.bin", bytes)), one_shot(bytes)) << n << " bytes";
  }
  EXPECT_EQ(one_shot(""), "99aa06d3014798d86001c324468d497f");  // XXH3-128 of nothing, from xxhsum
}

TEST_F(ContentHash, MatchesXxhsum) {
  const auto path = write("weights.safetensors", random_bytes((std::size_t{8} << 20) + 4097, 7));
  const auto expected = xxhsum(path);
  if (expected.empty()) GTEST_SKIP() << "xxhsum not installed (Debian package xxhash)";
  EXPECT_EQ(file_hash(path), expected);
}

TEST_F(ContentHash, CheckpointHashCoversTheFilesTheHarnessReadsOnly) {
  const auto config = write("config.json", "{\"hidden_size\": 8}");
  const auto weights = write("model.safetensors", random_bytes(1000, 1));
  const auto tokenizer = write("tokenizer.model", random_bytes(100, 2));
  // The manifest, built here from the file hashes, in name order.
  const std::string manifest = fmt::format("config.json\t{}\t{}\nmodel.safetensors\t1000\t{}\ntokenizer.model\t100\t{}\n",
                                           fs::file_size(config), file_hash(config), file_hash(weights), file_hash(tokenizer));
  const auto h = checkpoint_hash(dir_);
  EXPECT_EQ(h, one_shot(manifest));
  write("README.md", "a model card");
  write(".gitattributes", "*.safetensors filter=lfs");
  fs::create_directories(dir_ / ".git");
  EXPECT_EQ(checkpoint_hash(dir_), h) << "docs and git metadata are not the model";
  auto changed = random_bytes(1000, 1);
  changed[500] ^= 1;
  write("model.safetensors", changed);
  EXPECT_NE(checkpoint_hash(dir_), h) << "one flipped weight bit";
  write("model.safetensors", random_bytes(1000, 1));
  EXPECT_EQ(checkpoint_hash(dir_), h);
  fs::rename(dir_ / "tokenizer.model", dir_ / "other.model");
  EXPECT_NE(checkpoint_hash(dir_), h) << "file names are part of the identity";
  EXPECT_EQ(checkpoint_hash(weights), file_hash(weights)) << "a single-file checkpoint";
}

TEST_F(ContentHash, ErrorsNameThePath) {
  EXPECT_THAT([&] { file_hash(dir_ / "missing.h5"); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("missing.h5: cannot open to hash")));
  EXPECT_THAT([&] { checkpoint_hash(dir_ / "nope"); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("nope: no such checkpoint")));
  write("notes.txt", "x");
  EXPECT_THAT([&] { checkpoint_hash(dir_); }, ::testing::ThrowsMessage<Error>(::testing::HasSubstr("no .json, .safetensors or .model")));
}

}  // namespace
}  // namespace kvlab::core
