#include "harness/minicache_on_device.h"

#include "compressors/chain.h"
#include "compressors/methods/minicache_kernel.h"
#include "core/error.h"
#include "harness/fp16_store.h"
#include "harness/torch_ops.h"

namespace kvlab::harness {

const compressors::StageSpec* minicache_alone(const compressors::ChainSpec& chain) {
  const auto& s = chain.stages;
  return s.size() == 1 && compressors::device_of(&s[0]) == compressors::DevicePath::minicache ? &s[0] : nullptr;
}

std::int64_t MinicacheHeadStored::bytes() const {
  std::int64_t n = 0;
  for (const auto* t : {&direction, &magnitudes, &retained1, &retained2, &index}) n += stored_bytes(*t);
  return n;
}

std::vector<MinicacheHeadStored> minicache_store_pair(const at::Tensor& x1, const at::Tensor& x2,
                                                      const compressors::StageSpec& spec) {
  using compressors::MinicacheAngles;
  if (!x1.sizes().equals(x2.sizes()) || x1.dim() != 3) fail("minicache: a layer pair of different shapes");
  const double t = spec.get_real("t"), gamma = spec.get_real("gamma");
  const auto head = [&](const at::Tensor& x, std::int64_t h) { return x[h].to(at::kDouble); };
  const std::int64_t H = x1.size(0);
  std::vector<MinicacheAngles<TorchOps>> angles;  // pass 1, one head at a time (bounds the double copies)
  for (std::int64_t h = 0; h < H; ++h) angles.push_back(compressors::minicache_angles<TorchOps>(head(x1, h), head(x2, h)));
  const auto retention =
      compressors::minicache_retention(angles, spec.get("retain"), spec.get("scope") == "head", gamma, x1.size(1));
  std::vector<MinicacheHeadStored> out;
  for (std::int64_t h = 0; h < H; ++h) {
    const auto& g = angles[static_cast<std::size_t>(h)];
    const at::Tensor& keep = retention.keep[static_cast<std::size_t>(h)];
    const at::Tensor merged = ~keep;
    const at::Tensor e = compressors::minicache_directions(head(x1, h), head(x2, h), g, t);
    const auto fp16 = [](const at::Tensor& x) { return x.to(at::kFloat).to(at::kHalf); };  // as the host's f32 then fp16
    out.push_back({fp16(e.index({merged})), fp16(at::stack({g.norm1.index({merged}), g.norm2.index({merged})})),
                   fp16(x1[h].index({keep})), fp16(x2[h].index({keep})), keep.nonzero().squeeze(1).to(at::kInt)});
  }
  return out;
}

at::Tensor minicache_rebuild(const std::vector<MinicacheHeadStored>& heads, int which, std::int64_t tokens) {
  std::vector<at::Tensor> rows;
  for (const auto& s : heads) {
    const at::Tensor index = s.index.to(at::kLong);
    const auto options = s.direction.options().dtype(at::kFloat);
    at::Tensor out = at::empty({tokens, s.direction.size(1)}, options);
    out.index_copy_(0, index, (which == 0 ? s.retained1 : s.retained2).to(at::kFloat));
    const at::Tensor merged = at::ones({tokens}, options.dtype(at::kBool)).index_fill_(0, index, false);
    out.index_put_({merged}, s.direction.to(at::kFloat) * s.magnitudes[which].to(at::kFloat).unsqueeze(-1));
    rows.push_back(out);
  }
  return at::stack(rows);
}

}  // namespace kvlab::harness
