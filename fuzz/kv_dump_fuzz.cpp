// libFuzzer target: an HDF5 KV dump (docs/dump-format.md) opened with core::DumpReader and read
// back whole: the root attributes, every sample's metadata and every layer's tensors. The reader
// takes a path (libhdf5 opens files), so each input goes to a scratch file first.
//
// Only kvlab's reader is instrumented; libhdf5 is Debian's build. So the fuzzer's coverage
// guidance sees which of the reader's checks an input reaches, and a crash inside libhdf5 still
// aborts the run (the signal handler reports it). Seeds: tiny v2 dumps from `kvlab synth`.
#include <algorithm>
#include <cstdint>

#include "core/kv_dump.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = kvlab_fuzz::scratch().write("dump.h5", kvlab_fuzz::bytes(data, size));
  kvlab_fuzz::run([&] {
    const kvlab::core::DumpReader reader(file);
    const auto& info = reader.info();
    for (const auto& id : reader.sample_ids()) {
      const auto meta = reader.sample(id);
      for (int layer = 0; layer < std::min(info.num_layers, 4); ++layer)
        for (const auto kind : {kvlab::core::KvKind::key, kvlab::core::KvKind::value, kvlab::core::KvKind::query})
          (void)reader.read_layer(id, layer, kind);
      if (meta.has_attn_in) (void)reader.read_layer(id, 0, kvlab::core::KvKind::attn_in);
    }
  });
  return 0;
}
