#!/usr/bin/python3
"""Independent reference for kvlab's decoder on Phi-3 checkpoints: transformers' eager
Phi3ForCausalLM (src/transformers/models/phi3/modeling_phi3.py, generated from modular_phi3.py)
rewritten module by module — Phi3RMSNorm, Phi3MLP (one gate_up_proj, `gate, up = chunk(2)`,
`up * act(gate)`), Phi3Attention (one qkv_proj sliced q | k | v by columns), Phi3RotaryEmbedding
(the default rule over dim = int(head_dim * partial_rotary_factor), attention_scaling 1; or
LongRoPE: modeling_rope_utils.py's _compute_longrope_parameters and dynamic_rope_update, which per
forward picks the long_factor table when max(position_ids) + 1 > original_max_position_embeddings,
else the short_factor one, and multiplies cos and sin by attention_factor),
apply_rotary_pos_emb with partial rotary (rotate x[..., :dim], pass x[..., dim:] through),
eager_attention_forward (repeat_kv, additive mask, softmax in fp32), Phi3DecoderLayer (dropouts
are the identity at inference), Phi3Model (create_causal_mask, or create_sliding_window_causal_mask
when config.sliding_window is set) — in PyTorch, reading config.json and model.safetensors with
nothing but json and numpy (reference_llama.py's loader). No kvlab code is on its path. Runs on the
torch of Debian's /usr/bin/python3 (1.13). Under LongRoPE a cached decode keeps the prefix's keys
rotated as they were when cached, as a DynamicCache does (transformers' generate() instead drops
the cache once when the length first crosses original_max: Phi3ForCausalLM.prepare_inputs_for_generation).

  reference_phi3.py MODEL_DIR IDS OUT.f32 [KV.f32 [PREFILL]]

IDS = "1,2,3". OUT gets the logits [S, V] as raw f32. KV, when given, gets each layer's keys before
RoPE (the k columns of qkv_proj(x): what kvlab's dump and cache hold) and its values: for l in
layers, keys [S, H_kv, D] then values [S, H_kv, D], raw f32. PREFILL = N (0 < N ≤ S) runs the
first N tokens as one forward and then the others one at a time from a cache of rotated keys, as
transformers' DynamicCache does; the logits and KV rows are those of every token in order."""
import math
import os
import sys

import torch
from torch import nn

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_qwen3  # noqa: E402
from reference_llama import rotate_half  # noqa: E402
# Phi3RMSNorm, repeat_kv, eager_attention_forward and ACT2FN are Qwen3's, line for line (transformers
# copies them between the two modeling files); every Phi-3 projection has bias=False.
from reference_qwen3 import ACT2FN, eager_attention_forward, linear  # noqa: E402
from reference_qwen3 import Qwen3RMSNorm as RMSNorm  # noqa: E402


class Phi3MLP(nn.Module):
    def __init__(self, w, p, act):
        super().__init__()
        self.gate_up_proj, self.down_proj = w[p + "gate_up_proj.weight"], w[p + "down_proj.weight"]
        self.activation_fn = act

    def forward(self, hidden_states):
        up_states = linear(hidden_states, self.gate_up_proj)
        gate, up_states = up_states.chunk(2, dim=-1)
        up_states = up_states * self.activation_fn(gate)
        return linear(up_states, self.down_proj)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    rotary_dim = cos.shape[-1]
    q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]
    k_rot, k_pass = k[..., :rotary_dim], k[..., rotary_dim:]
    q_embed = torch.cat([(q_rot * cos) + (rotate_half(q_rot) * sin), q_pass], dim=-1)
    k_embed = torch.cat([(k_rot * cos) + (rotate_half(k_rot) * sin), k_pass], dim=-1)
    return q_embed, k_embed


class Phi3Attention(nn.Module):
    def __init__(self, config, w, p, head_dim):
        super().__init__()
        self.config = config
        self.head_dim = head_dim
        self.num_key_value_heads = config["num_key_value_heads"]
        self.num_key_value_groups = config["num_attention_heads"] // self.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.qkv_proj, self.o_proj = w[p + "qkv_proj.weight"], w[p + "o_proj.weight"]

    def forward(self, hidden_states, position_embeddings, attention_mask, cache, taps):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        qkv = linear(hidden_states, self.qkv_proj)
        query_pos = self.config["num_attention_heads"] * self.head_dim
        query_states = qkv[..., :query_pos]
        key_states = qkv[..., query_pos: query_pos + self.num_key_value_heads * self.head_dim]
        value_states = qkv[..., query_pos + self.num_key_value_heads * self.head_dim:]
        query_states = query_states.view(hidden_shape).transpose(1, 2)
        key_states = key_states.view(hidden_shape).transpose(1, 2)
        value_states = value_states.view(hidden_shape).transpose(1, 2)
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
        return linear(attn_output, self.o_proj)


class Phi3DecoderLayer(nn.Module):
    def __init__(self, config, w, l, head_dim, act):
        super().__init__()
        p = f"model.layers.{l}."
        eps = config["rms_norm_eps"]
        self.self_attn = Phi3Attention(config, w, p + "self_attn.", head_dim)
        self.mlp = Phi3MLP(w, p + "mlp.", act)
        self.input_layernorm = RMSNorm(w[p + "input_layernorm.weight"], eps)
        self.post_attention_layernorm = RMSNorm(w[p + "post_attention_layernorm.weight"], eps)

    def forward(self, hidden_states, attention_mask, position_embeddings, cache, taps):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask, cache, taps)
        hidden_states = residual + hidden_states  # resid_attn_dropout: identity at inference
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states  # resid_mlp_dropout: identity at inference


class Phi3ForCausalLM(nn.Module):
    def __init__(self, config, w):
        super().__init__()
        assert config["model_type"] == "phi3", config["model_type"]
        config.setdefault("rms_norm_eps", 1e-5)  # Phi3Config's defaults
        if config.get("num_key_value_heads") is None:
            config["num_key_value_heads"] = config["num_attention_heads"]
        scaling = dict(config.get("rope_parameters") or {})
        scaling.update(config.get("rope_scaling") or {})
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind in ("su", "yarn"):  # Phi3Config: both mean longrope
            kind = "longrope"
        if kind not in ("default", "longrope"):
            raise SystemExit(f"reference_phi3.py: rope type {kind} is not a phi3 rope type")
        head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
        self.embed_tokens = w["model.embed_tokens.weight"]
        act = ACT2FN[config.get("hidden_act", "silu")]
        self.layers = [Phi3DecoderLayer(config, w, l, head_dim, act) for l in range(config["num_hidden_layers"])]
        self.norm = RMSNorm(w["model.norm.weight"], config["rms_norm_eps"])
        self.lm_head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings", False) else w["lm_head.weight"]
        self.sliding_window = config.get("sliding_window")
        # Phi3RotaryEmbedding.compute_default_rope_parameters
        base = scaling.get("rope_theta", config.get("rope_theta", 10000.0))
        partial_rotary_factor = scaling.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
        dim = int(head_dim * partial_rotary_factor)
        self.inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.attention_scaling = 1.0
        self.original_max = None
        if kind == "longrope":  # _compute_longrope_parameters (transformers v5)
            self.original_max = scaling.get("original_max_position_embeddings",
                                            config.get("original_max_position_embeddings", 4096))
            factor = scaling.get("factor")
            if factor is None:
                factor = config.get("max_position_embeddings", 4096) / self.original_max
            attention_factor = scaling.get("attention_factor")
            if attention_factor is None:
                attention_factor = (1.0 if factor <= 1.0 else
                                    math.sqrt(1 + math.log(factor) / math.log(self.original_max)))
            self.attention_scaling = attention_factor
            inv_freq_shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
            powers = base**inv_freq_shape
            self.short_inv_freq = 1.0 / (torch.tensor(scaling["short_factor"], dtype=torch.float32) * powers)
            self.long_inv_freq = 1.0 / (torch.tensor(scaling["long_factor"], dtype=torch.float32) * powers)
            self.inv_freq = self.short_inv_freq  # the table at init (seq_len None)

    def rotary_emb(self, position_ids):  # Phi3RotaryEmbedding.forward under @dynamic_rope_update, fp32
        if self.original_max is not None:  # longrope_frequency_update
            seq_len = torch.max(position_ids) + 1
            self.inv_freq = self.long_inv_freq if seq_len > self.original_max else self.short_inv_freq
        freqs = (self.inv_freq[None, :, None].float() @ position_ids[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    def forward(self, input_ids, caches, past, taps):
        return reference_qwen3.decoder_forward(self, input_ids, caches, past, taps, self.sliding_window)


if __name__ == "__main__":
    reference_qwen3.main(Phi3ForCausalLM)
