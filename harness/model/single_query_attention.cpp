#include "harness/model/single_query_attention.h"

#include <ATen/Parallel.h>

#include <Eigen/Core>

#include <cmath>
#include <limits>

#include "core/error.h"

namespace kvlab::harness {

bool single_query_attention_applies(const at::Tensor& q, const at::Tensor& keys) {
  return q.device().is_cpu() && keys.device().is_cpu() && q.scalar_type() == at::kFloat &&
         keys.scalar_type() == at::kFloat;
}

at::Tensor single_query_attention(const at::Tensor& q_in, const at::Tensor& keys, const at::Tensor& values, double scale,
                                  const std::optional<double>& softcap, const at::Tensor& allowed_in,
                                  const at::Tensor& keep_in, const at::Tensor& query_keep_in) {
  if (!single_query_attention_applies(q_in, keys) || values.scalar_type() != at::kFloat || !values.device().is_cpu())
    fail("single_query_attention: float32 CPU tensors only");
  const std::int64_t Hq = q_in.size(0), D = q_in.size(1), Hkv = keys.size(0), Sk = keys.size(1);
  if (Hkv == 0 || Hq % Hkv != 0 || keys.size(2) != D || values.sizes() != keys.sizes() || keys.stride(2) != 1 ||
      values.stride(2) != 1 || allowed_in.numel() != Sk)
    fail("single_query_attention: q [{}, {}] against keys [{}, {}, {}] (values alike, unit last stride) and a mask of {}",
         Hq, D, Hkv, Sk, keys.size(2), allowed_in.numel());
  const std::int64_t rep = Hq / Hkv;
  const at::Tensor q = q_in.contiguous(), allowed = allowed_in.to(at::kBool).contiguous();
  const at::Tensor keep = keep_in.defined() ? keep_in.to(at::kBool).contiguous() : at::Tensor();
  const at::Tensor query_keep = query_keep_in.defined() ? query_keep_in.to(at::kBool).contiguous() : at::Tensor();
  at::Tensor out = at::empty({1, Hq * D}, q.options());

  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Rows = Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>>;
  const bool* allowed_at = allowed.data_ptr<bool>();
  const bool* keep_at = keep.defined() ? keep.data_ptr<bool>() : nullptr;
  const bool* query_keep_at = query_keep.defined() ? query_keep.data_ptr<bool>() : nullptr;
  const float *q_at = q.data_ptr<float>(), *keys_at = keys.data_ptr<float>(), *values_at = values.data_ptr<float>();
  float* out_at = out.data_ptr<float>();
  const auto scale_f = static_cast<float>(scale);
  at::parallel_for(0, Hkv, 1, [&](std::int64_t begin, std::int64_t end) {
    RowMajor scores(rep, Sk), acc(rep, D);  // per query head of the group: scores, then probabilities
    for (std::int64_t kv = begin; kv < end; ++kv) {
      const Rows K(keys_at + kv * keys.stride(0), Sk, D, Eigen::OuterStride<>(keys.stride(1)));
      const Rows V(values_at + kv * values.stride(0), Sk, D, Eigen::OuterStride<>(values.stride(1)));
      const Eigen::Map<const RowMajor> Q(q_at + kv * rep * D, rep, D);  // the group's query heads
      const bool* kept = keep_at ? keep_at + kv * Sk : nullptr;
      const bool* selected = query_keep_at ? query_keep_at + kv * rep * Sk : nullptr;
      // Scores key by key, each key row read once for the group's rep query heads.
      for (std::int64_t t = 0; t < Sk; ++t) {
        const bool open = allowed_at[t] && (!kept || kept[t]);
        for (std::int64_t r = 0; r < rep; ++r) {
          float& s = scores(r, t);
          if (!open || (selected && !selected[r * Sk + t])) {
            s = -std::numeric_limits<float>::infinity();
            continue;
          }
          s = K.row(t).dot(Q.row(r)) * scale_f;
          if (softcap) s = std::tanh(s / static_cast<float>(*softcap)) * static_cast<float>(*softcap);
        }
      }
      // Softmax per query head (exp(s − max), summed in double).
      Eigen::VectorXf total(rep);
      for (std::int64_t r = 0; r < rep; ++r) {
        auto row = scores.row(r);
        const float top = row.maxCoeff();
        double sum = 0;
        for (std::int64_t t = 0; t < Sk; ++t) sum += row(t) = std::exp(row(t) - top);
        total(r) = static_cast<float>(sum);
      }
      // The probabilities times the values, each value row read once.
      acc.setZero();
      for (std::int64_t t = 0; t < Sk; ++t)
        for (std::int64_t r = 0; r < rep; ++r)
          if (const float p = scores(r, t); p != 0) acc.row(r) += p * V.row(t);
      for (std::int64_t r = 0; r < rep; ++r)
        Eigen::Map<Eigen::RowVectorXf>(out_at + (kv * rep + r) * D, D) = acc.row(r) / total(r);
    }
  });
  return out;
}

}  // namespace kvlab::harness
