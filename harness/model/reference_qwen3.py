#!/usr/bin/python3
"""Independent reference for kvlab's decoder on Qwen3 checkpoints: transformers' eager
Qwen3ForCausalLM (src/transformers/models/qwen3/modeling_qwen3.py) rewritten module by module —
Qwen3RMSNorm, Qwen3MLP, Qwen3Attention (q_norm/k_norm over head_dim after the reshape, before
RoPE), eager_attention_forward (repeat_kv, additive causal mask, softmax in fp32),
Qwen3DecoderLayer, Qwen3Model — in PyTorch, reading config.json and model.safetensors with
nothing but json and numpy (the loader and the RoPE frequency rules are reference_llama.py's).
No kvlab code is on its path. Runs on the torch of Debian's /usr/bin/python3 (1.13).

  reference_qwen3.py MODEL_DIR IDS OUT.f32 [KV.f32 [PREFILL]]

IDS = "1,2,3". OUT gets the logits [S, V] as raw f32. KV, when given, gets each layer's keys as
the attention computed them before RoPE (k_norm(k_proj(x)) — what kvlab's dump and cache hold)
and its values: for l in layers, keys [S, H_kv, D] then values [S, H_kv, D], raw f32. PREFILL = N
(0 < N ≤ S) runs the first N tokens as one forward and then the others one at a time from a
cache of rotated keys, as transformers' DynamicCache does; the logits and KV rows are those of
every token in order, so they must equal the single forward's."""
import json
import os
import sys

import numpy as np
import torch
from torch import nn

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_llama import inv_freq, load_safetensors, rotate_half  # noqa: E402


class Qwen3RMSNorm(nn.Module):
    def __init__(self, weight, eps):
        super().__init__()
        self.weight = weight
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def linear(x, w, b=None):
    return nn.functional.linear(x, w, b)


class Qwen3MLP(nn.Module):
    def __init__(self, w, p, act):
        super().__init__()
        self.gate, self.up, self.down = w[p + "gate_proj.weight"], w[p + "up_proj.weight"], w[p + "down_proj.weight"]
        self.act_fn = act

    def forward(self, x):
        return linear(self.act_fn(linear(x, self.gate)) * linear(x, self.up), self.down)


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(query, key, value, attention_mask, scaling, n_rep):
    key_states = repeat_kv(key, n_rep)
    value_states = repeat_kv(value, n_rep)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    attn_weights = attn_weights + attention_mask[:, :, :, : key_states.shape[-2]]
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_output = torch.matmul(attn_weights, value_states)
    return attn_output.transpose(1, 2).contiguous()


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


class Qwen3Attention(nn.Module):
    def __init__(self, config, w, p, head_dim):
        super().__init__()
        self.head_dim = head_dim
        self.num_key_value_groups = config["num_attention_heads"] // config["num_key_value_heads"]
        self.scaling = self.head_dim ** -0.5
        bias = config.get("attention_bias", False)
        self.w = {n: (w[p + n + ".weight"], w[p + n + ".bias"] if bias else None)
                  for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        self.q_norm = Qwen3RMSNorm(w[p + "q_norm.weight"], config["rms_norm_eps"])
        self.k_norm = Qwen3RMSNorm(w[p + "k_norm.weight"], config["rms_norm_eps"])

    def forward(self, hidden_states, position_embeddings, attention_mask, cache, taps):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_norm(linear(hidden_states, *self.w["q_proj"]).view(hidden_shape)).transpose(1, 2)
        key_states = self.k_norm(linear(hidden_states, *self.w["k_proj"]).view(hidden_shape)).transpose(1, 2)
        value_states = linear(hidden_states, *self.w["v_proj"]).view(hidden_shape).transpose(1, 2)
        taps.append((key_states[0].transpose(0, 1), value_states[0].transpose(0, 1)))  # [S, H_kv, D], pre-RoPE
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:  # DynamicCache.update: append along the sequence axis
            if cache:
                key_states = torch.cat([cache[0], key_states], dim=-2)
                value_states = torch.cat([cache[1], value_states], dim=-2)
            cache[:] = [key_states, value_states]
        attn_output = eager_attention_forward(query_states, key_states, value_states, attention_mask, self.scaling,
                                              self.num_key_value_groups)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return linear(attn_output, *self.w["o_proj"])


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, config, w, l, head_dim, act):
        super().__init__()
        p = f"model.layers.{l}."
        eps = config["rms_norm_eps"]
        self.self_attn = Qwen3Attention(config, w, p + "self_attn.", head_dim)
        self.mlp = Qwen3MLP(w, p + "mlp.", act)
        self.input_layernorm = Qwen3RMSNorm(w[p + "input_layernorm.weight"], eps)
        self.post_attention_layernorm = Qwen3RMSNorm(w[p + "post_attention_layernorm.weight"], eps)

    def forward(self, hidden_states, attention_mask, position_embeddings, cache, taps):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask, cache, taps)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


ACT2FN = {"silu": nn.functional.silu, "swish": nn.functional.silu, "relu": nn.functional.relu,
          "gelu": nn.functional.gelu, "gelu_pytorch_tanh": lambda x: nn.functional.gelu(x, approximate="tanh"),
          "gelu_new": lambda x: nn.functional.gelu(x, approximate="tanh")}


class Qwen3ForCausalLM(nn.Module):
    def __init__(self, config, w):
        super().__init__()
        assert config["model_type"] == "qwen3", config["model_type"]
        if config.get("use_sliding_window", False):
            raise SystemExit("reference_qwen3.py: use_sliding_window is not modelled")
        config.setdefault("num_key_value_heads", 32)  # Qwen3Config's defaults
        config.setdefault("rms_norm_eps", 1e-6)
        head_dim = config.get("head_dim", 128)
        self.embed_tokens = w["model.embed_tokens.weight"]
        act = ACT2FN[config.get("hidden_act", "silu")]
        self.layers = [Qwen3DecoderLayer(config, w, l, head_dim, act) for l in range(config["num_hidden_layers"])]
        self.norm = Qwen3RMSNorm(w["model.norm.weight"], config["rms_norm_eps"])
        # Qwen3ForCausalLM ties lm_head to embed_tokens when tie_word_embeddings (Qwen3Config default false).
        self.lm_head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings", False) else w["lm_head.weight"]
        self.inv_freq = inv_freq(config, head_dim)

    def rotary_emb(self, position_ids):  # Qwen3RotaryEmbedding.forward, fp32 (attention_scaling 1)
        freqs = (self.inv_freq[None, :, None].float() @ position_ids[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, input_ids, caches, past, taps):
        return decoder_forward(self, input_ids, caches, past, taps)


def decoder_forward(model, input_ids, caches, past, taps, window=None, layer_windows=None, embed_scale=None,
                    local_rotary_emb=None, final_softcap=None):
    """The *ForCausalLM forward of every family here: embed, the layers under the causal mask
    (create_causal_mask; with `window`, create_sliding_window_causal_mask: key j is visible from
    query i when i − window < j ≤ i), final norm, lm_head; logits [S, V]. Gemma (reference_gemma.py)
    adds: a window per layer (`layer_windows[l]`, None for a full-attention layer, as its
    create_masks_for_generate gives each layer type its mask), the embeddings times `embed_scale`
    cast to their dtype, the sliding layers' cos/sin from `local_rotary_emb` (Gemma-3's
    rotary_emb_local) and the logits soft-capped: cap·tanh(logits / cap)."""
    S = input_ids.shape[1]
    position_ids = torch.arange(past, past + S)[None]
    i, j = position_ids[0][:, None], torch.arange(past + S)[None, :]

    def mask(w):
        hidden = j > i
        if w is not None:
            hidden |= j <= i - w
        return torch.zeros(S, past + S).masked_fill(hidden, float("-inf"))[None, None]

    windows = layer_windows or [window] * len(model.layers)
    hidden_states = model.embed_tokens[input_ids]
    if embed_scale is not None:
        hidden_states = hidden_states * torch.tensor(embed_scale, dtype=hidden_states.dtype)
    position_embeddings = model.rotary_emb(position_ids)
    local_embeddings = local_rotary_emb(position_ids) if local_rotary_emb else position_embeddings
    for layer, cache, tap, w in zip(model.layers, caches, taps, windows):
        embeddings = local_embeddings if w is not None else position_embeddings
        hidden_states = layer(hidden_states, mask(w), embeddings, cache, tap)
    logits = linear(model.norm(hidden_states), model.lm_head)[0]
    if final_softcap is not None:
        logits = torch.tanh(logits / final_softcap) * final_softcap
    return logits


def main(model_class=None):
    """The command line above, for this family or another one's model class (reference_moe.py)."""
    model_dir, ids_text, out_path = sys.argv[1:4]
    kv_path = sys.argv[4] if len(sys.argv) > 4 else None
    config = json.load(open(f"{model_dir}/config.json"))
    model = (model_class or Qwen3ForCausalLM)(config, load_safetensors(f"{model_dir}/model.safetensors"))
    ids = [int(t) for t in ids_text.split(",")]
    prefill = int(sys.argv[5]) if len(sys.argv) > 5 else len(ids)
    assert 0 < prefill <= len(ids)
    L = len(model.layers)
    taps = [[] for _ in range(L)]
    with torch.no_grad():
        if prefill == len(ids):
            logits = model(torch.tensor([ids]), [None] * L, 0, taps)
        else:
            caches = [[] for _ in range(L)]
            steps = [model(torch.tensor([ids[:prefill]]), caches, 0, taps)]
            for t in range(prefill, len(ids)):
                steps.append(model(torch.tensor([ids[t:t + 1]]), caches, t, taps))
            logits = torch.cat(steps, 0)
    logits.float().numpy().astype(np.float32).tofile(out_path)
    if kv_path:
        parts = []
        for tap in taps:
            parts.append(torch.cat([k for k, _ in tap], 0))
            parts.append(torch.cat([v for _, v in tap], 0))
        np.concatenate([p.float().contiguous().numpy().ravel() for p in parts]).astype(np.float32).tofile(kv_path)


if __name__ == "__main__":
    main()
