"""The qwen2 family: transformers' own Qwen2ForCausalLM (hf_decoder: hooks on its modules, q and k
after its own RoPE) with a tiny random configuration and Qwen's real vocabulary size; its float64
truth is llama_ref.py on the same weights (transformers keeps RMSNorm, softmax and the RoPE tables
in float32 even in a float64 copy), cross-checked against it in float32 on every export.
"""
import os
import shutil

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lmlab_ref import bpe, common, hf_decoder

NAME = "qwen2"
TINY_QWEN2_DIR = "models/tiny-qwen2"

# The tiny Qwen2: the real Qwen2.5 embedding size (151936 rows; the tokenizer has 151665 ids, the
# rest is padding), a small body with grouped-query attention (8 query heads, 2 kv heads).
TINY_QWEN2 = dict(vocab_size=151936, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                  hidden_act="silu", bos_token_id=151643, eos_token_id=151645)
QWEN2_ENDOFTEXT = 151643

def build_tiny_qwen2(gen: torch.Generator) -> Qwen2ForCausalLM:
    """The tiny Qwen2 (TINY_QWEN2) with every parameter drawn from `gen` (hf_decoder.randomize: the
    embedding, tied to lm_head as in Qwen2.5-0.5B, rows of length 3 so logits have std ~3; q/k/v
    biases clearly non-zero), in eval mode."""
    return hf_decoder.randomize(Qwen2ForCausalLM(Qwen2Config(**TINY_QWEN2, attn_implementation="eager")), gen)


# Tiny Qwen2s for long context, each a config transformers 4.46.3 runs, of 512 ids (their prompts are
# random ids, no tokenizer), a context of 32 positions stretched by the scaling, or a sliding window
# of 8 below a context of 64: their prompts of 40 tokens (model stages) and 8 + 48 greedy tokens run
# far past the original context or the window.
SMALL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32, rope_theta=10000.0, rms_norm_eps=1e-6,
             tie_word_embeddings=True, use_sliding_window=False, hidden_act="silu", bos_token_id=1, eos_token_id=2)
VARIANTS = {
    "models/tiny-qwen2-linear": dict(rope_scaling={"type": "linear", "factor": 2.0}),  # (the old key name)
    "models/tiny-qwen2-dynamic": dict(rope_scaling={"rope_type": "dynamic", "factor": 4.0}),
    # Qwen2.5's YaRN recipe: original_max_position_embeddings equal to max_position_embeddings
    "models/tiny-qwen2-yarn": dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "beta_fast": 16.0, "beta_slow": 2.0,
                                                 "original_max_position_embeddings": 32}),
    "models/tiny-qwen2-llama3": dict(rope_theta=500000.0, max_position_embeddings=128,
                                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    # use_sliding_window: layer 0 sees everything, layer 1 (from max_window_layers = 1 on) a window of 8
    "models/tiny-qwen2-swa": dict(max_position_embeddings=64, use_sliding_window=True, sliding_window=8,
                                  max_window_layers=1),
}


def build(key, ctx):
    """The tiny Qwen2 from a fixed seed, saved with save_pretrained, with Qwen's real tokenizer files
    beside it when ../shared has them; its float64 truth made (and cross-checked) once per export.
    The long-context variants (VARIANTS) likewise, without a tokenizer."""
    if key in VARIANTS:
        config = Qwen2Config(**{**SMALL, **VARIANTS[key]}, attn_implementation="eager")
        return hf_decoder.tiny_reference(NAME, Qwen2ForCausalLM, config, key, ctx, SMALL["vocab_size"], n_forward=40,
                                         n_new=48)
    if key != TINY_QWEN2_DIR:
        raise SystemExit(f"lmlab_ref: family {NAME} has no model '{key}' (known: {TINY_QWEN2_DIR}, {', '.join(VARIANTS)})")

    def tiny():
        model = build_tiny_qwen2(common.generator("model.tiny-qwen2"))
        ref = hf_decoder.DecoderRef(NAME, model)
        checked = ref.make_truth(common.default_prompt(bpe.QWEN_VOCAB, 16, "model.tiny-qwen2"),
                                 ctx.table.intermediates(NAME))
        print(f"export_golden: {key}: {checked}")
        path = ctx.out_path(key)
        hf_decoder.save_hf_dir(model, path)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            src = ctx.shared_path(os.path.join(os.path.dirname(common.QWEN_TOKENIZER), name))
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(path, name))  # generated data under golden/, never in git
        # 8 forward tokens (ids of the real tokenizer, not the padding rows): logits of a 151936-token
        # vocabulary at every position cost 1.2 MB per token in float32 + float64
        ref.set_prompts("tiny-qwen2", bpe.QWEN_VOCAB, n_forward=8)
        return ref
    return ctx.once(key, tiny)


def load(path, fmt):
    """A user's Hugging Face Qwen2 directory for `lmlab verify`: transformers' Qwen2ForCausalLM (its
    truth, made by make_truth: llama_ref on the same weights)."""
    if fmt != "hf":
        raise SystemExit(f"lmlab_ref: {path}: family {NAME} reads Hugging Face directories, not {fmt}")
    ref = hf_decoder.DecoderRef(NAME, common.load_pretrained(Qwen2ForCausalLM, path))
    ref.what = "transformers Qwen2ForCausalLM"
    return ref
