"""The mixtral family: transformers' own MixtralForCausalLM, from a tiny config with a fixed seed,
and the same weights with two of layer 1's router rows made equal (tiny-mixtral-tied: routing
near-ties on purpose; hf_moe.py: the references both MoE families share)."""
from transformers import MixtralConfig, MixtralForCausalLM

from lmlab_ref import hf_moe

NAME = "mixtral"

# 8 experts of width 32 on dim 64, top-2 (always renormalised), 2 layers, 4 query heads on 2 kv
# heads. A vocabulary of 384 keeps the files around 1 MB.
TINY_MIXTRAL = dict(vocab_size=384, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
                    max_position_embeddings=64, rope_theta=1e6, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    sliding_window=None, hidden_act="silu", bos_token_id=1, eos_token_id=2)

SPEC = hf_moe.Spec(NAME, MixtralConfig, MixtralForCausalLM, TINY_MIXTRAL,
                   keys=("models/tiny-mixtral", "models/tiny-mixtral-tied"), block="block_sparse_moe",
                   expert_names=(("w1", "w1"), ("w2", "w2"), ("w3", "w3")),
                   width="intermediate_size", n_experts="num_local_experts")


def build(key, ctx):
    return hf_moe.build(SPEC, key, ctx)


def load(path, fmt):
    return hf_moe.load(SPEC, path, fmt)
