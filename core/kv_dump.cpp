#include "core/kv_dump.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <map>
#include <mutex>
#include <numeric>
#include <utility>

#include "core/block_checksum.h"
#include "core/error.h"
#include "core/parse_json.h"
#include "core/temp_file_cleanup.h"
#include "core/version.h"

namespace kvlab::core {

std::string_view to_string(KvKind kind) {
  switch (kind) {
    case KvKind::key: return "key";
    case KvKind::value: return "value";
    case KvKind::query: return "query";
    case KvKind::attn_in: return "attn_in";
  }
  return "?";
}

// Stored bytes are little-endian and are hashed, written and read as the native ones.
static_assert(std::endian::native == std::endian::little, "kvlab dumps assume a little-endian host");

namespace {

// Target bytes of one chunk: big enough that per-chunk overhead vanishes, small enough
// that a 1024..2048-token block of a layer is a handful of whole chunks.
constexpr std::int64_t kChunkBytes = std::int64_t{2} << 20;

// ---------------------------------------------------------------------------------------------
// HDF5 plumbing

// HDF5 prints its whole error stack to stderr on every failed call unless told not to. The
// thread-safe build keeps one error stack, with printing on, per thread, so switching it off
// once per process is not enough: it is done once per thread, at every public entry point.
void silence_hdf5_errors() {
  thread_local const bool silenced = H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0;
  (void)silenced;
}

// The innermost message of this thread's HDF5 error stack (where the failure started, e.g.
// "truncated file: eof = ..."), to append to our own message instead of the stack dump.
std::string hdf5_reason() {
  std::string reason;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD,
           [](unsigned n, const H5E_error2_t* error, void* out) -> herr_t {
             if (n == 0 && error->desc != nullptr) *static_cast<std::string*>(out) = error->desc;
             return 0;
           },
           &reason);
  // Some reasons span lines (a failed write starts with "time = <ctime>\n"); errors are one line.
  std::replace(reason.begin(), reason.end(), '\n', ' ');
  return reason.empty() ? "HDF5 error" : reason;
}

// An owned hid_t, closed with the function matching its kind.
class Hid {
 public:
  using Closer = herr_t (*)(hid_t);
  Hid() = default;
  Hid(hid_t id, Closer closer) : id_(id), close_(closer) {}
  Hid(Hid&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)), close_(other.close_) {}
  Hid& operator=(Hid&& other) noexcept {
    if (this != &other) {
      close();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
      close_ = other.close_;
    }
    return *this;
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  ~Hid() { close(); }

  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: lets H5*(hid) calls read naturally
  // Closes now; the status matters for files, whose close flushes everything.
  herr_t close() { return id_ >= 0 ? close_(std::exchange(id_, H5I_INVALID_HID)) : 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// Takes ownership of a freshly created id, or throws "<what> (<HDF5's reason>)".
template <typename... Args>
Hid own(hid_t id, Hid::Closer close, fmt::format_string<Args...> what, Args&&... args) {
  if (id < 0) fail("{} ({})", fmt::format(what, std::forward<Args>(args)...), hdf5_reason());
  return Hid(id, close);
}

template <typename... Args>
void check(herr_t status, fmt::format_string<Args...> what, Args&&... args) {
  if (status < 0) fail("{} ({})", fmt::format(what, std::forward<Args>(args)...), hdf5_reason());
}

// A 16-bit IEEE half type, built the way h5py builds its float16 so h5py maps it to numpy
// float16 (HDF5 1.10 has no predefined half type). The fields must shrink before the size.
Hid make_f16_type() {
  Hid type = own(H5Tcopy(H5T_IEEE_F32LE), H5Tclose, "cannot create the float16 type");
  check(H5Tset_fields(type, 15, 10, 5, 0, 10), "cannot set float16 fields");
  check(H5Tset_size(type, 2), "cannot set float16 size");
  check(H5Tset_ebias(type, 15), "cannot set float16 exponent bias");
  return type;
}

bool is_f16_type(hid_t type) {
  std::size_t sign = 0, exp_pos = 0, exp_size = 0, mant_pos = 0, mant_size = 0;
  return H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == 2 && H5Tget_order(type) == H5T_ORDER_LE &&
         H5Tget_fields(type, &sign, &exp_pos, &exp_size, &mant_pos, &mant_size) >= 0 && sign == 15 &&
         exp_pos == 10 && exp_size == 5 && mant_pos == 0 && mant_size == 10 && H5Tget_ebias(type) == 15;
}

// `size` bytes, or H5T_VARIABLE (read only: format version 1 files).
Hid make_utf8_string_type(std::size_t size) {
  Hid type = own(H5Tcopy(H5T_C_S1), H5Tclose, "cannot create a string type");
  check(H5Tset_size(type, size), "cannot set the string size");
  check(H5Tset_cset(type, H5T_CSET_UTF8), "cannot make a UTF-8 string type");
  if (size != H5T_VARIABLE) check(H5Tset_strpad(type, H5T_STR_NULLPAD), "cannot set the string padding");
  return type;
}

Hid scalar_space() { return own(H5Screate(H5S_SCALAR), H5Sclose, "cannot create a scalar dataspace"); }

Hid simple_space(const Shape& dims) {
  const std::vector<hsize_t> h(dims.begin(), dims.end());
  return own(H5Screate_simple(static_cast<int>(h.size()), h.data(), nullptr), H5Sclose, "cannot create a dataspace");
}

bool link_exists(hid_t parent, const std::string& name) { return H5Lexists(parent, name.c_str(), H5P_DEFAULT) > 0; }

// `where` names the object in messages: "<file>: <object path>".
// Fixed-length (NUL-padded, at least 1 byte): the text sits in the attribute message itself, in
// the checksummed object header. Variable-length strings live in the global heap, which no HDF5
// format checksums and whose corrupted object sizes crash libhdf5 (and h5py) on read.
// The layer_windows attribute: one decimal integer ≥ 0 per layer, comma-separated ("" = none).
std::vector<int> parse_layer_windows(const std::string& text, int layers, const std::string& where) {
  std::vector<int> out;
  if (text.empty()) return out;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    char* stop = nullptr;
    errno = 0;
    const long v = std::strtol(item.c_str(), &stop, 10);
    if (item.empty() || *stop != '\0' || errno || v < 0 || v > INT_MAX)
      fail("{}: layer_windows entry '{}' is not an integer in 0..{} (\"{}\")", where, item, INT_MAX, text);
    out.push_back(static_cast<int>(v));
    begin = end + 1;
  }
  if (static_cast<int>(out.size()) != layers)
    fail("{}: layer_windows lists {} layers, the dump has {}", where, out.size(), layers);
  return out;
}

// The layer_rope_config attribute: {"configs": [C_0, C_1, …], "layers": [k_0, …, k_{L−1}]}, layer l
// rotating with C_{k_l} (one entry per distinct RoPE, so 62 Gemma-3 layers name two).
std::string layer_rope_config_text(const std::vector<std::string>& per_layer, int layers, const std::string& where) {
  if (static_cast<int>(per_layer.size()) != layers)
    fail("{}: layer_rope_configs has {} entries for {} layers", where, per_layer.size(), layers);
  nlohmann::json configs = nlohmann::json::array(), index = nlohmann::json::array();
  for (const auto& text : per_layer) {
    const nlohmann::json c = parse_json(text, where + " layer_rope_configs");
    if (!c.is_object()) fail("{}: a layer_rope_configs entry is not a JSON object: {}", where, text);
    const auto found = std::find(configs.begin(), configs.end(), c);
    index.push_back(found - configs.begin());
    if (found == configs.end()) configs.push_back(c);
  }
  return nlohmann::json{{"configs", configs}, {"layers", index}}.dump();
}

// Its inverse: one config JSON text per layer ("" = none). Any other shape is an error.
std::vector<std::string> parse_layer_rope_config(const std::string& text, int layers, const std::string& where) {
  if (text.empty()) return {};
  const nlohmann::json j = parse_json(text, where + " layer_rope_config");
  const auto configs = j.is_object() ? j.find("configs") : j.end();
  const auto index = j.is_object() ? j.find("layers") : j.end();
  if (configs == j.end() || index == j.end() || !configs->is_array() || !index->is_array())
    fail("{}: layer_rope_config is not {{\"configs\": [...], \"layers\": [...]}}: {}", where, text);
  if (static_cast<int>(index->size()) != layers)
    fail("{}: layer_rope_config lists {} layers, the dump has {}", where, index->size(), layers);
  std::vector<std::string> out;
  for (const auto& k : *index) {
    if (!k.is_number_integer() || k.get<std::int64_t>() < 0 || k.get<std::int64_t>() >= std::ssize(*configs))
      fail("{}: layer_rope_config layer entry {} is not an index into its {} configs", where, k.dump(), configs->size());
    const auto& c = (*configs)[k.get<std::size_t>()];
    if (!c.is_object()) fail("{}: layer_rope_config config {} is not a JSON object", where, c.dump());
    out.push_back(c.dump());
  }
  return out;
}

void write_string_attribute(hid_t object, const char* name, std::string_view value, const std::string& where) {
  const Hid type = make_utf8_string_type(std::max<std::size_t>(value.size(), 1));
  const Hid space = scalar_space();
  const Hid attr = own(H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                       "{}: cannot create attribute {}", where, name);
  std::string text(value);
  text.resize(std::max<std::size_t>(text.size(), 1), '\0');
  check(H5Awrite(attr, type, text.data()), "{}: cannot write attribute {}", where, name);
}

void write_int_attribute(hid_t object, const char* name, std::int64_t value, const std::string& where) {
  const Hid space = scalar_space();
  const Hid attr = own(H5Acreate2(object, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                       "{}: cannot create attribute {}", where, name);
  check(H5Awrite(attr, H5T_NATIVE_INT64, &value), "{}: cannot write attribute {}", where, name);
}

// Opens a one-value attribute of the given class; nullopt when absent.
std::optional<Hid> open_scalar_attribute(hid_t object, const char* name, H5T_class_t expected_class,
                                         const std::string& where) {
  if (H5Aexists(object, name) <= 0) return std::nullopt;
  Hid attr = own(H5Aopen(object, name, H5P_DEFAULT), H5Aclose, "{}: cannot open attribute {}", where, name);
  const Hid type = own(H5Aget_type(attr), H5Tclose, "{}: attribute {}", where, name);
  const Hid space = own(H5Aget_space(attr), H5Sclose, "{}: attribute {}", where, name);
  if (H5Tget_class(type) != expected_class || H5Sget_simple_extent_npoints(space) != 1)
    fail("{}: attribute {} is not a single {}", where, name, expected_class == H5T_STRING ? "string" : "integer");
  return attr;
}

// Longest fixed-length string attribute read: far above any config.json, far below what a
// corrupted size field could ask for.
constexpr std::size_t kMaxStringBytes = std::size_t{64} << 20;

// Whether a reader follows variable-length strings into the global heap: only for format version
// 1 files, which have nothing else (version 2 rejects them before reading anything).
enum class VarStrings { reject, read };

// Reads a fixed-length or (version 1 only) variable-length string attribute.
std::optional<std::string> read_string_attribute(hid_t object, const char* name, VarStrings var_strings,
                                                 const std::string& where) {
  const auto attr = open_scalar_attribute(object, name, H5T_STRING, where);
  if (!attr) return std::nullopt;
  const Hid file_type = own(H5Aget_type(*attr), H5Tclose, "{}: attribute {}", where, name);
  if (H5Tis_variable_str(file_type) > 0) {
    if (var_strings == VarStrings::reject)
      fail("{}: attribute {} is a variable-length string; format version {} stores fixed-length ones (corrupt file?)",
           where, name, kDumpFormatVersion);
    Hid memory_type = make_utf8_string_type(H5T_VARIABLE);
    check(H5Tset_cset(memory_type, H5Tget_cset(file_type)), "{}: attribute {}", where, name);
    char* data = nullptr;
    check(H5Aread(*attr, memory_type, &data), "{}: cannot read attribute {}", where, name);
    std::string value = data != nullptr ? data : "";
    H5free_memory(data);
    return value;
  }
  if (H5Tget_size(file_type) > kMaxStringBytes)
    fail("{}: attribute {} claims {} bytes (corrupt file?)", where, name, H5Tget_size(file_type));
  std::string value(H5Tget_size(file_type), '\0');
  check(H5Aread(*attr, file_type, value.data()), "{}: cannot read attribute {}", where, name);
  value.resize(std::min(value.size(), value.find('\0')));
  if (H5Tget_strpad(file_type) == H5T_STR_SPACEPAD) value.resize(value.find_last_not_of(' ') + 1);
  return value;
}

std::optional<std::int64_t> read_int_attribute(hid_t object, const char* name, const std::string& where) {
  const auto attr = open_scalar_attribute(object, name, H5T_INTEGER, where);
  if (!attr) return std::nullopt;
  std::int64_t value = 0;
  check(H5Aread(*attr, H5T_NATIVE_INT64, &value), "{}: cannot read attribute {}", where, name);
  return value;
}

std::int64_t require_int_attribute(hid_t object, const char* name, std::int64_t min, std::int64_t max,
                                   const std::string& where) {
  const auto value = read_int_attribute(object, name, where);
  if (!value) fail("{}: missing attribute {}", where, name);
  if (*value < min || *value > max) fail("{}: attribute {} = {} is out of range [{}, {}]", where, name, *value, min, max);
  return *value;
}

// Block checksums of a dataset (core/block_checksum.h) as two attributes: xxh3_block_rows (int64,
// R) and xxh3_64 (uint64 [ceil(rows / R)]).
constexpr const char* kChecksumAttribute = "xxh3_64";
constexpr const char* kChecksumRowsAttribute = "xxh3_block_rows";

void write_checksums(hid_t dataset, const BlockChecksums& sums, const std::string& where) {
  write_int_attribute(dataset, kChecksumRowsAttribute, sums.block_rows, where);
  const hsize_t n = sums.hashes.size();
  const Hid space = own(H5Screate_simple(1, &n, nullptr), H5Sclose, "{}: cannot create a dataspace", where);
  const Hid attr = own(H5Acreate2(dataset, kChecksumAttribute, H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                       H5Aclose, "{}: cannot create attribute {}", where, kChecksumAttribute);
  if (n > 0)
    check(H5Awrite(attr, H5T_NATIVE_UINT64, sums.hashes.data()), "{}: cannot write attribute {}", where,
          kChecksumAttribute);
}

// The checksums of a dataset of `rows` rows; absent ones are an error when `required` (format
// version 2), else an empty BlockChecksums (version 1: reads are not verified). Shapes are
// checked before anything is allocated.
BlockChecksums read_checksums(hid_t dataset, std::int64_t rows, bool required, const std::string& where) {
  if (H5Aexists(dataset, kChecksumAttribute) <= 0) {
    if (required) fail("{}: no checksum (attribute {}; corrupt file?)", where, kChecksumAttribute);
    return {};
  }
  BlockChecksums sums;
  sums.block_rows =
      require_int_attribute(dataset, kChecksumRowsAttribute, 1, std::max<std::int64_t>(rows, 1), where);
  const Hid attr = own(H5Aopen(dataset, kChecksumAttribute, H5P_DEFAULT), H5Aclose, "{}: cannot open attribute {}",
                       where, kChecksumAttribute);
  const Hid type = own(H5Aget_type(attr), H5Tclose, "{}: attribute {}", where, kChecksumAttribute);
  const Hid space = own(H5Aget_space(attr), H5Sclose, "{}: attribute {}", where, kChecksumAttribute);
  const std::int64_t expected = BlockChecksums::count(rows, sums.block_rows);
  if (H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 8 || H5Sget_simple_extent_ndims(space) != 1 ||
      H5Sget_simple_extent_npoints(space) != expected)
    fail("{}: attribute {} is not {} uint64 values (one per {} rows)", where, kChecksumAttribute, expected,
         sums.block_rows);
  sums.hashes.resize(static_cast<std::size_t>(expected));
  if (expected > 0)
    check(H5Aread(attr, H5T_NATIVE_UINT64, sums.hashes.data()), "{}: cannot read attribute {}", where,
          kChecksumAttribute);
  return sums;
}

// ---------------------------------------------------------------------------------------------
// Schema

std::string sample_path(const std::string& id) { return "/samples/" + id; }

std::string dataset_path(const std::string& sample_id, int layer, KvKind kind) {
  return fmt::format("/samples/{}/layers/{}/{}", sample_id, layer, to_string(kind));
}

// Name of the storage type in the root attribute "dtype" (numpy's spelling).
std::string_view stored_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
  }
  return "?";
}

// On-disk shape of one layer tensor: key/value [T, H_kv, D], query [W, H_q, D], attn_in [T, d_model].
Shape layer_shape(const DumpInfo& info, std::int64_t tokens, std::int64_t window, KvKind kind) {
  switch (kind) {
    case KvKind::key:
    case KvKind::value: return {tokens, info.num_kv_heads, info.head_dim};
    case KvKind::query: return {window, info.num_q_heads, info.head_dim};
    case KvKind::attn_in: return {tokens, info.d_model};
  }
  return {};
}

std::int64_t row_width(const Shape& shape) {
  return std::accumulate(shape.begin() + 1, shape.end(), std::int64_t{1}, std::multiplies<>());
}

std::string shape_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Rows per chunk so that a chunk is about kChunkBytes, clamped to [1, rows].
std::int64_t chunk_rows(const Shape& shape, DType dtype) {
  const std::int64_t row_bytes = row_width(shape) * static_cast<std::int64_t>(dtype_bytes(dtype));
  return std::clamp<std::int64_t>(kChunkBytes / std::max<std::int64_t>(row_bytes, 1), 1, std::max<std::int64_t>(shape[0], 1));
}

// Selects rows [t0, t0 + rows) of a dataset's `file_space` and returns the matching memory
// dataspace. It has the selection's own shape, not a flat one: with a 1-D memory space against
// a 3-D selection HDF5 1.10 copies in small pieces, about 90x slower (67 MiB/s vs 5.9 GB/s).
Hid select_rows(hid_t file_space, const Shape& shape, std::int64_t t0, std::int64_t rows, const std::string& where) {
  std::vector<hsize_t> start(shape.size(), 0), count(shape.begin(), shape.end());
  start[0] = static_cast<hsize_t>(t0);
  count[0] = static_cast<hsize_t>(rows);
  check(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
        "{}: cannot select rows [{}, {})", where, t0, t0 + rows);
  return own(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose,
             "{}: cannot create a dataspace", where);
}

// Writes rows [t0, t0 + rows) of a dataset from `data` (already in `memory_type`).
void write_rows(hid_t dataset, hid_t file_space, const Shape& shape, std::int64_t t0, std::int64_t rows,
                const void* data, hid_t memory_type, const std::string& where) {
  const Hid memory_space = select_rows(file_space, shape, t0, rows, where);
  check(H5Dwrite(dataset, memory_type, memory_space, file_space, H5P_DEFAULT, data), "{}: cannot write rows [{}, {})",
        where, t0, t0 + rows);
}

// Where element `index` of a block starting at row `first_row` sits, for error messages.
// Query rows are window rows; `token_offset` (T - W) turns them into token indices.
std::string element_location(KvKind kind, const Shape& shape, std::int64_t token_offset, std::int64_t first_row,
                             std::size_t index) {
  const std::int64_t width = row_width(shape);
  const std::int64_t row = first_row + static_cast<std::int64_t>(index) / width;
  const std::int64_t column = static_cast<std::int64_t>(index) % width;
  if (kind == KvKind::attn_in) return fmt::format("token {}, column {}", row, column);
  const std::int64_t head_dim = shape[2];
  const std::string token = kind == KvKind::query ? fmt::format("token {} (query window row {})", token_offset + row, row)
                                                  : fmt::format("token {}", row);
  return fmt::format("{}, head {}, dim {}", token, column / head_dim, column % head_dim);
}

// Index of the first NaN/Inf (all-ones exponent), or nullopt. The first pass is a max
// reduction, which GCC vectorises (an `any |= bool` loop it does not: 3-7x slower); the second,
// scalar pass runs only when there is something to report.
template <typename Bits, typename Value>
std::optional<std::size_t> first_all_ones_exponent(std::span<const Value> values, Bits exponent_mask) {
  Bits largest = 0;
  for (const Value v : values) largest = std::max<Bits>(largest, std::bit_cast<Bits>(v) & exponent_mask);
  if (largest != exponent_mask) return std::nullopt;
  for (std::size_t i = 0; i < values.size(); ++i)
    if ((std::bit_cast<Bits>(values[i]) & exponent_mask) == exponent_mask) return i;
  return std::nullopt;
}

std::optional<std::size_t> first_nonfinite(std::span<const float> values) {
  return first_all_ones_exponent<std::uint32_t>(values, 0x7F800000u);
}

std::optional<std::size_t> first_nonfinite(std::span<const std::uint16_t> bits, DType dtype) {
  return first_all_ones_exponent<std::uint16_t>(bits, dtype == DType::f16 ? 0x7C00 : 0x7F80);
}

float bits_value(DType dtype, std::uint16_t bits) {
  float value = 0;
  bits16_to_f32(dtype, std::span(&bits, 1), std::span(&value, 1));
  return value;
}

bool valid_sample_id(const std::string& id) {
  const bool chars_ok = std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
  });
  return chars_ok && !id.empty() && id != "." && id != "..";  // "." names the current group in HDF5
}

void validate_info(const DumpInfo& info, const std::string& where) {
  if (info.num_layers < 1 || info.num_kv_heads < 1 || info.num_q_heads < 1 || info.head_dim < 1 || info.d_model < 0)
    fail("{}: invalid dump shape: num_layers={}, num_kv_heads={}, num_q_heads={}, head_dim={}, d_model={}", where,
         info.num_layers, info.num_kv_heads, info.num_q_heads, info.head_dim, info.d_model);
}

std::string utc_now() { return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(std::time(nullptr))); }

}  // namespace

// =============================================================================================
// Writer

struct DumpWriter::Impl {
  std::filesystem::path path;
  std::filesystem::path tmp;
  std::string name;  // path as text, for messages
  DumpInfo info;
  Hid element_type;  // on-disk element type; 16-bit data is also written with it (no conversion)
  Hid file;
  std::optional<SampleMeta> sample;  // the sample begun and not yet ended
  Hid layers_group;                  // /samples/<id>/layers of that sample
  std::vector<bool> layer_written;
  bool committed = false;
  std::vector<std::uint16_t> bits;  // one chunk of converted 16-bit values
  TempFileCleanup cleanup;          // removes `tmp` on SIGINT/SIGTERM/SIGHUP (declared after `tmp`)

  Impl(const std::filesystem::path& p, DumpInfo i)
      : path(p), tmp(p.string() + ".tmp-" + std::to_string(::getpid())), name(p.string()), info(std::move(i)),
        cleanup(tmp) {}
  // Here rather than in ~DumpWriter so that a constructor that throws also removes the file.
  ~Impl() {
    if (committed) return;
    layers_group.close();
    abandon_file();
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void require_open() const {
    if (committed) fail("{}: the dump writer was already committed", name);
  }

  void create_file();
  void abandon_file();
  void reserve_file_blocks();
  void write_root_attributes();
  void validate_sample(const SampleMeta& meta) const;
  void write_sample_header(const SampleMeta& meta);
  void check_layer_sizes(int layer, std::span<const float> key, std::span<const float> value,
                         std::span<const float> query, std::span<const float> attn_in) const;
  void write_tensor(hid_t group, int layer, KvKind kind, std::span<const float> values);
  [[noreturn]] void fail_nonfinite(const std::string& where, KvKind kind, const Shape& shape, std::int64_t t0,
                                   std::size_t index, float value, bool overflow) const;
};

void DumpWriter::Impl::create_file() {
  const Hid fapl = own(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "{}: cannot create a property list", name);
  // SEMI: closing the file fails if a handle is still open, instead of silently keeping the
  // file open (and unflushed) past the rename.
  check(H5Pset_fclose_degree(fapl, H5F_CLOSE_SEMI), "{}: cannot set the close degree", name);
  // The 1.10 file format: superblock, object headers and chunk indexes carry checksums, so a
  // corrupted metadata byte is an error, not a missing chunk read as zeros. Pinned to 1.10 at
  // both ends so that a newer libhdf5 writes files that 1.10 (and any h5py since 2018) still reads.
  check(H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110), "{}: cannot set the file format", name);
  file = own(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose, "{}: cannot create {}", name,
             tmp.string());
  if (info.dtype == DType::f32) element_type = own(H5Tcopy(H5T_IEEE_F32LE), H5Tclose, "{}: float32 type", name);
  else if (info.dtype == DType::f16) element_type = make_f16_type();
  else element_type = own(H5Tcopy(H5T_STD_U16LE), H5Tclose, "{}: uint16 type", name);
}

// Closes a file that is being thrown away without letting it touch the disk again. HDF5 1.10
// flushes on close; when that flush fails (disk full), H5Fclose fails but leaves a freed file
// behind its id, and the library's exit handler then crashes on it (SIGSEGV after the error
// message). So the descriptor under the file is first swapped for an anonymous in-memory file:
// the final flush writes there, always succeeds, and the memory is gone with the close.
// The metadata HDF5 still holds in its cache is written by the final close, into file space
// allocated long before (holes until then). If that write fails, 1.10.8 can neither close the file
// nor flush it again ("slist already enabled"), and crashes at exit. So the blocks of the whole
// file are reserved first: a full disk fails here, while the file can still be abandoned cleanly.
// Filesystems without fallocate go on unreserved.
void DumpWriter::Impl::reserve_file_blocks() {
  hsize_t size = 0;
  void* handle = nullptr;
  const Hid fapl(H5Fget_access_plist(file), H5Pclose);
  if (H5Fget_filesize(file, &size) < 0 || fapl.get() < 0 || H5Fget_vfd_handle(file, fapl, &handle) < 0 || !handle)
    return;
  if (::fallocate(*static_cast<int*>(handle), 0, 0, static_cast<off_t>(size)) != 0 && errno != EOPNOTSUPP &&
      errno != ENOSYS && errno != EINVAL)
    fail("{}: cannot write {} ({}; disk full?)", name, tmp.string(), std::strerror(errno));
}

void DumpWriter::Impl::abandon_file() {
  if (file.get() < 0) return;
  void* handle = nullptr;
  const Hid fapl(H5Fget_access_plist(file), H5Pclose);
  if (fapl.get() >= 0 && H5Fget_vfd_handle(file, fapl, &handle) >= 0 && handle != nullptr) {
    const int sink = ::memfd_create("kvlab-abandoned-dump", MFD_CLOEXEC);
    if (sink >= 0) {
      ::dup2(sink, *static_cast<int*>(handle));
      ::close(sink);
    }
  }
  file.close();
}

void DumpWriter::Impl::write_root_attributes() {
  const std::string where = name + ": /";
  write_int_attribute(file, "format_version", kDumpFormatVersion, where);
  const std::pair<const char*, const std::string*> strings[] = {
      {"model_id", &info.model_id},           {"model_hash", &info.model_hash},
      {"model_config", &info.model_config},
      {"tokenizer", &info.tokenizer},         {"chat_template", &info.chat_template},
      {"kvlab_version", &info.kvlab_version}, {"git_revision", &info.git_revision},
      {"created_utc", &info.created_utc}};
  for (const auto& [key, text] : strings) write_string_attribute(file, key, *text, where);
  // Optional: absent unless the model normalises keys/queries before RoPE (Qwen3), so other
  // families' files are unchanged.
  if (!info.key_norm.empty()) write_string_attribute(file, "key_norm", info.key_norm, where);
  if (!info.query_norm.empty()) write_string_attribute(file, "query_norm", info.query_norm, where);
  if (!info.layer_windows.empty()) {
    if (static_cast<int>(info.layer_windows.size()) != info.num_layers)
      fail("{}: layer_windows has {} entries for {} layers", where, info.layer_windows.size(), info.num_layers);
    write_string_attribute(file, "layer_windows", fmt::format("{}", fmt::join(info.layer_windows, ",")), where);
  }
  if (!info.layer_rope.empty() || !info.layer_rope_configs.empty())
    write_string_attribute(file, "layer_rope",
                           info.layer_rope.empty() ? "per-layer RoPE: see layer_rope_config" : info.layer_rope, where);
  if (!info.layer_rope_configs.empty())
    write_string_attribute(file, "layer_rope_config",
                           layer_rope_config_text(info.layer_rope_configs, info.num_layers, where), where);
  const std::pair<const char*, int> ints[] = {{"num_layers", info.num_layers},     {"num_kv_heads", info.num_kv_heads},
                                              {"num_q_heads", info.num_q_heads},   {"head_dim", info.head_dim},
                                              {"d_model", info.d_model}};
  for (const auto& [key, value] : ints) write_int_attribute(file, key, value, where);
  write_string_attribute(file, "dtype", stored_name(info.dtype), where);
  own(H5Gcreate2(file, "/samples", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, "{}: cannot create /samples",
      name);
}

void DumpWriter::Impl::validate_sample(const SampleMeta& meta) const {
  if (!valid_sample_id(meta.id))
    fail("{}: invalid sample id '{}' (allowed: letters, digits, '_', '-', '.')", name, meta.id);
  const std::string where = fmt::format("{}: sample {}", name, meta.id);
  const std::int64_t T = meta.num_tokens;
  if (T < 1) fail("{}: num_tokens = {} (must be at least 1)", where, T);
  if (!meta.tokens.empty() && static_cast<std::int64_t>(meta.tokens.size()) != T)
    fail("{}: {} tokens but num_tokens = {}", where, meta.tokens.size(), T);
  if (!meta.positions.empty() && static_cast<std::int64_t>(meta.positions.size()) != T)
    fail("{}: {} positions but num_tokens = {}", where, meta.positions.size(), T);
  if (meta.context_end < 0 || meta.context_end > T) fail("{}: context_end {} outside [0, {}]", where, meta.context_end, T);
  if (meta.query_window < 0 || meta.query_window > T)
    fail("{}: query_window {} outside [0, {}]", where, meta.query_window, T);
  if (meta.has_attn_in && info.d_model < 1) fail("{}: has attn_in but the dump's d_model is {}", where, info.d_model);
  if (link_exists(file, sample_path(meta.id))) fail("{}: sample written twice", where);
}

void DumpWriter::Impl::write_sample_header(const SampleMeta& meta) {
  const std::string where = name + ": " + sample_path(meta.id);
  const Hid group = own(H5Gcreate2(file, sample_path(meta.id).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                        H5Gclose, "{}: cannot create the group", where);
  write_int_attribute(group, "num_tokens", meta.num_tokens, where);
  write_int_attribute(group, "context_end", meta.context_end, where);
  write_int_attribute(group, "query_window", meta.query_window, where);
  write_int_attribute(group, "has_attn_in", meta.has_attn_in ? 1 : 0, where);

  std::vector<std::int64_t> positions = meta.positions;
  if (positions.empty()) {
    positions.resize(static_cast<std::size_t>(meta.num_tokens));
    std::iota(positions.begin(), positions.end(), std::int64_t{0});
  }
  const auto write_1d = [&](const char* dataset_name, hid_t file_type, hid_t memory_type, std::size_t n,
                            const void* data) {
    const Hid space = simple_space({static_cast<std::int64_t>(n)});
    const Hid dataset = own(H5Dcreate2(group, dataset_name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                            H5Dclose, "{}/{}: cannot create", where, dataset_name);
    if (n > 0) check(H5Dwrite(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "{}/{}: cannot write", where,
                     dataset_name);
    // One block: these are read whole. Native = stored bytes on a little-endian host.
    BlockChecksums sums{std::max<std::int64_t>(static_cast<std::int64_t>(n), 1), {}};
    if (n > 0) sums.hashes.push_back(block_hash(std::span(static_cast<const std::byte*>(data), n * H5Tget_size(file_type))));
    write_checksums(dataset, sums, fmt::format("{}/{}", where, dataset_name));
  };
  write_1d("tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, meta.tokens.size(), meta.tokens.data());
  write_1d("positions", H5T_STD_I64LE, H5T_NATIVE_INT64, positions.size(), positions.data());
  layers_group = own(H5Gcreate2(group, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
                     "{}/layers: cannot create", where);
}

void DumpWriter::Impl::check_layer_sizes(int layer, std::span<const float> key, std::span<const float> value,
                                         std::span<const float> query, std::span<const float> attn_in) const {
  const std::string where = fmt::format("{}: sample {} layer {}", name, sample->id, layer);
  if (layer < 0 || layer >= info.num_layers) fail("{}: layer out of range [0, {})", where, info.num_layers);
  if (layer_written[static_cast<std::size_t>(layer)]) fail("{}: layer written twice", where);
  const std::pair<KvKind, std::span<const float>> tensors[] = {
      {KvKind::key, key}, {KvKind::value, value}, {KvKind::query, query}, {KvKind::attn_in, attn_in}};
  for (const auto& [kind, values] : tensors) {
    const bool present = kind != KvKind::attn_in || sample->has_attn_in;
    const Shape shape = layer_shape(info, sample->num_tokens, sample->query_window, kind);
    const std::int64_t expected = present ? element_count(shape) : 0;
    if (static_cast<std::int64_t>(values.size()) != expected)
      fail("{}: {} has {} values, expected {} ({})", where, to_string(kind), values.size(), expected,
           present ? shape_string(shape) : "no attn_in in this sample");
  }
}

void DumpWriter::Impl::fail_nonfinite(const std::string& where, KvKind kind, const Shape& shape, std::int64_t t0,
                                      std::size_t index, float value, bool overflow) const {
  const std::string location =
      element_location(kind, shape, sample->num_tokens - sample->query_window, t0, index);
  if (overflow) fail("{}: value {} at {} overflows {}", where, value, location, stored_name(info.dtype));
  fail("{}: non-finite value {} at {}", where, value, location);
}

// Creates one layer dataset and writes it chunk by chunk, checking (and for 16-bit types
// converting) each chunk on the way, so the extra memory is one chunk.
void DumpWriter::Impl::write_tensor(hid_t group, int layer, KvKind kind, std::span<const float> values) {
  const std::string where = fmt::format("{}: layer {} {} ({})", name, layer, to_string(kind),
                                        dataset_path(sample->id, layer, kind));
  const Shape shape = layer_shape(info, sample->num_tokens, sample->query_window, kind);
  const std::int64_t block_rows = chunk_rows(shape, info.dtype);
  const Hid dcpl = own(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "{}: cannot create a property list", where);
  if (shape[0] > 0) {  // chunks must not be empty; an empty query window stays contiguous
    std::vector<hsize_t> chunk(shape.begin(), shape.end());
    chunk[0] = static_cast<hsize_t>(block_rows);
    check(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), "{}: cannot set chunking", where);
  }
  const Hid space = simple_space(shape);
  const Hid dataset = own(H5Dcreate2(group, std::string(to_string(kind)).c_str(), element_type, space, H5P_DEFAULT,
                                     dcpl, H5P_DEFAULT),
                          H5Dclose, "{}: cannot create", where);
  if (info.dtype == DType::bf16) write_string_attribute(dataset, "dtype", "bfloat16", where);

  // Checksum blocks are the chunks: a token range is verified by the chunks it reads anyway.
  BlockChecksums sums{block_rows, {}};
  const std::int64_t width = row_width(shape);
  for (std::int64_t t0 = 0; t0 < shape[0]; t0 += block_rows) {
    const std::int64_t rows = std::min(block_rows, shape[0] - t0);
    const auto block = values.subspan(static_cast<std::size_t>(t0 * width), static_cast<std::size_t>(rows * width));
    if (const auto bad = first_nonfinite(block)) fail_nonfinite(where, kind, shape, t0, *bad, block[*bad], false);
    if (info.dtype == DType::f32) {
      sums.hashes.push_back(block_hash(std::as_bytes(block)));  // native f32 = stored F32LE
      write_rows(dataset, space, shape, t0, rows, block.data(), H5T_NATIVE_FLOAT, where);
      continue;
    }
    bits.resize(block.size());
    f32_to_16bit(info.dtype, block, bits);
    if (const auto bad = first_nonfinite(std::span<const std::uint16_t>(bits), info.dtype))
      fail_nonfinite(where, kind, shape, t0, *bad, block[*bad], true);
    sums.hashes.push_back(block_hash(std::as_bytes(std::span<const std::uint16_t>(bits))));
    write_rows(dataset, space, shape, t0, rows, bits.data(), element_type, where);
  }
  write_checksums(dataset, sums, where);
}

DumpWriter::DumpWriter(const std::filesystem::path& path, DumpInfo info)
    : impl_(std::make_unique<Impl>(path, std::move(info))) {
  silence_hdf5_errors();
  DumpInfo& i = impl_->info;
  validate_info(i, impl_->name);
  if (i.kvlab_version.empty()) i.kvlab_version = kVersion;
  if (i.git_revision.empty()) i.git_revision = kGitRevision;
  if (i.created_utc.empty()) i.created_utc = utc_now();
  impl_->create_file();
  impl_->write_root_attributes();
}

DumpWriter::~DumpWriter() = default;

void DumpWriter::begin_sample(const SampleMeta& meta) {
  silence_hdf5_errors();
  impl_->require_open();
  if (impl_->sample) fail("{}: sample {} was begun but not ended", impl_->name, impl_->sample->id);
  impl_->validate_sample(meta);
  impl_->write_sample_header(meta);
  impl_->sample = meta;
  impl_->layer_written.assign(static_cast<std::size_t>(impl_->info.num_layers), false);
}

void DumpWriter::write_layer(int layer, std::span<const float> key, std::span<const float> value,
                             std::span<const float> query, std::span<const float> attn_in) {
  silence_hdf5_errors();
  Impl& w = *impl_;
  w.require_open();
  if (!w.sample) fail("{}: write_layer({}) outside a sample (call begin_sample first)", w.name, layer);
  w.check_layer_sizes(layer, key, value, query, attn_in);
  const std::string group_name = std::to_string(layer);
  {
    const Hid group = own(H5Gcreate2(w.layers_group, group_name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                          H5Gclose, "{}: sample {}: cannot create layer {}", w.name, w.sample->id, layer);
    try {
      w.write_tensor(group, layer, KvKind::key, key);
      w.write_tensor(group, layer, KvKind::value, value);
      w.write_tensor(group, layer, KvKind::query, query);
      if (w.sample->has_attn_in) w.write_tensor(group, layer, KvKind::attn_in, attn_in);
    } catch (const Error&) {
      // Drop the half-written layer so the writer stays consistent (the caller may retry it).
      H5Ldelete(w.layers_group, group_name.c_str(), H5P_DEFAULT);
      throw;
    }
  }
  w.layer_written[static_cast<std::size_t>(layer)] = true;
}

void DumpWriter::end_sample() {
  silence_hdf5_errors();
  Impl& w = *impl_;
  w.require_open();
  if (!w.sample) fail("{}: end_sample() without begin_sample()", w.name);
  const auto missing = std::find(w.layer_written.begin(), w.layer_written.end(), false);
  if (missing != w.layer_written.end())
    fail("{}: sample {} ended without layer {} (all {} layers must be written)", w.name, w.sample->id,
         missing - w.layer_written.begin(), w.info.num_layers);
  w.layers_group.close();
  w.sample.reset();
}

void DumpWriter::commit() {
  silence_hdf5_errors();
  Impl& w = *impl_;
  w.require_open();
  if (w.sample) fail("{}: commit() while sample {} is not ended", w.name, w.sample->id);
  w.reserve_file_blocks();
  check(w.file.close(), "{}: cannot close {} (disk full?)", w.name, w.tmp.string());
  std::error_code ec;
  std::filesystem::rename(w.tmp, w.path, ec);
  if (ec) fail("{}: cannot move {} into place: {}", w.name, w.tmp.string(), ec.message());
  w.committed = true;
}

// =============================================================================================
// Reader

namespace {

// Rows read per HDF5 call: bounds the 16-bit scratch buffer (and the memory a huge request
// pins) while keeping each read large enough to run at disk speed.
constexpr std::int64_t kSlabBytes = std::int64_t{8} << 20;

struct SampleDims {
  std::int64_t tokens = 0;
  std::int64_t window = 0;
  bool has_attn_in = false;
};

// An opened and validated layer dataset, kept open for the next read of the same tensor.
// Everything but the dataspace selection is fixed once opened.
struct OpenDataset {
  std::string where;  // "<file>: <dataset path>"
  KvKind kind{};
  Shape shape;
  std::int64_t token_offset = 0;  // T - W for the query, 0 otherwise
  Hid dataset;
  Hid file_space;  // its dataspace; each read selects its rows in it
  Hid file_type;
  hid_t memory_type = H5I_INVALID_HID;  // native float, or the 16-bit file type itself: no conversion
  BlockChecksums sums;                  // empty for format version 1 files: reads are not verified
};

// Whether `shape` of `element_bytes` elements fits in a file of `file_bytes` bytes, without
// overflow: a dump's data is stored uncompressed, so a bigger shape is a corrupt header, and
// is rejected before anything is sized from it.
bool fits_in_file(const Shape& shape, std::size_t element_bytes, std::uintmax_t file_bytes) {
  std::uintmax_t bytes = element_bytes;
  for (const std::int64_t dim : shape) {
    if (dim < 0) return false;
    if (dim != 0 && bytes > file_bytes / static_cast<std::uintmax_t>(dim)) return false;
    bytes *= static_cast<std::uintmax_t>(dim);
  }
  return bytes <= file_bytes;
}

// Dataset access without a chunk cache. Chunks are uncompressed and rows full width, so any
// row range is one contiguous run per chunk, which HDF5 then reads straight into our buffer.
// A cache (docs/performance.md §7: 64 MiB for compressed data) only adds a copy and keeps up to its
// size per open dataset: measured on 8 layers x 16k tokens x 8 x 128, layer-interleaved
// 1024..2048-row reads ran 2-9x slower with 64 MiB and the process grew by 0.5-1 GiB.
Hid no_chunk_cache() {
  Hid dapl = own(H5Pcreate(H5P_DATASET_ACCESS), H5Pclose, "cannot create a property list");
  check(H5Pset_chunk_cache(dapl, H5D_CHUNK_CACHE_NSLOTS_DEFAULT, 0, H5D_CHUNK_CACHE_W0_DEFAULT),
        "cannot set the chunk cache");
  return dapl;
}

// Read scratch of the calling thread: one slab or checksum block as stored, before it becomes f32
// (uint16_t elements: aligned for the 16-bit types, viewed as bytes for hashing and copying).
thread_local std::vector<std::uint16_t> t_bits;

}  // namespace

struct DumpReader::Impl {
  std::filesystem::path path;
  std::string name;
  DumpInfo info;
  std::int64_t version = 0;       // format_version: 1 (no checksums, variable-length strings) or 2
  std::uintmax_t file_bytes = 0;  // the file's size: the bound on any shape it declares
  Hid file;
  std::mutex mutex;  // guards the caches and every HDF5 call below
  std::map<std::string, SampleDims> sample_dims;
  // Open datasets of one sample (the analysis walks one sample's layers block by block);
  // asking for another sample closes them, so a dump with many samples holds few handles.
  // Shared so that a read in flight keeps its dataset alive. Declared after `file`: closed first.
  std::map<std::pair<int, KvKind>, std::shared_ptr<const OpenDataset>> datasets;
  std::string datasets_sample;

  explicit Impl(const std::filesystem::path& p) : path(p), name(p.string()) {}

  void open_file();
  void read_root_attributes();
  Hid open_sample(const std::string& id) const;
  SampleDims read_sample_dims(hid_t group, const std::string& where) const;
  const SampleDims& dims(const std::string& id);
  std::shared_ptr<const OpenDataset> dataset(const std::string& id, int layer, KvKind kind);
  OpenDataset open_dataset(const std::string& id, int layer, KvKind kind);
  void check_dtype(OpenDataset& d) const;
  VarStrings var_strings() const { return version == 1 ? VarStrings::read : VarStrings::reject; }
  void read_piece(const OpenDataset& d, std::int64_t first, std::int64_t rows, std::optional<std::int64_t> block,
                  std::int64_t want_first, std::span<float> out);
  template <typename T>
  std::vector<T> read_1d(hid_t group, const char* dataset_name, hid_t memory_type, std::int64_t tokens,
                         bool may_be_empty, const std::string& where) const;
};

void DumpReader::Impl::open_file() {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail("{}: no such file", name);
  const htri_t is_hdf5 = H5Fis_hdf5(name.c_str());
  if (is_hdf5 == 0) fail("{}: not an HDF5 file (so not a kvlab dump)", name);
  if (is_hdf5 < 0) fail("{}: cannot read the file ({})", name, hdf5_reason());
  file_bytes = std::filesystem::file_size(path, ec);
  file = own(H5Fopen(name.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose,
             "{}: cannot open the HDF5 file (truncated or corrupt?)", name);
}

void DumpReader::Impl::read_root_attributes() {
  const std::string where = name + ": /";
  const auto stored_version = read_int_attribute(file, "format_version", where);
  if (!stored_version) fail("{}: not a kvlab dump (no format_version attribute on /)", name);
  if (*stored_version < 1 || *stored_version > kDumpFormatVersion)
    fail("{}: format_version {} is not supported (this kvlab reads versions 1 to {})", name, *stored_version,
         kDumpFormatVersion);
  version = *stored_version;
  const std::pair<const char*, std::string*> strings[] = {
      {"model_id", &info.model_id},           {"model_hash", &info.model_hash},
      {"model_config", &info.model_config},
      {"tokenizer", &info.tokenizer},         {"chat_template", &info.chat_template},
      {"kvlab_version", &info.kvlab_version}, {"git_revision", &info.git_revision},
      {"created_utc", &info.created_utc}};
  for (const auto& [key, text] : strings) *text = read_string_attribute(file, key, var_strings(), where).value_or("");
  info.key_norm = read_string_attribute(file, "key_norm", var_strings(), where).value_or("");
  info.query_norm = read_string_attribute(file, "query_norm", var_strings(), where).value_or("");
  info.layer_rope = read_string_attribute(file, "layer_rope", var_strings(), where).value_or("");
  const std::string windows = read_string_attribute(file, "layer_windows", var_strings(), where).value_or("");
  const std::string ropes = read_string_attribute(file, "layer_rope_config", var_strings(), where).value_or("");
  const std::pair<const char*, int*> ints[] = {{"num_layers", &info.num_layers},   {"num_kv_heads", &info.num_kv_heads},
                                               {"num_q_heads", &info.num_q_heads}, {"head_dim", &info.head_dim}};
  for (const auto& [key, value] : ints) *value = static_cast<int>(require_int_attribute(file, key, 1, INT_MAX, where));
  info.d_model = static_cast<int>(require_int_attribute(file, "d_model", 0, INT_MAX, where));
  info.layer_windows = parse_layer_windows(windows, info.num_layers, where);
  info.layer_rope_configs = parse_layer_rope_config(ropes, info.num_layers, where);
  const auto dtype = read_string_attribute(file, "dtype", var_strings(), where);
  if (!dtype) fail("{}: missing attribute dtype", where);
  try {
    info.dtype = parse_dtype(*dtype);
  } catch (const Error& e) {
    fail("{}: attribute dtype: {}", where, e.what());
  }
  if (!link_exists(file, "/samples")) fail("{}: missing group /samples", name);
}

Hid DumpReader::Impl::open_sample(const std::string& id) const {
  if (!valid_sample_id(id) || !link_exists(file, sample_path(id))) fail("{}: no sample '{}'", name, id);
  return own(H5Gopen2(file, sample_path(id).c_str(), H5P_DEFAULT), H5Gclose, "{}: cannot open {}", name,
             sample_path(id));
}

SampleDims DumpReader::Impl::read_sample_dims(hid_t group, const std::string& where) const {
  SampleDims d;
  // Every token has an int64 position in the file: a bigger count is a corrupt attribute.
  d.tokens = require_int_attribute(group, "num_tokens", 1, static_cast<std::int64_t>(file_bytes / 8), where);
  d.window = require_int_attribute(group, "query_window", 0, d.tokens, where);
  d.has_attn_in = require_int_attribute(group, "has_attn_in", 0, 1, where) == 1;
  if (d.has_attn_in && info.d_model < 1) fail("{}: has attn_in but the dump's d_model is {}", where, info.d_model);
  return d;
}

const SampleDims& DumpReader::Impl::dims(const std::string& id) {
  auto it = sample_dims.find(id);
  if (it == sample_dims.end())
    it = sample_dims.emplace(id, read_sample_dims(open_sample(id), name + ": " + sample_path(id))).first;
  return it->second;
}

template <typename T>
// A per-token 1-D dataset: its length (`tokens`, or 0 when `may_be_empty`) is checked before
// anything is allocated or read.
std::vector<T> DumpReader::Impl::read_1d(hid_t group, const char* dataset_name, hid_t memory_type, std::int64_t tokens,
                                         bool may_be_empty, const std::string& where) const {
  if (!link_exists(group, dataset_name)) fail("{}/{}: missing dataset", where, dataset_name);
  const Hid dataset = own(H5Dopen2(group, dataset_name, H5P_DEFAULT), H5Dclose, "{}/{}: cannot open", where, dataset_name);
  const Hid space = own(H5Dget_space(dataset), H5Sclose, "{}/{}", where, dataset_name);
  hsize_t n = 0;
  if (H5Sget_simple_extent_ndims(space) != 1) fail("{}/{}: expected a 1-D dataset", where, dataset_name);
  H5Sget_simple_extent_dims(space, &n, nullptr);
  const std::string object = fmt::format("{}/{}", where, dataset_name);
  const auto rows = static_cast<std::int64_t>(n);
  if (rows != tokens && !(may_be_empty && rows == 0)) fail("{}: {} values but num_tokens = {}", object, n, tokens);
  const BlockChecksums sums = read_checksums(dataset, rows, version >= 2, object);
  std::vector<T> values(n);
  if (n > 0)
    check(H5Dread(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()),
          "{}: cannot read (truncated or corrupt file?)", object);
  const auto bytes = std::as_bytes(std::span<const T>(values));
  for (std::int64_t b = 0; b < std::ssize(sums.hashes); ++b) {
    const std::int64_t first = b * sums.block_rows, count = std::min(sums.block_rows, rows - first);
    verify_block(sums, b, bytes.subspan(static_cast<std::size_t>(first) * sizeof(T), static_cast<std::size_t>(count) * sizeof(T)),
                 first, count, object);
  }
  return values;
}

void DumpReader::Impl::check_dtype(OpenDataset& d) const {
  d.file_type = own(H5Dget_type(d.dataset), H5Tclose, "{}: cannot get the type", d.where);
  const H5T_class_t type_class = H5Tget_class(d.file_type);
  const std::size_t size = H5Tget_size(d.file_type);
  std::optional<DType> found;
  if (type_class == H5T_FLOAT && size == 4) found = DType::f32;
  else if (is_f16_type(d.file_type)) found = DType::f16;
  else if (type_class == H5T_INTEGER && size == 2 && H5Tget_sign(d.file_type) == H5T_SGN_NONE &&
           H5Tget_order(d.file_type) == H5T_ORDER_LE &&
           read_string_attribute(d.dataset, "dtype", var_strings(), d.where).value_or("") == "bfloat16")
    found = DType::bf16;
  if (found != info.dtype) {
    const std::string what = found ? std::string(stored_name(*found))
                                   : fmt::format("an HDF5 type of class {} and {} bytes", static_cast<int>(type_class), size);
    fail("{}: dtype is {}, expected {} (the root attribute dtype)", d.where, what, stored_name(info.dtype));
  }
  d.memory_type = info.dtype == DType::f32   ? H5T_NATIVE_FLOAT
                  : info.dtype == DType::f16 ? d.file_type.get()
                                             : H5T_NATIVE_UINT16;
}

OpenDataset DumpReader::Impl::open_dataset(const std::string& id, int layer, KvKind kind) {
  const SampleDims& sample = dims(id);
  if (layer < 0 || layer >= info.num_layers)
    fail("{}: sample {}: layer {} out of range [0, {})", name, id, layer, info.num_layers);
  if (kind == KvKind::attn_in && !sample.has_attn_in) fail("{}: sample {} has no attn_in", name, id);
  OpenDataset d;
  const std::string dataset = dataset_path(id, layer, kind);
  d.where = name + ": " + dataset;
  d.kind = kind;
  d.shape = layer_shape(info, sample.tokens, sample.window, kind);
  d.token_offset = kind == KvKind::query ? sample.tokens - sample.window : 0;
  // H5Lexists fails on a path whose parent is missing, so test each level.
  for (const std::string& level : {fmt::format("/samples/{}/layers", id), fmt::format("/samples/{}/layers/{}", id, layer), dataset})
    if (!link_exists(file, level)) fail("{}: missing dataset {}", name, dataset);
  d.dataset = own(H5Dopen2(file, dataset.c_str(), no_chunk_cache()), H5Dclose, "{}: cannot open the dataset", d.where);
  d.file_space = own(H5Dget_space(d.dataset), H5Sclose, "{}: cannot get the dataspace", d.where);
  const int rank = H5Sget_simple_extent_ndims(d.file_space);
  std::vector<hsize_t> extent(static_cast<std::size_t>(std::max(rank, 0)));
  H5Sget_simple_extent_dims(d.file_space, extent.data(), nullptr);
  const Shape found(extent.begin(), extent.end());
  if (found != d.shape) fail("{}: wrong shape {} expected {}", d.where, shape_string(found), shape_string(d.shape));
  if (!fits_in_file(d.shape, dtype_bytes(info.dtype), file_bytes))
    fail("{}: shape {} of {} does not fit in the file's {} bytes (corrupt file?)", d.where, shape_string(d.shape),
         stored_name(info.dtype), file_bytes);
  check_dtype(d);
  d.sums = read_checksums(d.dataset, d.shape[0], version >= 2, d.where);
  return d;
}

std::shared_ptr<const OpenDataset> DumpReader::Impl::dataset(const std::string& id, int layer, KvKind kind) {
  if (id != datasets_sample) {
    datasets.clear();
    datasets_sample = id;
  }
  auto& slot = datasets[{layer, kind}];
  if (!slot) slot = std::make_shared<const OpenDataset>(open_dataset(id, layer, kind));
  return slot;
}

// Reads stored rows [first, first + rows) of `d`, verifies them against checksum block `block`
// (when given: then they are exactly that block), and writes rows [want_first, want_first +
// out rows) of them to `out` as f32. Only the HDF5 read holds the lock; hashing, the finiteness
// check and the 16-bit conversion run in the caller's thread.
void DumpReader::Impl::read_piece(const OpenDataset& d, std::int64_t first, std::int64_t rows,
                                  std::optional<std::int64_t> block, std::int64_t want_first, std::span<float> out) {
  const DType dtype = info.dtype;
  const std::int64_t width = row_width(d.shape);
  const std::size_t element_bytes = dtype_bytes(dtype);
  const auto stored_bytes = static_cast<std::size_t>(rows * width) * element_bytes;
  // f32 rows wanted whole are read straight into `out`; everything else goes through scratch.
  const bool direct = dtype == DType::f32 && want_first == first && out.size() == static_cast<std::size_t>(rows * width);
  if (!direct) t_bits.resize((stored_bytes + 1) / 2);
  void* buffer = direct ? static_cast<void*>(out.data()) : static_cast<void*>(t_bits.data());
  {
    const std::lock_guard lock(mutex);
    const Hid memory_space = select_rows(d.file_space, d.shape, first, rows, d.where);
    check(H5Dread(d.dataset, d.memory_type, memory_space, d.file_space, H5P_DEFAULT, buffer),
          "{}: cannot read rows [{}, {}) (truncated or corrupt file?)", d.where, first, first + rows);
  }
  const std::span<const std::byte> stored(static_cast<const std::byte*>(buffer), stored_bytes);
  if (block) verify_block(d.sums, *block, stored, first, rows, d.where);
  const auto wanted = stored.subspan(static_cast<std::size_t>((want_first - first) * width) * element_bytes,
                                     out.size() * element_bytes);
  if (dtype == DType::f32) {
    if (!direct) std::memcpy(out.data(), wanted.data(), wanted.size());
    if (const auto bad = first_nonfinite(std::span<const float>(out)))
      fail("{}: non-finite value {} at {}", d.where, out[*bad],
           element_location(d.kind, d.shape, d.token_offset, want_first, *bad));
    return;
  }
  const std::span<const std::uint16_t> bits(
      t_bits.data() + static_cast<std::size_t>((want_first - first) * width), out.size());
  if (const auto bad = first_nonfinite(bits, dtype))
    fail("{}: non-finite value {} at {}", d.where, bits_value(dtype, bits[*bad]),
         element_location(d.kind, d.shape, d.token_offset, want_first, *bad));
  bits16_to_f32(dtype, bits, out);
}

DumpReader::DumpReader(const std::filesystem::path& path) : impl_(std::make_unique<Impl>(path)) {
  silence_hdf5_errors();
  impl_->open_file();
  impl_->read_root_attributes();
}

DumpReader::~DumpReader() = default;

const std::filesystem::path& DumpReader::path() const { return impl_->path; }
const DumpInfo& DumpReader::info() const { return impl_->info; }

std::vector<std::string> DumpReader::sample_ids() const {
  silence_hdf5_errors();
  const std::lock_guard lock(impl_->mutex);
  std::vector<std::string> ids;
  const Hid samples =
      own(H5Gopen2(impl_->file, "/samples", H5P_DEFAULT), H5Gclose, "{}: cannot open /samples", impl_->name);
  check(H5Literate(samples, H5_INDEX_NAME, H5_ITER_NATIVE, nullptr,
                   [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
                     static_cast<std::vector<std::string>*>(out)->emplace_back(name);
                     return 0;
                   },
                   &ids),
        "{}: cannot list /samples", impl_->name);
  std::sort(ids.begin(), ids.end());
  return ids;
}

SampleMeta DumpReader::sample(const std::string& id) const {
  silence_hdf5_errors();
  const std::lock_guard lock(impl_->mutex);
  Impl& r = *impl_;
  const Hid group = r.open_sample(id);
  const std::string where = r.name + ": " + sample_path(id);
  const SampleDims d = r.read_sample_dims(group, where);
  SampleMeta meta;
  meta.id = id;
  meta.num_tokens = d.tokens;
  meta.query_window = static_cast<int>(d.window);
  meta.has_attn_in = d.has_attn_in;
  meta.context_end = require_int_attribute(group, "context_end", 0, d.tokens, where);
  meta.tokens = r.read_1d<std::int32_t>(group, "tokens", H5T_NATIVE_INT32, d.tokens, true, where);
  meta.positions = r.read_1d<std::int64_t>(group, "positions", H5T_NATIVE_INT64, d.tokens, false, where);
  // Every layer tensor's shape, type and checksums against the attributes before a caller sizes
  // buffers from them (L × T × H·D from the root's head_dim and this num_tokens): a corrupt
  // header is an error here, not a multi-GB allocation. They stay open for the reads to come.
  for (int layer = 0; layer < r.info.num_layers; ++layer)
    for (const KvKind kind : {KvKind::key, KvKind::value, KvKind::query, KvKind::attn_in})
      if (kind != KvKind::attn_in || d.has_attn_in) r.dataset(id, layer, kind);
  return meta;
}

void DumpReader::read_rows(const std::string& sample_id, int layer, KvKind kind, std::int64_t t0, std::int64_t n,
                           std::span<float> out) const {
  silence_hdf5_errors();
  const auto d = [&] {
    const std::lock_guard lock(impl_->mutex);
    return impl_->dataset(sample_id, layer, kind);
  }();
  const std::int64_t width = row_width(d->shape);
  if (t0 < 0 || n < 0 || t0 + n > d->shape[0])
    fail("{}: rows [{}, {}) outside [0, {})", d->where, t0, t0 + n, d->shape[0]);
  if (static_cast<std::int64_t>(out.size()) != n * width)
    fail("{}: output holds {} values, {} rows need {}", d->where, out.size(), n, n * width);
  const auto rows_of = [&](std::int64_t first, std::int64_t rows) {
    return out.subspan(static_cast<std::size_t>((first - t0) * width), static_cast<std::size_t>(rows * width));
  };
  if (!d->sums.present()) {  // format version 1: slabs of at most kSlabBytes, not verified
    const std::int64_t slab_rows = std::max<std::int64_t>(1, kSlabBytes / (width * 2));
    for (std::int64_t r0 = t0; r0 < t0 + n; r0 += slab_rows) {
      const std::int64_t rows = std::min(slab_rows, t0 + n - r0);
      impl_->read_piece(*d, r0, rows, std::nullopt, r0, rows_of(r0, rows));
    }
    return;
  }
  // Whole checksum blocks (the chunks), each verified; a range that starts or ends inside a block
  // reads that block whole, which costs at most two extra partial chunks per call.
  const std::int64_t block_rows = d->sums.block_rows;
  for (std::int64_t b = t0 / block_rows; b * block_rows < t0 + n; ++b) {
    const std::int64_t first = b * block_rows, rows = std::min(block_rows, d->shape[0] - first);
    const std::int64_t lo = std::max(t0, first), hi = std::min(t0 + n, first + rows);
    impl_->read_piece(*d, first, rows, b, lo, rows_of(lo, hi - lo));
  }
}

FloatTensor DumpReader::read_layer(const std::string& sample_id, int layer, KvKind kind) const {
  silence_hdf5_errors();
  const auto d = [&] {
    const std::lock_guard lock(impl_->mutex);
    return impl_->dataset(sample_id, layer, kind);
  }();
  FloatTensor tensor(d->shape);
  read_rows(sample_id, layer, kind, 0, d->shape[0], tensor.span());
  return tensor;
}

}  // namespace kvlab::core
