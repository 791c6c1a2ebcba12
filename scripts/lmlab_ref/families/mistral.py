"""The mistral family: transformers' own MistralForCausalLM (hf_decoder: hooks on its modules, q and k
after its own RoPE; eager attention, whose mask hides every key more than sliding_window - 1
positions behind the query), with a tiny random configuration whose window (8) is smaller than its
prompts, so that the window matters; its float64 truth is llama_ref.py with the same window on the
same weights, cross-checked against it in float32 on every export.
"""
from transformers import MistralConfig, MistralForCausalLM

from lmlab_ref import common, hf_decoder

NAME = "mistral"
TINY_MISTRAL_DIR = "models/tiny-mistral"
# 3 layers: information from beyond the window still arrives, one window per layer
TINY_MISTRAL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=64, sliding_window=8, rope_theta=10000.0,
                    rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2)


def build(key, ctx):
    if key != TINY_MISTRAL_DIR:
        raise SystemExit(f"lmlab_ref: family {NAME} has no model '{key}' (known: {TINY_MISTRAL_DIR})")
    config = MistralConfig(**TINY_MISTRAL, attn_implementation="eager")
    return hf_decoder.tiny_reference(NAME, MistralForCausalLM, config, key, ctx, TINY_MISTRAL["vocab_size"], n_forward=24,
                                     n_new=48)


def load(path, fmt):
    """A user's Hugging Face Mistral directory for `lmlab verify`: transformers' MistralForCausalLM (its
    truth: llama_ref with the same window on the same weights)."""
    if fmt != "hf":
        raise SystemExit(f"lmlab_ref: {path}: family {NAME} reads Hugging Face directories, not {fmt}")
    ref = hf_decoder.DecoderRef(NAME, common.load_pretrained(MistralForCausalLM, path))
    ref.what = "transformers MistralForCausalLM"
    return ref
