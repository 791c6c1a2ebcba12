"""The fixtures of ggml's tensor types (the block formats of GGUF files), one stage per type:

  kernel.ggml.dequantize.<type>  bytes of <type> blocks -> floats, the reference being the gguf
      package's gguf.quants.dequantize (llama.cpp's own numpy port of ggml's dequantize_row_*),
      on blocks chosen to break a dequantizer: every stress row of ggml_quants.stress_rows quantized
      by ggml's reference quantizer (zero blocks, all-negative rows whose mins are large, F16 scales
      past 65504 (inf) and subnormal, ties, one sub-block large or zero in turn, ...), blocks of
      random bytes (every quant bit pattern, every packed 6-bit scale and min), and the scale fields
      forced to the F16 edge values (0, -0, the smallest subnormal, the largest half, inf, negative)
      with every sub-block scale byte 0x00 or 0xFF; rows of one, three and nine blocks.
  kernel.ggml.matvec.<type>  ggml's CPU arithmetic (activations quantized to Q8_0 / Q8_1 / Q8_K,
      integer dot products per block, ggml's float steps in ggml's order) as ggml_quants.py writes it
      (our port of ggml's C, cross-checked against the gguf package in refs.selfcheck): the
      activation bytes and matvec_fast's outputs bit for bit; the plain path (a row dequantized, a
      float64 dot) against the exact dot of the dequantized row; and the bound of
      ggml_quants.fast_error_bound on |fast - plain| for every row.

Bytes are stored as float32 datasets holding the values 0..255 (every fixture dataset is float32).
"""
import math

import numpy as np
import torch

from lmlab_ref import common, fixtures, ggml_quants as G

F32 = np.float32
# the scale fields of each type (byte offsets inside a block) and the other bytes (quants, packed scales)
F16_FIELDS = {"F16": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
              "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
# the packed sub-block scale bytes of the K-quants (offset, length)
SCALE_BYTES = {"Q2_K": (0, 16), "Q3_K": (96, 12), "Q4_K": (4, 12), "Q5_K": (4, 12), "Q6_K": (192, 16)}
# F16 edge values of a scale: 0, -0, the smallest subnormal (2^-24), the largest subnormal, the
# smallest normal, 1, -1 (a negative scale, or a negative min), the largest half (65504), inf
F16_EDGES = [(0x0000, "0"), (0x8000, "-0"), (0x0001, "2^-24 (smallest subnormal)"),
             (0x03FF, "largest subnormal"), (0x0400, "2^-14 (smallest normal)"), (0x3C00, "1"),
             (0xBC00, "-1"), (0x7BFF, "65504 (largest half)"), (0x7C00, "inf")]


def type_of(row):
    """The ggml type a row is about: the last part of its id ("kernel.ggml.matvec.q4_k" -> "Q4_K")."""
    name = row["id"].rsplit(".", 1)[1].upper()
    if name not in G.TYPES or name not in G.WEIGHT_TYPES:
        raise SystemExit(f"lmlab_ref: stage {row['id']}: '{name}' is not a ggml weight type ({', '.join(G.WEIGHT_TYPES)})")
    return name


def as_float_bytes(b):
    return torch.from_numpy(np.frombuffer(bytes(b), dtype=np.uint8).astype(F32))


def gguf_dequantize(name, b):
    """gguf.quants.dequantize of one row of bytes -> float32 [n]."""
    import gguf
    with np.errstate(all="ignore"):  # inf scales give inf and NaN, as in ggml
        out = gguf.quants.dequantize(np.frombuffer(bytes(b), dtype=np.uint8).reshape(1, -1), gguf.GGMLQuantizationType[name])
    return np.asarray(out, dtype=F32).ravel()


def _random_blocks(name, n_blocks, rng, finite=True):
    raw = bytearray(rng.integers(0, 256, G.row_bytes(name, n_blocks * G.TYPES[name][1]), dtype=np.uint8).tobytes())
    if finite:
        G._fix_f16_fields(name, raw, rng)
    return raw


def dequantize_cases(name, rng):
    """(description, bytes, n) of the dequantization fixture of one type."""
    be = G.TYPES[name][1]
    n = G.QK_K if be > 1 else 64  # a super-block (eight 32-blocks); float types: 64 values
    cases = []
    for label, x in G.stress_rows(n, rng):
        with np.errstate(all="ignore"):  # "huge": F16 scales overflow to inf, as in ggml
            cases.append((f"{label}: {n} values quantized by ggml's reference quantizer", G.quantize(name, x), n))
    for blocks in (1, 3, 9 if be == G.QK else 3):
        cases.append((f"random bytes, {blocks} block(s), finite scales: every quant bit pattern",
                      bytes(_random_blocks(name, blocks, rng)), blocks * be))
    if name in ("F16", "BF16", "F32"):  # special values: every exponent, subnormals, inf, NaN, -0
        specials = [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01,
                    0x8001, 0xFBFF, 0x3555, 0x0200] if name == "F16" else \
                   [0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x3F80, 0xBF80, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0, 0x7F81,
                    0x8001, 0xFF7F, 0x3EAA, 0x0040] if name == "BF16" else []
        if specials:
            cases.append(("special halves: ±0, subnormals, the smallest normal, ±1, the largest, ±inf, NaNs",
                          np.array(specials, dtype="<u2").tobytes(), len(specials)))
        else:
            vals = np.array([0.0, -0.0, 1e-45, 1.17549435e-38, 3.4028235e38, np.inf, -np.inf, np.nan], dtype="<f4")
            cases.append(("special floats: ±0, the smallest subnormal and normal, the largest, ±inf, NaN",
                          vals.tobytes(), len(vals)))
        return cases
    # the scale fields at the F16 edges, the packed sub-block scales all 0x00 or all 0xFF
    for bits, what in F16_EDGES:
        for fill in ((0x00, 0xFF) if name in SCALE_BYTES else (None,)):
            raw = _random_blocks(name, 1, rng)
            for o in F16_FIELDS[name]:
                raw[o:o + 2] = bits.to_bytes(2, "little")
            desc = f"every scale field (d{', dmin' if len(F16_FIELDS[name]) > 1 else ''}) = {what}"
            if fill is not None:
                o, ln = SCALE_BYTES[name]
                raw[o:o + ln] = bytes([fill]) * ln
                desc += f", sub-block scale bytes all 0x{fill:02X}"
            cases.append((desc, bytes(raw), be))
    if len(F16_FIELDS[name]) > 1:  # d > 0 with a negative min (dmin < 0), and the reverse
        raw = _random_blocks(name, 2, rng)
        for blk in range(2):
            d, m = (0x3C00, 0xC000) if blk == 0 else (0xBC00, 0x4000)
            raw[blk * G.TYPES[name][2] + F16_FIELDS[name][0]:][:2] = d.to_bytes(2, "little")
            raw[blk * G.TYPES[name][2] + F16_FIELDS[name][1]:][:2] = m.to_bytes(2, "little")
        cases.append(("block 0: d = 1, min scale -2; block 1: d = -1, min scale 2", bytes(raw), 2 * be))
    if name in SCALE_BYTES:  # each 6-bit (or 4-bit, 8-bit) scale position alone at its maximum
        o, ln = SCALE_BYTES[name]
        for k in range(ln):
            raw = _random_blocks(name, 1, rng)
            raw[o:o + ln] = bytes(ln)
            raw[o + k] = 0xFF
            cases.append((f"scale byte {k} alone 0xFF (its high bits feed another sub-block's scale or min)", bytes(raw), be))
    return cases


def export_dequantize(row, ctx):
    """kernel/ggml/dequantize_<type>.h5: inputs bytes (uint8 values as floats), params type and n;
    output y = gguf.quants.dequantize (no reference64: there is nothing more exact than the format)."""
    name = type_of(row)
    rng = np.random.default_rng(common.SEED + sum(map(ord, row["id"])))
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "kernel", ctx.sha) as f:
        for i, (desc, b, n) in enumerate(dequantize_cases(name, rng)):
            y = gguf_dequantize(name, b)
            assert y.shape == (n,), (name, desc, y.shape, n)
            fixtures.write_case(f, i, desc, {"type": name, "n": n}, {"bytes": as_float_bytes(b)},
                                {"y": torch.from_numpy(y)}, {})
    return [ctx.out_path(row["fixture"])]


def matvec_cases(name, rng):
    """(description, W bytes, rows, cols, x) of the fast-path fixture of one type."""
    be = G.TYPES[name][1]
    out = []
    for cols in ((G.QK_K, 2 * G.QK_K) if be > 1 else (256, 200)):
        stress = [(label, x) for label, x in G.stress_rows(cols, rng) if label != "huge"]  # (inf scales: NaN rows)
        rows_w = [x for _, x in stress[:6]]
        with np.errstate(all="ignore"):
            W = b"".join(G.quantize(name, x) for x in rows_w)
        for label, x in stress[:4] + stress[-2:]:
            out.append((f"{len(rows_w)} quantized stress rows x {cols}, activations '{label}'", W, len(rows_w), cols, x))
    # a typical layer: N(0, 1/in) weights, N(0, 1) activations with one outlier
    cols = 2 * G.QK_K if be > 1 else 512
    Wf = (rng.standard_normal((8, cols)) / math.sqrt(cols)).astype(F32)
    x = rng.standard_normal(cols).astype(F32)
    x[cols // 5] = 40.0
    out.append((f"8x{cols}: N(0, 1/in) weights, N(0, 1) activations with an outlier of 40",
                b"".join(G.quantize(name, r) for r in Wf), 8, cols, x))
    return out


def export_matvec(row, ctx):
    """kernel/ggml/matvec_<type>.h5: inputs W (bytes as floats), x; params type, rows, cols; outputs
    act (the activations' block bytes, empty for float weights), y_fast (ggml's arithmetic),
    y_plain (the exact dot of the dequantized row and x, rounded once to float32), bound
    (fast_error_bound per row); reference64 y_plain (the exact dot in float64)."""
    name = type_of(row)
    act_type = G.TYPES[name][3]
    rng = np.random.default_rng(common.SEED + sum(map(ord, row["id"])))
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "kernel", ctx.sha) as f:
        for i, (desc, W, rows, cols, x) in enumerate(matvec_cases(name, rng)):
            x = np.asarray(x, dtype=F32)
            rb = G.row_bytes(name, cols)
            act = G.quantize_activations(act_type, x) if act_type else b""
            with np.errstate(all="ignore"):
                y_fast = G.matvec_fast(name, W, rows, cols, x)
            exact, bound = [], []
            for r in range(rows):
                wr = W[r * rb:(r + 1) * rb]
                wf = G.dequantize(name, wr, cols).astype(np.float64)
                exact.append(math.fsum(wf * x.astype(np.float64)))  # products of two floats are exact in float64
                bound.append(G.fast_error_bound(name, wr, x))
            exact = np.array(exact)
            fixtures.write_case(f, i, desc, {"type": name, "rows": rows, "cols": cols},
                                {"W": as_float_bytes(W), "x": torch.from_numpy(x)},
                                {"act": as_float_bytes(act), "y_fast": torch.from_numpy(np.asarray(y_fast, dtype=F32)),
                                 "y_plain": torch.from_numpy(exact.astype(F32)), "bound": torch.tensor(bound)},
                                {"y_plain": torch.from_numpy(exact)})
    return [ctx.out_path(row["fixture"])]
