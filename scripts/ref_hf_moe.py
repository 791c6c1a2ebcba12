"""The mixture-of-experts references: transformers' own Qwen2MoeForCausalLM and MixtralForCausalLM
(eager attention) built from tiny configs with a fixed seed, their intermediates captured by
forward hooks on transformers' modules (ref_hf_llama.Recorder for the attention half, hooks on
the sparse MoE block for the rest), and a float64 truth: llama_ref.py's LLaMA block with its
feed-forward replaced by MoeRef below, every step in float64.

    /work/main/.venv/bin/python scripts/ref_hf_moe.py     # self-check

transformers 4.46.3's Qwen2MoeSparseMoeBlock / MixtralSparseMoeBlock, per token x [hidden]:
    router_logits = gate(x)                                    [n_experts]
    p = softmax(router_logits, dtype=float32)                  (float32 even in a float64 model)
    weights, experts = topk(p, k)                              largest first
    weights /= weights.sum()                                   (Mixtral always; Qwen2-MoE if norm_topk_prob)
    out = sum over experts e = 0..n-1 that were chosen: expert_e(x) * weight_e   (index_add_, by expert id)
    Qwen2-MoE: out += sigmoid(shared_expert_gate(x)) * shared_expert(x)
Each expert is a SwiGLU MLP: down(silu(gate(x)) * up(x)) (Mixtral names them w1, w3, w2).

The chosen experts and their weights are not outputs of any module: they are recomputed here from
the captured router logits with the block's own operations (F.softmax(dtype=torch.float),
torch.topk, the same division), which on the same input give the same bits; a forward hook on
every expert checks that each processed exactly as many tokens as the recomputed choice says.

Nothing runs at import time except setting HF_HUB_OFFLINE (nothing is ever downloaded).
"""
import copy
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM  # noqa: E402
from transformers.cache_utils import DynamicCache  # noqa: E402

import llama_ref  # noqa: E402
import ref_hf_llama  # noqa: E402

# Tiny models: 8 experts of width 32 on dim 64, top-2, 2 layers, 4 query heads on 2 kv heads.
# Qwen2-MoE adds a shared expert of width 64 and does not renormalise (its default); Mixtral always
# renormalises. A vocabulary of 384 keeps the files around 1 MB.
TINY_QWEN2MOE = dict(vocab_size=384, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                     shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
                     decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=64, rope_theta=10000.0,
                     rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False, hidden_act="silu",
                     bos_token_id=1, eos_token_id=2)
TINY_MIXTRAL = dict(vocab_size=384, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
                    max_position_embeddings=64, rope_theta=1e6, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    sliding_window=None, hidden_act="silu", bos_token_id=1, eos_token_id=2)

# The router's weights are N(0, (ROUTER_SCALE^2)/in): router logits of std ~2 on a normalised input,
# so that the top-2 differ from token to token and the k-th and (k+1)-th scores are rarely close
# (with N(0, 1/in) routing is still varied, but gaps are smaller). Other scales as ref_hf_llama's Qwen2.
ROUTER_SCALE = 2.0
NORM_STD = 0.1
QKV_BIAS_STD = 0.5


def family_of(model):
    return "qwen2moe" if isinstance(model, Qwen2MoeForCausalLM) else "mixtral"


def moe_block(layer):
    """The sparse MoE module of a decoder layer (Qwen2-MoE: mlp, Mixtral: block_sparse_moe)."""
    return layer.mlp if hasattr(layer, "mlp") else layer.block_sparse_moe


def norm_topk(model):
    c = model.config
    return bool(c.norm_topk_prob) if family_of(model) == "qwen2moe" else True


def roles(model):
    """The intermediates of one decoder layer in pipeline order, as the C++ side names them."""
    r = ["in", "attn_norm", "q", "k", "v", "heads", "attn_out", "h", "ffn_norm", "router_logits", "experts",
         "expert_weights"]
    if family_of(model) == "qwen2moe":
        r.append("shared_out")
    return r + ["ffn_out", "out"]


# The near-tie model: the tiny Mixtral with layer TIED_LAYER's router row of expert TIED_EXPERTS[1]
# replaced by expert TIED_EXPERTS[0]'s. Their scores are then exactly equal for every token, and
# torch.topk's order among equal values is unspecified (ours: the lower id first), so wherever
# the two straddle the top-k boundary or fill the top-k, the choice can differ from ours: every
# such token must be reported as a routing near-tie and the stages must still pass.
TIED_LAYER = 1
TIED_EXPERTS = (6, 7)


def build(family, gen: torch.Generator, tied=False):
    """The tiny Qwen2-MoE or Mixtral with every parameter drawn from gen (named_parameters order), in
    eval mode: norms 1 + 0.1 N, q/k/v biases (Qwen2-MoE) 0.5 N, every Linear N(0, 1/in), the routers
    ROUTER_SCALE times that, the embedding N(0, 1). tied: then the near-tie change (TIED_LAYER)."""
    if family == "qwen2moe":
        model = Qwen2MoeForCausalLM(Qwen2MoeConfig(**TINY_QWEN2MOE, attn_implementation="eager"))
    else:
        model = MixtralForCausalLM(MixtralConfig(**TINY_MIXTRAL, attn_implementation="eager"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name == "model.embed_tokens.weight":
                p.copy_(n)
            elif name.endswith("norm.weight"):
                p.copy_(1.0 + NORM_STD * n)
            elif name.endswith(".bias"):
                p.copy_(QKV_BIAS_STD * n)
            elif p.dim() == 2:
                router = name.endswith("mlp.gate.weight") or name.endswith("block_sparse_moe.gate.weight")
                p.copy_(n * ((ROUTER_SCALE if router else 1.0) * p.shape[1] ** -0.5))
            else:
                raise ValueError(f"unexpected parameter {name}")
        if tied:
            router = moe_block(model.model.layers[TIED_LAYER]).gate.weight
            router[TIED_EXPERTS[1]] = router[TIED_EXPERTS[0]]
    assert model.config._attn_implementation == "eager"
    return model.eval()


def routing(block, router_logits, dtype):
    """(experts [T, k] as float, weights [T, k]) from router logits [T, n_experts], with the block's
    own operations (Qwen2MoeSparseMoeBlock.forward / MixtralSparseMoeBlock.forward)."""
    w = F.softmax(router_logits, dim=1, dtype=torch.float)
    w, ids = torch.topk(w, block.top_k, dim=-1)
    if getattr(block, "norm_topk_prob", True):  # Mixtral's block has no flag: it always renormalises
        w /= w.sum(dim=-1, keepdim=True)
    return ids.to(dtype), w.to(dtype)


class _MoeHooks:
    """Hooks on one sparse MoE block: its router logits (gate), the shared expert and its gate, the
    output, and the number of rows each expert processed."""

    def __init__(self, block):
        self.block, self.handles, self.v = block, [], {}
        self.rows = [0] * len(block.experts)
        self._hook(block.gate, "router_logits")
        if hasattr(block, "shared_expert"):
            self._hook(block.shared_expert, "shared")
            self._hook(block.shared_expert_gate, "shared_gate")
        for e, expert in enumerate(block.experts):
            self.handles.append(expert.register_forward_hook(self._count(e)))

    def _hook(self, module, key):
        def hook(m, inp, out):
            assert key not in self.v, f"{key} called twice"
            self.v[key] = out.detach().clone()  # [T, ...]: the block flattened (batch, seq)
        self.handles.append(module.register_forward_hook(hook))

    def _count(self, e):
        def hook(m, inp, out):
            self.rows[e] += inp[0].shape[0]
        return hook

    def results(self, dtype):
        """role -> [T, ...]: router_logits, experts, expert_weights, shared_out (Qwen2-MoE)."""
        logits = self.v["router_logits"]
        ids, w = routing(self.block, logits, dtype)
        for e, n in enumerate(self.rows):  # transformers' own dispatch agrees with the recomputed choice
            assert n == int((ids == e).sum()), f"expert {e} processed {n} rows, the routing says {int((ids == e).sum())}"
        out = {"router_logits": logits, "experts": ids, "expert_weights": w}
        if "shared" in self.v:
            out["shared_out"] = F.sigmoid(self.v["shared_gate"]) * self.v["shared"]  # the block's own expression
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def forward_intermediates(model, tokens):
    """transformers' full-sequence forward on tokens [T]: role -> [T, ...] for every layer (named
    layer<i>.<role>, in pipeline order), final_norm, logits. The attention half is ref_hf_llama's
    Recorder (q, k after transformers' RoPE); the MoE half the block's hooks."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    dtype = next(model.parameters()).dtype
    rec = ref_hf_llama.Recorder()
    moe = []
    for i, layer in enumerate(model.model.layers):
        p = f"layer{i}."
        attn = layer.self_attn
        rec.inp(layer, p + "in")
        rec.out(layer.input_layernorm, p + "attn_norm")
        rec.handles.append(attn.register_forward_pre_hook(rec._enter(p)))
        rec.handles.append(attn.register_forward_hook(rec._leave))
        rec.out(attn.v_proj, p + "v")
        rec.inp(attn.o_proj, p + "heads")
        rec.out(attn.o_proj, p + "attn_out")
        rec.inp(layer.post_attention_layernorm, p + "h")
        rec.out(layer.post_attention_layernorm, p + "ffn_norm")
        rec.out(moe_block(layer), p + "ffn_out")  # the block returns (hidden [1, T, dim], router_logits)
        rec.out(layer, p + "out")
        moe.append(_MoeHooks(moe_block(layer)))
    rec.out(model.model.norm, "final_norm")
    rec.out(model.lm_head, "logits")
    try:
        with torch.no_grad(), ref_hf_llama.rope_capture(model, rec):
            out = model(input_ids=tokens[None], past_key_values=DynamicCache(), use_cache=True, return_dict=True)
    finally:
        rec.remove()
        for h in moe:
            h.remove()
    values = {}
    for i, h in enumerate(moe):
        extra = h.results(dtype)
        for r in roles(model):
            key = f"layer{i}.{r}"
            values[key] = extra[r] if r in extra else rec.one(key)
    values["final_norm"] = rec.one("final_norm")
    values["logits"] = rec.one("logits")
    assert torch.equal(values["logits"], out.logits[0])
    return values


def block_case(model, layer, x):
    """The sparse MoE block of `layer` alone on x [T, hidden] (T tokens at once, as inside the model):
    router_logits, experts, expert_weights, shared_out (Qwen2-MoE), out."""
    block = moe_block(model.model.layers[layer])
    dtype = next(model.parameters()).dtype
    h = _MoeHooks(block)
    try:
        with torch.no_grad():
            out, logits = block(x.to(dtype)[None])
    finally:
        h.remove()
    values = h.results(dtype)
    assert torch.equal(values["router_logits"], logits)
    values["out"] = out[0]
    return values


# ---- The float64 truth: llama_ref's block with MoeRef as its feed-forward ------------------------

class Expert(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), in the dtype of its weights."""

    def __init__(self, dim, width):
        super().__init__()
        self.w1 = nn.Linear(dim, width, bias=False)
        self.w2 = nn.Linear(width, dim, bias=False)
        self.w3 = nn.Linear(dim, width, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoeRef(nn.Module):
    """The sparse MoE feed-forward of one token x [dim], written from the formulas, every step in the
    weights' dtype (float64: the truth; transformers' block keeps its softmax in float32). Records
    each call's routing in self.last."""

    def __init__(self, dim, width, n_experts, k, renormalise, shared_width):
        super().__init__()
        self.k, self.renormalise = k, renormalise
        self.gate = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(dim, width) for _ in range(n_experts))
        self.shared = Expert(dim, shared_width) if shared_width else None
        self.shared_gate = nn.Linear(dim, 1, bias=False) if shared_width else None
        self.last = None

    def forward(self, x):
        logits = self.gate(x)
        p = F.softmax(logits, dim=-1)
        w, ids = torch.topk(p, self.k)
        if self.renormalise:
            w = w / w.sum()
        out = torch.zeros_like(x)
        for e in range(len(self.experts)):  # expert-id order, as transformers' loop
            for r in range(self.k):
                if int(ids[r]) == e:
                    out = out + self.experts[e](x) * w[r]
        self.last = {"router_logits": logits, "experts": ids.to(x.dtype), "expert_weights": w}
        if self.shared is not None:
            shared = torch.sigmoid(self.shared_gate(x)) * self.shared(x)
            self.last["shared_out"] = shared
            out = out + shared
        return out


def to_llama_ref(model):
    """A llama_ref.Llama (rotate-half RoPE, q/k/v biases for Qwen2-MoE) whose blocks' feed_forward is
    MoeRef, with the transformers model's weights; in the model's dtype, eval mode."""
    c = model.config
    fam = family_of(model)
    nh, nkv = c.num_attention_heads, c.num_key_value_heads
    width = c.moe_intermediate_size if fam == "qwen2moe" else c.intermediate_size
    n_experts = c.num_experts if fam == "qwen2moe" else c.num_local_experts
    shared = c.shared_expert_intermediate_size if fam == "qwen2moe" else 0
    cfg = llama_ref.Config(c.hidden_size, c.num_hidden_layers, nh, nkv, width, c.vocab_size, c.max_position_embeddings,
                           rope_theta=float(c.rope_theta), rope_style="rotate_half", norm_eps=float(c.rms_norm_eps),
                           tied_embeddings=bool(c.tie_word_embeddings), arch=c.model_type, qkv_bias=fam == "qwen2moe")
    with torch.random.fork_rng(devices=[]):  # the throwaway random init leaves the global RNG alone
        ref = llama_ref.Llama(cfg)
        for blk in ref.layers:
            blk.feed_forward = MoeRef(c.hidden_size, width, n_experts, c.num_experts_per_tok, norm_topk(model), shared)
    sd = model.state_dict()
    used = set()

    def take(name):
        used.add(name)
        return sd[name]

    with torch.no_grad():
        ref.tok_embeddings.weight.copy_(take("model.embed_tokens.weight"))
        ref.norm.weight.copy_(take("model.norm.weight"))
        if not cfg.tied_embeddings:
            ref.output.weight.copy_(take("lm_head.weight"))
        for i, blk in enumerate(ref.layers):
            p = f"model.layers.{i}."
            blk.attention_norm.weight.copy_(take(p + "input_layernorm.weight"))
            blk.ffn_norm.weight.copy_(take(p + "post_attention_layernorm.weight"))
            for ours, theirs in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
                lin = getattr(blk.attention, ours)
                lin.weight.copy_(take(f"{p}self_attn.{theirs}.weight"))
                if lin.bias is not None:
                    lin.bias.copy_(take(f"{p}self_attn.{theirs}.bias"))
            ff = blk.feed_forward
            m = p + ("mlp." if fam == "qwen2moe" else "block_sparse_moe.")
            ff.gate.weight.copy_(take(m + "gate.weight"))
            names = (("w1", "gate_proj"), ("w2", "down_proj"), ("w3", "up_proj")) if fam == "qwen2moe" else \
                (("w1", "w1"), ("w2", "w2"), ("w3", "w3"))
            for e, ex in enumerate(ff.experts):
                for ours, theirs in names:
                    getattr(ex, ours).weight.copy_(take(f"{m}experts.{e}.{theirs}.weight"))
            if ff.shared is not None:
                for ours, theirs in names:
                    getattr(ff.shared, ours).weight.copy_(take(f"{m}shared_expert.{theirs}.weight"))
                ff.shared_gate.weight.copy_(take(m + "shared_expert_gate.weight"))
    unused = set(sd) - used
    if unused:
        raise ValueError(f"to_llama_ref: parameters with no place: {sorted(unused)}")
    return ref.to(next(model.parameters()).dtype).eval()


def ref_forward(ref, tokens, dtype=torch.float64):
    """llama_ref + MoeRef token by token in dtype: role -> [T, ...] named as forward_intermediates'."""
    ref = copy.deepcopy(ref).to(dtype)
    hooks, vals = [], {}

    def put(key, t):
        vals.setdefault(key, []).append(t.detach().clone())

    def out_hook(key):
        return lambda m, inp, out: put(key, out)

    def in_hook(key):
        return lambda m, inp: put(key, inp[0])

    for i, blk in enumerate(ref.layers):
        p = f"layer{i}."
        hooks.append(blk.register_forward_pre_hook(in_hook(p + "in")))
        for role, path, where in (("attn_norm", "attention_norm", "out"), ("q", "attention.q_rope", "out"),
                                  ("k", "attention.k_rope", "out"), ("v", "attention.wv", "out"),
                                  ("heads", "attention.wo", "in"), ("attn_out", "attention", "out"),
                                  ("h", "resid_attn", "out"), ("ffn_norm", "ffn_norm", "out"),
                                  ("ffn_out", "feed_forward", "out")):
            mod = blk.get_submodule(path)
            hooks.append(mod.register_forward_hook(out_hook(p + role)) if where == "out"
                         else mod.register_forward_pre_hook(in_hook(p + role)))

        def moe_hook(m, inp, out, p=p):
            for k, v in m.last.items():
                put(p + k, v)
        hooks.append(blk.feed_forward.register_forward_hook(moe_hook))
        hooks.append(blk.register_forward_hook(out_hook(p + "out")))
    hooks.append(ref.norm.register_forward_hook(out_hook("final_norm")))
    hooks.append(ref.output.register_forward_hook(out_hook("logits")))
    cache = ref.new_cache(dtype)
    with torch.no_grad():
        for pos, tok in enumerate(tokens):
            ref(int(tok), pos, cache)
    for h in hooks:
        h.remove()
    return {k: torch.stack(v) for k, v in vals.items()}


def ref_block(ref, layer, x, dtype=torch.float64):
    """MoeRef of `layer` on each row of x [T, hidden] in dtype: role -> [T, ...] as block_case's."""
    ff = copy.deepcopy(ref.layers[layer].feed_forward).to(dtype)
    rows = {}
    with torch.no_grad():
        for t in range(x.shape[0]):
            out = ff(x[t].to(dtype))
            for k, v in list(ff.last.items()) + [("out", out)]:
                rows.setdefault(k, []).append(v)
    return {k: torch.stack(v) for k, v in rows.items()}


def cross_check(model, ref, tokens):
    """transformers' float32 forward vs llama_ref + MoeRef in float32 on tokens: the same experts at
    every token and layer, every role within 1e-5 relative to max(1, max |role|); returns (worst role,
    its relative difference, max |logits difference|). SystemExit otherwise."""
    hf = forward_intermediates(model, tokens)
    ours = ref_forward(ref, tokens, torch.float32)
    worst, rel = None, 0.0
    for key, v in hf.items():
        if key.endswith(".experts"):
            if not torch.equal(v, ours[key]):
                raise SystemExit(f"ref_hf_moe.cross_check: {key} differs: transformers {v.tolist()}, llama_ref+MoeRef "
                                 f"{ours[key].tolist()}")
            continue
        r = float((v.double() - ours[key].double()).abs().max()) / max(1.0, float(v.abs().max()))
        if r > rel:
            worst, rel = key, r
    if rel > 1e-5:
        raise SystemExit(f"ref_hf_moe.cross_check: {worst} differs by {rel:.3e} (relative) between transformers and "
                         f"llama_ref+MoeRef in float32")
    return worst, rel, float((hf["logits"] - ours["logits"]).abs().max())


def routing_gaps(router_logits, k):
    """Per token, the reference's k-th minus (k+1)-th router logit (a small gap could flip)."""
    top = torch.topk(router_logits, k + 1, dim=-1).values
    return top[:, k - 1] - top[:, k]


def _selfcheck():
    torch.set_num_threads(1)
    for fam in ("qwen2moe", "mixtral"):
        model = build(fam, torch.Generator().manual_seed(1))
        tokens = torch.randint(3, model.config.vocab_size, (12,), generator=torch.Generator().manual_seed(2))
        ref = to_llama_ref(model)
        worst, rel, dl = cross_check(model, ref, tokens)
        hf = forward_intermediates(model, tokens)
        k = model.config.num_experts_per_tok
        for i in range(model.config.num_hidden_layers):
            ids = hf[f"layer{i}.experts"]
            gaps = routing_gaps(hf[f"layer{i}.router_logits"], k)
            print(f"{fam} layer{i}: {len(set(map(tuple, ids.int().tolist())))} distinct expert pairs over {len(tokens)} "
                  f"tokens, min k/k+1 gap {float(gaps.min()):.3g}")
        x = hf["layer1.ffn_norm"][:5]
        blk = block_case(model, 1, x)
        assert torch.equal(blk["experts"], hf["layer1.experts"][:5])
        r64 = ref_block(ref, 1, x)
        print(f"{fam}: cross-check worst {worst} {rel:.2e}, logits {dl:.2e}; block out vs float64 "
              f"{float((blk['out'].double() - r64['out']).abs().max()):.2e}")


if __name__ == "__main__":
    _selfcheck()
