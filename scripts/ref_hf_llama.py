"""The Qwen2 and LLaMA references from Hugging Face transformers' own classes (Qwen2ForCausalLM,
LlamaForCausalLM, eager attention), their intermediates captured by forward hooks on transformers'
modules and by a wrapper around transformers' own apply_rotary_pos_emb (never re-implemented
here), plus the Meta -> Hugging Face LLaMA conversion (the q/k row permutation of transformers'
convert_llama_weights_to_hf.py) cross-checked against our llama_ref.py.

    /work/main/.venv/bin/python scripts/ref_hf_llama.py     # self-check + timings

Qwen2 / LLaMA in transformers 4.46.3, per decoder layer (pre-RMSNorm, SwiGLU):
    a = input_layernorm(x);  q, k, v = q_proj(a), k_proj(a), v_proj(a)   (Qwen2: with biases)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)        ROTATE-HALF pairs (x[i], x[i + head_dim/2])
    heads = softmax(q k^T / sqrt(head_dim), causal) v  (GQA: query head h reads kv head h // group)
    h = x + o_proj(heads)
    out = h + down_proj(silu(gate_proj(f)) * up_proj(f)),  f = post_attention_layernorm(h)
    logits = lm_head(norm(x_L))                          (Qwen2 tiny: lm_head tied to embed_tokens)
Meta's LLaMA (and llama2.c, llama_ref.py) rotates ADJACENT pairs (x[2i], x[2i+1]); the HF
conversion permutes the rows of wq and wk inside each head so that rotate-half on the permuted
rows computes the same attention scores.

Precision note (transformers 4.46.3): even in a float64 copy, RMSNorm normalises in float32
(`hidden_states.to(torch.float32)`), the attention softmax runs in float32 (`dtype=torch.float32`),
and the RoPE cos/sin are computed in float32; a float64 HF model is therefore float64 only up to
float32 rounding at those three places (see the self-check's "HF f64 vs llama_ref f64" line).
The Qwen2 fixtures' float64 truth therefore comes from llama_ref.py on the same weights
(qwen2_to_llama_ref, cross_check_qwen2, qwen2_forward64 / qwen2_layer_case64 / qwen2_logits64).

Nothing runs at import time except setting HF_HUB_OFFLINE (nothing is ever downloaded).
"""
import contextlib
import copy
import os
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config,  # noqa: E402
                          Qwen2ForCausalLM)
from transformers.cache_utils import Cache, DynamicCache  # noqa: E402

import llama_ref  # noqa: E402
import ref_common  # noqa: E402
from ref_common import teacher_forced_logits64, to_float64, top2_gaps  # noqa: E402,F401

# The tiny Qwen2: the real Qwen2.5 embedding size (151936 rows; the tokenizer has 151665 ids, the
# rest is padding), a small body with grouped-query attention (8 query heads, 2 kv heads).
TINY_QWEN2 = dict(vocab_size=151936, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                  hidden_act="silu", bos_token_id=151643, eos_token_id=151645)
QWEN2_TOKENIZER_VOCAB = 151665
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

# Intermediates of one decoder layer, in pipeline order; the C++ engine returns the same names.
BLOCK_ROLES = ["in", "attn_norm", "q", "k", "v", "heads", "attn_out", "h", "ffn_norm",
               "ffn_gate", "ffn_up", "ffn_act", "ffn_out", "out"]


def role_names(n_layer):
    """All roles of a full forward, in pipeline order (no separate embedding: it is layer0.in)."""
    return [f"layer{i}.{r}" for i in range(n_layer) for r in BLOCK_ROLES] + ["final_norm", "logits"]


def _dims(config):
    """(n_heads, n_kv_heads, head_dim) as transformers' attention computes them."""
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // nh
    return nh, nkv, hd


def _check_eager(model):
    attn = model.model.layers[0].self_attn
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    assert type(attn).__name__ in ("Qwen2Attention", "LlamaAttention"), type(attn).__name__


# ---- The model ----------------------------------------------------------------------------------

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
    _check_eager(model)
    return model.eval()


def config_attrs(model):
    """The config as the C++ side needs it."""
    c = model.config
    nh, nkv, hd = _dims(c)
    arch = "qwen2" if isinstance(model, Qwen2ForCausalLM) else "llama"
    return {"arch": arch, "vocab_size": c.vocab_size, "dim": c.hidden_size, "n_layers": c.num_hidden_layers,
            "n_heads": nh, "n_kv_heads": nkv, "head_dim": hd, "ffn_dim": c.intermediate_size,
            "max_seq_len": c.max_position_embeddings, "rope_theta": float(c.rope_theta),
            "rope_style": "rotate_half", "norm_eps": float(c.rms_norm_eps),
            "tied_embeddings": int(bool(c.tie_word_embeddings)),
            "qkv_bias": int(model.model.layers[0].self_attn.q_proj.bias is not None)}


# ---- Writing the weights ------------------------------------------------------------------------

def save_hf_dir(model, path, max_shard_size=None):
    """transformers' save_pretrained(path, safe_serialization=True): config.json,
    generation_config.json and model.safetensors (keys `model.`-prefixed; no lm_head.weight when
    tied). With max_shard_size (e.g. "20MB") the weights are split into
    model-0000i-of-0000n.safetensors + model.safetensors.index.json, like hub checkpoints.
    Returns the sorted paths of the files in path."""
    os.makedirs(path, exist_ok=True)
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, safe_serialization=True, **kw)
    return [os.path.join(path, f) for f in sorted(os.listdir(path))]


def safetensors_keys(paths):
    """{key: (dtype, shape)} over the .safetensors files among paths."""
    from safetensors import safe_open
    keys = {}
    for p in paths:
        if p.endswith(".safetensors"):
            with safe_open(p, framework="pt") as f:
                for k in f.keys():
                    t = f.get_slice(k)
                    keys[k] = (t.get_dtype(), tuple(t.get_shape()))
    return keys


# ---- Intermediates ------------------------------------------------------------------------------

def _rows(x):
    """[1, n_heads, T, head_dim] (transformers' attention / cache layout) -> [T, n_heads * head_dim]."""
    _, nh, T, hd = x.shape
    return x[0].transpose(0, 1).reshape(T, nh * hd)


def _heads_first(rows, n_heads, head_dim):
    """[T, n_heads * head_dim] -> [1, n_heads, T, head_dim]."""
    T = rows.shape[0]
    return rows.reshape(T, n_heads, head_dim).permute(1, 0, 2).unsqueeze(0).contiguous()


class Recorder:
    """Forward hooks (and pre-hooks) on transformers' own Qwen2 / LLaMA modules, and the q/k
    after RoPE from the rope wrapper (see rope_capture); each role's captures are appended to a
    list (one entry per forward call, batch dimension dropped)."""

    def __init__(self):
        self.values = {}
        self.handles = []
        self.current = None  # prefix of the layer whose attention is running (for the RoPE wrapper)

    def _put(self, key, t):
        self.values.setdefault(key, []).append(t.detach().clone())

    def out(self, module, key):
        def hook(m, inp, out):
            self._put(key, (out[0] if isinstance(out, tuple) else out)[0])
        self.handles.append(module.register_forward_hook(hook))

    def inp(self, module, key):
        self.handles.append(module.register_forward_pre_hook(lambda m, inp: self._put(key, inp[0][0])))

    def _enter(self, prefix):
        def hook(m, inp):
            self.current = prefix
        return hook

    def _leave(self, m, inp, out):
        self.current = None

    def rope(self, q_embed, k_embed):
        """Called by the RoPE wrapper with transformers' own outputs [1, heads, T, head_dim]."""
        if self.current is None:
            raise RuntimeError("apply_rotary_pos_emb called outside a hooked attention module")
        self._put(self.current + "q", _rows(q_embed))
        self._put(self.current + "k", _rows(k_embed))

    def layer(self, layer, prefix, pre_rope=False):
        """Every role of BLOCK_ROLES for one Qwen2DecoderLayer / LlamaDecoderLayer (q and k come
        from the RoPE wrapper while this layer's self_attn runs). pre_rope: also q_proj/k_proj
        outputs as prefix + "q_proj" / "k_proj" (before RoPE)."""
        attn, mlp = layer.self_attn, layer.mlp
        self.inp(layer, prefix + "in")  # the model calls decoder_layer(hidden_states, ...)
        self.out(layer.input_layernorm, prefix + "attn_norm")
        self.handles.append(attn.register_forward_pre_hook(self._enter(prefix)))
        self.handles.append(attn.register_forward_hook(self._leave))
        if pre_rope:
            self.out(attn.q_proj, prefix + "q_proj")
            self.out(attn.k_proj, prefix + "k_proj")
        self.out(attn.v_proj, prefix + "v")
        self.inp(attn.o_proj, prefix + "heads")
        self.out(attn.o_proj, prefix + "attn_out")
        self.inp(layer.post_attention_layernorm, prefix + "h")
        self.out(layer.post_attention_layernorm, prefix + "ffn_norm")
        self.out(mlp.gate_proj, prefix + "ffn_gate")
        self.out(mlp.up_proj, prefix + "ffn_up")
        self.inp(mlp.down_proj, prefix + "ffn_act")
        self.out(mlp.down_proj, prefix + "ffn_out")
        self.out(layer, prefix + "out")  # the layer returns (hidden_states, present_key_value)

    def one(self, key):
        v = self.values[key]
        assert len(v) == 1, f"{key}: captured {len(v)} times"
        return v[0]

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


@contextlib.contextmanager
def rope_capture(model, rec):
    """Temporarily replaces the module attribute apply_rotary_pos_emb of the model's modeling
    module (modeling_qwen2 / modeling_llama; the attention forward looks the name up there at
    call time) by a wrapper that calls the ORIGINAL function and hands its outputs to rec."""
    mod = sys.modules[type(model).__module__]
    attn_cls = type(model.model.layers[0].self_attn)
    assert attn_cls.forward.__globals__ is vars(mod), f"{attn_cls.__name__}.forward does not live in {mod.__name__}"
    original = mod.apply_rotary_pos_emb

    def wrapper(q, k, cos, sin, *args, **kwargs):
        q_embed, k_embed = original(q, k, cos, sin, *args, **kwargs)
        rec.rope(q_embed, k_embed)
        return q_embed, k_embed

    mod.apply_rotary_pos_emb = wrapper
    try:
        yield
    finally:
        mod.apply_rotary_pos_emb = original


def _cache_tensors(pkv):
    """Per-layer (key, value) [1, n_kv, T, head_dim] of a DynamicCache or a legacy tuple."""
    if isinstance(pkv, Cache):
        return list(zip(pkv.key_cache, pkv.value_cache))
    return [(k, v) for k, v in pkv]


def _forward(model, tokens, pre_rope=False):
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    layers = model.model.layers
    rec = Recorder()
    for i, layer in enumerate(layers):
        rec.layer(layer, f"layer{i}.", pre_rope)
    rec.out(model.model.norm, "final_norm")
    rec.out(model.lm_head, "logits")
    try:
        with torch.no_grad(), rope_capture(model, rec):
            # an explicit DynamicCache: with past_key_values=None, 4.46 converts its cache to the
            # legacy tuple on return
            out = model(input_ids=tokens[None], past_key_values=DynamicCache(), use_cache=True, return_dict=True)
    finally:
        rec.remove()
    names = role_names(len(layers))
    if pre_rope:
        names += [f"layer{i}.{r}" for i in range(len(layers)) for r in ("q_proj", "k_proj")]
    values = {k: rec.one(k) for k in names}
    assert torch.equal(values["logits"], out.logits[0])
    kv = _cache_tensors(out.past_key_values)
    assert len(kv) == len(layers)
    cache_k = torch.stack([_rows(k) for k, _ in kv])
    cache_v = torch.stack([_rows(v) for _, v in kv])
    return values, cache_k, cache_v, type(out.past_key_values).__name__


def forward_intermediates(model, tokens):
    """One full-sequence forward of a Qwen2ForCausalLM / LlamaForCausalLM (use_cache=True) on
    tokens [T] from position 0. Returns (dict role -> tensor [T, ...] in pipeline order,
    cache_k [L, T, kv_dim], cache_v [L, T, kv_dim]) in the model's dtype; q and k are AFTER RoPE
    ([T, n_heads * head_dim] / [T, kv_dim], heads contiguous), the cache is the model's own
    past_key_values (keys after RoPE), heads side by side."""
    values, cache_k, cache_v, _ = _forward(model, tokens)
    return values, cache_k, cache_v


def layer_case(model, layer, pos, x, cache_k, cache_v):
    """One decoder layer, model.model.layers[layer], on one token x [hidden] at position pos,
    after pos cached keys/values cache_k/cache_v [pos, kv_dim] (keys already rotated), through
    the layer's own forward as transformers 4.46 calls it: a DynamicCache holding the rows,
    position_ids [[pos]], cache_position [pos], position_embeddings = model.model.rotary_emb(x,
    position_ids), no attention mask (one query sees every cached row). Returns role -> 1-D
    tensor for attn_norm .. out, in the model's dtype."""
    m = model.model
    blk = m.layers[layer]
    nh, nkv, hd = _dims(model.config)
    dtype = next(model.parameters()).dtype
    assert pos < model.config.max_position_embeddings
    assert cache_k.shape == (pos, nkv * hd) == cache_v.shape, (cache_k.shape, cache_v.shape)
    x = torch.as_tensor(x).to(dtype).reshape(1, 1, -1)
    cache = DynamicCache()
    if pos > 0:
        cache.update(_heads_first(cache_k.to(dtype), nkv, hd), _heads_first(cache_v.to(dtype), nkv, hd), layer)
    position_ids = torch.tensor([[pos]], dtype=torch.long)
    cache_position = torch.tensor([pos], dtype=torch.long)
    rec = Recorder()
    rec.layer(blk, "")
    try:
        with torch.no_grad(), rope_capture(model, rec):
            pe = m.rotary_emb(x, position_ids)
            out = blk(x, attention_mask=None, position_ids=position_ids, past_key_value=cache,
                      output_attentions=False, use_cache=True, cache_position=cache_position,
                      position_embeddings=pe)
    finally:
        rec.remove()
    values = {r: rec.one(r)[0] for r in BLOCK_ROLES if r != "in"}
    assert torch.equal(values["out"], out[0][0, 0])
    assert out[1] is cache and cache.key_cache[layer].shape[2] == pos + 1
    assert torch.equal(_rows(cache.key_cache[layer])[pos], values["k"])
    assert torch.equal(_rows(cache.value_cache[layer])[pos], values["v"])
    return values


# ---- Generation ---------------------------------------------------------------------------------

def greedy(model, prompt, n_new):
    """transformers' generate(do_sample=False), exactly n_new tokens (ref_common.greedy)."""
    bos = model.config.bos_token_id if model.config.bos_token_id is not None else 0
    # return_legacy_cache=False: keep the DynamicCache (silences a 4.47 notice)
    return ref_common.greedy(model, prompt, n_new, bos, return_legacy_cache=False)


def short_cycle(tokens, max_period=3, min_tail=12):
    """The period (1..max_period) with which the last min_tail tokens repeat, or 0."""
    tail = tokens[-min_tail:]
    for p in range(1, max_period + 1):
        if all(tail[i] == tail[i - p] for i in range(p, len(tail))):
            return p
    return 0


# ---- Meta -> Hugging Face LLaMA -----------------------------------------------------------------

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


# llama_ref (Meta / llama2.c names) -> LlamaForCausalLM names
_LAYER_NAMES = {"attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
                "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
                "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w2.weight": "mlp.down_proj.weight",
                "feed_forward.w3.weight": "mlp.up_proj.weight", "attention_norm.weight": "input_layernorm.weight",
                "ffn_norm.weight": "post_attention_layernorm.weight"}


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
            out[f"model.layers.{i}.{_LAYER_NAMES[rest]}"] = t
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
    _check_eager(hf)
    return hf.eval()


def _max_abs(a, b):
    return float((a.double() - b.double()).abs().max())


def compare_llama_intermediates(ref_values, hf_values, hf_cache_k, cfg):
    """role -> max |difference| between llama_ref's token-by-token intermediates and the HF
    model's (same role names). q and k are compared after applying the Meta -> HF permutation to
    llama_ref's columns ("q", "k"), and also as they are ("q_unpermuted", "k_unpermuted": these
    differ, since HF's heads are the permuted ones); "cache_k" is the HF cache vs llama_ref's k."""
    out = {}
    for key, hv in hf_values.items():
        role = key.split(".")[-1]
        rv = ref_values[key]
        if role in ("q", "k"):
            nh = cfg.n_heads if role == "q" else cfg.n_kv_heads
            out[key] = _max_abs(permute_columns_meta_to_hf(rv, nh), hv)
            out[key + "_unpermuted"] = _max_abs(rv, hv)
        else:
            out[key] = _max_abs(rv, hv)
    for i in range(cfg.n_layers):
        out[f"layer{i}.cache_k"] = _max_abs(permute_columns_meta_to_hf(ref_values[f"layer{i}.k"], cfg.n_kv_heads),
                                            hf_cache_k[i])
    return out


def cross_check_llama(ref_model, hf_model, tokens, tol=1e-5, details=None):
    """Runs llama_ref.run_tokens (token by token, explicit KV cache) and the HF model's full
    forward on the same tokens, in the HF model's dtype; raises SystemExit naming the max logits
    difference if it exceeds tol * max(1, max |logits|) (1e-5 absolute for logits of magnitude
    <= 1; float32 rounding alone reaches ~1e-5 absolute on logits of magnitude ~13). Returns the
    max absolute difference. If details is a dict it receives compare_llama_intermediates'
    per-role differences."""
    dtype = next(hf_model.parameters()).dtype
    ref = ref_model if next(ref_model.parameters()).dtype == dtype else copy.deepcopy(ref_model).to(dtype)
    ref_values, _ = llama_ref.run_tokens(ref, tokens, dtype)
    hf_values, hf_k, _ = forward_intermediates(hf_model, tokens)
    err = _max_abs(ref_values["logits"], hf_values["logits"])
    scale = max(1.0, float(ref_values["logits"].abs().max()))
    if details is not None:
        details.update(compare_llama_intermediates(ref_values, hf_values, hf_k, ref.cfg))
    if not err <= tol * scale:
        raise SystemExit(f"cross_check_llama: llama_ref vs transformers' LlamaForCausalLM ({dtype}, "
                         f"{len(tokens)} tokens): max |logits difference| {err:.3e} > {tol:.0e} x "
                         f"max |logits| {scale:.3g}")
    return err


# ---- Qwen2 -> llama_ref: the float64 truth -------------------------------------------------------
# transformers' Qwen2 in float64 still normalises, takes the softmax and builds the RoPE tables in
# float32 (see the module docstring), so it is no float64 truth. llama_ref.py computes every step in
# the dtype of its model: the same weights in a llama_ref.Llama (qkv_bias, rope_style "rotate_half",
# HF's own q/k layout, so no permutation) converted to float64 are the Qwen2 fixtures' reference64,
# once cross_check_qwen2 has shown that in float32 it is the same model as Qwen2ForCausalLM.

def _hf_name(name):
    """llama_ref parameter name -> Qwen2ForCausalLM state-dict name (_LAYER_NAMES, plus biases)."""
    top = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    if name in top:
        return top[name]
    _, i, rest = name.split(".", 2)
    base, kind = rest.rsplit(".", 1)
    return f"model.layers.{i}.{_LAYER_NAMES[base + '.weight'][:-len('weight')]}{kind}"


def qwen2_to_llama_ref(hf_model) -> llama_ref.Llama:
    """A llama_ref.Llama (arch = the config's model_type, eval mode, the HF model's dtype) with a
    Qwen2ForCausalLM's (or LlamaForCausalLM's) weights copied as they are: q/k/v/o, gate/up/down, the norms, the q/k/v biases, the embedding
    (lm_head tied to it when the config ties). HF's q/k rows are already rotate-half pairs."""
    c = hf_model.config
    nh, nkv, hd = _dims(c)
    if hd * nh != c.hidden_size or c.hidden_act != "silu" or getattr(c, "rope_scaling", None) \
            or getattr(c, "use_sliding_window", False):
        raise ValueError("qwen2_to_llama_ref: only head_dim = hidden/heads, silu, no rope_scaling, no sliding window")
    bias = hf_model.model.layers[0].self_attn.q_proj.bias is not None
    cfg = llama_ref.Config(c.hidden_size, c.num_hidden_layers, nh, nkv, c.intermediate_size, c.vocab_size,
                           c.max_position_embeddings, rope_theta=float(c.rope_theta), rope_style="rotate_half",
                           norm_eps=float(c.rms_norm_eps), tied_embeddings=bool(c.tie_word_embeddings),
                           arch=c.model_type, qkv_bias=bias)
    with torch.random.fork_rng(devices=[]):  # the throwaway random init leaves the global RNG alone
        ref = llama_ref.Llama(cfg)
    hf_sd = hf_model.state_dict()
    names = {n: _hf_name(n) for n in ref.state_dict()}
    unused = set(hf_sd) - set(names.values())
    if unused:
        raise ValueError(f"qwen2_to_llama_ref: parameters with no llama_ref place: {sorted(unused)}")
    ref = ref.to(next(hf_model.parameters()).dtype)
    ref.load_state_dict({n: hf_sd[h] for n, h in names.items()}, strict=True)
    if cfg.tied_embeddings:
        assert ref.output.weight is ref.tok_embeddings.weight, "llama_ref output not tied"
    return ref.eval()


def _float64(ref_model):
    return ref_model if next(ref_model.parameters()).dtype == torch.float64 else copy.deepcopy(ref_model).double()


def cross_check_qwen2(hf_model, ref_model, tokens, tol=1e-5):
    """transformers' full forward (hf_model) vs llama_ref token by token (ref_model, run in the HF
    model's dtype) on tokens. Every role (role_names: same names, same rotate-half layout) must agree
    within tol * max(1, max |llama_ref's values of that role|) (for the logits, cross_check_llama's
    rule), else SystemExit naming the role. Returns (max |logits difference|, worst role, its
    difference / max(1, max |role|))."""
    dtype = next(hf_model.parameters()).dtype
    ref = ref_model if next(ref_model.parameters()).dtype == dtype else copy.deepcopy(ref_model).to(dtype)
    ref_values, _ = llama_ref.run_tokens(ref, tokens, dtype)
    hf_values, _, _ = forward_intermediates(hf_model, tokens)
    rel = {}
    for role, hv in hf_values.items():
        rv = ref_values[role]
        rel[role] = _max_abs(rv, hv) / max(1.0, float(rv.abs().max()))
    err = _max_abs(ref_values["logits"], hf_values["logits"])
    worst = max((r for r in rel if r != "logits"), key=rel.get)
    for role in ["logits", worst]:
        if not rel[role] <= tol:
            raise SystemExit(f"cross_check_qwen2: llama_ref vs transformers' Qwen2ForCausalLM ({dtype}, "
                             f"{len(tokens)} tokens): {role}: max |difference| / max(1, max |{role}|) "
                             f"{rel[role]:.3e} > {tol:.0e}")
    return err, worst, rel[worst]


def qwen2_forward64(ref_model, tokens):
    """llama_ref in float64 (token by token) on tokens: (role -> [T, ...] named and ordered as
    forward_intermediates' roles, cache_k [L, T, kv_dim], cache_v)."""
    import export_golden  # definitions only (see _selfcheck); its forward_outputs runs llama_ref
    values, cache = export_golden.forward_outputs(_float64(ref_model), tokens)
    roles = {r: values[r] for r in role_names(ref_model.cfg.n_layers)}
    return roles, cache["cache_k"], cache["cache_v"]


def qwen2_layer_case64(ref_model, layer, pos, x, cache_k, cache_v):
    """layer_case's roles (attn_norm .. out, 1-D) from llama_ref's block in float64."""
    import export_golden
    values = export_golden.layer_case(_float64(ref_model), layer, pos, x, cache_k, cache_v, "block")
    return {r: values[r] for r in BLOCK_ROLES[1:]}


def qwen2_logits64(ref_model, sequence, n_prompt):
    """teacher_forced_logits64 from llama_ref in float64: logits after sequence[:i+1] for
    i = n_prompt-1 .. len(sequence)-2, i.e. [n_new, V] aligned with greedy()'s logits."""
    sequence = torch.as_tensor(sequence, dtype=torch.long)
    values, _ = llama_ref.run_tokens(_float64(ref_model), sequence[:-1], torch.float64)
    return values["logits"][n_prompt - 1:]


# ---- Self-check ---------------------------------------------------------------------------------

def _selfcheck_model(model, tokens, label):
    """Forward / cache / KV-cached decoding / layer_case / RoPE-at-0 checks on one model, in f32 and f64."""
    for m in (model, to_float64(model)):
        dt = next(m.parameters()).dtype
        vals, ck, cv, cache_cls = _forward(m, tokens, pre_rope=True)
        nh, nkv, hd = _dims(m.config)
        T, L = len(tokens), m.config.num_hidden_layers
        roles = {k: v for k, v in vals.items() if not k.endswith(("q_proj", "k_proj"))}
        assert list(roles) == role_names(L) and ck.shape == cv.shape == (L, T, nkv * hd)
        assert all(v.dtype == dt for v in vals.values()) and ck.dtype == dt
        emb = m.model.embed_tokens.weight[torch.as_tensor(tokens)]
        assert torch.equal(vals["layer0.in"], emb)
        for i in range(L):
            p = f"layer{i}."
            assert vals[p + "q"].shape == (T, nh * hd) and vals[p + "k"].shape == (T, nkv * hd)
            assert torch.equal(vals[p + "k"], ck[i]) and torch.equal(vals[p + "v"], cv[i])
            # RoPE is the identity at position 0; elsewhere it is not
            assert torch.equal(vals[p + "q_proj"][0], vals[p + "q"][0]), f"{p}q: RoPE at position 0 is not identity"
            assert torch.equal(vals[p + "k_proj"][0], vals[p + "k"][0]), f"{p}k: RoPE at position 0 is not identity"
            assert _max_abs(vals[p + "q_proj"][1:], vals[p + "q"][1:]) > 1e-3
            assert torch.equal(vals[p + "ffn_act"], torch.nn.functional.silu(vals[p + "ffn_gate"]) * vals[p + "ffn_up"])
            if i + 1 < L:
                assert torch.equal(vals[p + "out"], vals[f"layer{i + 1}.in"])
        # the full forward equals token-by-token decoding through HF's own KV cache
        past, steps = DynamicCache(), []
        with torch.no_grad():
            for t in range(T):
                o = m(input_ids=torch.as_tensor(tokens)[t:t + 1][None], past_key_values=past, use_cache=True,
                      return_dict=True)
                past = o.past_key_values
                steps.append(o.logits[0, 0])
        err = _max_abs(torch.stack(steps), vals["logits"])
        scale = max(1.0, float(vals["logits"].abs().max()))
        assert err < 1e-5 * scale, f"{label} {dt}: full forward vs KV-cached decoding: {err} (max |logits| {scale})"
        worst = 0.0
        for layer in range(L):
            for t in (0, 1, 7, T - 1):
                one = layer_case(m, layer, t, vals[f"layer{layer}.in"][t], ck[layer, :t], cv[layer, :t])
                assert list(one) == BLOCK_ROLES[1:]
                for r, v in one.items():
                    worst = max(worst, _max_abs(v, vals[f"layer{layer}.{r}"][t]))
        assert worst < 1e-5, f"{label} {dt}: layer_case vs forward: {worst}"
        print(f"selfcheck {label} {dt}: cache {cache_cls}, KV-cached decoding vs full forward {err:.2e} "
              f"(max |logits| {scale:.3g}), "
              f"layer_case vs forward {worst:.2e}")


def _selfcheck(seed=20261123):
    """Checks this module against transformers itself and llama_ref; raises on any failure."""
    import tempfile

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = build_tiny_qwen2(torch.Generator().manual_seed(seed))
    for name, p in model.named_parameters():
        assert float(((p == 0) | (p == 1)).double().mean()) < 1e-5, f"{name} has trivial 0/1 entries"
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, QWEN2_TOKENIZER_VOCAB, (16,), generator=g)
    tokens[5] = QWEN2_ENDOFTEXT  # a special id inside the sequence is a token like any other
    _selfcheck_model(model, tokens, "qwen2")
    ref = qwen2_to_llama_ref(model)
    err, role, rel = cross_check_qwen2(model, ref, tokens)
    err64, role64, rel64 = cross_check_qwen2(to_float64(model), _float64(ref), tokens)
    print(f"selfcheck qwen2 vs llama_ref: f32 logits {err:.2e}, worst intermediate {role} {rel:.2e} (relative); "
          f"HF f64 vs llama_ref f64: logits {err64:.2e}, worst {role64} {rel64:.2e} (HF's float32 steps)")

    prompt = tokens[:8]
    new, logits32 = greedy(model, prompt, 64)
    logits64 = teacher_forced_logits64(model, torch.cat([prompt, torch.tensor(new)]), len(prompt))
    assert logits64.shape == logits32.shape and logits64.dtype == torch.float64
    assert new == [int(i) for i in torch.argmax(logits64, dim=-1)], "float64 disagrees with float32 greedy"
    gap = float(top2_gaps(logits32).min())
    assert gap > 1e-4, f"greedy has a near-tie: min top-1/top-2 gap {gap}"
    if gap < 1e-3:
        print(f"WARNING: qwen2 greedy min top-1/top-2 gap {gap:.2e} < 1e-3")
    assert not short_cycle(new), f"greedy is stuck in a cycle: {new}"
    print(f"selfcheck qwen2 greedy: 64 tokens, f32 vs f64 logits {_max_abs(logits32, logits64):.2e}, "
          f"min top-1/top-2 gap {gap:.3g}, logits std {float(logits32.std()):.3g}, {len(set(new))} distinct")

    with tempfile.TemporaryDirectory() as tmp:
        ref = forward_intermediates(model, tokens)[0]["logits"]
        for sub, shard in (("one", None), ("sharded", "20MB")):
            paths = save_hf_dir(model, os.path.join(tmp, sub), max_shard_size=shard)
            n_st = sum(p.endswith(".safetensors") for p in paths)
            assert (n_st == 1) if shard is None else (n_st > 1 and any(p.endswith(".index.json") for p in paths))
            keys = safetensors_keys(paths)
            assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
            assert "model.layers.0.self_attn.q_proj.bias" in keys and "model.layers.0.self_attn.o_proj.bias" not in keys
            m2 = Qwen2ForCausalLM.from_pretrained(os.path.join(tmp, sub), attn_implementation="eager").eval()
            for (n1, p1), (n2, p2) in zip(model.state_dict().items(), m2.state_dict().items()):
                assert n1 == n2 and torch.equal(p1, p2), f"{sub}: {n1}"
            with torch.no_grad():
                assert torch.equal(m2(input_ids=tokens[None]).logits[0], ref), sub
    print("selfcheck qwen2 save_pretrained (single + sharded) reloads bit-exactly")

    # Meta -> HF LLaMA: the exporter's tiny LLaMA and stories260K
    import export_golden  # side-effect free at import (definitions only)
    for label, ref_model, toks in _llama_models(export_golden):
        hf = llama_to_hf(ref_model)
        _selfcheck_model(hf, toks, label)
        details = {}
        err = cross_check_llama(ref_model, hf, toks, details=details)
        worst = lambda role: max(v for k, v in details.items() if k.endswith("." + role))  # noqa: E731
        err64 = cross_check_llama(ref_model, to_float64(hf), toks, tol=1e-5)
        print(f"selfcheck {label} cross-check: logits f32 {err:.2e} (f64 HF vs f64 llama_ref {err64:.2e}); "
              f"q permuted {worst('q'):.2e} / as-is {worst('q_unpermuted'):.2e}, k permuted {worst('k'):.2e} "
              f"/ as-is {worst('k_unpermuted'):.2e}, cache_k {worst('cache_k'):.2e}, "
              f"worst other role {max(v for k, v in details.items() if 'q' not in k.split('.')[-1] and 'k' not in k.split('.')[-1]):.2e}")
        with tempfile.TemporaryDirectory() as tmp:
            paths = save_hf_dir(hf, tmp)
            keys = safetensors_keys(paths)
            m2 = LlamaForCausalLM.from_pretrained(tmp, attn_implementation="eager").eval()
            with torch.no_grad():
                assert torch.equal(m2(input_ids=toks[None]).logits, hf(input_ids=toks[None]).logits)
            print(f"selfcheck {label} save_pretrained: {len(keys)} keys, lm_head.weight "
                  f"{'present' if 'lm_head.weight' in keys else 'absent (tied)'}")
    print("selfcheck: all passed")


STORIES = os.path.join(os.environ.get("LMLAB_SHARED", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared")),
    "models", "stories260K", "stories260K.bin")


def _llama_models(export_golden):
    """(label, llama_ref model, 16 tokens) for the tiny LLaMA and stories260K (when present)."""
    tiny = export_golden.build_tiny_llama()
    out = [("tiny-llama", tiny, export_golden.default_prompt(tiny.cfg.vocab_size, 16, "model.tiny-llama"))]
    if os.path.exists(STORIES):
        stories = llama_ref.load_llama2c(STORIES).eval()
        toks = torch.tensor([1, 403, 407, 261, 378] + list(range(300, 311)))  # "Once upon a time" + ids
        out.append(("stories260K", stories, toks))
    else:
        print(f"stories260K skipped: {STORIES} not found")
    return out


def main():
    import tempfile

    t_start = time.perf_counter()
    _selfcheck()
    print(f"selfcheck took {time.perf_counter() - t_start:.2f} s\n")

    import export_golden
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        model = ref_common.timed("build qwen2", lambda: build_tiny_qwen2(torch.Generator().manual_seed(1234)), timings)
        ref_common.timed("save qwen2", lambda: save_hf_dir(model, os.path.join(tmp, "tiny-qwen2")), timings)
        ref_common.timed("save qwen2 sharded 20MB", lambda: save_hf_dir(model, os.path.join(tmp, "tiny-qwen2-sharded"), "20MB"),
               timings)
        m64 = ref_common.timed("float64 copy", lambda: to_float64(model), timings)
        tokens = torch.randint(0, QWEN2_TOKENIZER_VOCAB, (16,), generator=torch.Generator().manual_seed(5))
        v32, ck, cv = ref_common.timed("forward 16 tokens f32", lambda: forward_intermediates(model, tokens), timings)
        v64, ck64, cv64 = ref_common.timed("forward 16 tokens f64", lambda: forward_intermediates(m64, tokens), timings)

        def cases():
            for m, v, k, c in ((model, v32, ck, cv), (m64, v64, ck64, cv64)):
                for layer, pos in ((0, 0), (1, 1), (0, 7), (1, 15)):
                    layer_case(m, layer, pos, v[f"layer{layer}.in"][pos], k[layer, :pos], c[layer, :pos])
        ref_common.timed("4 layer cases f32 + f64", cases, timings)
        new, logits32 = ref_common.timed("greedy 64 after 8", lambda: greedy(model, tokens[:8], 64), timings)
        ref_common.timed("f64 teacher-forced logits",
               lambda: teacher_forced_logits64(m64, torch.cat([tokens[:8], torch.tensor(new)]), 8), timings)
        for label, ref_model, toks in _llama_models(export_golden):
            hf = ref_common.timed(f"{label}: llama_to_hf", lambda: llama_to_hf(ref_model), timings)
            ref_common.timed(f"{label}: cross-check f32", lambda: cross_check_llama(ref_model, hf, toks), timings)
            ref_common.timed(f"{label}: save", lambda: save_hf_dir(hf, os.path.join(tmp, label + "-hf")), timings)
        total = sum(t for _, t in timings)
        for label, t in timings:
            print(f"  {label:32s} {t:6.3f} s")
        print(f"  {'total':32s} {total:6.3f} s")
        print(f"qwen2 greedy: min top-1/top-2 gap {float(top2_gaps(logits32).min()):.3g}, "
              f"{len(set(new))} distinct tokens, short cycle {short_cycle(new)}: {new[:12]} ...")
        for root, _, files in sorted(os.walk(tmp)):
            for f in sorted(files):
                p = os.path.join(root, f)
                print(f"  {os.path.relpath(p, tmp):55s} {os.path.getsize(p):10d} bytes")
        for sub in ("tiny-qwen2", "tiny-llama-hf", "stories260K-hf"):
            d = os.path.join(tmp, sub)
            if os.path.isdir(d):
                keys = safetensors_keys([os.path.join(d, f) for f in sorted(os.listdir(d))])
                print(f"{sub} keys ({len(keys)}):")
                for k in keys:
                    if ".layers." not in k or ".layers.0." in k:
                        print(f"    {k:50s} {keys[k][0]} {list(keys[k][1])}")


if __name__ == "__main__":
    main()
