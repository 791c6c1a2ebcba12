"""The llama family: our LLaMA (llama_ref.py, written from the paper) for the tiny LLaMA and
llama2.c checkpoints (stories260K), cross-checked on every export against transformers' own
LlamaForCausalLM on the same weights (the Meta -> Hugging Face conversion below); a user's Hugging
Face LLaMA directory (`lmlab verify`) runs through transformers' class itself (hf_decoder).

The tiny LLaMA (build_tiny_llama) is the seed spec's: 2 layers, 4 heads, dim 256, ffn 1024, vocab
16384 (SentencePiece BPE trained on the King James Bible, tokenizers.py), context 512, written to
models/tiny-llama.h5 (write_model_file) and as a Hugging Face directory (write_llama_hf).
"""
import copy
import math
import os

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lmlab_ref import common, fixtures, hf_decoder, llama_ref, q8, tokenizers

NAME = "llama"

TINY_LLAMA = dict(dim=256, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=1024, vocab_size=16384, max_seq_len=512,
                  rope_theta=10000.0, rope_style="adjacent", norm_eps=1e-5, tied_embeddings=False)
# The stage rows' model keys: the tiny LLaMA's file and its Hugging Face twin; stories260K from
# ../shared and its Hugging Face twin (each twin is written with the model it comes from).
TINY_LLAMA_FILE = "models/tiny-llama.h5"
TINY_LLAMA_HF = "models/tiny-llama-hf"
STORIES = "shared:" + common.STORIES_MODEL
STORIES_HF = "models/stories260k-hf"


class LlamaRef(common.SameModelTruth):
    """llama_ref token by token; the float64 truth is the same model in float64."""

    family = NAME

    def __init__(self, model, what="llama_ref.py (the paper's formulas)"):
        super().__init__(model, what)

    def forward_intermediates(self, tokens, names):
        return llama_ref.forward(self.model, tokens, names)

    def truth_intermediates(self, tokens, names):
        return llama_ref.forward(self._truth(), tokens, names)

    def layer_case(self, layer, pos, x, cache_k, cache_v, names):
        return llama_ref.layer_case(self.model, layer, pos, x, cache_k, cache_v, names)

    def truth_layer_case(self, layer, pos, x, cache_k, cache_v, names):
        return llama_ref.layer_case(self._truth(), layer, pos, x, cache_k, cache_v, names)

    def part_case(self, part, layer, pos, x, cache_k, cache_v, truth=False):
        """The attention of block `layer` alone ({q, k, v, out}) or its feed-forward ({out})."""
        model = self._truth() if truth else self.model
        if part == "ffn":
            with torch.no_grad():
                return {"out": model.layers[layer].feed_forward(x.to(next(model.parameters()).dtype))}
        values = llama_ref.layer_case(model, layer, pos, x, cache_k, cache_v, ["q", "k", "v", "attn_out"], "attention")
        return {"q": values["q"], "k": values["k"], "v": values["v"], "out": values["attn_out"]}

    def block_points(self):
        return [(0, 0, "layer 0 at position 0"), (1, 5, "layer 1 at position 5 with 5 cached positions")]

    def int8(self, group, rounding=q8.c_round):
        """The model as runq.c runs it (q8.to_q8: every Linear and the classifier int8, groups of
        group; rounding: C's round() as lmlab's quantize_model, torch.round as llama2.c's export.py
        writes a version-2 file), with this model's prompts. No truth: a float64 run would round
        activations to different integers."""
        ref = LlamaRef(q8.to_q8(self.model, group, rounding), "q8.py (runq.c's arithmetic) on llama_ref")
        ref.forward_tokens = self.forward_tokens
        return ref

    def greedy(self, prompt, n_new):
        return llama_ref.greedy(self.model, prompt, n_new)

    def truth_logits(self, prompt, tokens):
        """The float64 model fed prompt + tokens[:-1]: comparable with greedy()'s logits even after a
        near-tie, since it sees the same token sequence."""
        seq = torch.cat([prompt, torch.tensor(tokens[:-1], dtype=prompt.dtype)])
        values, _ = llama_ref.run_tokens(self._truth(), seq, torch.float64)
        return values["logits"][len(prompt) - 1:]

    def dims(self):
        c = self.model.cfg
        return c.dim, c.kv_dim, c.max_seq_len


# Llama 3 and long context: transformers' own LlamaForCausalLM (hf_decoder.tiny_reference), random
# weights. tiny-llama3 is Llama 3.2-shaped: its real 128256-id vocabulary (the Llama 3.1 tokenizer
# from ../shared is copied beside it), grouped-query attention, tied embeddings, theta 500000 and
# Llama 3.2's rope_scaling (llama3, factor 32, original context 8192, in a context of 131072); the
# others are 512-id LLaMAs of 32 positions stretched by each scaling kind (their prompts of 40 and
# 8 + 48 tokens run past position 32).
TINY_LLAMA3 = "models/tiny-llama3"
LLAMA3_VOCAB = 128000  # ordinary token ids of the Llama 3 tokenizer (128000..128255: special tokens)
LLAMA3_BOS = 128000
TINY_LLAMA3_CONFIG = dict(vocab_size=128256, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=131072,
                          rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
                          rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                          bos_token_id=LLAMA3_BOS, eos_token_id=[128001, 128008, 128009])
SMALL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32, rope_theta=10000.0, rms_norm_eps=1e-5,
             tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2)
VARIANTS = {
    "models/tiny-llama-linear": dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "models/tiny-llama-dynamic": dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
    "models/tiny-llama-yarn": dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}),
}


def _hf_tiny(key, ctx):
    if key == TINY_LLAMA3:
        config = LlamaConfig(**TINY_LLAMA3_CONFIG, attn_implementation="eager")
        return hf_decoder.tiny_reference(NAME, LlamaForCausalLM, config, key, ctx, LLAMA3_VOCAB, n_forward=12, n_new=48,
                                         bos=[LLAMA3_BOS], tokenizer_files=[common.LLAMA3_TOKENIZER,
                                                                            common.LLAMA3_TOKENIZER_CONFIG])
    config = LlamaConfig(**{**SMALL, **VARIANTS[key]}, attn_implementation="eager")
    return hf_decoder.tiny_reference(NAME, LlamaForCausalLM, config, key, ctx, SMALL["vocab_size"], n_forward=40,
                                     n_new=48)


def build(key, ctx):
    """The reference of a stage row's model (key), built and written once per export."""
    if key == TINY_LLAMA3 or key in VARIANTS:
        return _hf_tiny(key, ctx)
    if key in (TINY_LLAMA_FILE, TINY_LLAMA_HF):
        return ctx.once(TINY_LLAMA_FILE, lambda: _tiny(ctx))
    if key in (STORIES, STORIES_HF):
        return ctx.once(STORIES, lambda: _stories(ctx))
    raise SystemExit(f"lmlab_ref: family {NAME} has no model '{key}' "
                     f"(known: {TINY_LLAMA_FILE}, {TINY_LLAMA_HF}, {STORIES}, {STORIES_HF}, {TINY_LLAMA3}, "
                     f"{', '.join(VARIANTS)})")


def load(path, fmt):
    """A user's checkpoint for `lmlab verify`: a llama2.c float32 file through llama_ref (llama2.c has
    no PyTorch class of its own), a Hugging Face directory through transformers' LlamaForCausalLM
    (its truth: llama_ref on the same weights)."""
    if fmt == "llama2c":
        return LlamaRef(llama_ref.load_llama2c(path).eval(), "llama_ref.py (the paper's formulas; llama2.c layout)")
    if fmt == "hf":
        ref = hf_decoder.DecoderRef(NAME, common.load_pretrained(LlamaForCausalLM, path))
        ref.what = "transformers LlamaForCausalLM"
        return ref
    raise SystemExit(f"lmlab_ref: {path}: family {NAME} reads llama2.c files and Hugging Face directories, not {fmt}")


def _tiny(ctx):
    text = ctx.once("kjv", tokenizers.kjv_text)
    proto = tokenizers.train_default_vocab(text, TINY_LLAMA["vocab_size"])
    model = build_tiny_llama()
    write_model_file(ctx, TINY_LLAMA_FILE, model, tokenizers.spm_vocab(proto))
    ref = LlamaRef(model)
    ref.set_prompts("tiny-llama", model.cfg.vocab_size, generated_by="")
    ref.bos = [1]  # LLaMA prompts start with BOS
    write_llama_hf(model, ctx.out_path(TINY_LLAMA_HF), ref.forward_tokens, ctx.table.intermediates(NAME))
    ref.spm_proto, ref.kjv_text = proto, text  # its vocabulary: the tokenizer.default and quant.cost fixtures
    return ref


def _stories(ctx):
    model = llama_ref.load_llama2c(ctx.shared_file(common.STORIES_MODEL)).eval()
    ref = LlamaRef(model)
    ref.forward_tokens = stories_prompt(ctx, 16)
    write_llama_hf(model, ctx.out_path(STORIES_HF), ref.forward_tokens, ctx.table.intermediates(NAME))
    ref.greedy_case = (torch.tensor([1]), 256, "256 greedy tokens from BOS")
    ref.prompt_vocab, ref.bos = model.cfg.vocab_size, [1]
    return ref


def stories_prompt(ctx, n):
    """BOS + the start of a TinyStories-like sentence, encoded by SentencePiece with tok512."""
    proto = tokenizers.spm_from_llama2c(*tokenizers.read_llama2c_vocab(ctx.shared_file(common.STORIES_TOKENIZER), 512))
    ids = [1] + tokenizers.spm_encode(proto, ["Once upon a time, there was a little girl named Lily. She loved to play"])[0]
    return torch.tensor(ids[:n])


def build_tiny_llama():
    """Random init that keeps activations O(1) through both layers (every Linear ~ N(0, 1/in), so a
    unit-variance input gives unit-variance outputs; norm weights near 1) and logits spread wide
    enough (std ~3) that greedy decoding is not a sequence of near-ties."""
    cfg = llama_ref.Config(**TINY_LLAMA)
    model = llama_ref.Llama(cfg)
    g = common.generator("model.tiny-llama")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + common.randn(g, *p.shape, scale=0.1))
            elif name == "tok_embeddings.weight":
                p.copy_(common.randn(g, *p.shape))
            elif name == "output.weight":
                p.copy_(common.randn(g, *p.shape, scale=3.0 / math.sqrt(cfg.dim)))
            else:  # nn.Linear [out, in]
                p.copy_(common.randn(g, *p.shape, scale=p.shape[1] ** -0.5))
    return model.eval()


def write_model_file(ctx, rel, model, vocab=None):
    """Config as root attributes; every tensor under its PyTorch name, [out, in] as nn.Linear keeps it;
    the vocabulary (llama2.c convention: pieces with ' ' for U+2581, scores) under tokenizer/."""
    with fixtures.open_fixture(ctx.out_dir, rel, "model", ctx.sha) as f:
        for k, v in model.cfg.attrs().items():
            fixtures.write_attr(f, k, v)
        for name, t in model.state_dict().items():
            if name == "output.weight" and model.cfg.tied_embeddings:
                continue  # tied: the classifier is tok_embeddings.weight
            fixtures.write_dataset(f, name, t, np.float32)
        if vocab is not None:
            pieces, scores = vocab
            tg = fixtures.create_group(f, "tokenizer")
            # the pieces as one byte buffer plus offsets, not variable-length strings: a damaged
            # vlen string can crash libhdf5 itself inside the read, where no check of ours runs
            raw = [p.encode("utf-8") for p in pieces]
            offsets = np.cumsum([0] + [len(b) for b in raw], dtype=np.int64)
            tg.create_dataset("piece_bytes", data=np.frombuffer(b"".join(raw), dtype=np.uint8), track_times=False)
            tg.create_dataset("piece_offsets", data=offsets, track_times=False)
            tg.create_dataset("scores", data=np.asarray(scores, dtype=np.float32), track_times=False)


# ---- Meta -> Hugging Face LLaMA -----------------------------------------------------------------
# Meta's LLaMA (and llama2.c, llama_ref.py) rotates ADJACENT pairs (x[2i], x[2i+1]); transformers
# rotates halves (x[i], x[i + head_dim/2]). Its conversion script permutes the rows of wq and wk
# inside each head so that rotate-half on the permuted rows computes the same attention scores.

def write_llama_hf(model, path, tokens, names):
    """Our LLaMA as a Hugging Face LlamaForCausalLM directory (wq/wk rows permuted as the Meta-to-HF
    conversion does). transformers' own LlamaForCausalLM then runs it, and the export stops if its
    logits differ from llama_ref.py's (cross_check_llama): our hand-written reference checked
    against one we did not write."""
    hf = llama_to_hf(model)
    diff = cross_check_llama(model, hf, tokens, names)
    print(f"export_golden: {os.path.relpath(path, os.path.dirname(os.path.dirname(path)))}: transformers' "
          f"LlamaForCausalLM agrees with llama_ref.py, max |logits diff| {diff:.3g}")
    hf_decoder.save_hf_dir(hf, path)


def permute_meta_to_hf(w, n_heads, dim1, dim2):
    """transformers' convert_llama_weights_to_hf.py `permute` ("permute for sliced rotary"):
    inside each head, output row 2i + c (Meta's adjacent pair i, component c) moves to row
    c * head_dim/2 + i (HF's rotate-half pair i)."""
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def permute_columns_meta_to_hf(x, n_heads):
    """The same permutation on activations [..., n_heads * head_dim] (what HF's q/k after RoPE
    equal when computed from the converted weights)."""
    hd = x.shape[-1] // n_heads
    return x.reshape(*x.shape[:-1], n_heads, hd // 2, 2).transpose(-1, -2).reshape(x.shape)


def meta_to_hf_state_dict(state_dict, cfg):
    """llama_ref / Meta state dict -> LlamaForCausalLM state dict (wq, wk permuted per head)."""
    out = {}
    for name, t in state_dict.items():
        if name == "tok_embeddings.weight":
            out["model.embed_tokens.weight"] = t
        elif name == "norm.weight":
            out["model.norm.weight"] = t
        elif name == "output.weight":
            out["lm_head.weight"] = t
        elif name.startswith("layers."):
            _, i, rest = name.split(".", 2)
            if rest == "attention.wq.weight":
                t = permute_meta_to_hf(t, cfg.n_heads, cfg.n_heads * cfg.head_dim, cfg.dim)
            elif rest == "attention.wk.weight":
                t = permute_meta_to_hf(t, cfg.n_kv_heads, cfg.kv_dim, cfg.dim)
            out[f"model.layers.{i}.{hf_decoder.LAYER_NAMES[rest]}"] = t
        else:
            raise ValueError(f"unexpected llama_ref parameter {name}")
    return out


def llama_to_hf(model: llama_ref.Llama) -> LlamaForCausalLM:
    """A LlamaForCausalLM (eager attention, the llama_ref model's dtype, eval mode) with llama_ref's
    weights, converted as transformers' convert_llama_weights_to_hf.py does (Meta's adjacent-pair
    RoPE layout -> HF's rotate-half layout by permuting the rows of wq and wk in each head)."""
    c = model.cfg
    if c.rope_style != "adjacent":
        raise ValueError(f"llama_to_hf: rope_style {c.rope_style!r}; only Meta's 'adjacent' layout is converted")
    cfg = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_dim,
                      num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
                      head_dim=c.head_dim, hidden_act="silu", max_position_embeddings=c.max_seq_len,
                      rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta, tie_word_embeddings=bool(c.tied_embeddings),
                      attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2,
                      attn_implementation="eager")
    hf = LlamaForCausalLM(cfg)
    sd = meta_to_hf_state_dict(model.state_dict(), c)
    dtype = next(model.parameters()).dtype
    hf = hf.to(dtype)
    hf.load_state_dict({k: v.detach().to(dtype) for k, v in sd.items()}, strict=True)
    if c.tied_embeddings:
        assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    hf_decoder.check_eager(hf)
    return hf.eval()


def compare_llama_intermediates(ref_values, hf_values, hf_cache_k, cfg):
    """key -> max |difference| between llama_ref's token-by-token intermediates and the HF model's
    (same keys). q and k are compared after applying the Meta -> HF permutation to llama_ref's
    columns ("q", "k"), and also as they are ("q_unpermuted", "k_unpermuted": these differ, since
    HF's heads are the permuted ones); "cache_k" is the HF cache vs llama_ref's k."""
    out = {}
    for key, hv in hf_values.items():
        role = key.split(".")[-1]
        rv = ref_values[key]
        if role in ("q", "k"):
            nh = cfg.n_heads if role == "q" else cfg.n_kv_heads
            out[key] = common.max_abs(permute_columns_meta_to_hf(rv, nh), hv)
            out[key + "_unpermuted"] = common.max_abs(rv, hv)
        else:
            out[key] = common.max_abs(rv, hv)
    for i in range(cfg.n_layers):
        out[f"layer{i}.cache_k"] = common.max_abs(permute_columns_meta_to_hf(ref_values[f"layer{i}.k"], cfg.n_kv_heads),
                                                  hf_cache_k[i])
    return out


def cross_check_llama(ref_model, hf_model, tokens, names, tol=1e-5, details=None):
    """Runs llama_ref.run_tokens (token by token, explicit KV cache) and the HF model's full
    forward on the same tokens, in the HF model's dtype; raises SystemExit naming the max logits
    difference if it exceeds tol * max(1, max |logits|) (1e-5 absolute for logits of magnitude
    <= 1; float32 rounding alone reaches ~1e-5 absolute on logits of magnitude ~13). Returns the
    max absolute difference. If details is a dict it receives compare_llama_intermediates'
    per-intermediate differences (names: the family's intermediates)."""
    dtype = next(hf_model.parameters()).dtype
    ref = ref_model if next(ref_model.parameters()).dtype == dtype else copy.deepcopy(ref_model).to(dtype)
    ref_values, _ = llama_ref.run_tokens(ref, tokens, dtype, names)
    hf_values, hf_k, _ = hf_decoder.forward_intermediates(hf_model, tokens, names)
    err = common.max_abs(ref_values["logits"], hf_values["logits"])
    scale = max(1.0, float(ref_values["logits"].abs().max()))
    if details is not None:
        details.update(compare_llama_intermediates(ref_values, hf_values, hf_k, ref.cfg))
    if not err <= tol * scale:
        raise SystemExit(f"cross_check_llama: llama_ref vs transformers' LlamaForCausalLM ({dtype}, "
                         f"{len(tokens)} tokens): max |logits difference| {err:.3e} > {tol:.0e} x "
                         f"max |logits| {scale:.3g}")
    return err
