#include "core/content_hash.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "core/error.h"

namespace kvlab::core {
namespace {

namespace fs = std::filesystem;

std::string hex(XXH128_hash_t hash) {
  XXH128_canonical_t canonical;  // big-endian bytes: the order xxhsum prints
  XXH128_canonicalFromHash(&canonical, hash);
  std::string out;
  for (unsigned char byte : canonical.digest) out += fmt::format("{:02x}", byte);
  return out;
}

struct StateDeleter {
  void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};

}  // namespace

std::string file_hash(const fs::path& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) fail("{}: cannot open to hash: {}", path.string(), std::strerror(errno));
  std::unique_ptr<XXH3_state_t, StateDeleter> state(XXH3_createState());
  if (!state || XXH3_128bits_reset(state.get()) == XXH_ERROR) fail("{}: cannot start a hash", path.string());
  std::vector<char> block(std::size_t{8} << 20);
  while (true) {
    const std::size_t n = std::fread(block.data(), 1, block.size(), file.get());
    if (n > 0 && XXH3_128bits_update(state.get(), block.data(), n) == XXH_ERROR) fail("{}: hash update failed", path.string());
    if (n < block.size()) break;
  }
  if (std::ferror(file.get())) fail("{}: read error while hashing: {}", path.string(), std::strerror(errno));
  return hex(XXH3_128bits_digest(state.get()));
}

std::string checkpoint_hash(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    if (!fs::exists(path, ec)) fail("{}: no such checkpoint to hash", path.string());
    return file_hash(path);
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    const auto name = entry.path().filename().string();
    const auto ext = entry.path().extension().string();
    if (name.starts_with('.') || !entry.is_regular_file()) continue;  // is_regular_file follows HF cache symlinks
    if (ext == ".json" || ext == ".safetensors" || ext == ".model") files.push_back(entry.path());
  }
  if (ec) fail("{}: cannot list the checkpoint directory: {}", path.string(), ec.message());
  if (files.empty()) fail("{}: no .json, .safetensors or .model files to hash", path.string());
  std::sort(files.begin(), files.end());
  std::string manifest;
  for (const auto& f : files)
    manifest += fmt::format("{}\t{}\t{}\n", f.filename().string(), fs::file_size(f), file_hash(f));
  return hex(XXH3_128bits(manifest.data(), manifest.size()));
}

}  // namespace kvlab::core
