"""The gpt2 family: transformers' own GPT2LMHeadModel (eager attention) with a tiny random
configuration, its intermediates captured by forward hooks on transformers' modules (never
re-implemented here), and the same weights written in the three layouts the C++ engine reads:
transformers' save_pretrained directory, a sharded hub-style directory like the real `gpt2`
repository, and llm.c's float32 checkpoint. The float64 truth is transformers' model in float64
(GPT-2 has no float32-only step in it).

GPT-2 (Radford et al. 2019) in transformers 4.46.3, per block (pre-LayerNorm):
    a   = ln_1(x);  q|k|v = c_attn(a)   (Conv1D: a @ W + b, W stored [in, out])
    heads = softmax(q k^T / sqrt(head_dim), causal) v    (heads side by side)
    h   = x + attn.c_proj(heads)
    out = h + mlp.c_proj(gelu_new(mlp.c_fc(ln_2(h))))
    logits = ln_f(x_L) @ wte^T   (lm_head tied to wte)
gelu_new is transformers' NewGELUActivation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

from lmlab_ref import bpe, common, hooks

NAME = "gpt2"

# The tiny GPT-2: the real GPT-2 vocabulary size (so the real tokenizer's ids are valid), a small body.
TINY_GPT2 = dict(vocab_size=50257, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                 activation_function="gelu_new", layer_norm_epsilon=1e-5,
                 bos_token_id=50256, eos_token_id=50256)
EOT = 50256

# Scales of the random parameters (see build_tiny_gpt2). WTE_STD: logits = ln_f(x) . wte[v] sum
# n_embd terms of O(1) x WTE_STD, so their std is about sqrt(n_embd) * WTE_STD = 3.
WTE_STD = 3.0 / TINY_GPT2["n_embd"] ** 0.5
WPE_STD = 1.0
LN_STD = 0.1
BIAS_STD = 0.05

# llm.c's float32 checkpoint (karpathy/llm.c train_gpt2.py write_model / write_tensors,
# train_gpt2.c gpt2_build_from_checkpoint + fill_in_parameter_sizes).
LLMC_MAGIC = 20240326
LLMC_VERSION_FP32 = 3
LLMC_VOCAB_MULTIPLE = 128


# ---- The model ----------------------------------------------------------------------------------

def build_tiny_gpt2(gen: torch.Generator) -> GPT2LMHeadModel:
    """The tiny GPT-2 (TINY_GPT2) with every parameter drawn from `gen`, in eval mode.

    No parameter is a trivial 1 or 0 (those would hide a missing scale or bias on the C++ side):
    LayerNorm weight 1 + 0.1 N, LayerNorm bias 0.1 N, Conv1D weight N(0, 1/in) (outputs O(1)),
    Conv1D bias 0.05 N, wte N(0, 1) * 3/sqrt(n_embd) (logits std ~3, so greedy decoding has clear
    winners, while the embeddings stay small), wpe 0.1 N. lm_head is tied to wte (transformers'
    default for GPT-2). Parameters are drawn in named_parameters() order, so the same generator
    state gives the same model."""
    cfg = GPT2Config(**TINY_GPT2, attn_implementation="eager")
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():  # lm_head.weight is wte: listed once
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name == "transformer.wte.weight":
                p.copy_(n * WTE_STD)
            elif name == "transformer.wpe.weight":
                p.copy_(n * WPE_STD)
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                p.copy_(1.0 + LN_STD * n if name.endswith(".weight") else LN_STD * n)
            elif name.endswith(".weight"):  # Conv1D [in, out]
                p.copy_(n * p.shape[0] ** -0.5)
            elif name.endswith(".bias"):
                p.copy_(n * BIAS_STD)
            else:
                raise ValueError(f"unexpected parameter {name}")
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "lm_head not tied to wte"
    return model.eval()


# ---- Writing the weights ------------------------------------------------------------------------

def _hub_state_dict(model):
    """The real `gpt2` hub checkpoint's keys: no `transformer.` prefix, no lm_head (tied), Conv1D
    weights [in, out], and the h.N.attn.bias causal masks [1, 1, n_positions, n_positions] as
    float32 lower-triangular ones (OpenAI's checkpoint stored them; transformers 4.46 keeps the
    mask as a non-persistent bool buffer and does not write it)."""
    n = model.config.n_positions
    mask = torch.tril(torch.ones(n, n, dtype=torch.float32)).view(1, 1, n, n)
    sd = {}
    for name, p in model.transformer.state_dict().items():
        sd[name] = p.detach().to(torch.float32).contiguous().clone()
    for i in range(model.config.n_layer):
        sd[f"h.{i}.attn.bias"] = mask.clone()
    return sd


def _llmc_tensors(model):
    """llm.c's 16 parameter tensors in file order, float32, [out, in] layout (HF's Conv1D is
    [in, out], llm.c's nn.Linear is [out, in]: transposed, as llm.c's from_pretrained does)."""
    t = model.transformer
    L = model.config.n_layer

    def f32(x):
        return x.detach().to(torch.float32).contiguous()

    def per_layer(path, transpose=False):
        ws = [t.h[i].get_parameter(path) for i in range(L)]
        return torch.stack([f32(w.t() if transpose else w) for w in ws])

    V, C = t.wte.weight.shape
    Vp = (V + LLMC_VOCAB_MULTIPLE - 1) // LLMC_VOCAB_MULTIPLE * LLMC_VOCAB_MULTIPLE
    wte = torch.zeros(Vp, C, dtype=torch.float32)  # padded rows are zero (pad_vocab value=0)
    wte[:V] = f32(t.wte.weight)
    return Vp, [("wte", wte), ("wpe", f32(t.wpe.weight)),
                ("ln1w", per_layer("ln_1.weight")), ("ln1b", per_layer("ln_1.bias")),
                ("qkvw", per_layer("attn.c_attn.weight", True)), ("qkvb", per_layer("attn.c_attn.bias")),
                ("attprojw", per_layer("attn.c_proj.weight", True)), ("attprojb", per_layer("attn.c_proj.bias")),
                ("ln2w", per_layer("ln_2.weight")), ("ln2b", per_layer("ln_2.bias")),
                ("fcw", per_layer("mlp.c_fc.weight", True)), ("fcb", per_layer("mlp.c_fc.bias")),
                ("fcprojw", per_layer("mlp.c_proj.weight", True)), ("fcprojb", per_layer("mlp.c_proj.bias")),
                ("lnfw", f32(t.ln_f.weight)), ("lnfb", f32(t.ln_f.bias))]


def llmc_checkpoint_bytes(model) -> bytes:
    """llm.c's float32 model file: 256 little-endian int32 [20240326, 3, maxT, V, L, NH, C, Vp, 0...]
    then the parameters as float32 in ParameterTensors order (wte (Vp, C), wpe (maxT, C), ln1w,
    ln1b, qkvw (L, 3C, C), qkvb, attprojw (L, C, C), attprojb, ln2w, ln2b, fcw (L, 4C, C), fcb,
    fcprojw (L, C, 4C), fcprojb, lnfw, lnfb)."""
    c = model.config
    Vp, tensors = _llmc_tensors(model)
    header = np.zeros(256, dtype="<i4")
    header[:8] = [LLMC_MAGIC, LLMC_VERSION_FP32, c.n_positions, c.vocab_size, c.n_layer, c.n_head, c.n_embd, Vp]
    parts = [header.tobytes()] + [x.numpy().astype("<f4", copy=False).tobytes() for _, x in tensors]
    return b"".join(parts)


def load_llmc(path) -> GPT2LMHeadModel:
    """An llm.c float32 checkpoint (llmc_checkpoint_bytes' layout, version 3) as transformers'
    GPT2LMHeadModel: the inverse of _llmc_tensors ([out, in] transposed back to Conv1D's [in, out],
    the padded vocabulary rows dropped). For `lmlab verify` on a user's llm.c file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 1024:
        raise ValueError(f"{path}: {len(data)} bytes, shorter than llm.c's 1024-byte header")
    header = np.frombuffer(data[:1024], dtype="<i4")
    magic, version, maxT, V, L, NH, C, Vp = (int(x) for x in header[:8])
    if magic != LLMC_MAGIC or version != LLMC_VERSION_FP32:
        raise ValueError(f"{path}: magic {magic} version {version}; expected llm.c's {LLMC_MAGIC} version "
                         f"{LLMC_VERSION_FP32} (float32)")
    config = GPT2Config(vocab_size=V, n_positions=maxT, n_embd=C, n_layer=L, n_head=NH, activation_function="gelu_new",
                        layer_norm_epsilon=1e-5, bos_token_id=EOT, eos_token_id=EOT, attn_implementation="eager")
    with torch.random.fork_rng(devices=[]):  # the throwaway random init leaves the global RNG alone
        model = GPT2LMHeadModel(config)
    body = torch.from_numpy(np.frombuffer(data, dtype="<f4", offset=1024).copy())
    _, layout = _llmc_tensors(model)  # names and shapes (wte padded to Vp) in file order
    need = sum(t.numel() for _, t in layout)
    if layout[0][1].shape[0] != Vp or body.numel() != need:
        raise ValueError(f"{path}: {body.numel()} floats after the header, expected {need} for V {V} (padded {Vp}), "
                         f"L {L}, NH {NH}, C {C}, maxT {maxT}")
    tensors, off = {}, 0
    for name, t in layout:
        tensors[name] = body[off:off + t.numel()].view(t.shape)
        off += t.numel()
    tr = model.transformer
    per_layer = {"ln1w": ("ln_1.weight", False), "ln1b": ("ln_1.bias", False), "qkvw": ("attn.c_attn.weight", True),
                 "qkvb": ("attn.c_attn.bias", False), "attprojw": ("attn.c_proj.weight", True),
                 "attprojb": ("attn.c_proj.bias", False), "ln2w": ("ln_2.weight", False), "ln2b": ("ln_2.bias", False),
                 "fcw": ("mlp.c_fc.weight", True), "fcb": ("mlp.c_fc.bias", False),
                 "fcprojw": ("mlp.c_proj.weight", True), "fcprojb": ("mlp.c_proj.bias", False)}
    with torch.no_grad():
        tr.wte.weight.copy_(tensors["wte"][:V])
        tr.wpe.weight.copy_(tensors["wpe"])
        for key, (param, transpose) in per_layer.items():
            for i in range(L):
                w = tensors[key][i]
                tr.h[i].get_parameter(param).copy_(w.t() if transpose else w)
        tr.ln_f.weight.copy_(tensors["lnfw"])
        tr.ln_f.bias.copy_(tensors["lnfb"])
    model.tie_weights()
    return model.eval()


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def save_hf_dirs(model, out_dir) -> dict:
    """Writes the same weights three ways under out_dir and returns their paths:
      hf:   out_dir/tiny-gpt2/       save_pretrained (config.json, generation_config.json,
                                     model.safetensors with `transformer.`-prefixed keys)
      hub:  out_dir/tiny-gpt2-hub/   like the hub's `gpt2`: unprefixed keys, no lm_head, the
                                     h.N.attn.bias masks, sharded in two files + an index
      llmc: out_dir/tiny-gpt2.llmc.bin  llm.c's float32 checkpoint
    The bytes are the same on every run."""
    hf_dir = os.path.join(out_dir, "tiny-gpt2")
    hub_dir = os.path.join(out_dir, "tiny-gpt2-hub")
    llmc_path = os.path.join(out_dir, "tiny-gpt2.llmc.bin")
    os.makedirs(hf_dir, exist_ok=True)
    os.makedirs(hub_dir, exist_ok=True)

    model.save_pretrained(hf_dir, safe_serialization=True)

    # hub-style: shard 1 = embeddings and the first half of the layers, shard 2 = the rest + ln_f
    sd = _hub_state_dict(model)
    L = model.config.n_layer
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]

    def shard_of(key):
        if key.startswith("h."):
            return 0 if int(key.split(".")[1]) < max(1, L // 2) else 1
        return 0 if key.startswith(("wte.", "wpe.")) else 1

    shards = [{}, {}]
    for key in sorted(sd):
        shards[shard_of(key)][key] = sd[key]
    for name, tensors in zip(names, shards):
        save_file(tensors, os.path.join(hub_dir, name), metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in sd.values())},
             "weight_map": {k: names[shard_of(k)] for k in sorted(sd)}}
    _write_bytes(os.path.join(hub_dir, "model.safetensors.index.json"),
                 (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    with open(os.path.join(hf_dir, "config.json"), "rb") as f:
        _write_bytes(os.path.join(hub_dir, "config.json"), f.read())

    _write_bytes(llmc_path, llmc_checkpoint_bytes(model))
    return {"hf": hf_dir, "hub": hub_dir, "llmc": llmc_path}


# ---- Intermediates ------------------------------------------------------------------------------

# Where each intermediate of a GPT2Block is seen (hooks.Recorder.place); q, k and v (QKV) are the
# c_attn output split as GPT2Attention.forward splits it.
HOOKS = {"in": ("", "in"), "attn_norm": ("ln_1", "out"), "heads": ("attn.c_proj", "in"),
         "attn_out": ("attn.c_proj", "out"), "h": ("ln_2", "in"), "ffn_norm": ("ln_2", "out"),
         "ffn_up": ("mlp.c_fc", "out"), "ffn_act": ("mlp.act", "out"), "ffn_out": ("mlp.c_proj", "out"),
         "out": ("", "out")}  # GPT2Model calls block(hidden_states, ...); the block returns (hidden_states, present)
QKV = ("q", "k", "v")


def _hook_block(rec, block, prefix, names):
    """Hooks names of one GPT2Block on rec (batch row 0 kept)."""
    rest = rec.place(block, prefix, names, HOOKS)
    qkv = [n for n in rest if n in QKV]

    def split(m, inp, out):
        for name, t in zip(QKV, out.split(m.nf // 3, dim=-1)):  # exactly what GPT2Attention.forward does
            if name in qkv:
                rec.put(prefix + name, t)
    rec.handles.append(block.attn.c_attn.register_forward_hook(split))
    hooks.unplaced([n for n in rest if n not in QKV], "GPT2Block")


def _cache_rows(kv):
    """[1, n_head, T, head_dim] (transformers' per-layer cache) -> [T, n_head * head_dim]."""
    _, nh, T, hd = kv.shape
    return kv[0].permute(1, 0, 2).reshape(T, nh * hd)


def forward_intermediates(model, tokens, names):
    """One full-sequence forward of the HF model (use_cache=True) on tokens [T] from position 0.
    Returns (values, cache_k [L, T, n_embd], cache_v) in the model's dtype: values holds
    layer<i>.<name> [T, ...] for each layer and each of names in order, then final_norm and logits;
    the cache is the model's own past_key_values, heads side by side (head h is columns
    h*head_dim:(h+1)*head_dim)."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    t = model.transformer
    rec = hooks.Recorder(take=lambda x: x[0])
    for i, block in enumerate(t.h):
        _hook_block(rec, block, f"layer{i}.", names)
    rec.out(t.ln_f, "final_norm")
    rec.out(model.lm_head, "logits")
    try:
        with torch.no_grad():
            out = model(input_ids=tokens[None], use_cache=True, return_dict=True)
    finally:
        rec.remove()
    keys = [f"layer{i}.{n}" for i in range(len(t.h)) for n in names] + ["final_norm", "logits"]
    values = {k: rec.one(k) for k in keys}
    assert torch.equal(values["logits"], out.logits[0])
    cache_k = torch.stack([_cache_rows(k) for k, _ in out.past_key_values])
    cache_v = torch.stack([_cache_rows(v) for _, v in out.past_key_values])
    return values, cache_k, cache_v


def layer_case(model, layer, pos, x, cache_k, cache_v, names):
    """One block, model.transformer.h[layer], on one token x [n_embd] at position pos, after pos
    cached keys/values cache_k/cache_v [pos, n_embd] (rows < pos of that layer), through the
    block's own forward with its legacy tuple cache layer_past = (past_key, past_value), each
    [1, n_head, pos, head_dim], in the model's dtype. Returns {name: 1-D tensor} for names."""
    block = model.transformer.h[layer]
    c = model.config
    nh, hd = c.n_head, c.n_embd // c.n_head
    dtype = next(model.parameters()).dtype
    assert pos < c.n_positions and cache_k.shape == (pos, c.n_embd) == cache_v.shape

    def heads_first(r):  # [pos, n_embd] -> [1, n_head, pos, head_dim]
        return r.to(dtype).reshape(pos, nh, hd).permute(1, 0, 2).unsqueeze(0).contiguous()

    layer_past = (heads_first(cache_k), heads_first(cache_v)) if pos > 0 else None
    rec = hooks.Recorder(take=lambda t: t[0])
    _hook_block(rec, block, "", names)
    try:
        with torch.no_grad():
            out = block(x.to(dtype).reshape(1, 1, -1), layer_past=layer_past, use_cache=True)
    finally:
        rec.remove()
    values = {n: rec.one(n)[0] for n in names}
    present_k, _ = out[1]
    assert present_k.shape[2] == pos + 1
    for name, t in (("out", out[0][0, 0]), ("k", _cache_rows(present_k)[pos])):
        assert name not in values or torch.equal(values[name], t), name
    return values


def teacher_forced_logits64(model64, sequence, n_prompt):
    """Float64 logits for a greedy run: one full forward of the float64 model on sequence = prompt +
    new tokens; rows n_prompt-1 .. len(sequence)-2, i.e. [n_new, V] aligned with greedy()'s logits."""
    sequence = torch.as_tensor(sequence, dtype=torch.long)
    with torch.no_grad():
        logits = model64(input_ids=sequence[None], use_cache=False, return_dict=True).logits[0]
    return logits[n_prompt - 1: len(sequence) - 1]


# ---- The family's references ---------------------------------------------------------------------

class Gpt2Ref(common.SameModelTruth):
    """transformers' GPT2LMHeadModel; the float64 truth is the same model in float64 (GPT-2 has no
    float32-only step in it)."""

    family = NAME

    def __init__(self, model, what="transformers GPT2LMHeadModel"):
        super().__init__(model, what)

    def forward_intermediates(self, tokens, names):
        values, k, v = forward_intermediates(self.model, tokens, names)
        return values, {"cache_k": k, "cache_v": v}

    def truth_intermediates(self, tokens, names):
        values, k, v = forward_intermediates(self._truth(), tokens, names)
        return values, {"cache_k": k, "cache_v": v}

    def layer_case(self, layer, pos, x, cache_k, cache_v, names):
        return layer_case(self.model, layer, pos, x, cache_k, cache_v, names)

    def truth_layer_case(self, layer, pos, x, cache_k, cache_v, names):
        return layer_case(self._truth(), layer, pos, x, cache_k, cache_v, names)

    def greedy(self, prompt, n_new):
        """transformers' generate(do_sample=False), exactly n_new tokens (common.generate_greedy)."""
        eos = self.model.config.eos_token_id
        return common.generate_greedy(self.model, prompt, n_new, eos if eos is not None else 0)

    def truth_logits(self, prompt, tokens):
        return teacher_forced_logits64(self._truth(), torch.cat([torch.as_tensor(prompt), torch.tensor(tokens)]),
                                       len(prompt))

    def dims(self):
        c = self.model.config
        return c.n_embd, c.n_embd, c.n_positions


# The stage rows' model keys: one model written in three layouts (save_hf_dirs)
KEYS = ("models/tiny-gpt2", "models/tiny-gpt2-hub", "models/tiny-gpt2.llmc.bin")


def build(key, ctx):
    """The tiny GPT-2 from a fixed seed, written once per export in the three layouts the C++
    reads, plus the real GPT-2 tokenizer as a Hugging Face tokenizer.json beside it (and llm.c's
    gpt2_tokenizer.bin beside its checkpoint) when ../shared has the GPT-2 vocabulary."""
    if key not in KEYS:
        raise SystemExit(f"lmlab_ref: family {NAME} has no model '{key}' (known: {', '.join(KEYS)})")

    def tiny():
        model = build_tiny_gpt2(common.generator("model.tiny-gpt2"))
        paths = save_hf_dirs(model, ctx.out_path("models"))
        if os.path.exists(ctx.shared_path(common.GPT2_ENCODER)):
            bpe.gpt2_hf(ctx.shared_dir).save(os.path.join(paths["hf"], "tokenizer.json"))
            # llm.c's decode-only vocabulary beside its checkpoint, where `lmlab generate` looks for it
            _write_bytes(os.path.join(os.path.dirname(paths["llmc"]), "gpt2_tokenizer.bin"),
                         bpe.llmc_tokenizer_bytes(ctx.shared_dir))
        ref = Gpt2Ref(model)
        ref.set_prompts("tiny-gpt2", model.config.vocab_size)
        return ref
    return ctx.once(KEYS[0], tiny)


def load(path, fmt):
    """A user's checkpoint for `lmlab verify`: a Hugging Face directory, or an llm.c float32 file
    (its weights in transformers' GPT2LMHeadModel)."""
    if fmt == "hf":
        return Gpt2Ref(common.load_pretrained(GPT2LMHeadModel, path))
    if fmt == "llmc":
        return Gpt2Ref(load_llmc(path), "transformers GPT2LMHeadModel (weights from the llm.c file)")
    raise SystemExit(f"lmlab_ref: {path}: family {NAME} reads Hugging Face directories and llm.c files, not {fmt}")
