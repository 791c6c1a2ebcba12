"""The GPT-2 reference: Hugging Face transformers' own GPT2LMHeadModel (eager attention), with a
tiny random configuration, its intermediates captured by forward hooks on transformers' modules
(never re-implemented here), and the same weights written in the three layouts the C++ engine
reads: transformers' save_pretrained directory, a sharded hub-style directory like the real
`gpt2` repository, and llm.c's float32 checkpoint.

    /work/main/.venv/bin/python scripts/ref_gpt2.py     # self-check + timings

GPT-2 (Radford et al. 2019) in transformers 4.46.3, per block (pre-LayerNorm):
    a   = ln_1(x);  q|k|v = c_attn(a)   (Conv1D: a @ W + b, W stored [in, out])
    heads = softmax(q k^T / sqrt(head_dim), causal) v    (heads side by side)
    h   = x + attn.c_proj(heads)
    out = h + mlp.c_proj(gelu_new(mlp.c_fc(ln_2(h))))
    logits = ln_f(x_L) @ wte^T   (lm_head tied to wte)
gelu_new is transformers' NewGELUActivation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

Nothing runs at import time except setting HF_HUB_OFFLINE (nothing is ever downloaded).
"""
import json
import os
import time

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import ref_common  # noqa: E402
from ref_common import teacher_forced_logits64, to_float64, top2_gaps  # noqa: E402,F401

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

# Intermediates of one block, in pipeline order; the C++ engine returns the same names.
BLOCK_ROLES = ["in", "attn_norm", "q", "k", "v", "heads", "attn_out", "h", "ffn_norm",
               "ffn_up", "ffn_act", "ffn_out", "out"]

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


def config_attrs(model):
    """The config as the C++ side needs it."""
    c = model.config
    return {"arch": "gpt2", "vocab_size": c.vocab_size, "n_positions": c.n_positions, "n_embd": c.n_embd,
            "n_layer": c.n_layer, "n_head": c.n_head, "head_dim": c.n_embd // c.n_head,
            "ffn_dim": c.n_inner or 4 * c.n_embd, "layer_norm_epsilon": float(c.layer_norm_epsilon),
            "activation": c.activation_function, "tied_embeddings": 1}


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

class Recorder:
    """Forward hooks (and pre-hooks) on transformers' own GPT-2 modules; each role's captures are
    appended to a list (one entry per forward call, batch dimension dropped)."""

    def __init__(self):
        self.values = {}
        self.handles = []

    def _put(self, key, t):
        self.values.setdefault(key, []).append(t.detach()[0].clone())

    def out(self, module, key):
        def hook(m, inp, out):
            self._put(key, out[0] if isinstance(out, tuple) else out)
        self.handles.append(module.register_forward_hook(hook))

    def inp(self, module, key):
        self.handles.append(module.register_forward_pre_hook(lambda m, inp: self._put(key, inp[0])))

    def qkv(self, module, prefix):
        def hook(m, inp, out):
            q, k, v = out.split(m.nf // 3, dim=-1)  # exactly what GPT2Attention.forward does
            self._put(prefix + "q", q)
            self._put(prefix + "k", k)
            self._put(prefix + "v", v)
        self.handles.append(module.register_forward_hook(hook))

    def block(self, block, prefix):
        """Every role of BLOCK_ROLES for one GPT2Block."""
        self.inp(block, prefix + "in")  # GPT2Model calls block(hidden_states, layer_past=..., ...)
        self.out(block.ln_1, prefix + "attn_norm")
        self.qkv(block.attn.c_attn, prefix)
        self.inp(block.attn.c_proj, prefix + "heads")
        self.out(block.attn.c_proj, prefix + "attn_out")
        self.inp(block.ln_2, prefix + "h")
        self.out(block.ln_2, prefix + "ffn_norm")
        self.out(block.mlp.c_fc, prefix + "ffn_up")
        self.out(block.mlp.act, prefix + "ffn_act")
        self.out(block.mlp.c_proj, prefix + "ffn_out")
        self.out(block, prefix + "out")  # the block returns (hidden_states, present)

    def one(self, key):
        v = self.values[key]
        assert len(v) == 1, f"{key}: captured {len(v)} times"
        return v[0]

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def role_names(n_layer):
    """All roles of a full forward, in pipeline order."""
    return (["embed"] + [f"layer{i}.{r}" for i in range(n_layer) for r in BLOCK_ROLES]
            + ["final_norm", "logits"])


def _cache_rows(kv):
    """[1, n_head, T, head_dim] (transformers' per-layer cache) -> [T, n_head * head_dim]."""
    _, nh, T, hd = kv.shape
    return kv[0].permute(1, 0, 2).reshape(T, nh * hd)


def forward_intermediates(model, tokens):
    """One full-sequence forward of the HF model (use_cache=True) on tokens [T] from position 0.
    Returns (dict role -> tensor [T, ...] in pipeline order, cache_k [L, T, n_embd],
    cache_v [L, T, n_embd]), all in the model's dtype; the cache is the model's own
    past_key_values, heads side by side (head h is columns h*head_dim:(h+1)*head_dim)."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    t = model.transformer
    rec = Recorder()
    rec.out(t.drop, "embed")
    for i, block in enumerate(t.h):
        rec.block(block, f"layer{i}.")
    rec.out(t.ln_f, "final_norm")
    rec.out(model.lm_head, "logits")
    try:
        with torch.no_grad():
            out = model(input_ids=tokens[None], use_cache=True, return_dict=True)
    finally:
        rec.remove()
    values = {k: rec.one(k) for k in role_names(len(t.h))}
    assert torch.equal(values["logits"], out.logits[0])
    cache_k = torch.stack([_cache_rows(k) for k, _ in out.past_key_values])
    cache_v = torch.stack([_cache_rows(v) for _, v in out.past_key_values])
    return values, cache_k, cache_v


def layer_case(model, layer, pos, x, cache_k, cache_v):
    """One block, model.transformer.h[layer], on one token x [n_embd] at position pos, after pos
    cached keys/values cache_k/cache_v [pos, n_embd] (rows < pos of that layer), through the
    block's own forward with its legacy tuple cache layer_past = (past_key, past_value), each
    [1, n_head, pos, head_dim]. Returns role -> 1-D tensor for attn_norm .. out."""
    block = model.transformer.h[layer]
    c = model.config
    nh, hd = c.n_head, c.n_embd // c.n_head
    assert pos < c.n_positions and cache_k.shape == (pos, c.n_embd) == cache_v.shape

    def heads_first(rows):  # [pos, n_embd] -> [1, n_head, pos, head_dim]
        return rows.reshape(pos, nh, hd).permute(1, 0, 2).unsqueeze(0).contiguous()

    layer_past = (heads_first(cache_k), heads_first(cache_v)) if pos > 0 else None
    rec = Recorder()
    rec.block(block, "")
    try:
        with torch.no_grad():
            out = block(x.reshape(1, 1, -1), layer_past=layer_past, use_cache=True)
    finally:
        rec.remove()
    values = {r: rec.one(r)[0] for r in BLOCK_ROLES if r != "in"}
    assert torch.equal(values["out"], out[0][0, 0])
    present_k, present_v = out[1]
    assert present_k.shape[2] == pos + 1 and torch.equal(_cache_rows(present_k)[pos], values["k"])
    return values


# ---- Generation ---------------------------------------------------------------------------------

def greedy(model, prompt, n_new):
    """transformers' generate(do_sample=False), exactly n_new tokens (ref_common.greedy)."""
    return ref_common.greedy(model, prompt, n_new, EOT)


# ---- Self-check ---------------------------------------------------------------------------------

def _max_abs(a, b):
    return float((a.double() - b.double()).abs().max())


def _selfcheck(seed=20261123, out_dir=None):
    """Checks this module against transformers itself; raises AssertionError on any failure."""
    import tempfile

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = build_tiny_gpt2(torch.Generator().manual_seed(seed))
    for name, p in model.named_parameters():  # (randn itself gives an exact 0 about once in 1e7)
        assert float(((p == 0) | (p == 1)).double().mean()) < 1e-5, f"{name} has trivial 0/1 entries"
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, model.config.vocab_size, (16,), generator=g)
    tokens[5] = EOT  # the end-of-text id inside the sequence is a token like any other

    for m in (model, to_float64(model)):
        dt = next(m.parameters()).dtype
        vals, ck, cv = forward_intermediates(m, tokens)
        assert all(v.dtype == dt for v in vals.values()) and ck.dtype == dt
        T, C, L = len(tokens), m.config.n_embd, m.config.n_layer
        assert list(vals) == role_names(L) and ck.shape == cv.shape == (L, T, C)
        # the embedding is exactly wte[tok] + wpe[pos], and it is the input of layer 0
        emb = m.transformer.wte.weight[tokens] + m.transformer.wpe.weight[:T]
        assert torch.equal(vals["embed"], emb) and torch.equal(vals["layer0.in"], emb)
        for i in range(L):
            assert torch.equal(vals[f"layer{i}.k"], ck[i]) and torch.equal(vals[f"layer{i}.v"], cv[i])
            if i + 1 < L:
                assert torch.equal(vals[f"layer{i}.out"], vals[f"layer{i + 1}.in"])
        assert vals["layer0.ffn_up"].shape == (T, 4 * C) and vals["logits"].shape == (T, m.config.vocab_size)
        # the full forward equals token-by-token decoding through HF's own KV cache
        past, steps = None, []
        with torch.no_grad():
            for t in range(T):
                o = m(input_ids=tokens[t:t + 1][None], past_key_values=past, use_cache=True, return_dict=True)
                past = o.past_key_values
                steps.append(o.logits[0, 0])
        err = _max_abs(torch.stack(steps), vals["logits"])
        assert err < 1e-5, f"{dt}: full forward vs KV-cached decoding: {err}"
        # layer_case at position t on the real input and cache rows < t reproduces the forward
        worst = 0.0
        for layer in range(L):
            for t in (0, 1, 7, T - 1):
                one = layer_case(m, layer, t, vals[f"layer{layer}.in"][t], ck[layer, :t], cv[layer, :t])
                for r, v in one.items():
                    worst = max(worst, _max_abs(v, vals[f"layer{layer}.{r}"][t]))
        assert worst < 1e-5, f"{dt}: layer_case vs forward: {worst}"
        print(f"selfcheck {dt}: KV-cached decoding vs full forward {err:.2e}, layer_case vs forward {worst:.2e}")

    # greedy: generate() vs the float64 teacher-forced logits
    prompt = tokens[:8]
    new, logits32 = greedy(model, prompt, 64)
    logits64 = teacher_forced_logits64(model, torch.cat([prompt, torch.tensor(new)]), len(prompt))
    assert logits64.shape == logits32.shape and logits64.dtype == torch.float64
    assert new == [int(i) for i in torch.argmax(logits64, dim=-1)], "float64 disagrees with float32 greedy"
    print(f"selfcheck greedy: 64 tokens, f32 vs f64 logits {_max_abs(logits32, logits64):.2e}, "
          f"min top-1/top-2 gap {float(top2_gaps(logits32).min()):.3g}, logits std {float(logits32.std()):.3g}")

    # the written files load back into the same model
    with tempfile.TemporaryDirectory() as tmp:
        paths = save_hf_dirs(model, out_dir or tmp)
        ref = forward_intermediates(model, tokens)[0]["logits"]
        for kind in ("hf", "hub"):
            m2 = GPT2LMHeadModel.from_pretrained(paths[kind], attn_implementation="eager").eval()
            for (n1, p1), (n2, p2) in zip(model.state_dict().items(), m2.state_dict().items()):
                assert n1 == n2 and torch.equal(p1, p2), f"{kind}: {n1}"
            with torch.no_grad():
                assert torch.equal(m2(input_ids=tokens[None]).logits[0], ref), kind
        with open(paths["llmc"], "rb") as f:
            data = f.read()
        head = np.frombuffer(data[:1024], dtype="<i4")
        body = torch.from_numpy(np.frombuffer(data[1024:], dtype="<f4").copy())
        Vp, tensors = _llmc_tensors(model)
        C = TINY_GPT2["n_embd"]
        assert list(head[:8]) == [LLMC_MAGIC, 3, 256, 50257, 2, 4, C, 50304] and not head[8:].any()
        assert body.numel() == sum(x.numel() for _, x in tensors)
        off = 0
        for name, x in tensors:
            assert torch.equal(body[off:off + x.numel()].view(x.shape), x), name
            off += x.numel()
        qkvw = body[50304 * C + 256 * C + 4 * C:][:3 * C * C].view(3 * C, C)
        assert torch.equal(qkvw, model.transformer.h[0].attn.c_attn.weight.t()), "qkvw is not [3C, C]"
        assert not body[50257 * C:50304 * C].any(), "padded vocab rows must be zero"
    print("selfcheck: all passed")


def main():
    import hashlib
    import tempfile

    t_start = time.perf_counter()
    _selfcheck()
    print(f"selfcheck took {time.perf_counter() - t_start:.2f} s\n")

    # what an exporter would call, timed
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        model = ref_common.timed("build", lambda: build_tiny_gpt2(torch.Generator().manual_seed(1234)), timings)
        paths = ref_common.timed("save three copies", lambda: save_hf_dirs(model, tmp), timings)
        m64 = ref_common.timed("float64 copy", lambda: to_float64(model), timings)
        tokens = torch.randint(0, 50257, (16,), generator=torch.Generator().manual_seed(5))
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
        total = sum(t for _, t in timings)
        for label, t in timings:
            print(f"  {label:28s} {t:6.3f} s")
        print(f"  {'total':28s} {total:6.3f} s")
        print(f"greedy: min top-1/top-2 gap {float(top2_gaps(logits32).min()):.3g}, "
              f"{len(set(new))} distinct tokens: {new[:16]} ...")
        for root, _, files in sorted(os.walk(tmp)):
            for f in sorted(files):
                p = os.path.join(root, f)
                with open(p, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()[:16]
                print(f"  {os.path.relpath(p, tmp):50s} {os.path.getsize(p):10d} bytes  sha256 {digest}")


if __name__ == "__main__":
    main()
