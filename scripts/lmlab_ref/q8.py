"""The PyTorch reference of lmlab's int8 path: llama2.c's runq.c arithmetic (Q8_0), in torch.

runq.c quantizes every matrix a matvec reads (the Linears and the classifier) in groups of GS
consecutive elements of a row (default 64): scale = max|w| / 127, q = round(w / scale), and before
every matvec it quantizes the activation the same way; a matvec then sums int8 products exactly in
int32 per group and accumulates (float(ival) * w_scale) * x_scale over the groups in a float. The
token embedding table is stored quantized and used dequantized (q * scale).

Here the same steps in torch, operation for operation in float32, so that the C++ can be held to
exact integers and (nearly) exact floats:

- `c_round`: C's round(), halves away from zero. torch.round rounds halves to even (2.5 -> 2), so
  using it would disagree with runq.c's quantize() on every exact half.
- `quantize_q8_0`, `dequantize_q8_0`, `matvec_q8_0`: the kernels (kernel.quantize_q8_0,
  kernel.matvec_q8_0 run them on kernels.py's cases).
- `QLinear` and `to_q8`: llama_ref.Llama with every nn.Linear (and the classifier) replaced by a
  module that quantizes its input per group and computes the int32 group sums as runq.c; the
  Recorder's hooks see the same module names, so every intermediate is recorded as for the float model.
- `write_version2`: llama2.c's export.py version2_export, copied (the same header, order and torch
  expressions, with export.py's own `quantize_q80`, which rounds with torch.round), for the tiny LLaMA.
- `split_q8`: a stage row's model with its int8 suffix ("models/tiny-llama.h5#q8_0,group=4").
"""
import copy
import struct

import numpy as np
import torch
import torch.nn as nn

Q_MAX = 127.0


def split_q8(key):
    """A stage row asks for int8 on load with a model suffix (the C++ twin: parse_model_spec in
    harness/stages/stages.cpp): 'models/tiny-llama.h5#q8_0,group=4' -> ('models/tiny-llama.h5', 4);
    '...#q8_0' -> group 64; no suffix -> (key, None)."""
    if "#" not in key:
        return key, None
    base, suffix = key.split("#", 1)
    if suffix == "q8_0":
        return base, 64
    if suffix.startswith("q8_0,group=") and suffix[len("q8_0,group="):].isdigit():
        return base, int(suffix[len("q8_0,group="):])
    raise SystemExit(f"lmlab_ref: model '{key}': unknown suffix (known: #q8_0, #q8_0,group=N)")


def c_round(x):
    """C's round(): to the nearest integer, halves away from zero (round(2.5) = 3, round(-0.5) = -1).
    Exact: x - trunc(x) is exact in floating point, so exact halves are found exactly."""
    t = torch.trunc(x)
    half = (x - t).abs() == 0.5
    return torch.where(half, t + torch.sign(x), torch.round(x))


def quantize_q8_0(x, group, rounding=c_round):
    """runq.c's quantize(): x [..., n] float32 (n a multiple of group) -> (q int8 [..., n], scales
    float32 [..., n / group]); in float64 for a kernel fixture's reference64. Per group: wmax = max|x|, scale = wmax / 127 (one float32 division),
    q = rounding(x / scale). An all-zero group gets scale 0 and q 0 (runq.c divides 0 by 0 there;
    lmlab defines it, kernels.h). Clamped to +-127 (only a subnormal scale could exceed it)."""
    assert x.dtype in (torch.float32, torch.float64) and x.shape[-1] % group == 0, (x.dtype, x.shape, group)
    g = x.reshape(*x.shape[:-1], x.shape[-1] // group, group)
    scale = g.abs().amax(dim=-1) / Q_MAX
    zero = scale == 0
    quot = g / torch.where(zero, torch.ones_like(scale), scale).unsqueeze(-1)
    q = rounding(quot).clamp(-127, 127)
    q = torch.where(zero.unsqueeze(-1), torch.zeros_like(q), q)
    return q.to(torch.int8).reshape(x.shape), scale


def dequantize_q8_0(q, scales, group):
    """runq.c's dequantize(): x[i] = q[i] * scale[i / group], in the scales' dtype."""
    g = q.to(scales.dtype).reshape(*q.shape[:-1], q.shape[-1] // group, group)
    return (g * scales.unsqueeze(-1)).reshape(q.shape)


def matvec_q8_0(Wq, Ws, xq, xs, group):
    """runq.c's matmul(): Wq [out, in] int8, Ws [out, in / group], xq [in] int8, xs [in / group].
    Per row: ival = exact int32 sum of the group's products, then val += (float(ival) * ws) * xs over
    the groups in order. In the scales' dtype: float32 reproduces runq.c's roundings; float64 gives
    the exact value of the same quantized computation (reference64)."""
    out, n = Wq.shape
    G = n // group
    ival = (Wq.to(torch.int64).reshape(out, G, group) * xq.to(torch.int64).reshape(1, G, group)).sum(-1)
    assert int(ival.abs().max()) < 2 ** 31, "int32 group sum would overflow"
    terms = (ival.to(Ws.dtype) * Ws.reshape(out, G)) * xs.reshape(1, G)
    val = torch.zeros(out, dtype=Ws.dtype)
    for g in range(G):  # one group after the other, as runq.c's float accumulator
        val = val + terms[:, g]
    return val


class QLinear(nn.Module):
    """An nn.Linear as runq.c runs it: weights quantized once (rounding=c_round as lmlab's
    quantize_model and runq.c's quantize(); torch.round as export.py writes a version-2 file), the
    input quantized at every call with C's round()."""

    def __init__(self, weight, group, bias=None, rounding=c_round):
        super().__init__()
        self.group = group
        wq, ws = quantize_q8_0(weight.detach().to(torch.float32), group, rounding)
        self.register_buffer("wq", wq)
        self.register_buffer("ws", ws)
        self.bias = None if bias is None else bias.detach().clone()

    def forward(self, x):
        xq, xs = quantize_q8_0(x, self.group)
        y = matvec_q8_0(self.wq, self.ws, xq, xs, self.group)
        return y if self.bias is None else y + self.bias


LINEARS = [("attention", "wq"), ("attention", "wk"), ("attention", "wv"), ("attention", "wo"),
           ("feed_forward", "w1"), ("feed_forward", "w2"), ("feed_forward", "w3")]


def to_q8(model, group=64, rounding=c_round):
    """A float32 copy of llama_ref.Llama `model` as runq.c runs it: every Linear and the classifier
    a QLinear, the token embedding table replaced by its quantized-then-dequantized values."""
    q = copy.deepcopy(model).to(torch.float32)
    with torch.no_grad():
        emb = q.tok_embeddings.weight.detach().clone()
        for block in q.layers:
            for parent, name in LINEARS:
                mod = getattr(getattr(block, parent), name)
                setattr(getattr(block, parent), name, QLinear(mod.weight, group, mod.bias, rounding))
        q.output = QLinear(emb if model.cfg.tied_embeddings else q.output.weight, group, None, rounding)
        eq, es = quantize_q8_0(emb, group, rounding)
        q.tok_embeddings.weight = nn.Parameter(dequantize_q8_0(eq, es, group), requires_grad=False)
    return q.eval()


def matrices(model):
    """The tensors llama2.c's version 2 quantizes, in export.py's order."""
    weights = [model.tok_embeddings.weight,
               *[layer.attention.wq.weight for layer in model.layers],
               *[layer.attention.wk.weight for layer in model.layers],
               *[layer.attention.wv.weight for layer in model.layers],
               *[layer.attention.wo.weight for layer in model.layers],
               *[layer.feed_forward.w1.weight for layer in model.layers],
               *[layer.feed_forward.w2.weight for layer in model.layers],
               *[layer.feed_forward.w3.weight for layer in model.layers]]
    if not torch.equal(model.tok_embeddings.weight, model.output.weight):
        weights.append(model.output.weight)
    return weights


def round_half_differences(model, group):
    """How many int8 weights export.py (torch.round: halves to even) and runq.c's quantize()
    (C's round(): halves away from zero) give differently: the weights exactly on a half."""
    n = 0
    for w in matrices(model):
        a, _ = quantize_q8_0(w.detach().float(), group, torch.round)
        b, _ = quantize_q8_0(w.detach().float(), group, c_round)
        n += int((a != b).sum())
    return n


# ---- llama2.c's export.py, version 2 (copied; `model.params` is `model.cfg` in llama_ref) ----------

def serialize_fp32(file, tensor):
    """ writes one fp32 tensor to file that is open in wb mode """
    d = tensor.detach().cpu().view(-1).to(torch.float32).numpy()
    b = struct.pack(f'{len(d)}f', *d)
    file.write(b)


def serialize_int8(file, tensor):
    """ writes one int8 tensor to file that is open in wb mode """
    d = tensor.detach().cpu().view(-1).numpy().astype(np.int8)
    b = struct.pack(f'{len(d)}b', *d)
    file.write(b)


def quantize_q80(w, group_size):
    """
    takes a tensor and returns the Q8_0 quantized version
    i.e. symmetric quantization into int8, range [-127,127]
    """
    assert w.numel() % group_size == 0
    ori_shape = w.shape  # noqa: F841 (as in export.py)
    w = w.float()  # convert to float32
    w = w.reshape(-1, group_size)
    # find the max in each group
    wmax = torch.abs(w).max(dim=1).values
    # calculate the scaling factor such that float = quant * scale
    scale = wmax / 127.0
    # scale into range [-127, 127]
    quant = w / scale[:, None]
    # round to nearest integer
    int8val = torch.round(quant).to(torch.int8)
    # dequantize by rescaling
    fp32val = (int8val.float() * scale[:, None]).view(-1)
    fp32valr = fp32val.reshape(-1, group_size)
    # calculate the max error in each group
    err = torch.abs(fp32valr - w).max(dim=1).values
    # find the max error across all groups
    maxerr = err.max().item()
    return int8val, scale, maxerr


def write_version2(model, filepath, group_size=64):
    """export.py's version2_export for a llama_ref.Llama: the 256-byte header (magic "ak42",
    version 2, 7 config ints, shared_classifier byte, group_size), the norms in fp32, then every
    matrix as int8 values followed by its fp32 scales. Returns (group_size, max quantization error)."""
    version = 2
    cfg = model.cfg
    while cfg.dim % group_size != 0:
        group_size //= 2
        print(f"BACKOFF: reducing group size to {group_size} to fit hidden_dim")
    weights = matrices(model)
    shared_classifier = torch.equal(model.tok_embeddings.weight, model.output.weight)
    for i, w in enumerate(weights):
        assert w.numel() % group_size == 0, f"weight {i} has numel {w.numel()}, not a multiple of group_size {group_size}"
    with open(filepath, 'wb') as out_file:
        out_file.write(struct.pack('I', 0x616b3432))
        out_file.write(struct.pack('i', version))
        hidden_dim = model.layers[0].feed_forward.w1.weight.shape[0]
        header = struct.pack('iiiiiii', cfg.dim, hidden_dim, cfg.n_layers, cfg.n_heads,
                             cfg.n_kv_heads, cfg.vocab_size, cfg.max_seq_len)
        out_file.write(header)
        out_file.write(struct.pack('B', int(shared_classifier)))
        out_file.write(struct.pack('i', group_size))
        pad = 256 - out_file.tell()
        assert pad >= 0
        out_file.write(b'\0' * pad)
        for layer in model.layers:
            serialize_fp32(out_file, layer.attention_norm.weight)
        for layer in model.layers:
            serialize_fp32(out_file, layer.ffn_norm.weight)
        serialize_fp32(out_file, model.norm.weight)
        max_err = 0.0
        for w in weights:
            q, s, err = quantize_q80(w, group_size)
            serialize_int8(out_file, q)
            serialize_fp32(out_file, s)
            max_err = max(max_err, err)
    return group_size, max_err
