"""ONNX's operator conformance cases as fixtures, for the conformance.* stages: the node tests every
ONNX runtime must pass, with the expected outputs of ONNX's own numpy reference, run through our
kernels. The cases are someone else's choice, so a convention we misread in both our kernel and our
PyTorch reference shows here.

Source: the `onnx` package pinned in scripts/requirements.txt (ONNX_VERSION), its shipped test data
onnx/backend/test/data/node/<case>/ (model.onnx: one node; test_data_set_0/input_<i>.pb and
output_<i>.pb), listed by onnx.backend.test.loader.load_model_tests(kind="node"), the loader ONNX's
backend runner uses, which also gives each case's tolerance (rtol 1e-3, atol 1e-7 for every node
case: loader/__init__.py, unless a data.json says otherwise). We read those files rather than run
the case generators of onnx.backend.test.case.node (which in 1.18 need `np.bool`, gone from numpy
1.24, and whose float outputs regenerated here can differ from the shipped files by an ulp).

One fixture per operator (recipe conformance.<name>, OPS): every node case whose single node is that
operator, as the group case_<ONNX case name> ("case_test_softmax_axis_0": the report shows ONNX's
names). Per case (golden/README.md, "Conformance fixtures"):
  attributes   description ("<Op>-<opset>, <attributes>"), onnx_case, onnx_op, opset,
               onnx_rtol, onnx_atol, onnx_attributes (["axis=1", "keepdims=0"]: every attribute the
               node sets, so the stage can refuse one it does not know), each attribute under its
               ONNX name, and "<tensor>.dtype" (ONNX's element type) for every input and output
  inputs/      the node's inputs under the operator's formal names (the schema's: Q, K, V,
               attn_mask, ..., X, scale, ...), float32; int64 and bool tensors converted exactly
  outputs/     ONNX's expected outputs, likewise
The *_expanded cases (the same inputs and outputs through the operator's function body, a graph of
other operators) are not operator cases: the root attribute onnx_expanded_cases lists them.

Attention: ONNX 1.18's reference has two known bugs (fixed upstream after 1.18): grouped-query heads
mapped by np.tile (query head h reads kv head h % n_kv; the spec, PyTorch, LLaMA and Qwen2 use
h // (n_q / n_kv): onnx PR #7274) and 3-D inputs [B, S, H·D] reshaped to [B, H, S, D] without the
transpose (onnx issue #7118). Every Attention case is recomputed with torch (attention_reference):
with 1.18's conventions it must reproduce ONNX's expected Y within ONNX's tolerance (else the export
stops: the reference is not understood); where a known bug applies, ONNX's Y must differ from the
spec's, and the case gets reference_bug (which), reference_bug_max_abs and outputs/Y_torch +
reference64/Y_torch: the spec's answer, which the stage holds our kernel to (check_attention_bugs,
run by the export and by refs.selfcheck).
"""
import glob
import math
import os

import numpy as np
import torch

from lmlab_ref import fixtures

ONNX_VERSION = "1.18.0"  # = scripts/requirements.txt; the export refuses another

# recipe conformance.<name> -> the ONNX operator (op_type) whose node cases it writes
OPS = {"softmax": "Softmax", "layer_normalization": "LayerNormalization", "rms_normalization": "RMSNormalization",
       "gelu": "Gelu", "matmul": "MatMul", "rotary_embedding": "RotaryEmbedding", "attention": "Attention",
       "sigmoid": "Sigmoid", "argmax": "ArgMax"}

# The known bugs of onnx 1.18's Attention reference (see the module's docstring)
GQA_TILE_BUG = ("onnx 1.18's reference maps query head h to kv head h % n_kv (np.tile); the spec, PyTorch, "
                "LLaMA and Qwen2 use h // (n_q / n_kv) (fixed upstream: onnx PR #7274)")
LAYOUT_3D_BUG = ("onnx 1.18's reference reshapes 3-D Q/K/V [B, S, H*D] to [B, H, S, D] without the transpose "
                 "(fixed upstream: onnx issue #7118)")


def _onnx():
    import onnx  # imported here: only the conformance recipes need it
    if onnx.__version__ != ONNX_VERSION:
        raise SystemExit(f"lmlab_ref.conformance: onnx {onnx.__version__} is installed, the fixtures are defined on "
                         f"onnx {ONNX_VERSION} (scripts/requirements.txt): run scripts/install_deps.sh")
    return onnx


def _attribute(a):
    from onnx import helper
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (int, float, str)):
        return v
    raise SystemExit(f"lmlab_ref.conformance: attribute {a.name} = {v!r}: only numbers and strings are kept")


def _float32(name, x):
    """A tensor as float32, exactly: integers must fit float32's 24-bit mantissa."""
    x = np.array(x)  # a writable copy (torch.from_numpy warns on the loader's read-only arrays)
    if x.dtype == np.float32:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and np.abs(x).max() >= 2 ** 24:
            raise SystemExit(f"lmlab_ref.conformance: {name}: integers beyond 2^24 do not fit float32 exactly")
        return x.astype(np.float32)
    return x.astype(np.float32)  # another float type: the dtype attribute says so, the stage refuses it


def _read_case(onnx, tc):
    """One node case of an operator of OPS: (op_type, opset, attributes, inputs, outputs), or None
    when its graph is not one such node. Inputs and outputs by the operator's formal names."""
    from onnx import defs, numpy_helper
    model = onnx.load(os.path.join(tc.model_dir, "model.onnx"))
    g = model.graph
    if len(g.node) != 1 or g.node[0].domain not in ("", "ai.onnx") or g.node[0].op_type not in OPS.values():
        return None
    node = g.node[0]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    schema = defs.get_schema(node.op_type, opset)
    sets = sorted(glob.glob(os.path.join(tc.model_dir, "test_data_set_*")))
    if len(sets) != 1:
        raise SystemExit(f"lmlab_ref.conformance: {tc.name} has {len(sets)} data sets, expected 1")

    def formal(names, params):
        out = {}
        for i, n in enumerate(names):
            if n:  # "" = an optional input or output left out
                out[n] = params[min(i, len(params) - 1)].name
        return out

    in_formal = formal(node.input, schema.inputs)
    out_formal = formal(node.output, schema.outputs)
    load = lambda f: numpy_helper.to_array(onnx.load_tensor(os.path.join(sets[0], f)))  # noqa: E731
    inputs = {in_formal[vi.name]: load(f"input_{i}.pb") for i, vi in enumerate(g.input)}
    outputs = {out_formal[vi.name]: load(f"output_{i}.pb") for i, vi in enumerate(g.output)}
    attrs = {a.name: _attribute(a) for a in node.attribute}
    return node.op_type, opset, attrs, inputs, outputs


def node_cases(ctx=None):
    """Every node case of the installed onnx whose graph is one node of OPS: {op_type: [(name, rtol, atol,
    opset, attributes, inputs, outputs), ...]} in name order, and {op_type: [expanded case names]}.
    Read once per export (ctx.once): the 1450 model files take ~1.5 s."""
    def read():
        onnx = _onnx()
        from onnx.backend.test.loader import load_model_tests
        tests = sorted(load_model_tests(kind="node"), key=lambda t: t.name)
        cases, expanded = {}, {}
        for tc in tests:
            if "_expanded" in tc.name:
                continue
            got = _read_case(onnx, tc)
            if got is None:
                continue
            op, opset, attrs, inputs, outputs = got
            cases.setdefault(op, []).append((tc.name, tc.rtol, tc.atol, opset, attrs, inputs, outputs))
        names = {c[0]: op for op, cs in cases.items() for c in cs}
        for tc in tests:  # test_x_expanded, test_x_expanded_ver18: the base case's op
            base = tc.name[:tc.name.find("_expanded")] if "_expanded" in tc.name else None
            if base in names:
                expanded.setdefault(names[base], []).append(tc.name)
        return cases, expanded
    return ctx.once("onnx.node_cases", read) if ctx is not None else read()


# ---- Attention: torch's computation of ONNX's definition -------------------------------------------

def attention_reference(inputs, attrs, conventions, dtype=torch.float32):
    """ONNX Attention-23 in torch: {"Y", "present_key", "present_value"}. conventions "spec": as the
    operator's documentation defines it (and PyTorch, LLaMA, Qwen2 compute it); "onnx-1.18": with
    onnx 1.18 reference's two bugs (GQA_TILE_BUG, LAYOUT_3D_BUG). Everything else as ONNX 1.18's
    reference does it: the causal mask upper-left (query i sees keys 0..i), a bool mask True = attend,
    a float mask added to the scores, softcap after the mask, scale default 1/sqrt(head_size)."""
    t = {k: torch.from_numpy(np.array(v)) for k, v in inputs.items()}
    Q, K, V = (t[n].to(dtype) for n in ("Q", "K", "V"))
    three_d = Q.dim() == 3
    if three_d:
        def heads(x, h):  # [B, S, H*D] -> [B, H, S, D]
            B, S, E = x.shape
            if conventions == "spec":
                return x.reshape(B, S, h, E // h).transpose(1, 2)
            return x.reshape(B, h, S, E // h)  # onnx 1.18: no transpose
        Q, K, V = heads(Q, attrs["q_num_heads"]), heads(K, attrs["kv_num_heads"]), heads(V, attrs["kv_num_heads"])
    if "past_key" in t:
        K = torch.cat([t["past_key"].to(dtype), K], dim=2)
    if "past_value" in t:
        V = torch.cat([t["past_value"].to(dtype), V], dim=2)
    present_key, present_value = K, V
    hq, hkv = Q.shape[1], K.shape[1]
    if hq != hkv:
        group = hq // hkv
        if conventions == "spec":
            K, V = K.repeat_interleave(group, dim=1), V.repeat_interleave(group, dim=1)  # h -> h // group
        else:
            K, V = K.repeat(1, group, 1, 1), V.repeat(1, group, 1, 1)  # np.tile: h -> h % hkv
    scale = attrs.get("scale", 1.0 / math.sqrt(Q.shape[-1]))
    scores = torch.matmul(Q, K.transpose(-1, -2)) * scale
    L, S = scores.shape[-2:]
    bias = torch.zeros(L, S, dtype=dtype)
    if attrs.get("is_causal", 0):
        bias = bias.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), -math.inf)
    if "attn_mask" in t:
        m = t["attn_mask"]
        bias = bias.masked_fill(~m, -math.inf) if m.dtype == torch.bool else bias + m.to(dtype)
    scores = scores + bias
    if attrs.get("softcap", 0.0) > 0:
        scores = attrs["softcap"] * torch.tanh(scores / attrs["softcap"])
    Y = torch.matmul(torch.softmax(scores, dim=-1), V)
    if three_d:
        Y = Y.transpose(1, 2).reshape(Y.shape[0], L, -1)
    return {"Y": Y, "present_key": present_key, "present_value": present_value}


def _close(ours, expected, rtol, atol):
    """np.testing.assert_allclose's rule, as ONNX's backend runner applies it."""
    return bool(np.all(np.abs(ours.astype(np.float64) - expected) <= atol + rtol * np.abs(expected.astype(np.float64))))


def check_attention_bugs(case):
    """One Attention case: which known bugs of onnx 1.18's reference apply, checked. torch with onnx
    1.18's conventions must reproduce ONNX's Y; where a bug applies, ONNX's Y must differ from the
    spec's answer. Returns (bugs, spec Y float32, spec Y float64, max |ONNX's Y - spec Y|), bugs
    empty when none applies. SystemExit, naming the case, when the reference is not what we think."""
    name, rtol, atol, _, attrs, inputs, outputs = case
    y = outputs["Y"]
    bugs = []
    if inputs["Q"].ndim == 3:
        bugs.append(LAYOUT_3D_BUG)
    n_q = attrs["q_num_heads"] if inputs["Q"].ndim == 3 else inputs["Q"].shape[1]
    n_kv = attrs["kv_num_heads"] if inputs["K"].ndim == 3 else inputs["K"].shape[1]
    if n_q != n_kv:
        bugs.append(GQA_TILE_BUG)
    as_onnx = attention_reference(inputs, attrs, "onnx-1.18")["Y"].numpy()
    if not _close(as_onnx, y, rtol, atol):
        raise SystemExit(f"lmlab_ref.conformance: {name}: torch with onnx 1.18's conventions does not reproduce "
                         f"ONNX's expected Y (max abs {np.abs(as_onnx - y).max():.3g}): the reference is not understood")
    spec = attention_reference(inputs, attrs, "spec")["Y"].numpy()
    if not bugs:
        return [], None, None, 0.0
    if _close(spec, y, rtol, atol):
        raise SystemExit(f"lmlab_ref.conformance: {name}: ONNX's expected Y equals the spec's answer although "
                         f"{'; '.join(bugs)}: is the bug fixed in this onnx? Then remove the workaround")
    spec64 = attention_reference(inputs, attrs, "spec", torch.float64)["Y"].numpy()
    return bugs, spec, spec64, float(np.abs(y.astype(np.float64) - spec64).max())


def demonstrate_attention_bugs():
    """ONNX 1.18's own reference evaluator (onnx.reference) on two inputs small enough to read, against
    what the spec defines (the cases themselves are checked by check_attention_bugs). Returns one line
    per bug; AssertionError when the evaluator no longer shows it (a fixed onnx: remove the workaround).
      GQA: 4 query heads on 2 kv heads, one position, head size 1, kv head j's value = j. Query head h
        must read kv head h // 2: Y = [0, 0, 1, 1]; h % 2 gives [0, 1, 0, 1].
      3-D: Q = K = 0 (every score equal: Y = the mean of the values), V [1, S=2, H·D = 2·1] =
        [[10, 20], [30, 40]] (position s, head h). Head h averages V[:, h]: Y = [[20, 30], [20, 30]];
        reshaped without the transpose, head h averages row h: [[15, 35], [15, 35]]."""
    onnx = _onnx()
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    def run(inputs, **attrs):
        node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], **attrs)
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Q", "K", "V", "Y")]
        graph = helper.make_graph([node], "attention", io[:3], io[3:])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
        return ReferenceEvaluator(model).run(None, inputs)[0]

    gqa = run({"Q": np.zeros((1, 4, 1, 1), np.float32), "K": np.zeros((1, 2, 1, 1), np.float32),
               "V": np.arange(2, dtype=np.float32).reshape(1, 2, 1, 1)})
    spec_gqa = attention_reference({"Q": np.zeros((1, 4, 1, 1), np.float32), "K": np.zeros((1, 2, 1, 1), np.float32),
                                    "V": np.arange(2, dtype=np.float32).reshape(1, 2, 1, 1)}, {}, "spec")["Y"]
    assert spec_gqa.flatten().tolist() == [0, 0, 1, 1], spec_gqa
    assert gqa.flatten().tolist() == [0, 1, 0, 1], f"onnx {onnx.__version__}'s GQA gives {gqa.flatten()}: bug fixed?"
    v3 = np.array([[[10, 20], [30, 40]]], np.float32)
    zeros = np.zeros((1, 2, 2), np.float32)
    layout = run({"Q": zeros, "K": zeros, "V": v3}, q_num_heads=2, kv_num_heads=2)
    spec_3d = attention_reference({"Q": zeros, "K": zeros, "V": v3}, {"q_num_heads": 2, "kv_num_heads": 2}, "spec")["Y"]
    assert spec_3d.tolist() == [[[20, 30], [20, 30]]], spec_3d
    assert layout.tolist() == [[[15, 35], [15, 35]]], f"onnx {onnx.__version__}'s 3-D gives {layout}: bug fixed?"
    return [f"GQA 4 on 2 heads: onnx.reference gives {gqa.flatten().tolist()}, the spec {spec_gqa.flatten().tolist()}",
            f"3-D V [[10, 20], [30, 40]], equal scores: onnx.reference gives {layout[0].tolist()}, "
            f"the spec {spec_3d[0].tolist()}"]


# ---- The recipe -----------------------------------------------------------------------------------

def _value_text(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


def export(row, ctx):
    """conformance/<name>.h5 for recipe conformance.<name>: every node case of OPS[name]."""
    op = OPS[row["recipe"][len("conformance."):]]
    cases, expanded = node_cases(ctx)
    if op not in cases:
        raise SystemExit(f"lmlab_ref.conformance: onnx {ONNX_VERSION} has no node case of {op}")
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "kernel", ctx.sha) as f:
        fixtures.write_attr(f, "onnx_version", ONNX_VERSION)
        fixtures.write_attr(f, "onnx_op", op)
        fixtures.write_attr(f, "onnx_expanded_cases", expanded.get(op, []) or [""])
        for i, case in enumerate(cases[op]):
            name, rtol, atol, opset, attrs, inputs, outputs = case
            attr_text = [f"{k}={_value_text(v)}" for k, v in attrs.items()]
            assert not any("," in a for a in attr_text), attr_text  # the harness reads the list joined by commas
            params = {"onnx_case": name, "onnx_op": op, "opset": opset, "onnx_rtol": float(rtol),
                      "onnx_atol": float(atol), "onnx_attributes": attr_text or [""]}
            params.update({k: float(v) if isinstance(v, float) else v for k, v in attrs.items()})
            params.update({f"{k}.dtype": str(np.asarray(v).dtype) for k, v in {**inputs, **outputs}.items()})
            outs = {k: torch.from_numpy(_float32(f"{name} output {k}", v)) for k, v in outputs.items()}
            ref64 = {}
            if op == "Attention":
                bugs, spec, spec64, gap = check_attention_bugs(case)
                if bugs:
                    params["reference_bug"] = "; ".join(bugs)
                    params["reference_bug_max_abs"] = gap
                    outs["Y_torch"] = torch.from_numpy(spec)
                    ref64["Y_torch"] = torch.from_numpy(spec64)
            desc = f"{op}-{opset}, {', '.join(attr_text) if attr_text else 'default attributes'}"
            fixtures.write_case(f, i, desc, params,
                                {k: torch.from_numpy(_float32(f"{name} input {k}", v)) for k, v in inputs.items()},
                                outs, ref64, name=name)
    return [ctx.out_path(row["fixture"])]
