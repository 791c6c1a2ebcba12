"""ggml's tensor types in numpy: block layouts, ggml's reference quantizers, and the arithmetic of
ggml's CPU dot products, written by us from ggml's C (ggml/src/ggml-quants.c and
ggml/src/ggml-cpu/quants.c) as the reference that lmlab's kernels/ggml_quant.cpp must match bit for bit.

This is "ggml's reference algorithm, written by us": it is never llama.cpp's output. Where the
gguf package (gguf-py 0.19.0, llama.cpp's own Python) implements the same thing, self_check()
compares the two bit for bit: gguf quantizes F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, and
dequantizes every type here; for the K-quants (whose quantizers gguf does not have) self_check()
checks our bytes through gguf's dequantizer.

Arithmetic: every float operation is np.float32, one operation at a time in C's order (a·b·c is
(a·b)·c), so each rounds as C's float does. Two numpy traps are avoided throughout:
  - a np.float32 scalar times a Python int or float is float64 in numpy 1.x: every scalar operand
    is wrapped in F() (np.float32);
  - np.sum adds pairwise, C adds left to right: sums go through seq_sum (np.add.accumulate is
    sequential).
The C is taken without fused multiply-adds (what it means as written; a build of ggml with
-march=native may contract a·b + c into one rounding and differ in the last bit).

Layouts (byte offsets) are documented in kernels/ggml_quant.h; the functions below follow it.

Usage (numpy; the gguf package for self_check):
    python scripts/lmlab_ref/ggml_quants.py     runs self_check() (the fixtures of kernel.ggml.* are
        written by the exporter, scripts/lmlab_ref/ggml_kernels.py)
"""
from __future__ import annotations

import struct
import sys

import numpy as np

F = np.float32
QK = 32  # elements of a Q4_0 .. Q8_1 block
QK_K = 256  # elements of a K-quant super-block
GROUP_MAX_EPS = F(1e-15)

# name: (ggml type id, elements per block, bytes per block, vec_dot type or None for float weights)
TYPES = {
    "F32": (0, 1, 4, None),
    "F16": (1, 1, 2, None),
    "Q4_0": (2, QK, 18, "Q8_0"),
    "Q4_1": (3, QK, 20, "Q8_1"),
    "Q5_0": (6, QK, 22, "Q8_0"),
    "Q5_1": (7, QK, 24, "Q8_1"),
    "Q8_0": (8, QK, 34, "Q8_0"),
    "Q8_1": (9, QK, 36, "Q8_1"),
    "Q2_K": (10, QK_K, 84, "Q8_K"),
    "Q3_K": (11, QK_K, 110, "Q8_K"),
    "Q4_K": (12, QK_K, 144, "Q8_K"),
    "Q5_K": (13, QK_K, 176, "Q8_K"),
    "Q6_K": (14, QK_K, 210, "Q8_K"),
    "Q8_K": (15, QK_K, 292, "Q8_K"),
    "BF16": (30, 1, 2, None),
}
WEIGHT_TYPES = [t for t in TYPES if t not in ("Q8_1", "Q8_K")]


def row_bytes(name: str, n: int) -> int:
    _, be, bb, _ = TYPES[name]
    if n % be:
        raise ValueError(f"{name}: rows of {n} elements are not a whole number of {be}-element blocks")
    return n // be * bb


# ---- scalars and small helpers ---------------------------------------------------------------------

def f16_bits(v) -> int:
    """float32 -> binary16 bits, round to nearest even (numpy's conversion, = ggml's GGML_FP32_TO_FP16
    on finite values)."""
    with np.errstate(over="ignore"):  # past 65504 a half is inf: the rounding rule, not an error
        return int(np.array([v], dtype=F).astype(np.float16).view(np.uint16)[0])


def f16(bits: int) -> np.float32:
    return np.array([bits], dtype=np.uint16).view(np.float16).astype(F)[0]


def f16_round(v) -> np.float32:
    """What a float becomes once stored as F16 and read back."""
    return f16(f16_bits(v))


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits: ggml_compute_fp32_to_bf16 (NaN made quiet, else ties to even)."""
    n = np.atleast_1d(np.asarray(a, dtype=F)).view(np.uint32).astype(np.uint64)
    U = np.uint64
    nan = (n & U(0x7FFFFFFF)) > U(0x7F800000)
    r = np.where(nan, (n >> U(16)) | U(64), (n + (U(0x7FFF) + ((n >> U(16)) & U(1)))) >> U(16))
    return r.astype(np.uint16)


def seq_sum(a) -> np.float32:
    """Σ a in float32, left to right, starting from +0 (C's `float s = 0; for (...) s += a[i];`)."""
    a = np.asarray(a, dtype=F)
    if a.size == 0:
        return F(0)
    return np.add.accumulate(a)[-1] + F(0)


def nearest_int(v):
    """ggml's nearest_int: round half to even (1.5·2^23 added in float), for |v| < 2^22."""
    return np.rint(np.asarray(v, dtype=F)).astype(np.int64)


def roundf(v):
    """C's roundf: halves away from zero (a - floor(a) is exact, so the test frac >= 0.5 is too)."""
    v = np.asarray(v, dtype=F)
    a = np.abs(v)
    fl = np.floor(a)
    r = fl + (a - fl >= F(0.5)).astype(F)
    return np.where(v < 0, -r, r).astype(F)


def trunc_int(v):
    """C's float -> integer conversion (towards zero)."""
    return np.trunc(np.asarray(v, dtype=F)).astype(np.int64)


def first_absmax(x: np.ndarray):
    """(amax, max): the largest |x| and the x that has it, the first one on ties (C's `ax > amax`)."""
    i = int(np.argmax(np.abs(x)))
    return np.abs(x[i]), x[i]


def u8(v) -> int:
    """C's conversion of an int to uint8_t (modulo 256)."""
    return int(v) & 0xFF


# ---- ggml's reference quantizers of the weight types (quantize_row_<type>_ref) ----------------------

def _q4_0_block(x):
    amax, mx = first_absmax(x)
    d = mx / F(-8)
    i = F(1) / d if d != 0 else F(0)
    q = np.minimum(15, trunc_int(x * i + F(8.5)))
    return struct.pack("<H", f16_bits(d)) + bytes((q[:16] | q[16:] << 4).astype(np.uint8))


def _q4_1_block(x):
    mn, mx = x.min(), x.max()
    d = (mx - mn) / F(15)
    i = F(1) / d if d != 0 else F(0)
    q = np.minimum(15, trunc_int((x - mn) * i + F(0.5)))
    return struct.pack("<HH", f16_bits(d), f16_bits(mn)) + bytes((q[:16] | q[16:] << 4).astype(np.uint8))


def _q5_pack(q):
    qh = 0
    for j in range(16):
        qh |= int((q[j] >> 4) & 1) << j
        qh |= int((q[j + 16] >> 4) & 1) << (j + 16)
    qs = ((q[:16] & 0x0F) | (q[16:] & 0x0F) << 4).astype(np.uint8)
    return struct.pack("<I", qh) + bytes(qs)


def _q5_0_block(x):
    amax, mx = first_absmax(x)
    d = mx / F(-16)
    i = F(1) / d if d != 0 else F(0)
    q = np.minimum(31, trunc_int(x * i + F(16.5)))
    return struct.pack("<H", f16_bits(d)) + _q5_pack(q)


def _q5_1_block(x):
    mn, mx = x.min(), x.max()
    d = (mx - mn) / F(31)
    i = F(1) / d if d != 0 else F(0)
    q = trunc_int((x - mn) * i + F(0.5)) & 0xFF  # ggml: (uint8_t)(x0 + 0.5f), no clamp
    return struct.pack("<HH", f16_bits(d), f16_bits(mn)) + _q5_pack(q)


def _q8_0_block(x):  # quantize_row_q8_0_ref: also the activations' Q8_0 (q8_act below)
    return q8_act_block(x, with_sum=False)


def make_qkx2_quants(nmax, x, w, rmin, rdelta, nstep, use_mad):
    """ggml's make_qkx2_quants: an affine fit x ≈ scale·L + min (min <= 0) of one sub-block, trying
    nstep+1 scales around nmax/(max-min) and keeping the one of least weighted error.
    Returns (scale, -min, L)."""
    mn, mx = x.min(), x.max()  # C: min = max = x[0], then `x[i] < min`, `x[i] > max`
    sum_w = seq_sum(w)
    sum_x = seq_sum(w * x)
    if mn > 0:
        mn = F(0)
    if mx == mn:
        return F(0), -mn, np.zeros(len(x), dtype=np.int64)
    iscale = F(nmax) / (mx - mn)
    scale = F(1) / iscale
    L = np.clip(nearest_int(iscale * (x - mn)), 0, nmax)
    diff = scale * L.astype(F) + mn - x
    diff = np.abs(diff) if use_mad else diff * diff
    best_error = seq_sum(w * diff)
    if nstep < 1:
        return scale, -mn, L
    for step in range(nstep + 1):
        iscale = (F(rmin) + F(rdelta) * F(step) + F(nmax)) / (mx - mn)
        laux = np.clip(nearest_int(iscale * (x - mn)), 0, nmax)
        lf = laux.astype(F)
        sum_l = seq_sum(w * lf)
        sum_l2 = seq_sum(w * lf * lf)
        sum_xl = seq_sum(w * lf * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = F(0)
                this_scale = sum_xl / sum_l2
            diff = this_scale * lf + this_min - x
            diff = np.abs(diff) if use_mad else diff * diff
            cur_error = seq_sum(w * diff)
            if cur_error < best_error:
                L, best_error, scale, mn = laux, cur_error, this_scale, this_min
    return scale, -mn, L


def make_qx_quants(nmax, x):
    """ggml's make_qx_quants with rmse_type = 1 and no importance weights (Q6_K): a symmetric fit
    x ≈ scale·l, l in [-nmax, nmax-1], trying 18 scales around -nmax/max, weights x². Returns (scale, L)
    with L = l + nmax (or 0 for an all-zero sub-block)."""
    n = len(x)
    amax, mx = first_absmax(x)
    if amax < GROUP_MAX_EPS:
        return F(0), np.zeros(n, dtype=np.int64)
    w = x * x
    iscale = F(-nmax) / mx
    l = np.clip(nearest_int(iscale * x), -nmax, nmax - 1)
    L = l + nmax
    lf = l.astype(F)
    sumlx = seq_sum(w * x * lf)
    suml2 = seq_sum(w * lf * lf)
    scale = sumlx / suml2 if suml2 != 0 else F(0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(F(nmax) + F(0.1) * F(step)) / mx
        l = np.clip(nearest_int(iscale * x), -nmax, nmax - 1)
        lf = l.astype(F)
        sumlx = seq_sum(w * x * lf)
        suml2 = seq_sum(w * lf * lf)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            L = l + nmax
            scale = sumlx / suml2
            best = scale * sumlx
    return scale, L


def make_q3_quants(nmax, x):
    """ggml's make_q3_quants with do_rmse: a symmetric fit, then up to 5 passes that move single
    quants while the weighted error drops. Returns (scale, L) with L = l + nmax (0 if all zero)."""
    n = len(x)
    amax, mx = first_absmax(x)
    if amax < GROUP_MAX_EPS:
        return F(0), np.zeros(n, dtype=np.int64)
    iscale = F(-nmax) / mx
    L = [int(v) for v in np.clip(nearest_int(iscale * x), -nmax, nmax - 1)]
    w = x * x
    lf = np.array(L, dtype=F)
    sumlx = seq_sum(w * x * lf)
    suml2 = seq_sum(w * lf * lf)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            wi, xi = w[i], x[i]
            slx = sumlx - wi * xi * F(L[i])
            if slx > 0:
                sl2 = suml2 - wi * F(L[i]) * F(L[i])
                new_l = int(np.clip(nearest_int(xi * sl2 / slx), -nmax, nmax - 1))
                if new_l != L[i]:
                    slx = slx + wi * xi * F(new_l)
                    sl2 = sl2 + wi * F(new_l) * F(new_l)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i], sumlx, suml2 = new_l, slx, sl2
                        n_changed += 1
        if not n_changed:
            break
    scale = sumlx / suml2 if suml2 > 0 else F(0)
    return scale, np.array(L, dtype=np.int64) + nmax


def _pack_2bit(L):
    """qs[32h + l] = L[128h + l] | L[128h + l + 32] << 2 | ... << 4 | ... << 6 (Q2_K, Q3_K)"""
    out = bytearray(64)
    for h in range(2):
        for l in range(32):
            e = 128 * h + l
            out[32 * h + l] = int(L[e] | L[e + 32] << 2 | L[e + 64] << 4 | L[e + 96] << 6)
    return bytes(out)


def _q2_k_block(x):
    L = np.zeros(QK_K, dtype=np.int64)
    scales = np.zeros(16, dtype=F)
    mins = np.zeros(16, dtype=F)
    for j in range(16):
        xs = x[16 * j:16 * j + 16]
        scales[j], mins[j], L[16 * j:16 * j + 16] = make_qkx2_quants(3, xs, np.abs(xs), -0.5, 0.1, 15, True)
    max_scale = F(0)
    max_min = F(0)
    for j in range(16):
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    sc = [0] * 16
    if max_scale > 0:
        iscale = F(15) / max_scale
        sc = [u8(nearest_int(iscale * scales[j])) for j in range(16)]
        d_bits = f16_bits(max_scale / F(15))
    else:
        d_bits = f16_bits(0)
    if max_min > 0:
        iscale = F(15) / max_min
        sc = [u8(sc[j] | int(nearest_int(iscale * mins[j])) << 4) for j in range(16)]
        dmin_bits = f16_bits(max_min / F(15))
    else:
        dmin_bits = f16_bits(0)
    for j in range(16):
        d = f16(d_bits) * F(sc[j] & 0xF)
        if d == 0:
            continue
        dm = f16(dmin_bits) * F(sc[j] >> 4)
        L[16 * j:16 * j + 16] = np.clip(nearest_int((x[16 * j:16 * j + 16] + dm) / d), 0, 3)
    return bytes(sc) + _pack_2bit(L) + struct.pack("<HH", d_bits, dmin_bits)


def _q3_k_block(x):
    L = np.zeros(QK_K, dtype=np.int64)
    scales = np.zeros(16, dtype=F)
    for j in range(16):
        scales[j], L[16 * j:16 * j + 16] = make_q3_quants(4, x[16 * j:16 * j + 16])
    max_scale = F(0)
    amax = F(0)
    for j in range(16):
        if abs(scales[j]) > amax:
            amax, max_scale = abs(scales[j]), scales[j]
    sb = [0] * 12
    if max_scale != 0:
        iscale = F(-32) / max_scale
        for j in range(16):
            l = int(np.int8(np.clip(nearest_int(iscale * scales[j]), -128, 127)))  # int8_t l = nearest_int(...)
            l = max(-32, min(31, l)) + 32
            if j < 8:
                sb[j] = l & 0xF
            else:
                sb[j - 8] |= (l & 0xF) << 4
            l >>= 4
            sb[j % 4 + 8] |= l << (2 * (j // 4))
        d_bits = f16_bits(F(1) / iscale)
    else:
        d_bits = f16_bits(0)
    for j in range(16):
        low = sb[j] & 0xF if j < 8 else sb[j - 8] >> 4
        sc = (low | ((sb[8 + j % 4] >> (2 * (j // 4))) & 3) << 4) - 32
        d = f16(d_bits) * F(sc)
        if d == 0:
            continue
        L[16 * j:16 * j + 16] = np.clip(nearest_int(x[16 * j:16 * j + 16] / d), -4, 3) + 4
    hmask = bytearray(32)
    for j in range(QK_K):  # the high bit of element j goes to bit j // 32 of hmask[j % 32]
        if L[j] > 3:
            hmask[j % 32] |= 1 << (j // 32)
            L[j] -= 4
    return bytes(hmask) + _pack_2bit(L) + bytes(sb) + struct.pack("<H", d_bits)


def _pack_k4_scales(ls, lm):
    """8 six-bit scales and mins into 12 bytes (the inverse of get_scale_min_k4)"""
    b = [0] * 12
    for j in range(8):
        if j < 4:
            b[j] = ls[j]
            b[j + 4] = lm[j]
        else:
            b[j + 4] = (ls[j] & 0xF) | (lm[j] & 0xF) << 4
            b[j - 4] |= (ls[j] >> 4) << 6
            b[j] |= (lm[j] >> 4) << 6
    return b


def get_scale_min_k4(j, b):
    if j < 4:
        return b[j] & 63, b[j + 4] & 63
    return (b[j + 4] & 0xF) | (b[j - 4] >> 6) << 4, (b[j + 4] >> 4) | (b[j] >> 6) << 4


def _q45_k_block(x, nmax, rmin, nstep):
    """quantize_row_q4_K_ref (nmax 15, rmin -1, 20 steps) and _q5_K_ref (31, -0.5, 15): returns
    (12 scale bytes, d bits, dmin bits, L)"""
    L = np.zeros(QK_K, dtype=np.int64)
    scales = np.zeros(8, dtype=F)
    mins = np.zeros(8, dtype=F)
    for j in range(8):
        xs = x[32 * j:32 * j + 32]
        sum_x2 = seq_sum(xs * xs)
        av_x = np.sqrt(sum_x2 / F(32))
        w = av_x + np.abs(xs)
        scales[j], mins[j], L[32 * j:32 * j + 32] = make_qkx2_quants(nmax, xs, w, rmin, 0.1, nstep, False)
    max_scale = F(0)
    max_min = F(0)
    for j in range(8):
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    inv_scale = F(63) / max_scale if max_scale > 0 else F(0)
    inv_min = F(63) / max_min if max_min > 0 else F(0)
    ls = [min(63, u8(nearest_int(inv_scale * scales[j]))) for j in range(8)]
    lm = [min(63, u8(nearest_int(inv_min * mins[j]))) for j in range(8)]
    sb = _pack_k4_scales(ls, lm)
    d_bits = f16_bits(max_scale / F(63))
    dmin_bits = f16_bits(max_min / F(63))
    for j in range(8):
        sc, m = get_scale_min_k4(j, sb)
        d = f16(d_bits) * F(sc)
        if d == 0:
            continue
        dm = f16(dmin_bits) * F(m)
        L[32 * j:32 * j + 32] = np.clip(nearest_int((x[32 * j:32 * j + 32] + dm) / d), 0, nmax)
    return sb, d_bits, dmin_bits, L


def _q4_k_block(x):
    sb, d_bits, dmin_bits, L = _q45_k_block(x, 15, -1.0, 20)
    qs = bytearray(128)
    for c in range(4):
        for l in range(32):
            qs[32 * c + l] = int(L[64 * c + l] | L[64 * c + 32 + l] << 4)
    return struct.pack("<HH", d_bits, dmin_bits) + bytes(sb) + bytes(qs)


def _q5_k_block(x):
    sb, d_bits, dmin_bits, L = _q45_k_block(x, 31, -0.5, 15)
    qh = bytearray(32)
    qs = bytearray(128)
    for c in range(4):
        for l in range(32):
            l1, l2 = int(L[64 * c + l]), int(L[64 * c + 32 + l])
            if l1 > 15:
                l1 -= 16
                qh[l] |= 1 << (2 * c)
            if l2 > 15:
                l2 -= 16
                qh[l] |= 1 << (2 * c + 1)
            qs[32 * c + l] = l1 | l2 << 4
    return struct.pack("<HH", d_bits, dmin_bits) + bytes(sb) + bytes(qh) + bytes(qs)


def _q6_k_block(x):
    L = np.zeros(QK_K, dtype=np.int64)
    scales = np.zeros(16, dtype=F)
    max_scale = F(0)
    max_abs_scale = F(0)
    for j in range(16):
        scales[j], L[16 * j:16 * j + 16] = make_qx_quants(32, x[16 * j:16 * j + 16])
        if abs(scales[j]) > max_abs_scale:
            max_abs_scale, max_scale = abs(scales[j]), scales[j]
    if max_abs_scale < GROUP_MAX_EPS:
        return bytes(210)  # ggml: memset 0, d = F16(0) = 0
    iscale = F(-128) / max_scale
    d_bits = f16_bits(F(1) / iscale)
    sc = [int(min(127, nearest_int(iscale * scales[j]))) for j in range(16)]
    for j in range(16):
        d = f16(d_bits) * F(sc[j])
        if d == 0:
            continue
        L[16 * j:16 * j + 16] = np.clip(nearest_int(x[16 * j:16 * j + 16] / d), -32, 31) + 32
    ql = bytearray(128)
    qh = bytearray(64)
    for h in range(2):
        for l in range(32):
            e = 128 * h + l
            q1, q2, q3, q4 = (int(L[e + 32 * k]) for k in range(4))
            ql[64 * h + l] = (q1 & 0xF) | (q3 & 0xF) << 4
            ql[64 * h + 32 + l] = (q2 & 0xF) | (q4 & 0xF) << 4
            qh[32 * h + l] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6
    return bytes(ql) + bytes(qh) + bytes(np.array(sc, dtype=np.int8).view(np.uint8)) + struct.pack("<H", d_bits)


def quantize_q6_k_rows(x) -> bytes:
    """quantize(\"Q6_K\", x) for many super-blocks at once: the same operations as _q6_k_block and
    make_qx_quants, each one applied to every super-block as a numpy array (float32 throughout, the
    sums left to right along their own axis as seq_sum does), so the same bytes (self_check compares
    the two on every stress row) in a fraction of the time: the GGUF model fixtures quantize
    millions of weights with it."""
    x = np.asarray(x, dtype=F).reshape(-1, 16, 16)  # [super-blocks · 16 sub-blocks, 16]
    nb = x.shape[0]

    def rsum(a):  # seq_sum along the last axis
        return np.add.accumulate(a, axis=-1)[..., -1] + F(0)

    with np.errstate(all="ignore"):  # all-zero sub-blocks divide by 0; their lanes are masked below
        # make_qx_quants(32, sub-block) for every sub-block
        idx = np.argmax(np.abs(x), axis=-1)  # the first largest |x|
        mx = np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]
        zero = np.abs(mx) < GROUP_MAX_EPS
        w = x * x
        iscale = F(-32) / mx
        l = np.clip(np.rint(iscale[..., None] * x), -32, 31)
        L = (l + 32).astype(np.int64)
        sumlx = rsum(w * x * l)
        suml2 = rsum(w * l * l)
        scale = np.where(suml2 != 0, sumlx / suml2, F(0)).astype(F)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            isc = -(F(32) + F(0.1) * F(step)) / mx
            l = np.clip(np.rint(isc[..., None] * x), -32, 31)
            sumlx = rsum(w * x * l)
            suml2 = rsum(w * l * l)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(better[..., None], (l + 32).astype(np.int64), L)
            new_scale = (sumlx / suml2).astype(F)
            scale = np.where(better, new_scale, scale)
            best = np.where(better, new_scale * sumlx, best).astype(F)
        scale = np.where(zero, F(0), scale).astype(F)
        L = np.where(zero[..., None], 0, L)
        # the super-block: the sub-block scale of largest magnitude (the first), 8-bit scales, d
        scales = scale.reshape(nb, 16)
        L = L.reshape(nb, 256)
        j = np.argmax(np.abs(scales), axis=1)
        max_scale = scales[np.arange(nb), j]
        empty = np.abs(max_scale) < GROUP_MAX_EPS
        isc = F(-128) / max_scale
        d = (F(1) / isc).astype(np.float16)
        sc = np.minimum(127, np.rint(isc[:, None] * scales)).astype(np.int64)
        dsub = d.astype(F)[:, None] * sc.astype(F)  # [nb, 16]
        requant = np.clip(np.rint(x.reshape(nb, 16, 16) / dsub[..., None]), -32, 31).astype(np.int64) + 32
        L = np.where(np.repeat(dsub == 0, 16, axis=1), L, requant.reshape(nb, 256))
    L = np.where(empty[:, None], 0, L)
    sc = np.where(empty[:, None], 0, sc)
    d = np.where(empty, np.float16(0), d)
    q = L.reshape(nb, 2, 4, 32)  # element 128h + 32k + l
    ql = np.concatenate([(q[:, :, 0] & 0xF) | (q[:, :, 2] & 0xF) << 4, (q[:, :, 1] & 0xF) | (q[:, :, 3] & 0xF) << 4],
                        axis=2).reshape(nb, 128)
    qh = ((q[:, :, 0] >> 4) | (q[:, :, 1] >> 4) << 2 | (q[:, :, 2] >> 4) << 4 | (q[:, :, 3] >> 4) << 6).reshape(nb, 64)
    out = np.concatenate([ql.astype(np.uint8), qh.astype(np.uint8), sc.astype(np.int8).view(np.uint8),
                          d.astype("<f2").reshape(nb, 1).view(np.uint8)], axis=1)
    return out.tobytes()


_QUANTIZERS = {
    "Q4_0": _q4_0_block, "Q4_1": _q4_1_block, "Q5_0": _q5_0_block, "Q5_1": _q5_1_block, "Q8_0": _q8_0_block,
    "Q2_K": _q2_k_block, "Q3_K": _q3_k_block, "Q4_K": _q4_k_block, "Q5_K": _q5_k_block, "Q6_K": _q6_k_block,
}


def quantize(name: str, x) -> bytes:
    """A row of floats -> the bytes of `name` blocks, by ggml's reference quantizer (quantize_row_*_ref)."""
    x = np.asarray(x, dtype=F).ravel()
    if name == "F32":
        return x.astype("<f4").tobytes()
    if name == "F16":
        return x.astype("<f2").tobytes()
    if name == "BF16":
        return bf16_bits(x).astype("<u2").tobytes()
    be = TYPES[name][1]
    row_bytes(name, len(x))
    return b"".join(_QUANTIZERS[name](x[i:i + be]) for i in range(0, len(x), be))


# ---- dequantization (ggml's dequantize_row_<type>) ---------------------------------------------------

def _unpack(name: str, b: bytes):
    """(quants, per-element scale, per-element offset or None) of one block, the quants as int64, so
    that x = scale·q (- offset for the K-quants, + offset for Q4_1/Q5_1) with ggml's operations."""
    a = np.frombuffer(b, dtype=np.uint8).astype(np.int64)
    if name == "Q4_0":
        q = np.concatenate([a[2:18] & 0xF, a[2:18] >> 4]) - 8
        return q, f16(a[0] | a[1] << 8)
    if name in ("Q4_1",):
        q = np.concatenate([a[4:20] & 0xF, a[4:20] >> 4])
        return q, f16(a[0] | a[1] << 8), f16(a[2] | a[3] << 8)
    if name in ("Q5_0", "Q5_1"):
        o = 2 if name == "Q5_0" else 4
        qh = int(a[o] | a[o + 1] << 8 | a[o + 2] << 16 | a[o + 3] << 24)
        qs = a[o + 4:o + 20]
        hi = np.array([(qh >> j) & 1 for j in range(32)], dtype=np.int64) << 4
        q = np.concatenate([qs & 0xF, qs >> 4]) | hi
        if name == "Q5_0":
            return q - 16, f16(a[0] | a[1] << 8)
        return q, f16(a[0] | a[1] << 8), f16(a[2] | a[3] << 8)
    raise KeyError(name)


def _q2_k_quants(qs):
    q = np.zeros(QK_K, dtype=np.int64)
    for h in range(2):
        for k in range(4):
            q[128 * h + 32 * k:128 * h + 32 * k + 32] = (qs[32 * h:32 * h + 32] >> (2 * k)) & 3
    return q


def k4_scales(b):
    sc, mn = zip(*(get_scale_min_k4(j, [int(v) for v in b]) for j in range(8)))
    return list(sc), list(mn)


def q3_k_scales(b):
    b = [int(v) for v in b]
    return [((b[j] & 0xF if j < 8 else b[j - 8] >> 4) | ((b[8 + j % 4] >> (2 * (j // 4))) & 3) << 4) - 32
            for j in range(16)]


def block_quants(name: str, b: bytes) -> np.ndarray:
    """The quants q_e of one K-quant block as signed ints (kernels/ggml_quant.h's formulas)."""
    a = np.frombuffer(b, dtype=np.uint8).astype(np.int64)
    q = np.zeros(QK_K, dtype=np.int64)
    if name == "Q2_K":
        return _q2_k_quants(a[16:80])
    if name == "Q3_K":
        hm, qs = a[0:32], a[32:96]
        for h in range(2):
            for k in range(4):
                low = (qs[32 * h:32 * h + 32] >> (2 * k)) & 3
                high = (hm >> (4 * h + k)) & 1
                q[128 * h + 32 * k:128 * h + 32 * k + 32] = low - np.where(high == 1, 0, 4)
        return q
    if name in ("Q4_K", "Q5_K"):
        qs = a[16:144] if name == "Q4_K" else a[48:176]
        for c in range(4):
            q[64 * c:64 * c + 32] = qs[32 * c:32 * c + 32] & 0xF
            q[64 * c + 32:64 * c + 64] = qs[32 * c:32 * c + 32] >> 4
            if name == "Q5_K":
                qh = a[16:48]
                q[64 * c:64 * c + 32] |= ((qh >> (2 * c)) & 1) << 4
                q[64 * c + 32:64 * c + 64] |= ((qh >> (2 * c + 1)) & 1) << 4
        return q
    if name == "Q6_K":
        ql, qh = a[0:128], a[128:192]
        for h in range(2):
            lo, hi = ql[64 * h:64 * h + 64], qh[32 * h:32 * h + 32]
            e = 128 * h
            q[e:e + 32] = (lo[:32] & 0xF) | (hi & 3) << 4
            q[e + 32:e + 64] = (lo[32:] & 0xF) | ((hi >> 2) & 3) << 4
            q[e + 64:e + 96] = (lo[:32] >> 4) | ((hi >> 4) & 3) << 4
            q[e + 96:e + 128] = (lo[32:] >> 4) | ((hi >> 6) & 3) << 4
        return q - 32
    raise KeyError(name)


def _dequantize_block(name: str, b: bytes) -> np.ndarray:
    a = np.frombuffer(b, dtype=np.uint8)
    h16 = lambda o: f16(int(a[o]) | int(a[o + 1]) << 8)  # noqa: E731
    if name in ("Q4_0", "Q5_0"):
        q, d = _unpack(name, b)
        return q.astype(F) * d
    if name in ("Q4_1", "Q5_1"):
        q, d, m = _unpack(name, b)
        return q.astype(F) * d + m
    if name in ("Q8_0", "Q8_1"):
        o = 2 if name == "Q8_0" else 4
        return a[o:o + 32].view(np.int8).astype(F) * h16(0)
    if name == "Q8_K":
        return np.frombuffer(b[0:4], dtype="<f4")[0] * a[4:260].view(np.int8).astype(F)
    q = block_quants(name, b).astype(F)
    y = np.zeros(QK_K, dtype=F)
    if name == "Q2_K":
        d, dmin = h16(80), h16(82)
        for s in range(16):
            dl, ml = d * F(a[s] & 0xF), dmin * F(a[s] >> 4)
            y[16 * s:16 * s + 16] = dl * q[16 * s:16 * s + 16] - ml
    elif name == "Q3_K":
        d = h16(108)
        for s, sc in enumerate(q3_k_scales(a[96:108])):
            y[16 * s:16 * s + 16] = (d * F(sc)) * q[16 * s:16 * s + 16]
    elif name in ("Q4_K", "Q5_K"):
        d, dmin = h16(0), h16(2)
        sc, mn = k4_scales(a[4:16])
        for s in range(8):
            y[32 * s:32 * s + 32] = (d * F(sc[s])) * q[32 * s:32 * s + 32] - dmin * F(mn[s])
    elif name == "Q6_K":
        d = h16(208)
        sc = a[192:208].view(np.int8)
        for s in range(16):
            y[16 * s:16 * s + 16] = (d * F(sc[s])) * q[16 * s:16 * s + 16]
    return y


def dequantize(name: str, data: bytes, n: int) -> np.ndarray:
    """The bytes of a row of n elements -> n floats, with ggml's dequantize_row_<type> arithmetic."""
    if len(data) != row_bytes(name, n):
        raise ValueError(f"{name}: {n} elements need {row_bytes(name, n)} bytes, not {len(data)}")
    if name == "F32":
        return np.frombuffer(data, dtype="<f4").astype(F)
    if name == "F16":
        return np.frombuffer(data, dtype="<f2").astype(F)
    if name == "BF16":
        return (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(F)
    _, be, bb, _ = TYPES[name]
    return np.concatenate([_dequantize_block(name, data[i:i + bb]) for i in range(0, len(data), bb)])


# ---- the fast path: activation quantization and ggml's integer dot products -------------------------

def q8_act_block(x, with_sum: bool) -> bytes:
    """quantize_row_q8_0_ref (with_sum False) / quantize_row_q8_1_ref (True) on one block of 32; a
    block with inf or NaN: d = s = NaN, q = 0 (lmlab's rule, ggml_quant.h)."""
    x = np.asarray(x, dtype=F)
    if not np.all(np.isfinite(x)):
        nan = f16_bits(np.nan)
        return struct.pack("<H", nan) + (struct.pack("<H", nan) if with_sum else b"") + bytes(32)
    amax = np.max(np.abs(x))
    d = amax / F(127)
    with np.errstate(over="ignore", invalid="ignore"):
        i = F(1) / d if d != 0 else F(0)
        v = x * i
    q = roundf(np.nan_to_num(np.clip(v, F(-127), F(127)), nan=0.0)).astype(np.int64)
    head = struct.pack("<H", f16_bits(d))
    if with_sum:
        head += struct.pack("<H", f16_bits(F(int(q.sum())) * d))
    return head + bytes(q.astype(np.int8).view(np.uint8))


def q8_k_block(x) -> bytes:
    """quantize_row_q8_K_ref on one block of 256 (all-zero block: d = 0, q = bsums = 0; non-finite: d = NaN)."""
    x = np.asarray(x, dtype=F)
    finite = bool(np.all(np.isfinite(x)))
    amax, mx = first_absmax(np.where(np.isnan(x), F(0), x))
    if not finite or amax == 0:
        return struct.pack("<f", F(0) if finite else F(np.nan)) + bytes(288)
    iscale = F(-127) / mx
    with np.errstate(over="ignore", invalid="ignore"):
        v = iscale * x
    q = np.minimum(127, nearest_int(np.nan_to_num(np.clip(v, F(-127), F(127)), nan=0.0)))
    bsums = q.reshape(16, 16).sum(axis=1)
    return struct.pack("<f", F(1) / iscale) + bytes(q.astype(np.int8).view(np.uint8)) + bsums.astype("<i2").tobytes()


def quantize_activations(act: str, x) -> bytes:
    x = np.asarray(x, dtype=F).ravel()
    row_bytes(act, len(x))
    if act == "Q8_K":
        return b"".join(q8_k_block(x[i:i + QK_K]) for i in range(0, len(x), QK_K))
    return b"".join(q8_act_block(x[i:i + QK], act == "Q8_1") for i in range(0, len(x), QK))


def _act_fields(act: str, b: bytes):
    """(d, s or None, q int64 array, bsums or None) of one activation block"""
    a = np.frombuffer(b, dtype=np.uint8)
    if act == "Q8_K":
        return np.frombuffer(b[0:4], dtype="<f4")[0], None, a[4:260].view(np.int8).astype(np.int64), \
            np.frombuffer(b[260:292], dtype="<i2").astype(np.int64)
    d = f16(int(a[0]) | int(a[1]) << 8)
    if act == "Q8_1":
        return d, f16(int(a[2]) | int(a[3]) << 8), a[4:36].view(np.int8).astype(np.int64), None
    return d, None, a[2:34].view(np.int8).astype(np.int64), None


def vec_dot(name: str, w: bytes, xa: bytes) -> np.float32:
    """ggml_vec_dot_<name>_q8_<x>_generic: integer sums per block (exact, int64 here), then ggml's
    float operations in ggml's order."""
    _, _, wb, act = TYPES[name]
    ab = TYPES[act][2]
    nb = len(w) // wb
    assert len(w) == nb * wb and len(xa) == nb * ab
    sumf = F(0)
    sums = np.zeros(8, dtype=F)  # the K-quants' 8 lanes
    for i in range(nb):
        blk, ablk = w[i * wb:(i + 1) * wb], xa[i * ab:(i + 1) * ab]
        a = np.frombuffer(blk, dtype=np.uint8)
        h16 = lambda o: f16(int(a[o]) | int(a[o + 1]) << 8)  # noqa: E731
        xd, xs, xq, bsums = _act_fields(act, ablk)
        if name in ("Q4_0", "Q5_0", "Q4_1", "Q5_1"):
            fields = _unpack(name, blk)
            sumi = F(int(np.dot(fields[0], xq)))
            if name == "Q4_0":
                sumf = sumf + (sumi * fields[1]) * xd
            elif name == "Q5_0":
                sumf = sumf + (fields[1] * xd) * sumi
            else:
                sumf = sumf + ((fields[1] * xd) * sumi + fields[2] * xs)
        elif name == "Q8_0":
            sumi = F(int(np.dot(a[2:34].view(np.int8).astype(np.int64), xq)))
            sumf = sumf + sumi * (h16(0) * xd)
        elif name == "Q2_K":
            q = block_quants(name, blk)
            sc = a[0:16].astype(np.int64)
            summs = int(np.dot(bsums, sc >> 4))
            isum = sum(int(sc[s] & 0xF) * int(np.dot(q[16 * s:16 * s + 16], xq[16 * s:16 * s + 16])) for s in range(16))
            dall, dmin = xd * h16(80), xd * h16(82)
            sumf = sumf + (dall * F(isum) - dmin * F(summs))
        else:  # Q3_K .. Q6_K: lane l gets the integer sum of elements e % 8 == l, scaled per sub-block
            q = block_quants(name, blk)
            if name == "Q3_K":
                sc, sub = q3_k_scales(a[96:108]), 16
            elif name == "Q6_K":
                sc, sub = [int(v) for v in a[192:208].view(np.int8)], 16
            else:
                sc, mn = k4_scales(a[4:16])
                sub = 32
            prod = q * xq * np.repeat(np.array(sc, dtype=np.int64), sub)
            aux = prod.reshape(-1, 8).sum(axis=0)  # exact in int64 (and below 2^24: exact as a float)
            dpos = {"Q3_K": 108, "Q6_K": 208}.get(name, 0)
            d = h16(dpos) * xd
            sums = sums + d * aux.astype(F)
            if name in ("Q4_K", "Q5_K"):
                sumi = int(np.dot(bsums, np.repeat(np.array(mn, dtype=np.int64), 2)))
                dmin = h16(2) * xd
                sumf = sumf - dmin * F(sumi)
    if TYPES[name][1] == QK_K and name != "Q2_K":
        for l in range(8):
            sumf = sumf + sums[l]
    return F(sumf)


def dot_float(name: str, w: bytes, x) -> np.float32:
    """F32/F16/BF16 weights: element j to lane j % 8 (zero-padded at the end), lanes added pairwise."""
    x = np.asarray(x, dtype=F)
    n = len(x)
    wf = dequantize(name, w, n)
    pad = (-n) % 8
    wf = np.concatenate([wf, np.zeros(pad, F)]).reshape(-1, 8)
    xp = np.concatenate([x, np.zeros(pad, F)]).reshape(-1, 8)
    acc = np.zeros(8, dtype=F)
    for r in range(wf.shape[0]):
        acc = acc + wf[r] * xp[r]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


def matvec_fast(name: str, W: bytes, rows: int, cols: int, x) -> np.ndarray:
    """kernels/ggml_quant.cpp's matvec_fast: activations quantized once, then vec_dot per row."""
    rb = row_bytes(name, cols)
    act = TYPES[name][3]
    out = np.zeros(rows, dtype=F)
    xa = quantize_activations(act, x) if act else None
    for r in range(rows):
        wr = W[r * rb:(r + 1) * rb]
        out[r] = vec_dot(name, wr, xa) if act else dot_float(name, wr, x)
    return out


def min_magnitudes(name: str, w: bytes, n: int) -> np.ndarray:
    """|μ_j|: the size of element j's min (offset) term, 0 for the symmetric types (float64)."""
    _, be, bb, _ = TYPES[name]
    out = np.zeros(n)
    for i in range(n // be):
        a = np.frombuffer(w[i * bb:(i + 1) * bb], dtype=np.uint8)
        h16 = lambda o: float(f16(int(a[o]) | int(a[o + 1]) << 8))  # noqa: E731
        if name in ("Q4_1", "Q5_1"):
            out[i * be:(i + 1) * be] = abs(h16(2))
        elif name == "Q2_K":
            out[i * be:(i + 1) * be] = np.repeat(np.abs(h16(82) * (a[0:16] >> 4).astype(np.float64)), 16)
        elif name in ("Q4_K", "Q5_K"):
            out[i * be:(i + 1) * be] = np.repeat(np.abs(h16(2) * np.array(k4_scales(a[4:16])[1], dtype=np.float64)), 32)
    return out


def act_dequant64(act: str, xa: bytes, n: int):
    """(x̂ in float64: d·q exactly, s of each Q8_1 block or None)"""
    bb, be = TYPES[act][2], TYPES[act][1]
    xh = np.zeros(n)
    s = []
    for i in range(n // be):
        d, sb, q, _ = _act_fields(act, xa[i * bb:(i + 1) * bb])
        xh[i * be:(i + 1) * be] = float(d) * q
        s.append(float(sb) if sb is not None else None)
    return xh, s


def fast_error_bound(name: str, w: bytes, x) -> float:
    """A bound on |matvec_fast - matvec| for one row (the derivation is in kernels/ggml_quant_test.cpp):
    the activation quantization error seen through the weights, the Q8_1 block sums' own rounding,
    the fast path's float roundings, and the plain path's final rounding."""
    x = np.asarray(x, dtype=F)
    n = len(x)
    u = 2.0 ** -24
    wf = dequantize(name, w, n).astype(np.float64)
    x64 = x.astype(np.float64)
    plain = abs(float(F(np.dot(wf, x64))))
    act = TYPES[name][3]
    if act is None:
        return (n / 8 + 4) * u * 1.01 * float(np.dot(np.abs(wf), np.abs(x64))) + u * plain
    xa = quantize_activations(act, x)
    xh, s = act_dequant64(act, xa, n)
    mu = min_magnitudes(name, w, n)
    nb = n // TYPES[name][1]
    b = float(np.dot(np.abs(wf), np.abs(x64 - xh)))
    if act == "Q8_1":
        for i in range(n // QK):
            b += float(mu[i * QK]) * abs(s[i] - float(xh[i * QK:(i + 1) * QK].sum()))
    b += (nb + 16) * u * 1.01 * float(np.dot(np.abs(wf) + 2 * mu, np.abs(xh)))
    b += u * float(np.dot(np.abs(wf), np.abs(x64))) * (1 + 2.0 ** -16) + u * plain
    return b


# ---- self_check: ours against gguf, on blocks chosen to break things ---------------------------------

def stress_rows(n: int, rng: np.random.Generator):
    """(label, row of n floats): zero blocks, maximal scales, negative mins, each sub-block alone
    large or zero (every position of the packed scales sees high bits), ramps, rounding ties, random."""
    rows = [("zeros", np.zeros(n, F))]
    rows.append(("normal", rng.standard_normal(n).astype(F)))
    rows.append(("negative", (-np.abs(rng.standard_normal(n)) - 3).astype(F)))  # all below 0: a min term
    rows.append(("positive offset", (np.abs(rng.standard_normal(n)) + 5).astype(F)))
    rows.append(("huge", (rng.standard_normal(n) * F(3e4)).astype(F)))  # F16 scales near 65504 (and past it)
    rows.append(("tiny", (rng.standard_normal(n) * F(1e-6)).astype(F)))  # F16 subnormal scales
    ties = np.resize(np.array([127, 2.5, -0.5, 0.5, -2.5, 1.5, -126.5, 63.5, -8, 4, 0.25, -0.75, 7.5, -7.5, 3, 0], F), n)
    rows.append(("ties", ties))  # amax 127: d = 1, x·id = x, halves exact
    rows.append(("ramp", np.linspace(-1, 1, n, dtype=F)))
    rows.append(("one outlier", np.where(np.arange(n) == n // 3, F(100), rng.standard_normal(n).astype(F) * F(0.01)).astype(F)))
    for s in range(0, min(n, QK_K) // 16):  # sub-block s of every super-block large, the others small
        r = rng.standard_normal(n).astype(F) * F(0.01)
        r[(np.arange(n) % QK_K) // 16 == s] *= F(300)
        rows.append((f"sub-block {s} large", r))
    for s in range(0, min(n, QK_K) // 32):  # sub-block s zero, the others at growing scales
        scale = np.repeat(np.exp2(np.arange(QK_K // 32, dtype=F) - 4), 32)[np.arange(n) % QK_K]
        r = (rng.standard_normal(n).astype(F) * scale).astype(F)
        r[(np.arange(n) % QK_K) // 32 == s] = 0
        rows.append((f"sub-block {s} zero, scales 2^k", r))
    rows.append(("scale ramp", (rng.standard_normal(n) * np.linspace(0.001, 1, n)).astype(F)))
    rows.append(("sign-mixed means", (rng.standard_normal(n) + np.where((np.arange(n) // 16) % 2, 4, -4)).astype(F)))
    return rows


def _bits(a) -> np.ndarray:
    return np.asarray(a, dtype=F).view(np.uint32)


def self_check(verbose: bool = True, blocks: int = 2, random_rows: int = 20, fast_x: int = 0) -> int:
    """Compares our quantizers and dequantizers with the gguf package's, bit for bit, and our fast-path
    arithmetic with the float64 dot of the dequantized operands within its error bound; the
    vectorised Q6_K quantizer with the per-block one. Rows of `blocks` super-blocks, `random_rows`
    rows of random bytes per type, the fast path on every stress row as activations (fast_x = 0) or
    on the first fast_x of them (refs.selfcheck: 1 block, 5 random rows, 4 activations: every check
    in a fifth of the time; the kernel.ggml.* fixtures cover the rest). Returns the number of
    failures (0: all good)."""
    import gguf  # the gguf package: llama.cpp's own Python (gguf-py)
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as GT

    failures = 0

    def fail(msg):
        nonlocal failures
        failures += 1
        print("FAIL:", msg)

    rng = np.random.default_rng(1234)
    # 1. the table: ids and block sizes as gguf has them. One known difference: gguf 0.19.0 says Q8_1 is
    # 40 bytes (d and s as two float32, an old layout); ggml's block_q8_1 is two F16 and 32 int8 = 36
    # (static_assert in ggml-common.h). Q8_1 never appears in a file, so gguf-py never meets it.
    for name, (tid, be, bb, _) in TYPES.items():
        gt = GT[name]
        theirs = (32, 36) if name == "Q8_1" and GGML_QUANT_SIZES[gt] == (32, 40) else GGML_QUANT_SIZES[gt]
        if int(gt) != tid or theirs != (be, bb):
            fail(f"table {name}: ours {(tid, be, bb)}, gguf {(int(gt), GGML_QUANT_SIZES[gt])}")

    n = blocks * QK_K  # super-blocks of 256, each eight 32-blocks
    counts = {}
    for name in WEIGHT_TYPES:
        gt = GT[name]
        for label, x in stress_rows(n, rng):
            with np.errstate(over="ignore"):
                ours = quantize(name, x)
            if name == "Q6_K":
                with np.errstate(over="ignore"):
                    if quantize_q6_k_rows(x) != ours:
                        fail(f"quantize_q6_k_rows '{label}': differs from the per-block quantizer")
            if name != "F32" and name in ("F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
                with np.errstate(all="ignore"):
                    theirs = gguf.quants.quantize(x.reshape(1, -1), gt).tobytes()
                if ours != theirs:
                    fail(f"quantize {name} '{label}': differs from gguf.quants.quantize")
            back = dequantize(name, ours, n)
            with np.errstate(all="ignore"):
                gback = gguf.quants.dequantize(np.frombuffer(ours, dtype=np.uint8).reshape(1, -1), gt).ravel()
            if not np.array_equal(_bits(back), _bits(gback)):
                fail(f"dequantize {name} '{label}': differs from gguf.quants.dequantize")
            # round trip: every element within the block's own step (K-quants: a loose sanity bound)
            # (not on "huge", whose scales overflow F16, nor on "tiny", whose scales are F16 subnormals
            # with a few bits: the bit-for-bit comparison above covers both)
            if label not in ("huge", "tiny") and name not in ("F32",):
                err = np.abs(back.astype(np.float64) - x)
                amax = np.abs(x.astype(np.float64)).reshape(-1, TYPES[name][1]).max(axis=1)
                amax = np.repeat(amax, TYPES[name][1])
                lim = {"F16": 1e-3, "BF16": 8e-3, "Q8_0": 0.6 / 127, "Q4_0": 1.1 / 8, "Q5_0": 1.1 / 16}.get(name, 0.5)
                spread = np.repeat(np.ptp(x.astype(np.float64).reshape(-1, TYPES[name][1]), axis=1), TYPES[name][1])
                bound = lim * np.maximum(amax, spread) + 1e-30 + (1e-6 * amax if name in ("Q4_1", "Q5_1") else 0)
                if name in ("Q4_1", "Q5_1"):
                    bound = (0.6 / (15 if name == "Q4_1" else 31)) * spread + 2e-3 * amax + 1e-30
                if name in ("F16", "BF16"):
                    bound = lim * np.abs(x.astype(np.float64)) + 6e-8
                if np.any(err > bound):
                    fail(f"round trip {name} '{label}': max error {err.max():.3g} past its bound")
            counts[name] = counts.get(name, 0) + 1
        # random bytes with finite F16 fields: dequantization is pure bit-unpacking
        for _ in range(random_rows):
            raw = bytearray(rng.integers(0, 256, row_bytes(name, n), dtype=np.uint8).tobytes())
            _fix_f16_fields(name, raw, rng)
            back = dequantize(name, bytes(raw), n)
            with np.errstate(all="ignore"):
                gback = gguf.quants.dequantize(np.frombuffer(bytes(raw), dtype=np.uint8).reshape(1, -1), gt).ravel()
            if not np.array_equal(_bits(back), _bits(gback)):
                fail(f"dequantize {name} of random bytes: differs from gguf.quants.dequantize")

    # 2. the fast path against the float64 dot of the dequantized weights and the exact activations,
    # within fast_error_bound (the bound kernels/ggml_quant_test.cpp uses), for every stress row as
    # the activations and quantized stress rows as the weights
    worst = {}
    for name in WEIGHT_TYPES:
        rows_w = [x for label, x in stress_rows(n, rng)[1:9] if label != "huge"]  # (huge: inf scales, NaN out)
        W = b"".join(quantize(name, r) for r in rows_w)
        rb = row_bytes(name, n)
        xs = [(label, x) for label, x in stress_rows(n, rng) if label != "huge"]
        for label, x in xs[:fast_x] if fast_x else xs:
            y = matvec_fast(name, W, len(rows_w), n, x)
            for r in range(len(rows_w)):
                wrow = W[r * rb:(r + 1) * rb]
                plain = F(np.dot(dequantize(name, wrow, n).astype(np.float64), x.astype(np.float64)))
                bound = fast_error_bound(name, wrow, x)
                err = abs(float(y[r]) - float(plain))
                worst[name] = max(worst.get(name, 0.0), err / bound if bound > 0 else (0.0 if err == 0 else np.inf))
                if not err <= bound:
                    fail(f"fast {name} '{label}' row {r}: |fast - plain| = {err:.3g} > bound {bound:.3g}")
    if verbose:
        print("fast vs plain, max |error| / bound:", ", ".join(f"{k} {v:.3f}" for k, v in worst.items()))
    if verbose:
        print(f"self_check: {sum(counts.values())} stress rows over {len(counts)} weight types; "
              f"{failures} failure(s)")
    return failures


def _fix_f16_fields(name: str, raw: bytearray, rng: np.random.Generator):
    """Random F16 scale fields -> finite random halves (random bytes would give inf/NaN scales)."""
    _, be, bb, _ = TYPES[name]
    offsets = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82],
               "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "F16": [0]}.get(name, [])
    for blk in range(0, len(raw), bb):
        for o in offsets:
            struct.pack_into("<H", raw, blk + o, f16_bits(F(rng.standard_normal() * 0.1)))
    if name == "BF16":
        for i in range(0, len(raw), 2):
            struct.pack_into("<H", raw, i, int(bf16_bits(F(rng.standard_normal()))[0]))


if __name__ == "__main__":
    bad = self_check()
    sys.exit(1 if bad else 0)
