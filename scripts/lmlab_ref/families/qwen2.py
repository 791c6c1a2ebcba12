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

# Scales of the random parameters (see build_tiny_qwen2). EMBED_ROW_NORM: logits = norm(x) . embed[v]
# with |norm(x)| ~ sqrt(64) and embed[v] a random direction of length 3, so their std is about 3.
EMBED_ROW_NORM = 3.0
NORM_STD = 0.1
QKV_BIAS_STD = 0.5
# A random model with tied embeddings and no position embedding easily falls into repeating one
# token: the attention output (an average over the context plus the v bias) is nearly the same at
# every step, the token's own embedding in the residual favours itself, and rows with a large norm
# become "hubs" that win from everywhere. Shrinking o_proj, enlarging down_proj (the logits become
# a random function of the current token through the FFN) and giving every embedding row the same
# length makes greedy decoding wander: 16 of 16 seeds gave no 1-3 token cycle in 64 tokens and
# 15 of 16 no repeated token at all in 128 (o_proj 0.3, down_proj 3, N(0,1) rows: 4 of 16 stuck).
O_PROJ_SCALE = 0.2
DOWN_PROJ_SCALE = 5.0


def build_tiny_qwen2(gen: torch.Generator) -> Qwen2ForCausalLM:
    """The tiny Qwen2 (TINY_QWEN2) with every parameter drawn from `gen`, in eval mode.

    No parameter is a trivial 1 or 0: RMSNorm weights 1 + 0.1 N, q/k/v biases 0.5 N (Qwen2's only
    biases; large, so a missing bias is visible), Linear weights N(0, 1/in) (o_proj times
    O_PROJ_SCALE, down_proj times DOWN_PROJ_SCALE: see there), the embedding (tied
    to lm_head, as in Qwen2.5-0.5B) rows N(0, 1) rescaled to length EMBED_ROW_NORM = 3, so logits
    have std ~3.
    Parameters are drawn in named_parameters() order (lm_head.weight is embed_tokens.weight and
    listed once), so the same generator state gives the same model."""
    cfg = Qwen2Config(**TINY_QWEN2, attn_implementation="eager")
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name == "model.embed_tokens.weight":  # random directions, all of length EMBED_ROW_NORM
                p.copy_(n * (EMBED_ROW_NORM / n.norm(dim=1, keepdim=True)))
            elif name.endswith("norm.weight"):  # input_layernorm, post_attention_layernorm, model.norm
                p.copy_(1.0 + NORM_STD * n)
            elif name.endswith(".bias"):  # self_attn.{q,k,v}_proj.bias
                p.copy_(QKV_BIAS_STD * n)
            elif name.endswith(".weight") and p.dim() == 2:  # nn.Linear [out, in]
                scale = (O_PROJ_SCALE if name.endswith("o_proj.weight") else
                         DOWN_PROJ_SCALE if name.endswith("down_proj.weight") else 1.0)
                p.copy_(n * (scale * p.shape[1] ** -0.5))
            else:
                raise ValueError(f"unexpected parameter {name}")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    hf_decoder.check_eager(model)
    return model.eval()


def build(key, ctx):
    """The tiny Qwen2 from a fixed seed, saved with save_pretrained, with Qwen's real tokenizer files
    beside it when ../shared has them; its float64 truth made (and cross-checked) once per export."""
    if key != TINY_QWEN2_DIR:
        raise SystemExit(f"lmlab_ref: family {NAME} has no model '{key}' (known: {TINY_QWEN2_DIR})")

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
