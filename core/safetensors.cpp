#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/parse_json.h"
#include "core/read_file.h"

namespace kvlab::core {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this reader copies it without byte swapping");

namespace {

constexpr std::uint64_t kMaxHeaderSize = 100'000'000;  // safetensors' MAX_HEADER_SIZE

// Bits per element of every dtype string the format defines (docs/models.md §3.4).
int dtype_bits(std::string_view dtype) {
  static const std::map<std::string, int, std::less<>> bits = {
      {"BOOL", 8},     {"U8", 8},          {"I8", 8},          {"F8_E5M2", 8},     {"F8_E4M3", 8},
      {"F8_E8M0", 8},  {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},        {"U16", 16},
      {"F16", 16},     {"BF16", 16},       {"I32", 32},        {"U32", 32},        {"F32", 32},
      {"F64", 64},     {"I64", 64},        {"U64", 64},        {"C64", 64},        {"F6_E2M3", 6},
      {"F6_E3M2", 6},  {"F4", 4},
  };
  const auto it = bits.find(dtype);
  return it == bits.end() ? 0 : it->second;
}

std::string_view st_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
  }
  return "?";
}

}  // namespace

struct Checkpoint::File {
  std::filesystem::path path;
  const unsigned char* data = nullptr;  // the whole file, mapped read-only
  std::size_t size = 0;
  std::size_t buffer_start = 0;         // 8 + header size

  ~File() {
    if (data) ::munmap(const_cast<unsigned char*>(data), size);
  }
};

struct Checkpoint::Entry {
  std::string dtype;
  Shape shape;
  const File* file = nullptr;
  std::uint64_t begin = 0, end = 0;  // relative to the file's byte buffer
};

Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;
Checkpoint::~Checkpoint() = default;

namespace {

std::unique_ptr<Checkpoint::File> map_file(const std::filesystem::path& path) {
  auto file = std::make_unique<Checkpoint::File>();
  file->path = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path.string(), std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path.string());
  }
  file->size = static_cast<std::size_t>(st.st_size);
  if (file->size < 8) {
    ::close(fd);
    fail("{}: truncated safetensors file ({} bytes; the header size alone takes 8)", path.string(), file->size);
  }
  void* p = ::mmap(nullptr, file->size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping stays valid after close
  if (p == MAP_FAILED) fail("{}: cannot mmap: {}", path.string(), std::strerror(err));
  file->data = static_cast<const unsigned char*>(p);
  return file;
}

std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const std::string& where) {
  std::uint64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) fail("{}: size overflows 64 bits", where);
  return out;
}

}  // namespace

void Checkpoint::open_file(const std::filesystem::path& path) {
  auto file = map_file(path);
  const std::string fname = path.string();
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file->data[i];  // little-endian u64
  if (n > kMaxHeaderSize) fail("{}: header size {} exceeds the safetensors limit of {} bytes (corrupt file?)", fname, n, kMaxHeaderSize);
  if (8 + n > file->size)
    fail("{}: truncated: header claims {} bytes but only {} follow the size field", fname, n, file->size - 8);
  file->buffer_start = static_cast<std::size_t>(8 + n);
  const std::string_view text(reinterpret_cast<const char*>(file->data) + 8, static_cast<std::size_t>(n));
  if (text.empty() || text.front() != '{') fail("{}: header is not a JSON object (must start with '{{')", fname);

  // Duplicate names are an error in safetensors; nlohmann would silently keep the last one.
  std::set<std::string> seen;
  std::string duplicate;
  const nlohmann::json::parser_callback_t on_event = [&](int depth, nlohmann::json::parse_event_t event,
                                                         nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty()) duplicate = parsed.get<std::string>();
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text.begin(), text.end(), on_event);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON: {}", fname, e.what());
  }
  if (!header.is_object()) fail("{}: header is not a JSON object", fname);
  if (!duplicate.empty()) fail("{}: tensor '{}' appears twice in the header", fname, duplicate);

  const std::uint64_t buffer_size = file->size - file->buffer_start;
  std::vector<std::pair<std::string, std::unique_ptr<Entry>>> parsed;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) fail("{}: __metadata__ must be a string → string map", fname);
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string()) fail("{}: __metadata__ entry '{}' is not a string", fname, key);
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = fmt::format("{}: tensor '{}'", fname, name);
    if (!info.is_object()) fail("{}: entry is not an object", where);
    auto entry = std::make_unique<Entry>();
    entry->file = file.get();
    const auto dt = info.find("dtype");
    if (dt == info.end() || !dt->is_string()) fail("{}: missing \"dtype\" string", where);
    entry->dtype = dt->get<std::string>();
    const int bits = dtype_bits(entry->dtype);
    if (bits == 0) fail("{}: unknown dtype '{}'", where, entry->dtype);
    const auto sh = info.find("shape");
    if (sh == info.end() || !sh->is_array()) fail("{}: missing \"shape\" array", where);
    std::uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) fail("{}: shape {} has an entry that is not a non-negative integer", where, sh->dump());
      const auto v = d.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(INT64_MAX)) fail("{}: shape {} too large", where, sh->dump());
      numel = checked_mul(numel, v, where);
      entry->shape.push_back(static_cast<std::int64_t>(v));
    }
    const auto off = info.find("data_offsets");
    if (off == info.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail("{}: \"data_offsets\" must be [BEGIN, END] with non-negative integers", where);
    entry->begin = (*off)[0].get<std::uint64_t>();
    entry->end = (*off)[1].get<std::uint64_t>();
    if (entry->end < entry->begin) fail("{}: data_offsets [{}, {}] end before they begin", where, entry->begin, entry->end);
    const std::uint64_t total_bits = checked_mul(numel, static_cast<std::uint64_t>(bits), where);
    if (total_bits % 8) fail("{}: {} elements of {} do not fill whole bytes", where, numel, entry->dtype);
    if (entry->end - entry->begin != total_bits / 8)
      fail("{}: data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}", where, entry->begin, entry->end,
           entry->end - entry->begin, sh->dump(), entry->dtype, total_bits / 8);
    if (const auto it = tensors_.find(name); it != tensors_.end())
      fail("{}: also present in {}", where, it->second->file->path.string());
    parsed.emplace_back(name, std::move(entry));
  }

  // The buffer must be tiled exactly: sorted by offsets, each tensor begins where the last ended.
  std::sort(parsed.begin(), parsed.end(), [](const auto& a, const auto& b) {
    return std::pair(a.second->begin, a.second->end) < std::pair(b.second->begin, b.second->end);
  });
  std::uint64_t expected = 0;
  std::string last;  // the previous tensor in buffer order
  for (const auto& [name, e] : parsed) {
    if (e->begin != expected)
      fail("{}: tensor '{}' data_offsets begin at byte {} but should begin at {} ({}): {}", fname, name, e->begin,
           expected, last.empty() ? "the start of the buffer" : fmt::format("the end of tensor '{}'", last),
           e->begin > expected ? "a hole in the buffer" : "overlapping data");
    expected = e->end;
    last = name;
  }
  if (expected != buffer_size) {
    if (expected > buffer_size)
      fail("{}: truncated: tensor '{}' ends at byte {} of the data buffer but the file holds only {}", fname, last,
           expected, buffer_size);
    fail("{}: {} bytes after the last tensor are not indexed by the header", fname, buffer_size - expected);
  }
  for (auto& [name, e] : parsed) tensors_.emplace(name, std::move(e));
  files_.push_back(std::move(file));
}

Checkpoint::Checkpoint(const std::filesystem::path& path) : path_(path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path index, single;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "model.safetensors.index.json")) {
      index = path / "model.safetensors.index.json";
    } else if (fs::exists(path / "model.safetensors")) {
      single = path / "model.safetensors";
    } else {
      fail("{}: no model.safetensors or model.safetensors.index.json in this directory", path.string());
    }
  } else if (!fs::exists(path, ec)) {
    fail("{}: no such file or directory", path.string());
  } else if (path.extension() == ".json") {
    index = path;
  } else {
    single = path;
  }
  if (!single.empty()) {
    open_file(single);
    return;
  }

  // Sharded: {"metadata": {...}, "weight_map": {"<tensor>": "<shard file>", ...}}.
  const nlohmann::json json = parse_json(read_file(index, "shard index"), index.string());
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object())
    fail("{}: no \"weight_map\" object", index.string());
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [name, shard] : json["weight_map"].items()) {
    if (!shard.is_string()) fail("{}: weight_map entry '{}' is not a file name", index.string(), name);
    const fs::path shard_path(shard.get<std::string>());
    if (shard_path.empty() || shard_path.is_absolute() || shard_path.has_parent_path())
      fail("{}: weight_map entry '{}' names '{}', not a file beside the index", index.string(), name,
           shard.get<std::string>());
    by_shard[shard.get<std::string>()].push_back(name);
  }
  const fs::path dir = index.parent_path();
  for (const auto& [shard, names] : by_shard) {
    if (!fs::exists(dir / shard)) fail("{}: shard '{}' (holding '{}') is missing", index.string(), shard, names.front());
    open_file(dir / shard);
    for (const auto& name : names) {
      const auto it = tensors_.find(name);
      if (it == tensors_.end() || it->second->file != files_.back().get())
        fail("{}: weight_map puts '{}' in {} but that shard does not hold it", index.string(), name, shard);
    }
  }
}

const Checkpoint::Entry& Checkpoint::entry(std::string_view name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("{}: no tensor '{}' in the checkpoint", path_.string(), name);
  return *it->second;
}

bool Checkpoint::has(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }
const Shape& Checkpoint::shape(std::string_view name) const { return entry(name).shape; }
const std::string& Checkpoint::dtype(std::string_view name) const { return entry(name).dtype; }

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, e] : tensors_) out.push_back(name);
  return out;
}

FloatTensor Checkpoint::tensor(std::string_view name) const {
  const Entry& e = entry(name);
  FloatTensor out(e.shape);
  const unsigned char* src = e.file->data + e.file->buffer_start + e.begin;
  const auto n = out.data.size();
  if (e.dtype == "F32") {
    // memcpy: the data need not be 4-byte aligned. Not for an empty tensor, whose data() may be
    // null: memcpy from or to null is undefined even for 0 bytes (UBSan, core_tests under ASan).
    if (n) std::memcpy(out.data.data(), src, n * 4);
  } else if (e.dtype == "F16" || e.dtype == "BF16") {
    std::vector<std::uint16_t> bits(n);
    if (n) std::memcpy(bits.data(), src, n * 2);
    bits16_to_f32(e.dtype == "F16" ? DType::f16 : DType::bf16, bits, out.data);
  } else {
    fail("{}: tensor '{}' has dtype {}; only F32, F16 and BF16 convert to f32", e.file->path.string(), name, e.dtype);
  }
  return out;
}

std::span<const std::byte> Checkpoint::raw(std::string_view name) const {
  const Entry& e = entry(name);
  const auto* start = reinterpret_cast<const std::byte*>(e.file->data + e.file->buffer_start + e.begin);
  return {start, static_cast<std::size_t>(e.end - e.begin)};
}

void write_safetensors(const std::filesystem::path& path, const std::map<std::string, TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<std::string> order;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail("{}: '__metadata__' is reserved and cannot name a tensor", path.string());
    for (auto d : t.shape)
      if (d < 0) fail("{}: tensor '{}' has a negative dimension", path.string(), name);
    if (static_cast<std::int64_t>(t.data.size()) != element_count(t.shape))
      fail("{}: tensor '{}' has {} values for a shape of {} elements", path.string(), name, t.data.size(),
           element_count(t.shape));
    order.push_back(name);
  }
  // The format's writer order: descending dtype width (alignment), then name.
  std::stable_sort(order.begin(), order.end(), [&](const std::string& a, const std::string& b) {
    return dtype_bytes(tensors.at(a).dtype) > dtype_bytes(tensors.at(b).dtype);
  });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string data;
  for (const auto& name : order) {
    const auto& t = tensors.at(name);
    const auto begin = data.size();
    if (t.dtype == DType::f32) {
      data.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * 4);
    } else {
      std::vector<std::uint16_t> bits(t.data.size());
      f32_to_16bit(t.dtype, t.data, bits);
      data.append(reinterpret_cast<const char*>(bits.data()), bits.size() * 2);
    }
    header[name] = {{"dtype", st_dtype(t.dtype)}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the byte buffer starts 8-byte aligned
  std::string content(8, '\0');
  auto n = static_cast<std::uint64_t>(text.size());
  for (int i = 0; i < 8; ++i) content[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  content += text;
  content += data;
  write_file_atomic(path, content);
}

}  // namespace kvlab::core
