"""transformers' own LLaMA-style decoders (LlamaForCausalLM, Qwen2ForCausalLM, and the attention half
of Qwen2MoeForCausalLM / MixtralForCausalLM; eager attention) as references: their intermediates
captured by forward hooks on transformers' modules and, for q and k after RoPE, by a wrapper around
transformers' own apply_rotary_pos_emb (never re-implemented here); and their float64 truth, the
same weights in our llama_ref.py (DecoderRef).

Qwen2 / LLaMA in transformers 4.46.3, per decoder layer (pre-RMSNorm, SwiGLU):
    a = input_layernorm(x);  q, k, v = q_proj(a), k_proj(a), v_proj(a)   (Qwen2: with biases)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)        ROTATE-HALF pairs (x[i], x[i + head_dim/2])
    heads = softmax(q k^T / sqrt(head_dim), causal) v  (GQA: query head h reads kv head h // group)
    h = x + o_proj(heads)
    out = h + down_proj(silu(gate_proj(f)) * up_proj(f)),  f = post_attention_layernorm(h)
    logits = lm_head(norm(x_L))

Precision note (transformers 4.46.3): even in a float64 copy, RMSNorm normalises in float32
(`hidden_states.to(torch.float32)`), the attention softmax runs in float32 (`dtype=torch.float32`),
and the RoPE cos/sin are computed in float32; a float64 transformers model is therefore float64 only
up to float32 rounding at those three places. The float64 truth is llama_ref.py on the same weights
(to_llama_ref: HF's own rotate-half q/k layout, so no permutation), once cross_check has shown that
in float32 it computes what transformers computes.
"""
import contextlib
import copy
import os
import sys

import torch
from transformers.cache_utils import Cache, DynamicCache

from lmlab_ref import common, hooks, llama_ref

# Where each intermediate of a decoder layer is seen (hooks.Recorder.place); q and k (ROPE) come
# from transformers' apply_rotary_pos_emb while the layer's self_attn runs.
HOOKS = {"in": ("", "in"), "attn_norm": ("input_layernorm", "out"), "v": ("self_attn.v_proj", "out"),
         "heads": ("self_attn.o_proj", "in"), "attn_out": ("self_attn.o_proj", "out"),
         "h": ("post_attention_layernorm", "in"), "ffn_norm": ("post_attention_layernorm", "out"),
         "ffn_gate": ("mlp.gate_proj", "out"), "ffn_up": ("mlp.up_proj", "out"), "ffn_act": ("mlp.down_proj", "in"),
         "ffn_out": ("mlp.down_proj", "out"), "out": ("", "out")}
ROPE = ("q", "k")

# llama_ref (Meta / llama2.c) names -> transformers' decoder-layer names
LAYER_NAMES = {"attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
               "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
               "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w2.weight": "mlp.down_proj.weight",
               "feed_forward.w3.weight": "mlp.up_proj.weight", "attention_norm.weight": "input_layernorm.weight",
               "ffn_norm.weight": "post_attention_layernorm.weight"}


def dims(config):
    """(n_heads, n_kv_heads, head_dim) as transformers' attention computes them."""
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // nh
    return nh, nkv, hd


def check_eager(model):
    assert model.config._attn_implementation == "eager", model.config._attn_implementation


# ---- Tiny random decoders -----------------------------------------------------------------------
# A random model with tied embeddings and no position embedding easily falls into repeating one
# token: the attention output (an average over the context plus the v bias) is nearly the same at
# every step, the token's own embedding in the residual favours itself, and rows with a large norm
# become "hubs" that win from everywhere. Shrinking o_proj, enlarging down_proj (the logits become
# a random function of the current token through the FFN) and giving every embedding row the same
# length makes greedy decoding wander: 16 of 16 seeds gave no 1-3 token cycle in 64 tokens and
# 15 of 16 no repeated token at all in 128 (o_proj 0.3, down_proj 3, N(0,1) rows: 4 of 16 stuck).
# EMBED_ROW_NORM: logits = norm(x) . embed[v] with |norm(x)| ~ sqrt(64) and embed[v] a random
# direction of length 3, so their std is about 3.
EMBED_ROW_NORM = 3.0
NORM_STD = 0.1
QKV_BIAS_STD = 0.5
O_PROJ_SCALE = 0.2
DOWN_PROJ_SCALE = 5.0


def randomize(model, gen):
    """Every parameter of a LLaMA-style transformers decoder drawn from `gen`, in named_parameters()
    order (a tied lm_head.weight is embed_tokens.weight and listed once), so the same generator state
    gives the same model. No parameter is a trivial 1 or 0: RMSNorm weights 1 + 0.1 N, q/k/v biases
    0.5 N (large, so a missing bias is visible), Linear weights N(0, 1/in) (o_proj times
    O_PROJ_SCALE, down_proj times DOWN_PROJ_SCALE: see above), the embedding and an untied lm_head
    rows N(0, 1) rescaled to length EMBED_ROW_NORM. Returns the model in eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name in ("model.embed_tokens.weight", "lm_head.weight"):  # random directions, all of length EMBED_ROW_NORM
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
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    check_eager(model)
    return model.eval()


def tiny_reference(family, cls, config, key, ctx, vocab, n_forward, n_new=64, bos=(), tokenizer_files=()):
    """A tiny random transformers decoder (randomize, from the stream "model.<name>") as a stage's
    model: built once per export, its float64 truth made and cross-checked, saved with
    save_pretrained to key (under golden/), the ../shared tokenizer files (paths under ../shared)
    copied beside it when present; prompts from set_prompts (n_forward tokens for the model stages,
    8 + n_new greedy). bos: what a serving prompt starts with."""
    import shutil

    def build():
        name = os.path.basename(key)
        model = randomize(cls(config), common.generator(f"model.{name}"))
        ref = DecoderRef(family, model)
        ref.set_prompts(name, vocab, n_forward=n_forward, n_new=n_new)
        ref.bos = list(bos)
        checked = ref.make_truth(ref.forward_tokens, ctx.table.intermediates(family), max_positions=512)
        print(f"export_golden: {key}: {checked}")
        path = ctx.out_path(key)
        save_hf_dir(model, path)
        for rel in tokenizer_files:
            src = ctx.shared_path(rel)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(path, os.path.basename(rel)))  # generated data under golden/, never in git
        return ref
    return ctx.once(key, build)


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

def rows(x):
    """[1, n_heads, T, head_dim] (transformers' attention / cache layout) -> [T, n_heads * head_dim]."""
    _, nh, T, hd = x.shape
    return x[0].transpose(0, 1).reshape(T, nh * hd)


def _heads_first(r, n_heads, head_dim):
    """[T, n_heads * head_dim] -> [1, n_heads, T, head_dim]."""
    T = r.shape[0]
    return r.reshape(T, n_heads, head_dim).permute(1, 0, 2).unsqueeze(0).contiguous()


class Recorder(hooks.Recorder):
    """hooks.Recorder on transformers' modules (batch row 0 kept), plus q and k after RoPE: while a
    hooked layer's self_attn runs, rope_capture hands transformers' own RoPE outputs to rope()."""

    def __init__(self):
        super().__init__(take=lambda t: t[0])
        self.current = None  # (prefix, rope names asked for) of the layer whose attention is running

    def layer(self, layer, prefix, names, where=HOOKS):
        """Hooks names of one decoder layer (where's places, q and k from RoPE); returns the rest."""
        rest = self.place(layer, prefix, names, where)
        rope = [n for n in rest if n in ROPE]
        self.handles.append(layer.self_attn.register_forward_pre_hook(lambda m, inp: setattr(self, "current", (prefix, rope))))
        self.handles.append(layer.self_attn.register_forward_hook(lambda m, inp, out: setattr(self, "current", None)))
        return [n for n in rest if n not in ROPE]

    def rope(self, q_embed, k_embed):
        """Called by the RoPE wrapper with transformers' own outputs [1, heads, T, head_dim]."""
        if self.current is None:
            raise RuntimeError("apply_rotary_pos_emb called outside a hooked attention module")
        prefix, names = self.current
        for name, t in zip(ROPE, (q_embed, k_embed)):
            if name in names:
                self.values.setdefault(prefix + name, []).append(rows(t.detach()).clone())


@contextlib.contextmanager
def rope_capture(model, rec):
    """Temporarily replaces the module attribute apply_rotary_pos_emb of the model's modeling
    module (modeling_qwen2, modeling_llama, ...; the attention forward looks the name up there at
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


def reset_dynamic_rope(model):
    """Puts transformers' dynamic RoPE back in its initial state. Its rotary module keeps state across
    calls (_dynamic_frequency_update): it recomputes inv_freq when max(position_ids) + 1 grows past
    the longest sequence it has seen, and goes back to the original frequencies only when a sequence
    shorter than max_position_embeddings comes. So a model that has run a long sequence rotates the
    next one, if that is longer than the original context but shorter than the last, with the old
    sequence's frequencies (selfcheck shows it). Every reference run starts as a fresh model would."""
    for m in model.modules():
        if hasattr(m, "original_inv_freq") and "dynamic" in str(getattr(m, "rope_type", "")):
            m.register_buffer("inv_freq", m.original_inv_freq, persistent=False)
            m.max_seq_len_cached = m.original_max_seq_len


def layer_window(config, layer):
    """The sliding window lmlab (and transformers' flash-attention path, and later transformers)
    applies in `layer`: sliding_window() for the layers it covers, else 0."""
    window, from_layer = sliding_window(config)
    return window if window and layer >= from_layer else 0


@contextlib.contextmanager
def qwen2_window_mask(model):
    """A visible workaround of a transformers 4.46.3 bug: with use_sliding_window, Qwen2's eager (and
    sdpa) attention applies the window to EVERY layer (one mask, made once in Qwen2Model and handed
    to all layers), although max_window_layers says the layers below it see every position, which
    its flash-attention path honours (layer_idx >= max_window_layers) and later transformers made the
    rule for all paths (config.layer_types); 4.46.3 even warns that sliding window "is not
    implemented" for eager. While this is active, each layer below max_window_layers gets the plain
    causal mask instead (keys <= cache_position), the rest the model's windowed mask unchanged.
    Nothing else of transformers' computation is touched. selfcheck shows the difference."""
    window, from_layer = sliding_window(model.config)
    if model.config.model_type != "qwen2" or not window or from_layer == 0:
        yield
        return
    patched = []
    for i, layer in enumerate(model.model.layers[:from_layer]):
        original = layer.forward

        def forward(*args, _original=original, **kwargs):
            mask, positions = kwargs.get("attention_mask"), kwargs.get("cache_position")
            if mask is not None:  # [batch, 1, queries, keys], additive: 0 or the dtype's min
                allowed = torch.arange(mask.shape[-1])[None, :] <= positions[:, None]
                causal = torch.full(mask.shape[-2:], torch.finfo(mask.dtype).min, dtype=mask.dtype).masked_fill(allowed, 0)
                kwargs["attention_mask"] = causal.expand_as(mask)
            return _original(*args, **kwargs)
        layer.forward = forward
        patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.forward  # back to the class's forward


def _cache_tensors(pkv):
    """Per-layer (key, value) [1, n_kv, T, head_dim] of a DynamicCache or a legacy tuple."""
    if isinstance(pkv, Cache):
        return list(zip(pkv.key_cache, pkv.value_cache))
    return [(k, v) for k, v in pkv]


def forward_intermediates(model, tokens, names, where=HOOKS, others=()):
    """One full-sequence forward of the model (use_cache=True) on tokens [T] from position 0.
    Returns (values, cache_k, cache_v) in the model's dtype: values holds layer<i>.<name> [T, ...]
    for each layer and each of names (but others: names the caller captures itself) in order, then
    final_norm and logits; q and k are AFTER RoPE, heads contiguous; the cache [L, T, kv_dim] is the
    model's own past_key_values (keys after RoPE), heads side by side."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    layers = model.model.layers
    rec = Recorder()
    for i, layer in enumerate(layers):
        hooks.unplaced([n for n in rec.layer(layer, f"layer{i}.", names, where) if n not in others],
                       type(model).__name__)
    rec.out(model.model.norm, "final_norm")
    rec.out(model.lm_head, "logits")
    reset_dynamic_rope(model)
    try:
        with torch.no_grad(), rope_capture(model, rec), qwen2_window_mask(model):
            # an explicit DynamicCache: with past_key_values=None, 4.46 converts its cache to the
            # legacy tuple on return
            out = model(input_ids=tokens[None], past_key_values=DynamicCache(), use_cache=True, return_dict=True)
    finally:
        rec.remove()
    keys = [f"layer{i}.{n}" for i in range(len(layers)) for n in names if n not in others] + ["final_norm", "logits"]
    values = {k: rec.one(k) for k in keys}
    assert torch.equal(values["logits"], out.logits[0])
    kv = _cache_tensors(out.past_key_values)
    assert len(kv) == len(layers)
    return values, torch.stack([rows(k) for k, _ in kv]), torch.stack([rows(v) for _, v in kv])


def layer_case(model, layer, pos, x, cache_k, cache_v, names):
    """One decoder layer, model.model.layers[layer], on one token x [hidden] at position pos,
    after pos cached keys/values cache_k/cache_v [pos, kv_dim] (keys already rotated), through
    the layer's own forward as transformers 4.46 calls it: a DynamicCache holding the rows,
    position_ids [[pos]], cache_position [pos], position_embeddings = model.model.rotary_emb(x,
    position_ids) (a fresh rotary state: dynamic scales for pos + 1), no attention mask (one query
    sees every cached row) unless the layer has a sliding window that hides some: then the mask
    transformers' model builds for that query (keys <= pos - window masked). Returns {name: 1-D
    tensor} for names, in the model's dtype."""
    m = model.model
    blk = m.layers[layer]
    nh, nkv, hd = dims(model.config)
    dtype = next(model.parameters()).dtype
    assert pos < model.config.max_position_embeddings
    assert cache_k.shape == (pos, nkv * hd) == cache_v.shape, (cache_k.shape, cache_v.shape)
    x = torch.as_tensor(x).to(dtype).reshape(1, 1, -1)
    cache = DynamicCache()
    if pos > 0:
        cache.update(_heads_first(cache_k.to(dtype), nkv, hd), _heads_first(cache_v.to(dtype), nkv, hd), layer)
    position_ids = torch.tensor([[pos]], dtype=torch.long)
    cache_position = torch.tensor([pos], dtype=torch.long)
    window = layer_window(model.config, layer)
    mask = None
    if window and pos + 1 > window:
        mask = torch.zeros(1, 1, 1, pos + 1, dtype=dtype)
        mask[..., : pos + 1 - window] = torch.finfo(dtype).min
    rec = Recorder()
    hooks.unplaced(rec.layer(blk, "", names), type(model).__name__)
    reset_dynamic_rope(model)
    try:
        with torch.no_grad(), rope_capture(model, rec):
            # (4.46.3's Mistral has no model-level rotary module: its attention rotates by position_ids itself)
            pe = m.rotary_emb(x, position_ids) if hasattr(m, "rotary_emb") else None
            rotary = {} if pe is None else {"position_embeddings": pe}
            out = blk(x, attention_mask=mask, position_ids=position_ids, past_key_value=cache,
                      output_attentions=False, use_cache=True, cache_position=cache_position, **rotary)
    finally:
        rec.remove()
    values = {n: rec.one(n)[0] for n in names}
    assert out[1] is cache and cache.key_cache[layer].shape[2] == pos + 1
    for name, t in (("out", out[0][0, 0]), ("k", rows(cache.key_cache[layer])[pos]),
                    ("v", rows(cache.value_cache[layer])[pos])):
        assert name not in values or torch.equal(values[name], t), name
    return values


def greedy(model, prompt, n_new):
    """transformers' generate(do_sample=False), exactly n_new tokens (common.generate_greedy), from a
    fresh dynamic-RoPE state, with Qwen2's per-layer windows (qwen2_window_mask)."""
    bos = model.config.bos_token_id if model.config.bos_token_id is not None else 0
    if isinstance(bos, list):
        bos = bos[0]
    reset_dynamic_rope(model)
    with qwen2_window_mask(model):
        # return_legacy_cache=False: keep the DynamicCache (silences a 4.47 notice)
        return common.generate_greedy(model, prompt, n_new, bos, return_legacy_cache=False)


# ---- The float64 truth: the same weights in llama_ref ----------------------------------------------

def _llama_ref_name(name):
    """llama_ref parameter name -> transformers' state-dict name (LAYER_NAMES, plus biases)."""
    top = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    if name in top:
        return top[name]
    _, i, rest = name.split(".", 2)
    base, kind = rest.rsplit(".", 1)
    return f"model.layers.{i}.{LAYER_NAMES[base + '.weight'][:-len('weight')]}{kind}"


def rope_scaling(config):
    """The rope_scaling transformers 4.46.3 applies to this model (None: plain RoPE): the config's,
    except for the classes whose rotary embedding ignores it (Mistral, Mixtral: MistralRotaryEmbedding
    has no scaling)."""
    scaling = getattr(config, "rope_scaling", None)
    if config.model_type in ("mistral", "mixtral") or not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    return None if kind == "default" else scaling


def sliding_window(config):
    """(window, first windowed layer) of a config; (0, 0) without one. Mistral windows every layer;
    Qwen2 (use_sliding_window) the layers from max_window_layers on, as its flash-attention path and
    later transformers (layer_types) do: 4.46.3's eager attention windows every layer
    (qwen2_window_mask works around it)."""
    if config.model_type == "mistral":
        return (config.sliding_window or 0), 0
    if config.model_type == "qwen2" and getattr(config, "use_sliding_window", False):
        return config.sliding_window, config.max_window_layers
    return 0, 0


def llama_ref_config(model, ffn_dim=None):
    """llama_ref.Config of a transformers decoder (rotate-half RoPE, q/k/v biases when it has them, its
    RoPE scaling and sliding window). Refuses what llama_ref does not compute, naming the config field."""
    c = model.config
    nh, nkv, hd = dims(c)
    for field, bad in (("head_dim", hd * nh != c.hidden_size), ("hidden_act", c.hidden_act != "silu"),
                       ("partial_rotary_factor", getattr(c, "partial_rotary_factor", 1.0) != 1.0)):
        if bad:
            raise SystemExit(f"lmlab_ref: config.json {field} = {getattr(c, field, None)!r}: llama_ref computes only "
                             "head_dim = hidden / heads, silu, whole-head RoPE")
    window, from_layer = sliding_window(c)
    return llama_ref.Config(c.hidden_size, c.num_hidden_layers, nh, nkv, ffn_dim or c.intermediate_size, c.vocab_size,
                            c.max_position_embeddings, rope_theta=float(c.rope_theta), rope_style="rotate_half",
                            norm_eps=float(c.rms_norm_eps), tied_embeddings=bool(c.tie_word_embeddings),
                            arch=c.model_type, qkv_bias=model.model.layers[0].self_attn.q_proj.bias is not None,
                            rope_scaling=rope_scaling(c), rope_context=c.max_position_embeddings,
                            sliding_window=window, window_from_layer=from_layer)


def to_llama_ref(model):
    """A llama_ref.Llama (arch = the config's model_type, eval mode, the model's dtype) with a
    Qwen2ForCausalLM's (or LlamaForCausalLM's) weights copied as they are: q/k/v/o, gate/up/down,
    the norms, the q/k/v biases, the embedding (lm_head tied to it when the config ties). HF's q/k
    rows are already rotate-half pairs."""
    cfg = llama_ref_config(model)
    with torch.random.fork_rng(devices=[]):  # the throwaway random init leaves the global RNG alone
        ref = llama_ref.Llama(cfg)
    hf_sd = model.state_dict()
    names = {n: _llama_ref_name(n) for n in ref.state_dict()}
    unused = set(hf_sd) - set(names.values())
    if unused:
        raise ValueError(f"to_llama_ref: parameters with no llama_ref place: {sorted(unused)}")
    ref = ref.to(next(model.parameters()).dtype)
    ref.load_state_dict({n: hf_sd[h] for n, h in names.items()}, strict=True)
    if cfg.tied_embeddings:
        assert ref.output.weight is ref.tok_embeddings.weight, "llama_ref output not tied"
    return ref.eval()


def cross_check(model, ref_model, tokens, names, tol=1e-5):
    """transformers' full forward (model) vs llama_ref token by token (ref_model, run in the model's
    dtype) on tokens. Every intermediate of names, final_norm and the logits must agree within
    tol * max(1, max |llama_ref's values of it|), else SystemExit naming it. Returns (max |logits
    difference|, worst intermediate, its difference / max(1, max |intermediate|))."""
    dtype = next(model.parameters()).dtype
    ref = ref_model if next(ref_model.parameters()).dtype == dtype else copy.deepcopy(ref_model).to(dtype)
    ref_values, _ = llama_ref.run_tokens(ref, tokens, dtype, names)
    hf_values, _, _ = forward_intermediates(model, tokens, names)
    rel = {key: common.max_abs(ref_values[key], hv) / max(1.0, float(ref_values[key].abs().max()))
           for key, hv in hf_values.items()}
    err = common.max_abs(ref_values["logits"], hf_values["logits"])
    worst = max((r for r in rel if r != "logits"), key=rel.get)
    for key in ["logits", worst]:
        if not rel[key] <= tol:
            raise SystemExit(f"cross_check: llama_ref vs transformers' {type(model).__name__} ({dtype}, {len(tokens)} "
                             f"tokens): {key}: max |difference| / max(1, max |{key}|) {rel[key]:.3e} > {tol:.0e}")
    return err, worst, rel[worst]


class DecoderRef(common.Reference):
    """A transformers decoder (float32) and its float64 truth: llama_ref on the same weights (made by
    make_truth after a float32 cross-check)."""

    def __init__(self, family, model):
        self.family, self.model, self.truth = family, model, None

    def make_truth(self, tokens, names, max_positions=None):
        """llama_ref with the model's weights, cross-checked in float32 on tokens, then converted to
        float64 in place (one copy of the weights fewer at the peak). max_positions: the KV cache it
        allocates (not a 32768-position context's 1.6 GB in float64). Returns what it checked."""
        ref = to_llama_ref(self.model)
        if max_positions is not None:
            ref.cfg.max_seq_len = max_positions
        diff, role, rel = cross_check(self.model, ref, tokens, names)
        self.truth = ref.double()
        return (f"transformers' {type(self.model).__name__} agrees with llama_ref.py, max |logits diff| {diff:.3g}, "
                f"worst intermediate {role} {rel:.3g} (relative to max(1, max |{role}|))")

    def forward_intermediates(self, tokens, names):
        values, k, v = forward_intermediates(self.model, tokens, names)
        return values, {"cache_k": k, "cache_v": v}

    def truth_intermediates(self, tokens, names):
        return llama_ref.forward(self.truth, tokens, names)

    def layer_case(self, layer, pos, x, cache_k, cache_v, names):
        return layer_case(self.model, layer, pos, x, cache_k, cache_v, names)

    def truth_layer_case(self, layer, pos, x, cache_k, cache_v, names):
        return llama_ref.layer_case(self.truth, layer, pos, x, cache_k, cache_v, names)

    def greedy(self, prompt, n_new):
        return greedy(self.model, prompt, n_new)

    def truth_logits(self, prompt, tokens):
        """llama_ref in float64 on prompt + tokens[:-1]: the logits each token was chosen from."""
        seq = torch.cat([torch.as_tensor(prompt), torch.tensor(tokens[:-1], dtype=torch.long)])
        values, _ = llama_ref.run_tokens(self.truth, seq, torch.float64, prompt_len=len(prompt))
        return values["logits"][len(prompt) - 1:]

    def dims(self):
        c = self.model.config
        nh, nkv, hd = dims(c)
        return c.hidden_size, nkv * hd, c.max_position_embeddings
