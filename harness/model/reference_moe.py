#!/usr/bin/python3
"""Independent reference for kvlab's decoder on sparse mixture-of-experts checkpoints: transformers'
eager MixtralForCausalLM (src/transformers/models/mixtral/modeling_mixtral.py) and
Qwen3MoeForCausalLM (models/qwen3_moe/modeling_qwen3_moe.py), 4.5x releases, rewritten module by
module in PyTorch — MixtralSparseMoeBlock / Qwen3MoeSparseMoeBlock (router logits, softmax in
fp32, topk, the top-k renormalisation — always on Mixtral, under norm_topk_prob on Qwen3-MoE —,
the cast back to the hidden dtype, the one-hot expert loop with index_add_), MixtralBlockSparseTop2MLP
/ Qwen3MoeMLP, Qwen3MoeDecoderLayer's sparse-or-dense rule (mlp_only_layers, decoder_sparse_step),
MixtralAttention (Mistral's, with sliding_window on every layer) — reading config.json (with
MixtralConfig's / Qwen3MoeConfig's defaults) and model.safetensors with nothing but json and numpy.
The shared pieces (RMSNorm, Qwen3's q/k-norm attention, eager attention, RoPE frequencies, the
safetensors reader) are reference_qwen3.py's and reference_llama.py's. No kvlab code is on its path.

  reference_moe.py MODEL_DIR IDS OUT.f32 [KV.f32 [PREFILL]]

The arguments and outputs are reference_qwen3.py's: OUT gets the logits [S, V] as raw f32; KV each
layer's pre-RoPE keys [S, H_kv, D] then values [S, H_kv, D]; PREFILL = N runs the first N tokens
as one forward and the others one at a time from a cache of rotated keys (DynamicCache)."""
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_qwen3  # noqa: E402
from reference_llama import inv_freq  # noqa: E402
from reference_qwen3 import (ACT2FN, Qwen3Attention, Qwen3MLP, Qwen3RMSNorm,  # noqa: E402
                             apply_rotary_pos_emb, eager_attention_forward, linear)


class ExpertMLP(nn.Module):
    """MixtralBlockSparseTop2MLP (w1 gate, w3 up, w2 down) and Qwen3MoeMLP (gate_proj, up_proj,
    down_proj): act(gate(x)) * up(x) -> down, no bias."""

    def __init__(self, w, p, names, act):
        super().__init__()
        self.gate, self.up, self.down = (w[p + n + ".weight"] for n in names)
        self.act_fn = act

    def forward(self, hidden_states):
        return linear(self.act_fn(linear(hidden_states, self.gate)) * linear(hidden_states, self.up), self.down)


class SparseMoeBlock(nn.Module):
    """MixtralSparseMoeBlock (norm_topk_prob always true) and Qwen3MoeSparseMoeBlock."""

    def __init__(self, w, p, names, num_experts, top_k, norm_topk_prob, act):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.gate = w[p + "gate.weight"]
        self.experts = [ExpertMLP(w, f"{p}experts.{e}.", names, act) for e in range(num_experts)]

    def forward(self, hidden_states):
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        hidden_states = hidden_states.view(-1, hidden_dim)
        router_logits = linear(hidden_states, self.gate)
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
        if self.norm_topk_prob:
            routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(hidden_states.dtype)  # cast back to the input dtype
        final_hidden_states = torch.zeros((batch_size * sequence_length, hidden_dim), dtype=hidden_states.dtype)
        expert_mask = F.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
        expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for expert_idx in expert_hit:
            expert_layer = self.experts[int(expert_idx)]
            idx, top_x = torch.where(expert_mask[expert_idx].squeeze(0))
            current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)
            current_hidden_states = expert_layer(current_state) * routing_weights[top_x, idx, None]
            final_hidden_states.index_add_(0, top_x, current_hidden_states.to(hidden_states.dtype))
        return final_hidden_states.reshape(batch_size, sequence_length, hidden_dim), router_logits


class MixtralAttention(nn.Module):
    """MixtralAttention: Mistral's — no bias anywhere, no q/k norm; the window is in the mask."""

    def __init__(self, config, w, p, head_dim):
        super().__init__()
        self.head_dim = head_dim
        self.num_key_value_groups = config["num_attention_heads"] // config["num_key_value_heads"]
        self.scaling = self.head_dim ** -0.5
        self.w = {n: w[p + n + ".weight"] for n in ("q_proj", "k_proj", "v_proj", "o_proj")}

    def forward(self, hidden_states, position_embeddings, attention_mask, cache, taps):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = linear(hidden_states, self.w["q_proj"]).view(hidden_shape).transpose(1, 2)
        key_states = linear(hidden_states, self.w["k_proj"]).view(hidden_shape).transpose(1, 2)
        value_states = linear(hidden_states, self.w["v_proj"]).view(hidden_shape).transpose(1, 2)
        taps.append((key_states[0].transpose(0, 1), value_states[0].transpose(0, 1)))  # [S, H_kv, D], pre-RoPE
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:  # DynamicCache.update
            if cache:
                key_states = torch.cat([cache[0], key_states], dim=-2)
                value_states = torch.cat([cache[1], value_states], dim=-2)
            cache[:] = [key_states, value_states]
        attn_output = eager_attention_forward(query_states, key_states, value_states, attention_mask, self.scaling,
                                              self.num_key_value_groups)
        return linear(attn_output.reshape(*input_shape, -1).contiguous(), self.w["o_proj"])


class DecoderLayer(nn.Module):
    """MixtralDecoderLayer / Qwen3MoeDecoderLayer: pre-norm attention, pre-norm (sparse) MLP."""

    def __init__(self, config, w, l, head_dim, act, mixtral):
        super().__init__()
        p = f"model.layers.{l}."
        eps = config["rms_norm_eps"]
        if mixtral:
            self.self_attn = MixtralAttention(config, w, p + "self_attn.", head_dim)
            self.mlp = SparseMoeBlock(w, p + "block_sparse_moe.", ("w1", "w3", "w2"), config["num_local_experts"],
                                      config["num_experts_per_tok"], True, act)
        else:
            self.self_attn = Qwen3Attention(config, w, p + "self_attn.", head_dim)
            if l not in config["mlp_only_layers"] and (
                    config["num_experts"] > 0 and (l + 1) % config["decoder_sparse_step"] == 0):
                self.mlp = SparseMoeBlock(w, p + "mlp.", ("gate_proj", "up_proj", "down_proj"), config["num_experts"],
                                          config["num_experts_per_tok"], config["norm_topk_prob"], act)
            else:
                self.mlp = Qwen3MLP(w, p + "mlp.", act)  # Qwen3MoeMLP of intermediate_size
        self.input_layernorm = Qwen3RMSNorm(w[p + "input_layernorm.weight"], eps)
        self.post_attention_layernorm = Qwen3RMSNorm(w[p + "post_attention_layernorm.weight"], eps)

    def forward(self, hidden_states, attention_mask, position_embeddings, cache, taps):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask, cache, taps)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        if isinstance(hidden_states, tuple):  # the sparse block also returns its router logits
            hidden_states, _ = hidden_states
        return residual + hidden_states


def with_defaults(config):
    """MixtralConfig's / Qwen3MoeConfig's defaults for the keys the forward reads."""
    if config["model_type"] == "mixtral":
        defaults = {"num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 1e6, "num_local_experts": 8,
                    "num_experts_per_tok": 2, "sliding_window": None, "tie_word_embeddings": False}
        if "num_local_experts" not in config and "num_experts" in config:  # v5's attribute_map
            config["num_local_experts"] = config["num_experts"]
    elif config["model_type"] == "qwen3_moe":
        if config.get("use_sliding_window", False):
            raise SystemExit("reference_moe.py: use_sliding_window is not modelled")
        defaults = {"num_key_value_heads": 4, "rms_norm_eps": 1e-6, "num_experts": 128, "num_experts_per_tok": 8,
                    "moe_intermediate_size": 768, "norm_topk_prob": False, "decoder_sparse_step": 1,
                    "mlp_only_layers": [], "attention_bias": False, "tie_word_embeddings": False}
    else:
        raise SystemExit(f"reference_moe.py: model_type {config['model_type']} is not mixtral or qwen3_moe")
    for key, value in defaults.items():
        if config.get(key) is None:
            config[key] = value
    return config


class MoeForCausalLM(nn.Module):
    def __init__(self, config, w):
        super().__init__()
        config = with_defaults(config)
        self.mixtral = config["model_type"] == "mixtral"
        # Both: head_dim = config.head_dim or hidden_size // num_attention_heads.
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        self.window = config.get("sliding_window") if self.mixtral else None
        act = ACT2FN[config.get("hidden_act", "silu")]
        self.embed_tokens = w["model.embed_tokens.weight"]
        self.layers = [DecoderLayer(config, w, l, head_dim, act, self.mixtral)
                       for l in range(config["num_hidden_layers"])]
        self.norm = Qwen3RMSNorm(w["model.norm.weight"], config["rms_norm_eps"])
        self.lm_head = w["model.embed_tokens.weight"] if config["tie_word_embeddings"] else w["lm_head.weight"]
        self.inv_freq = inv_freq(config, head_dim)

    def rotary_emb(self, position_ids):  # the RotaryEmbedding forward, fp32, attention_scaling 1
        freqs = (self.inv_freq[None, :, None].float() @ position_ids[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, input_ids, caches, past, taps):
        return reference_qwen3.decoder_forward(self, input_ids, caches, past, taps, self.window)


if __name__ == "__main__":
    reference_qwen3.main(MoeForCausalLM)
