"""The oracle of core/rope_test.cpp: RoPE inverse frequencies as transformers computes them,
in torch float32 on the CPU. The frequency rules are transformers' own (modeling_rope_utils.py:
_compute_default_rope_parameters, _compute_linear_scaling_rope_parameters,
_compute_llama3_parameters, _compute_longrope_parameters with dynamic_rope_update's choice of
table by sequence length), restated here on a plain config dict so that Debian's python3-torch
suffices (no transformers needed).

Usage: rope_test.py CASES_JSON   where CASES_JSON is a list of {"config": {...}, "head_dim": D}
(longrope cases add "seq_len": the largest position + 1 of the forward, which picks the table).
Prints torch's CPU capability ("DEFAULT", "AVX2", "AVX512", ...), then one line per case: the
inv_freq values as 8-digit hex f32 bit patterns. Honour ATEN_CPU_CAPABILITY to pick torch's path.
"""
import json
import math
import sys

import torch


def capability():
    if hasattr(torch.backends, "cpu") and hasattr(torch.backends.cpu, "get_cpu_capability"):
        return torch.backends.cpu.get_cpu_capability().upper()  # torch >= 2.0
    line = torch.__config__.show().split("CPU capability usage:")[1].split("\n")[0].strip()
    return "DEFAULT" if line == "NO AVX" else line


def inv_freq(config, dim, seq_len=None):
    scaling = dict(config.get("rope_parameters") or {})
    scaling.update(config.get("rope_scaling") or {})
    base = scaling.get("rope_theta", config.get("rope_theta", 10000.0))
    # _compute_default_rope_parameters
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if config.get("model_type") == "phi3" and kind in ("su", "yarn"):  # Phi3Config's renaming
        kind = "longrope"
    if kind == "longrope":
        # _compute_longrope_parameters: long_factor when seq_len > original_max_position_embeddings
        # (dynamic_rope_update passes original_max + 1 then), short_factor otherwise (and at init).
        original_max = scaling.get("original_max_position_embeddings",
                                   config.get("original_max_position_embeddings", 4096))
        if seq_len and seq_len > original_max:
            ext_factors = torch.tensor(scaling["long_factor"], dtype=torch.float32)
        else:
            ext_factors = torch.tensor(scaling["short_factor"], dtype=torch.float32)
        inv_freq_shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
        return 1.0 / (ext_factors * base**inv_freq_shape)
    if kind == "linear":  # _compute_linear_scaling_rope_parameters
        inv_freq /= scaling["factor"]
    elif kind == "llama3":  # _compute_llama3_parameters
        factor = scaling["factor"]
        low_freq_factor = scaling["low_freq_factor"]
        high_freq_factor = scaling["high_freq_factor"]
        old_context_len = scaling["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)
    elif kind != "default":
        raise SystemExit(f"rope_test.py: rope type {kind} is not covered")
    return inv_freq


def main():
    cases = json.loads(sys.argv[1])
    print(capability())
    for case in cases:
        values = inv_freq(case["config"], case["head_dim"], case.get("seq_len"))
        assert values.dtype == torch.float32
        bits = values.contiguous().view(torch.int32).tolist()
        print(" ".join("%08x" % (b & 0xFFFFFFFF) for b in bits))


if __name__ == "__main__":
    main()
