"""The PyTorch reference LLaMA: written from the paper's formulas, one token at a time with an
explicit KV cache, exactly the computation the C++ engine does (so the two can be compared
intermediate by intermediate). The llama family's reference (families/llama.py: the tiny LLaMA,
llama2.c checkpoints such as stories260K), cross-checked against transformers' LlamaForCausalLM;
and, with Config qkv_bias=True and rope_style "rotate_half" (Qwen2 is LLaMA plus q/k/v biases), the
float64 truth of transformers' decoders (hf_decoder.to_llama_ref; the MoE models with their own
feed-forward): every step runs in the dtype the model is given, RoPE angles included.

Intermediates are captured with forward hooks on named submodules (HOOKS); the nn.Identity modules
(q_rope, k_rope, resid_attn) exist only to give hooks a place to look at q and k after RoPE and
at the first residual.
"""
import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab_ref import hooks


def rope_angles(pos, head_dim, theta, dtype, inv_freq=None):
    """Angles pos * theta^(-2i/head_dim), i = 0 .. head_dim/2 - 1 (Su et al. 2021), or pos * inv_freq
    (float64 frequencies of a scaled RoPE: rope_frequencies).
    float32: freq rounded to float32, then pos * freq in float32, as LLaMA's precompute does;
    float64: the exact angle."""
    freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)) if inv_freq is None else inv_freq
    return torch.tensor(float(pos), dtype=dtype) * freq.to(dtype)


def rope_frequencies(head_dim, theta, scaling, context, seq_len=None):
    """The rotation frequencies of a (scaled) RoPE in float64, from the formulas (written here from
    the papers and transformers 4.46.3's modeling_rope_utils.py, and checked against its
    ROPE_INIT_FUNCTIONS by selfcheck and on every export): (inv_freq [head_dim/2] float64, attention
    factor). scaling: config.json's rope_scaling dict (None: plain RoPE); context:
    max_position_embeddings (what 4.46.3's dynamic and yarn formulas take as the original context);
    seq_len: dynamic's sequence length.
      linear   inv_freq / factor                                 (position interpolation, Chen et al. 2023)
      dynamic  base theta * (factor*L/L0 - (factor-1))^(d/(d-2)) for L > L0   (NTK-aware, bloc97/emozilla)
      yarn     a ramp between kept and /factor frequencies, cos and sin times 0.1 ln(factor) + 1 (Peng et al. 2023)
      llama3   wavelengths > L0/low kept / factor, < L0/high kept, a smooth blend between (Meta's Llama 3.1)"""
    d = head_dim
    kind = None if scaling is None else scaling.get("rope_type", scaling.get("type"))
    base = float(theta)
    if kind == "dynamic" and seq_len is not None and seq_len > context:
        factor = float(scaling["factor"])
        base = base * ((factor * seq_len / context) - (factor - 1)) ** (d / (d - 2))
    inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    if kind in (None, "default", "dynamic"):
        return inv, 1.0
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv / factor, 1.0
    if kind == "llama3":
        old = float(scaling["original_max_position_embeddings"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv / factor + smooth * inv
        return torch.where(wavelen > old / low, inv / factor, torch.where(wavelen < old / high, inv, blended)), 1.0
    if kind == "yarn":
        beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1
        attention_factor = scaling.get("attention_factor")
        if attention_factor is None:
            attention_factor = 0.1 * math.log(factor) + 1.0

        def correction_dim(rotations):  # the pair making `rotations` turns over the original context
            return d * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(theta))
        low = max(math.floor(correction_dim(beta_fast)), 0)
        high = min(math.ceil(correction_dim(beta_slow)), d - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(d // 2, dtype=torch.float64) - low) / (high - low), 0, 1)
        return inv / factor * ramp + inv * (1 - ramp), float(attention_factor)
    raise SystemExit(f"lmlab_ref: rope_scaling {scaling!r}: llama_ref computes linear, dynamic, yarn and llama3")


def apply_rope(x, pos, head_dim, theta, style, inv_freq=None, attention_factor=1.0):
    """x: [..., n_heads * head_dim]. style 'adjacent': pairs (x[2i], x[2i+1]) (Meta, llama2.c);
    'rotate_half': pairs (x[i], x[i + head_dim/2]) (Hugging Face, Qwen2). inv_freq, attention_factor:
    a scaled RoPE's (rope_frequencies); cos and sin are multiplied by the factor (yarn)."""
    ang = rope_angles(pos, head_dim, theta, x.dtype, inv_freq)
    cos, sin = torch.cos(ang), torch.sin(ang)
    if attention_factor != 1.0:
        cos, sin = cos * attention_factor, sin * attention_factor
    h = x.reshape(*x.shape[:-1], -1, head_dim)
    if style == "adjacent":
        a, b = h[..., 0::2], h[..., 1::2]
        out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    else:
        half = head_dim // 2
        a, b = h[..., :half], h[..., half:]
        out = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.reshape(x.shape)



class Config:
    def __init__(self, dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, max_seq_len,
                 rope_theta=10000.0, rope_style="adjacent", norm_eps=1e-5, tied_embeddings=False, arch="llama",
                 qkv_bias=False, rope_scaling=None, rope_context=None, sliding_window=0, window_from_layer=0):
        assert dim % n_heads == 0 and n_heads % n_kv_heads == 0
        self.arch, self.dim, self.n_layers, self.n_heads, self.n_kv_heads = arch, dim, n_layers, n_heads, n_kv_heads
        self.ffn_dim, self.vocab_size, self.max_seq_len = ffn_dim, vocab_size, max_seq_len
        self.rope_theta, self.rope_style, self.norm_eps, self.tied_embeddings = rope_theta, rope_style, norm_eps, tied_embeddings
        self.qkv_bias = qkv_bias  # Qwen2: wq, wk, wv have biases (wo and the FFN never do)
        # config.json's rope_scaling (rope_frequencies), and max_position_embeddings, the context its
        # dynamic and yarn formulas start from (max_seq_len is only the KV cache's size here)
        self.rope_scaling, self.rope_context = rope_scaling, rope_context or max_seq_len
        # a query at position p in a layer >= window_from_layer reads p - sliding_window + 1 .. p (0: all)
        self.sliding_window, self.window_from_layer = sliding_window, window_from_layer
        self.head_dim = dim // n_heads
        self.kv_dim = self.head_dim * n_kv_heads

    def window(self, layer):
        return self.sliding_window if self.sliding_window and layer >= self.window_from_layer else 0

    def rope(self, seq_len):
        """(inv_freq float64, attention factor) for a row whose sequence length (dynamic) is seq_len."""
        if self.rope_scaling is None:
            return None, 1.0
        return rope_frequencies(self.head_dim, self.rope_theta, self.rope_scaling, self.rope_context, seq_len)

    def attrs(self):
        """The config as written to the model file's root attributes (qkv_bias only when set)."""
        attrs = {"arch": self.arch, "dim": self.dim, "n_layers": self.n_layers, "n_heads": self.n_heads,
                 "n_kv_heads": self.n_kv_heads, "ffn_dim": self.ffn_dim, "vocab_size": self.vocab_size,
                 "max_seq_len": self.max_seq_len, "rope_theta": float(self.rope_theta), "rope_style": self.rope_style,
                 "norm_eps": float(self.norm_eps), "tied_embeddings": int(self.tied_embeddings)}
        if self.qkv_bias:
            attrs["qkv_bias"] = 1
        return attrs


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Zhang & Sennrich 2019: x / sqrt(mean(x^2) + eps) * weight
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, cfg, layer=0):
        super().__init__()
        self.cfg = cfg
        self.window = cfg.window(layer)
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.dim, cfg.kv_dim, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.dim, cfg.kv_dim, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.q_rope = nn.Identity()
        self.k_rope = nn.Identity()

    def forward(self, x, pos, cache_k, cache_v, seq_len=None):
        """x: [dim] (one token), pos: its position; cache_k/v: [max_seq_len, kv_dim], rows < pos filled.
        seq_len: the sequence length a dynamic RoPE rotates this row for (transformers' generate():
        the prompt's length for a prompt row, pos + 1 after it). Writes row pos of the cache and
        returns the attention output [dim]."""
        c = self.cfg
        inv_freq, factor = c.rope(max(seq_len or 0, pos + 1))
        q = self.q_rope(apply_rope(self.wq(x), pos, c.head_dim, c.rope_theta, c.rope_style, inv_freq, factor))
        k = self.k_rope(apply_rope(self.wk(x), pos, c.head_dim, c.rope_theta, c.rope_style, inv_freq, factor))
        v = self.wv(x)
        cache_k[pos] = k
        cache_v[pos] = v
        # a sliding window: the last `window` positions only (transformers' mask: keys > pos - window)
        lo = max(0, pos + 1 - self.window) if self.window else 0
        keys = cache_k[lo: pos + 1].view(pos + 1 - lo, c.n_kv_heads, c.head_dim)
        values = cache_v[lo: pos + 1].view(pos + 1 - lo, c.n_kv_heads, c.head_dim)
        group = c.n_heads // c.n_kv_heads  # query head h reads kv head h // group
        out = torch.empty(c.n_heads, c.head_dim, dtype=x.dtype)
        for h in range(c.n_heads):
            kh, vh = keys[:, h // group, :], values[:, h // group, :]
            qh = q.view(c.n_heads, c.head_dim)[h]
            probs = F.softmax(torch.matmul(kh, qh) / math.sqrt(c.head_dim), dim=-1)
            out[h] = torch.matmul(probs, vh)
        return self.wo(out.reshape(-1))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # SwiGLU (Shazeer 2020)


class Block(nn.Module):
    def __init__(self, cfg, layer=0):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, layer)
        self.resid_attn = nn.Identity()
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, pos, cache_k, cache_v, seq_len=None):
        h = self.resid_attn(x + self.attention(self.attention_norm(x), pos, cache_k, cache_v, seq_len))
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def new_cache(self, dtype):
        c = self.cfg
        return (torch.zeros(c.n_layers, c.max_seq_len, c.kv_dim, dtype=dtype),
                torch.zeros(c.n_layers, c.max_seq_len, c.kv_dim, dtype=dtype))

    def forward(self, token, pos, cache, seq_len=None):
        x = self.tok_embeddings.weight[token]
        for i, layer in enumerate(self.layers):
            x = layer(x, pos, cache[0][i], cache[1][i], seq_len)
        return self.output(self.norm(x))


# Where each intermediate of a Block is seen: name -> (submodule path inside the block, "out" for
# its output or "in" for its input; "" is the block itself). The names asked for, and their order,
# come from the family's row of `lmlab list --json` (the C++ returns the same names in the same
# order, so the first mismatch in that order is the first divergence).
HOOKS = {"in": ("", "in"), "attn_norm": ("attention_norm", "out"), "q": ("attention.q_rope", "out"),
         "k": ("attention.k_rope", "out"), "v": ("attention.wv", "out"), "heads": ("attention.wo", "in"),
         "attn_out": ("attention", "out"), "h": ("resid_attn", "out"), "ffn_norm": ("ffn_norm", "out"),
         "ffn_gate": ("feed_forward.w1", "out"), "ffn_up": ("feed_forward.w3", "out"),
         "ffn_act": ("feed_forward.w2", "in"), "ffn_out": ("feed_forward", "out"), "out": ("", "out")}


def _recorder(model, names, where, layers):
    rec = hooks.Recorder()
    for i in layers:
        hooks.unplaced(rec.place(model.layers[i], f"layer{i}.", names, where), "llama_ref")
    return rec


def run_tokens(model, tokens, dtype, names=(), where=HOOKS, prompt_len=None):
    """Runs tokens through the model one at a time from position 0 in dtype (the model is moved to
    it). Returns (values, cache): values holds layer<i>.<name> [n_tokens, ...] for every layer and
    each of names in order, then final_norm and logits; cache is (k, v) [n_layers, max_seq_len, kv_dim].
    where: the hook table (HOOKS; a block with another feed-forward brings its own). prompt_len:
    how many of the tokens were the prompt (dynamic RoPE rotates those rows for it, each later one
    for pos + 1, as generate() does); default all of them (a full-sequence forward)."""
    prompt_len = len(tokens) if prompt_len is None else prompt_len
    model = model.to(dtype)
    rec = _recorder(model, names, where, range(len(model.layers)))
    rec.out(model.norm, "final_norm")
    rec.out(model.output, "logits")
    cache = model.new_cache(dtype)
    try:
        with torch.no_grad():
            for pos, tok in enumerate(tokens):
                model(int(tok), pos, cache, prompt_len)
    finally:
        rec.remove()
    keys = [f"layer{i}.{n}" for i in range(len(model.layers)) for n in names] + ["final_norm", "logits"]
    return {k: rec.stacked(k) for k in keys}, cache


def forward(model, tokens, names, where=HOOKS):
    """run_tokens in the model's dtype: (values, {"cache_k", "cache_v": [n_layers, T, kv_dim]})."""
    values, cache = run_tokens(model, tokens, next(model.parameters()).dtype, names, where)
    n = len(tokens)
    return values, {"cache_k": cache[0][:, :n], "cache_v": cache[1][:, :n]}


def layer_case(model, layer, pos, x, cache_k, cache_v, names, part="block", where=HOOKS):
    """Block `layer` (part "block"), or only its attention (part "attention"), on one token x [dim] at
    position pos after a cache whose rows < pos are cache_k/cache_v [pos, kv_dim], in the model's
    dtype. Returns {name: value} for names (intermediates of that part), in order."""
    c = model.cfg
    dtype = next(model.parameters()).dtype
    ck = torch.zeros(c.max_seq_len, c.kv_dim, dtype=dtype)
    cv = torch.zeros(c.max_seq_len, c.kv_dim, dtype=dtype)
    ck[:pos], cv[:pos] = cache_k.to(dtype), cache_v.to(dtype)
    blk = model.layers[layer]
    x = x.to(dtype)
    rec = _recorder(model, names, where, [layer])
    try:
        with torch.no_grad():
            (blk.attention if part == "attention" else blk)(x, pos, ck, cv)
    finally:
        rec.remove()
    return {n: rec.values[f"layer{layer}.{n}"][-1] for n in names}


def greedy(model, prompt, n_new, dtype=torch.float32):
    """Greedy generation: returns (new tokens, logits [n_new, vocab] that chose each of them).
    Step i's logits are those after the prompt and the first i new tokens."""
    model = model.to(dtype)
    cache = model.new_cache(dtype)
    tokens, logits_seen = [], []
    with torch.no_grad():
        logits = None
        for pos, tok in enumerate(prompt):
            logits = model(int(tok), pos, cache, len(prompt))
        for i in range(n_new):
            nxt = int(torch.argmax(logits))  # first maximum wins
            tokens.append(nxt)
            logits_seen.append(logits.clone())
            if i + 1 < n_new:
                logits = model(nxt, len(prompt) + i, cache, len(prompt))
    return tokens, torch.stack(logits_seen)


def load_llama2c(path):
    """A llama2.c checkpoint (layout in ../shared/models/stories260K/README.md) as a Llama."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    cfg = Config(dim, n_layers, n_heads, n_kv_heads, hidden, vocab, seq_len, tied_embeddings=shared)
    model = Llama(cfg)
    body = torch.frombuffer(bytearray(data[28:]), dtype=torch.float32)
    off = 0

    def take(*shape):
        nonlocal off
        n = math.prod(shape)
        t = body[off: off + n].view(*shape).clone()
        off += n
        return t

    hd, kv = cfg.head_dim, cfg.kv_dim
    with torch.no_grad():
        model.tok_embeddings.weight.copy_(take(vocab, dim))
        for name, shape in [("attention_norm.weight", (dim,)), ("attention.wq.weight", (dim, dim)),
                            ("attention.wk.weight", (kv, dim)), ("attention.wv.weight", (kv, dim)),
                            ("attention.wo.weight", (dim, dim)), ("ffn_norm.weight", (dim,)),
                            ("feed_forward.w1.weight", (hidden, dim)), ("feed_forward.w2.weight", (dim, hidden)),
                            ("feed_forward.w3.weight", (hidden, dim))]:
            w = take(n_layers, *shape)
            for i in range(n_layers):
                model.layers[i].get_parameter(name).copy_(w[i])
        model.norm.weight.copy_(take(dim))
        take(seq_len * hd // 2)  # freq_cis_real (unused: RoPE is recomputed)
        take(seq_len * hd // 2)  # freq_cis_imag
        if not shared:
            model.output.weight.copy_(take(vocab, dim))
    if off != body.numel():
        raise ValueError(f"{path}: {body.numel() - off} floats left over after the weights; not a llama2.c checkpoint?")
    return model
