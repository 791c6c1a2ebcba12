"""The references checked against the ones we did not write, and against themselves: ctest
refs.selfcheck runs

    cd scripts && ../.venv/bin/python -m lmlab_ref.selfcheck [--lmlab build/default/lmlab]

and fails on the first disagreement (AssertionError or SystemExit, naming it). It checks:
  - llama: our llama_ref.py against transformers' LlamaForCausalLM on the same weights (the
    Meta -> HF q/k permutation), for the tiny LLaMA and stories260K (when ../shared has it);
  - qwen2: llama_ref.py (the float64 truth) against transformers' Qwen2ForCausalLM, in float32 and
    float64; transformers' full forward against its own KV-cached decoding; the single-layer case
    against the forward; greedy generate() against the float64 logits; save_pretrained round trips;
  - gpt2: the same for GPT2LMHeadModel, and the llm.c file layout;
  - qwen2moe, mixtral: llama_ref + MoeRef against transformers (the same experts everywhere), the
    block case against the forward;
  - q8: q8.py's quantizer with torch.round against llama2.c export.py's quantize_q80 (copied);
  - tokenizers: tiktoken against HF tokenizers on GPT-2's vocabulary (when ../shared has it);
  - ggml: ggml_quants.py (our port of ggml's block formats) against the gguf package: its
    quantizers (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and every dequantizer bit for bit, the
    round trip dequantize(quantize(x)) within each type's step, the vectorised Q6_K quantizer against
    the per-block one, the fast path within its bound;
  - gguf: transformers 4.46's GGUF loading, with its two known bugs shown (gguf_ref.check).
  - onnx: conformance.py's torch Attention against ONNX 1.18's expected outputs (every case), and the
    two known bugs of ONNX 1.18's Attention reference shown by its own evaluator.
  - long context: our RoPE scaling formulas against transformers' rope init functions, and the two
    transformers behaviours the references work around (Qwen2's eager sliding window on every
    layer, dynamic RoPE's state between calls), each shown.
The intermediates are the families' rows of `lmlab list --json`.
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM
from transformers.cache_utils import DynamicCache

from lmlab_ref import bpe, common, conformance, hf_decoder, hf_moe, lmlab, llama_ref, q8, tokenizers
from lmlab_ref.common import max_abs, top2_gaps
from lmlab_ref.families import gpt2, llama, mixtral, qwen2, qwen2moe

SEED = 20261123


def no_trivial_parameters(model):
    for name, p in model.named_parameters():  # (randn itself gives an exact 0 about once in 1e7)
        assert float(((p == 0) | (p == 1)).double().mean()) < 1e-5, f"{name} has trivial 0/1 entries"


def kv_cached_logits(m, tokens, past):
    """transformers' model token by token through its own KV cache: the logits [T, V]."""
    steps = []
    with torch.no_grad():
        for t in range(len(tokens)):
            o = m(input_ids=torch.as_tensor(tokens)[t:t + 1][None], past_key_values=past, use_cache=True,
                  return_dict=True)
            past = o.past_key_values
            steps.append(o.logits[0, 0])
    return torch.stack(steps)


def layer_cases_vs_forward(layer_case, vals, ck, cv, names, n_layers, T):
    """Worst |layer_case - forward| over both layers at positions 0, 1, 7, T-1 (the real input and
    cache rows < t)."""
    block = [n for n in names if n != "in"]
    worst = 0.0
    for layer in range(n_layers):
        for t in (0, 1, 7, T - 1):
            one = layer_case(layer, t, vals[f"layer{layer}.in"][t], ck[layer, :t], cv[layer, :t], block)
            assert list(one) == block
            for r, v in one.items():
                worst = max(worst, max_abs(v, vals[f"layer{layer}.{r}"][t]))
    return worst


def check_decoder(model, tokens, names, label):
    """transformers' LLaMA-style decoder (hf_decoder) on itself, in float32 and float64: shapes, q
    and k after RoPE (the identity at position 0), the cache, the full forward against KV-cached
    decoding, the single-layer case against the forward."""
    where = {**hf_decoder.HOOKS, "q_proj": ("self_attn.q_proj", "out"), "k_proj": ("self_attn.k_proj", "out")}
    for m in (model, common.to_float64(model)):
        dt = next(m.parameters()).dtype
        vals, ck, cv = hf_decoder.forward_intermediates(m, tokens, names + ["q_proj", "k_proj"], where)
        nh, nkv, hd = hf_decoder.dims(m.config)
        T, L = len(tokens), m.config.num_hidden_layers
        assert ck.shape == cv.shape == (L, T, nkv * hd) and all(v.dtype == dt for v in vals.values())
        assert torch.equal(vals["layer0.in"], m.model.embed_tokens.weight[torch.as_tensor(tokens)])
        for i in range(L):
            p = f"layer{i}."
            assert vals[p + "q"].shape == (T, nh * hd) and vals[p + "k"].shape == (T, nkv * hd)
            assert torch.equal(vals[p + "k"], ck[i]) and torch.equal(vals[p + "v"], cv[i])
            for r in ("q", "k"):  # RoPE is the identity at position 0; elsewhere it is not
                assert torch.equal(vals[f"{p}{r}_proj"][0], vals[p + r][0]), f"{p}{r}: RoPE at 0 is not the identity"
                assert max_abs(vals[f"{p}{r}_proj"][1:], vals[p + r][1:]) > 1e-3
            assert torch.equal(vals[p + "ffn_act"], F.silu(vals[p + "ffn_gate"]) * vals[p + "ffn_up"])
            if i + 1 < L:
                assert torch.equal(vals[p + "out"], vals[f"layer{i + 1}.in"])
        err = max_abs(kv_cached_logits(m, tokens, DynamicCache()), vals["logits"])
        scale = max(1.0, float(vals["logits"].abs().max()))
        assert err < 1e-5 * scale, f"{label} {dt}: full forward vs KV-cached decoding: {err} (max |logits| {scale})"
        worst = layer_cases_vs_forward(lambda *case: hf_decoder.layer_case(m, *case), vals, ck, cv, names, L, T)
        assert worst < 1e-5, f"{label} {dt}: layer_case vs forward: {worst}"
        print(f"  {label} {dt}: KV-cached decoding vs full forward {err:.2e} (max |logits| {scale:.3g}), "
              f"layer_case vs forward {worst:.2e}")


def check_llama(table, shared_dir):
    """llama_ref against transformers' LlamaForCausalLM (Meta -> HF conversion), tiny and stories260K."""
    names = table.intermediates(llama.NAME)
    tiny = llama.build_tiny_llama()
    models = [("tiny-llama", tiny, common.default_prompt(tiny.cfg.vocab_size, 16, "model.tiny-llama"))]
    stories = os.path.join(shared_dir, common.STORIES_MODEL)
    if os.path.exists(stories):
        models.append(("stories260K", llama_ref.load_llama2c(stories).eval(),
                       torch.tensor([1, 403, 407, 261, 378] + list(range(300, 311)))))  # "Once upon a time" + ids
    else:
        print(f"  stories260K skipped: {stories} not found")
    for label, ref_model, toks in models:
        hf = llama.llama_to_hf(ref_model)
        check_decoder(hf, toks, names, label)
        details = {}
        err = llama.cross_check_llama(ref_model, hf, toks, names, details=details)
        err64 = llama.cross_check_llama(ref_model, common.to_float64(hf), toks, names)

        def worst(role):
            return max(v for k, v in details.items() if k.endswith("." + role))
        assert worst("q_unpermuted") > 1e-2, "q as-is should differ: HF's heads are the permuted ones"
        print(f"  {label} vs LlamaForCausalLM: logits f32 {err:.2e} (f64 {err64:.2e}); q permuted {worst('q'):.2e} / "
              f"as-is {worst('q_unpermuted'):.2e}, k permuted {worst('k'):.2e}, cache_k {worst('cache_k'):.2e}")
        with tempfile.TemporaryDirectory() as tmp:
            hf_decoder.save_hf_dir(hf, tmp)
            m2 = LlamaForCausalLM.from_pretrained(tmp, attn_implementation="eager").eval()
            with torch.no_grad():
                assert torch.equal(m2(input_ids=toks[None]).logits, hf(input_ids=toks[None]).logits)


def short_cycle(tokens, max_period=3, min_tail=12):
    """The period (1..max_period) with which the last min_tail tokens repeat, or 0."""
    tail = tokens[-min_tail:]
    for p in range(1, max_period + 1):
        if all(tail[i] == tail[i - p] for i in range(p, len(tail))):
            return p
    return 0


def check_qwen2(table):
    """transformers' Qwen2ForCausalLM on itself and against llama_ref (its float64 truth)."""
    names = table.intermediates(qwen2.NAME)
    model = qwen2.build_tiny_qwen2(torch.Generator().manual_seed(SEED))
    no_trivial_parameters(model)
    tokens = torch.randint(0, bpe.QWEN_VOCAB, (16,), generator=torch.Generator().manual_seed(SEED + 1))
    tokens[5] = qwen2.QWEN2_ENDOFTEXT  # a special id inside the sequence is a token like any other
    check_decoder(model, tokens, names, "qwen2")
    ref = hf_decoder.DecoderRef(qwen2.NAME, model)
    print(f"  qwen2 float32: {ref.make_truth(tokens, names)}")
    err64, role64, rel64 = hf_decoder.cross_check(common.to_float64(model), ref.truth, tokens, names)
    print(f"  qwen2 float64 transformers vs llama_ref: logits {err64:.2e}, worst {role64} {rel64:.2e} (its float32 steps)")

    prompt = tokens[:8]
    new, logits32 = ref.greedy(prompt, 64)
    logits64 = ref.truth_logits(prompt, new)
    assert logits64.shape == logits32.shape and logits64.dtype == torch.float64
    assert new == [int(i) for i in torch.argmax(logits64, dim=-1)], "float64 disagrees with float32 greedy"
    gap = float(top2_gaps(logits32).min())
    assert gap > 1e-4, f"greedy has a near-tie: min top-1/top-2 gap {gap}"
    assert not short_cycle(new), f"greedy is stuck in a cycle: {new}"
    print(f"  qwen2 greedy: 64 tokens, f32 vs f64 logits {max_abs(logits32, logits64):.2e}, min top-1/top-2 gap "
          f"{gap:.3g}, {len(set(new))} distinct")

    with tempfile.TemporaryDirectory() as tmp:
        logits = hf_decoder.forward_intermediates(model, tokens, [])[0]["logits"]
        for sub, shard in (("one", None), ("sharded", "20MB")):
            paths = hf_decoder.save_hf_dir(model, os.path.join(tmp, sub), max_shard_size=shard)
            n_st = sum(p.endswith(".safetensors") for p in paths)
            assert (n_st == 1) if shard is None else (n_st > 1 and any(p.endswith(".index.json") for p in paths))
            keys = hf_decoder.safetensors_keys(paths)
            assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
            assert "model.layers.0.self_attn.q_proj.bias" in keys and "model.layers.0.self_attn.o_proj.bias" not in keys
            m2 = Qwen2ForCausalLM.from_pretrained(os.path.join(tmp, sub), attn_implementation="eager").eval()
            with torch.no_grad():
                assert torch.equal(m2(input_ids=tokens[None]).logits[0], logits), sub


def check_gpt2(table):
    """transformers' GPT2LMHeadModel on itself, its float64 truth, and the three file layouts."""
    names = table.intermediates(gpt2.NAME)
    model = gpt2.build_tiny_gpt2(torch.Generator().manual_seed(SEED))
    no_trivial_parameters(model)
    tokens = torch.randint(0, model.config.vocab_size, (16,), generator=torch.Generator().manual_seed(SEED + 1))
    tokens[5] = gpt2.EOT  # the end-of-text id inside the sequence is a token like any other
    for m in (model, common.to_float64(model)):
        dt = next(m.parameters()).dtype
        vals, ck, cv = gpt2.forward_intermediates(m, tokens, names)
        T, C, L = len(tokens), m.config.n_embd, m.config.n_layer
        assert ck.shape == cv.shape == (L, T, C) and all(v.dtype == dt for v in vals.values())
        # the embedding is exactly wte[tok] + wpe[pos], the input of layer 0
        assert torch.equal(vals["layer0.in"], m.transformer.wte.weight[tokens] + m.transformer.wpe.weight[:T])
        for i in range(L):
            assert torch.equal(vals[f"layer{i}.k"], ck[i]) and torch.equal(vals[f"layer{i}.v"], cv[i])
            if i + 1 < L:
                assert torch.equal(vals[f"layer{i}.out"], vals[f"layer{i + 1}.in"])
        assert vals["layer0.ffn_up"].shape == (T, 4 * C) and vals["logits"].shape == (T, m.config.vocab_size)
        err = max_abs(kv_cached_logits(m, tokens, None), vals["logits"])
        assert err < 1e-5, f"{dt}: full forward vs KV-cached decoding: {err}"
        worst = layer_cases_vs_forward(lambda *case: gpt2.layer_case(m, *case), vals, ck, cv, names, L, T)
        assert worst < 1e-5, f"{dt}: layer_case vs forward: {worst}"
        print(f"  gpt2 {dt}: KV-cached decoding vs full forward {err:.2e}, layer_case vs forward {worst:.2e}")

    ref = gpt2.Gpt2Ref(model)
    prompt = tokens[:8]
    new, logits32 = ref.greedy(prompt, 64)
    logits64 = ref.truth_logits(prompt, new)
    assert logits64.shape == logits32.shape and logits64.dtype == torch.float64
    assert new == [int(i) for i in torch.argmax(logits64, dim=-1)], "float64 disagrees with float32 greedy"
    print(f"  gpt2 greedy: 64 tokens, f32 vs f64 logits {max_abs(logits32, logits64):.2e}, "
          f"min top-1/top-2 gap {float(top2_gaps(logits32).min()):.3g}")

    with tempfile.TemporaryDirectory() as tmp:  # the written files load back into the same model
        paths = gpt2.save_hf_dirs(model, tmp)
        logits = gpt2.forward_intermediates(model, tokens, [])[0]["logits"]
        for kind in ("hf", "hub"):
            m2 = GPT2LMHeadModel.from_pretrained(paths[kind], attn_implementation="eager").eval()
            for (n1, p1), (n2, p2) in zip(model.state_dict().items(), m2.state_dict().items()):
                assert n1 == n2 and torch.equal(p1, p2), f"{kind}: {n1}"
            with torch.no_grad():
                assert torch.equal(m2(input_ids=tokens[None]).logits[0], logits), kind
        with open(paths["llmc"], "rb") as f:
            data = f.read()
        head = np.frombuffer(data[:1024], dtype="<i4")
        body = torch.from_numpy(np.frombuffer(data[1024:], dtype="<f4").copy())
        C = gpt2.TINY_GPT2["n_embd"]
        assert list(head[:8]) == [gpt2.LLMC_MAGIC, 3, 256, 50257, 2, 4, C, 50304] and not head[8:].any()
        qkvw = body[50304 * C + 256 * C + 4 * C:][:3 * C * C].view(3 * C, C)
        assert torch.equal(qkvw, model.transformer.h[0].attn.c_attn.weight.t()), "qkvw is not [3C, C]"
        assert not body[50257 * C:50304 * C].any(), "padded vocab rows must be zero"
        m3 = gpt2.load_llmc(paths["llmc"])
        for (n1, p1), (n2, p2) in zip(model.state_dict().items(), m3.state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2), f"llmc: {n1}"


def check_moe(table):
    """llama_ref + MoeRef against transformers' Qwen2-MoE and Mixtral; the block case against the forward."""
    for spec in (qwen2moe.SPEC, mixtral.SPEC):
        names = table.intermediates(spec.name)
        model = hf_moe.build_tiny(spec, torch.Generator().manual_seed(1))
        tokens = torch.randint(3, model.config.vocab_size, (12,), generator=torch.Generator().manual_seed(2))
        ref = hf_moe.MoeReference(spec, model)
        print(f"  {spec.name}: {ref.make_truth(tokens, names)}")
        vals, _ = ref.forward_intermediates(tokens, names)
        moe_names = names[names.index("ffn_norm") + 1:names.index("ffn_out")]
        x = vals["layer1.ffn_norm"][:5]
        blk = ref.moe_case(1, x, moe_names)
        assert torch.equal(blk["experts"], vals["layer1.experts"][:5])
        assert torch.equal(blk["out"], vals["layer1.ffn_out"][:5])
        r64 = ref.truth_moe_case(1, x, moe_names)
        assert torch.equal(r64["experts"], blk["experts"]) and max_abs(blk["out"], r64["out"]) < 1e-5
        print(f"  {spec.name}: block out vs float64 {max_abs(blk['out'], r64['out']):.2e}, min k/k+1 router gap "
              f"{ref.routing_gap(vals['layer1.router_logits']):.3g}")


def check_long_context(table):
    """Long context: our RoPE formulas (llama_ref.rope_frequencies, the float64 truth of every scaled
    model) against transformers' own ROPE_INIT_FUNCTIONS; and the two transformers behaviours the
    references work around, each shown:
      - 4.46.3's eager Qwen2 windows every layer with use_sliding_window (ignoring max_window_layers):
        unpatched it differs from llama_ref in layer 0, with hf_decoder.qwen2_window_mask it agrees;
      - its dynamic RoPE keeps state between calls: a sequence after a longer one is rotated with the
        longer one's frequencies unless hf_decoder.reset_dynamic_rope runs first."""
    from transformers import LlamaConfig, Qwen2Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cases = [({"rope_type": "linear", "factor": 4.0}, 64, 1e4, 2048, None),
             ({"rope_type": "dynamic", "factor": 2.0}, 64, 1e4, 2048, 9000),
             ({"rope_type": "dynamic", "factor": 8.0}, 128, 5e5, 8192, 8192),
             ({"rope_type": "yarn", "factor": 4.0}, 64, 1e4, 4096, None),
             ({"rope_type": "yarn", "factor": 40.0, "beta_fast": 32.0, "beta_slow": 1.0, "attention_factor": 0.8}, 128, 1e6,
              32768, None),
             ({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}, 64, 5e5, 131072, None),
             ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0,
               "original_max_position_embeddings": 4096}, 128, 5e5, 131072, None)]
    worst = 0.0
    for scaling, hd, theta, context, seq_len in cases:
        cfg = LlamaConfig(hidden_size=hd * 4, num_attention_heads=4, rope_theta=theta, max_position_embeddings=context,
                          rope_scaling=scaling)
        kw = {} if seq_len is None else {"seq_len": torch.tensor(seq_len)}
        theirs, their_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](cfg, "cpu", **kw)
        ours, our_factor = llama_ref.rope_frequencies(hd, theta, scaling, context, seq_len)
        rel = float(((ours - theirs.double()).abs() / ours).max())
        worst = max(worst, rel)
        assert rel < 1e-6 and abs(our_factor - their_factor) < 1e-6, (scaling, rel, our_factor, their_factor)
    print(f"  rope_frequencies vs transformers' ROPE_INIT_FUNCTIONS: {len(cases)} configs, worst relative {worst:.2e}")

    # 4.46.3's eager Qwen2 windows layer 0 too; the workaround gives llama_ref's (the intended) model
    config = Qwen2Config(**{**qwen2.SMALL, **qwen2.VARIANTS["models/tiny-qwen2-swa"]}, attn_implementation="eager")
    model = hf_decoder.randomize(Qwen2ForCausalLM(config), torch.Generator().manual_seed(SEED))
    names = table.intermediates("qwen2")
    tokens = common.default_prompt(config.vocab_size, 24, "selfcheck.qwen2-swa")
    ref = hf_decoder.to_llama_ref(model)
    truth, _ = llama_ref.run_tokens(ref, tokens, torch.float32, names)
    patched, _, _ = hf_decoder.forward_intermediates(model, tokens, names)
    with torch.no_grad():  # transformers exactly as 4.46.3 runs it: one windowed mask for every layer
        hooks_rec = hf_decoder.Recorder()
        hooks_rec.out(model.model.layers[0], "layer0.out")
        try:
            model(input_ids=tokens[None], past_key_values=DynamicCache(), use_cache=True)
        finally:
            hooks_rec.remove()
    unpatched = hooks_rec.one("layer0.out")
    good, bad = max_abs(patched["layer0.out"], truth["layer0.out"]), max_abs(unpatched, truth["layer0.out"])
    assert good < 1e-5 and bad > 1e-3, (good, bad)
    print(f"  qwen2 use_sliding_window, max_window_layers 1: layer 0 (full attention) vs llama_ref: transformers 4.46.3 "
          f"eager as is {bad:.3g} (it windows layer 0), with qwen2_window_mask {good:.2e}")

    # dynamic RoPE's state: 40 positions after 100 (both past the original 32) get the 100's frequencies
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=32,
                      rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    rotary = LlamaRotaryEmbedding(config=cfg)
    x = torch.zeros(1)
    fresh = rotary(x, torch.arange(40)[None])[0]
    rotary(x, torch.arange(100)[None])
    after_long = rotary(x, torch.arange(40)[None])[0]
    hf_decoder.reset_dynamic_rope(rotary)
    reset = rotary(x, torch.arange(40)[None])[0]
    assert max_abs(fresh, after_long) > 1e-3 and torch.equal(fresh, reset)
    print(f"  dynamic RoPE: 40 positions after a 100-position call differ by {max_abs(fresh, after_long):.3g} from a fresh "
          "module's; reset_dynamic_rope restores them exactly")


def check_q8():
    """q8.quantize_q8_0 with torch.round is llama2.c export.py's quantize_q80 (copied in q8.py), and
    C's round() differs from it exactly at the halves."""
    g = common.generator("selfcheck.q8")
    w = common.randn(g, 64, 256)
    w[0, :4] = torch.tensor([127.0, 0.5, 1.5, -2.5])  # exact halves at scale 1
    ours, scales = q8.quantize_q8_0(w, 64, torch.round)
    theirs, their_scales, _ = q8.quantize_q80(w, 64)
    assert torch.equal(ours.reshape(-1, 64), theirs) and torch.equal(scales.reshape(-1), their_scales)
    c = q8.quantize_q8_0(w, 64)[0]
    assert (c[0, :4] != ours[0, :4]).tolist() == [False, True, False, True]
    print("  q8: quantize_q8_0(torch.round) equals export.py's quantize_q80; C's round() differs at the halves")


def check_tokenizers(shared_dir):
    """tiktoken and HF tokenizers agree on GPT-2's vocabulary (gpt2_reference_ids stops otherwise)."""
    if not os.path.exists(os.path.join(shared_dir, common.GPT2_ENCODER)):
        print(f"  tokenizers skipped: {os.path.join(shared_dir, common.GPT2_ENCODER)} not found")
        return
    texts = tokenizers.EDGE_CASES + bpe.CONTRACTIONS + bpe.NUMBERS + bpe.SCRIPTS + bpe.EMOJI + bpe.CODE_SAMPLES
    for allow_special in (False, True):
        ids = bpe.gpt2_reference_ids(texts, shared_dir, allow_special)
    print(f"  tokenizers: tiktoken and HF tokenizers agree on {len(texts)} texts ({sum(map(len, ids))} ids)")


def check_ggml():
    """ggml_quants.self_check on one super-block per row (the kernel.ggml.* fixtures hold more)."""
    from lmlab_ref import ggml_quants
    failures = ggml_quants.self_check(blocks=1, random_rows=5, fast_x=4)
    assert failures == 0, f"ggml_quants.self_check: {failures} failure(s) (printed above)"


def check_gguf():
    """transformers 4.46's GGUF loading: its bugs shown, the workarounds equal to the models written."""
    from lmlab_ref import gguf_models
    with tempfile.TemporaryDirectory() as tmp:
        for line in gguf_models.check(tmp):
            print(f"  {line}")


def check_onnx_attention():
    """conformance.attention_reference (torch) against ONNX 1.18's expected outputs on all its Attention
    cases: with 1.18's conventions it reproduces every Y; the spec's answer differs exactly where a
    known bug of 1.18's reference applies; ONNX's own evaluator shows both bugs on readable inputs."""
    cases, _ = conformance.node_cases()
    bugs = [c[0] for c in cases["Attention"] if conformance.check_attention_bugs(c)[0]]
    for line in conformance.demonstrate_attention_bugs():
        print(f"  onnx {conformance.ONNX_VERSION} reference bug: {line}")
    print(f"  onnx attention: torch reproduces ONNX's Y in all {len(cases['Attention'])} cases with 1.18's conventions; "
          f"{len(bugs)} cases carry a known reference bug")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmlab", default=lmlab.default_lmlab(), help="the lmlab binary (its family rows)")
    ap.add_argument("--shared", default=lmlab.default_shared_dir())
    args = ap.parse_args()
    common.setup_torch()
    table = lmlab.Table(args.lmlab)
    checks = [("llama", lambda: check_llama(table, args.shared)), ("qwen2", lambda: check_qwen2(table)),
              ("gpt2", lambda: check_gpt2(table)), ("moe", lambda: check_moe(table)), ("q8", check_q8),
              ("tokenizers", lambda: check_tokenizers(args.shared)), ("ggml", check_ggml), ("gguf", check_gguf),
              ("onnx", check_onnx_attention),
              ("long context", lambda: check_long_context(table))]
    t_all = time.perf_counter()
    for label, check in checks:
        t0 = time.perf_counter()
        check()
        print(f"selfcheck {label}: passed ({time.perf_counter() - t0:.1f} s)")
    print(f"selfcheck: {len(checks)} passed, 0 failed ({time.perf_counter() - t_all:.1f} s)")


if __name__ == "__main__":
    main()
