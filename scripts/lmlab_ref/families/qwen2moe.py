"""The qwen2moe family: transformers' own Qwen2MoeForCausalLM, from a tiny config with a fixed seed
(hf_moe.py: the references both MoE families share)."""
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

from lmlab_ref import hf_moe

NAME = "qwen2moe"

# 8 experts of width 32 on dim 64, top-2, 2 layers, 4 query heads on 2 kv heads, a shared expert of
# width 64, no renormalisation of the top-k weights (its default). A vocabulary of 384 keeps the
# files around 1 MB.
TINY_QWEN2MOE = dict(vocab_size=384, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                     shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
                     decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=64, rope_theta=10000.0,
                     rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False, hidden_act="silu",
                     bos_token_id=1, eos_token_id=2)

SPEC = hf_moe.Spec(NAME, Qwen2MoeConfig, Qwen2MoeForCausalLM, TINY_QWEN2MOE, keys=("models/tiny-qwen2moe",),
                   block="mlp", expert_names=(("w1", "gate_proj"), ("w2", "down_proj"), ("w3", "up_proj")),
                   width="moe_intermediate_size", n_experts="num_experts",
                   shared_width="shared_expert_intermediate_size")


def build(key, ctx):
    return hf_moe.build(SPEC, key, ctx)


def load(path, fmt):
    return hf_moe.load(SPEC, path, fmt)
