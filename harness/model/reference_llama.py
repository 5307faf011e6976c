#!/usr/bin/python3
"""Independent reference for kvlab's decoder: HF LlamaForCausalLM / Qwen2ForCausalLM /
MistralForCausalLM eager numerics (docs/models.md §1.3), written the way transformers
writes them (rotate_half, repeat_kv by expand+reshape, additive causal mask, softmax in fp32),
in PyTorch, reading config.json and model.safetensors with nothing but json and numpy.

  reference_llama.py MODEL_DIR IDS OUT.f32 [KV.f32]     IDS = "1,2,3"; OUT gets logits [S, V] as raw f32

KV, when given, gets each layer's keys before RoPE (k_proj(x) + b_k) and values: for l in
layers, keys [S, H_kv, D] then values [S, H_kv, D], raw f32.
Supports the configs kvlab's tiny models use: default / llama3 RoPE, q/k/v bias (qwen2),
tie_word_embeddings, sliding_window (mistral). Qwen3 (q_norm/k_norm) is reference_qwen3.py."""
import json
import math
import struct
import sys

import numpy as np
import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "F16": np.float16}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        raw = data[begin:end]
        if meta["dtype"] == "BF16":  # bf16 = the high half of an f32
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=dtypes[meta["dtype"]]).astype(np.float32)
        out[name] = torch.from_numpy(arr.copy()).reshape(meta["shape"])
    return out


def inv_freq(config, head_dim):
    scaling = dict(config.get("rope_parameters") or {})
    scaling.update(config.get("rope_scaling") or {})
    base = scaling.get("rope_theta", config.get("rope_theta", 10000.0))
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "llama3":  # transformers' _compute_llama3_parameters
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    elif kind == "linear":
        inv = inv / scaling["factor"]
    return inv


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def main():
    model_dir, ids_text, out_path = sys.argv[1:4]
    kv_path = sys.argv[4] if len(sys.argv) > 4 else None
    config = json.load(open(f"{model_dir}/config.json"))
    if config["model_type"] not in ("llama", "qwen2", "mistral"):
        raise SystemExit(f"reference_llama.py: model_type {config['model_type']} (qwen3: reference_qwen3.py)")
    w = load_safetensors(f"{model_dir}/model.safetensors")
    ids = torch.tensor([int(t) for t in ids_text.split(",")])
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or hidden // heads
    eps = config["rms_norm_eps"]
    qkv_bias = config["model_type"] == "qwen2" or config.get("attention_bias", False)
    window = config.get("sliding_window") if config["model_type"] == "mistral" else None
    S = ids.shape[0]

    pos = torch.arange(S)
    freqs = pos[:, None].float() * inv_freq(config, head_dim)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None], emb.sin()[None]  # [1, S, D]
    i, j = torch.arange(S)[:, None], torch.arange(S)[None, :]
    allowed = j <= i
    if window:
        allowed &= j > i - window
    mask = torch.zeros(S, S).masked_fill(~allowed, float("-inf"))

    h = w["model.embed_tokens.weight"][ids]
    kv = []
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        lin = lambda name, bias: torch.nn.functional.linear(
            x, w[p + name + ".weight"], w[p + name + ".bias"] if bias else None)
        q = lin("self_attn.q_proj", qkv_bias).view(S, heads, head_dim).transpose(0, 1)
        k = lin("self_attn.k_proj", qkv_bias).view(S, kv_heads, head_dim).transpose(0, 1)
        v = lin("self_attn.v_proj", qkv_bias).view(S, kv_heads, head_dim).transpose(0, 1)
        kv += [k.transpose(0, 1), v.transpose(0, 1)]  # [S, H_kv, D] before RoPE
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = heads // kv_heads  # repeat_kv: [Hkv, S, D] -> [Hkv, rep, S, D] -> [H, S, D]
        k = k[:, None].expand(kv_heads, rep, S, head_dim).reshape(heads, S, head_dim)
        v = v[:, None].expand(kv_heads, rep, S, head_dim).reshape(heads, S, head_dim)
        scores = q @ k.transpose(1, 2) / math.sqrt(head_dim) + mask
        attn = torch.softmax(scores.float(), dim=-1) @ v
        h = h + torch.nn.functional.linear(attn.transpose(0, 1).reshape(S, heads * head_dim),
                                           w[p + "self_attn.o_proj.weight"])
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        act = torch.nn.functional.silu(torch.nn.functional.linear(x, w[p + "mlp.gate_proj.weight"]))
        act = act * torch.nn.functional.linear(x, w[p + "mlp.up_proj.weight"])
        h = h + torch.nn.functional.linear(act, w[p + "mlp.down_proj.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    logits = torch.nn.functional.linear(rms_norm(h, w["model.norm.weight"], eps), head)
    logits.detach().numpy().astype(np.float32).tofile(out_path)
    if kv_path:
        np.concatenate([t.contiguous().numpy().ravel() for t in kv]).astype(np.float32).tofile(kv_path)


if __name__ == "__main__":
    main()
