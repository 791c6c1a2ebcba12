// ggml's tensor types (the block formats of GGUF files) as lmlab kernels.
//
// What this is: the byte layouts of ggml's weight types (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q2_K .. Q6_K) and of its activation types (Q8_0, Q8_1, Q8_K), with
//   - dequantize_row: ggml's dequantize_row_* (ggml/src/ggml-quants.c), operation for operation;
//   - quantize_activations: ggml's quantize_row_q8_0_ref / _q8_1_ref / _q8_K_ref;
//   - vec_dot: the integer dot products of ggml's CPU backend, its generic C versions
//     (ggml_vec_dot_q4_0_q8_0_generic etc. in ggml/src/ggml-cpu/quants.c): the same integer sums and
//     the same float operations in the same order, so the same inputs give the same bits (checked
//     against ggml's own C compiled without fused multiply-adds). Not the bits of ggml's SIMD paths:
//     its AVX2 quantize_row_q8_0 multiplies by 127/amax and rounds halves to even, and its SIMD dot
//     products reorder and fuse the float operations;
//   - two matvecs over a quantized matrix: matvec (dequantize a row, double accumulation: the
//     readable reference, like kernels.h's matvec) and matvec_fast (activations quantized once,
//     then vec_dot per row: what ggml's CPU backend computes).
//   - quantize_row: ggml's reference quantizers of the weight types (quantize_row_<type>_ref, what
//     llama.cpp's quantizer runs without an importance matrix), in kernels/ggml_quantize.cpp: lmlab
//     quantizes a float model in memory with them (`--quantize gguf-q4_k`); it does not write files.
//
// Bytes are read portably: every multi-byte field is little-endian (as GGUF stores it) and is
// assembled from bytes, never read through a struct that assumes the host's layout or endianness.
// A block is a run of bytes; the layouts are spelled out below, offsets in bytes.
//
// Why blocks: a weight row is cut into blocks of 32 (or 256) values, each block with its own scale,
// so one outlier only coarsens its own block (the Q8_0 groups of kernels.h, with a fixed group of 32).
// Analogy: a block is a tiny column-store page with its own dictionary.
//
// Preconditions are checked once per call (kernels/check.h): a wrong size throws
// std::invalid_argument naming the kernel and, where it matters, the type and the length.
// No function here allocates: scratch memory is passed in by the caller.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace lmlab::ggml {

// The ids of ggml.h's enum ggml_type (GGUF stores them as uint32). Only the types below are
// supported; ids that ggml has and we do not (Q4_2, IQ*, TQ*, MXFP4, ...) are refused by find_type.
enum class Type : std::uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,  // activations only (for Q4_1 and Q5_1 weights)
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,  // activations only (for the K-quants)
    BF16 = 30,
};

struct TypeInfo {
    Type type;
    std::string_view name;    // as ggml names it: "Q4_K"
    std::size_t block_elems;  // elements per block: 1 (F32, F16, BF16), 32, or 256 (the K-quants' super-block)
    std::size_t block_bytes;  // bytes per block
    bool is_weight;           // may be a tensor of a model file (all but Q8_1 and Q8_K)
    Type vec_dot_type;        // the type the activations are quantized to for matvec_fast (as ggml's CPU
                              // backend's vec_dot_type): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1,
                              // Q8_K for the K-quants; F32 for F32, F16, BF16 (activations stay float)
};

// The supported type with this ggml id, or nothing: a loader refuses a tensor of any other type by
// its id (and ggml's name for it, which the loader knows from the file, not from us).
std::optional<TypeInfo> find_type(std::uint32_t id);
// The supported type named `name` as ggml names it, case-insensitively ("q4_k" -> Q4_K), or nothing.
std::optional<TypeInfo> find_type_named(std::string_view name);
// The entry of a supported type.
const TypeInfo& type_info(Type type);
// Bytes of a row of n elements: n / block_elems · block_bytes. n must be a whole number of blocks:
// otherwise std::invalid_argument naming the type and n ("Q4_K: a row of 100 elements is not a
// whole number of 256-element blocks").
std::size_t row_bytes(Type type, std::size_t n);

// ---- Half-precision floats ----------------------------------------------------------------------
// IEEE binary16 (F16): 1 sign, 5 exponent (bias 15), 10 mantissa bits; bfloat16 (BF16): the top 16
// bits of a binary32 (1, 8, 7). Every F16 and BF16 value is exactly a float, subnormals included.

// Exact. inf stays inf; a NaN stays NaN, its payload kept and made quiet (as the F16C instruction
// and ggml's conversion do).
float fp16_to_fp32(std::uint16_t h);
// Round to nearest, ties to even (ggml's GGML_FP32_TO_FP16, numpy's astype(float16)); past the largest
// half (65504, and 65520 rounds up) inf; below half the smallest subnormal (2^-25) ±0; NaN -> quiet
// NaN 0x7E00 with the sign (ggml's software conversion).
std::uint16_t fp32_to_fp16(float f);
// Exact: the 16 bits are the top half of the float.
float bf16_to_fp32(std::uint16_t h);
// Round to nearest, ties to even; NaN made quiet (ggml's GGML_FP32_TO_BF16).
std::uint16_t fp32_to_bf16(float f);

// ---- The block layouts ----------------------------------------------------------------------------
// d, m, s, dmin are F16 unless said otherwise; q are the quants ("quantized values").
//
// Q4_0 (18 bytes / 32): d@0, qs@2[16]. x[j] = (q_j - 8)·d; q_j is the low nibble of qs[j] for
//   j < 16 and the high nibble of qs[j - 16] for j >= 16 (the two halves of the block share bytes).
// Q4_1 (20 / 32): d@0, m@2, qs@4[16]. x[j] = q_j·d + m, nibbles as Q4_0.
//   The min term m: Analogy: a sensor's gain and offset — x ≈ d·q + m (affine) instead of d·q
//   (symmetric), so a block of values far from 0 still uses all 16 codes.
// Q5_0 (22 / 32): d@0, qh@2 (uint32), qs@6[16]. q_j = nibble as Q4_0 | (bit j of qh) << 4,
//   x[j] = (q_j - 16)·d.
// Q5_1 (24 / 32): d@0, m@2, qh@4, qs@8[16]. x[j] = q_j·d + m, q_j as Q5_0.
// Q8_0 (34 / 32): d@0, qs@2[32] int8. x[j] = q_j·d.
// Q8_1 (36 / 32): d@0, s@2 = F16(d · Σ q_j), qs@4[32] int8. x[j] = q_j·d; s carries the block's sum
//   for the min term of Q4_1 / Q5_1 weights (Σ_j (d_w q_j + m)·x_j = d_w Σ q_j x_j + m·Σ x_j).
//
// The K-quants: super-blocks of 256 values, cut into 16 sub-blocks of 16 (Q2_K, Q3_K, Q6_K) or 8 of
// 32 (Q4_K, Q5_K). Each sub-block has a small integer scale (and min), and the super-block one F16
// scale for those scales (and one for the mins): scale of sub-block b = d · sc_b.
// Analogy: a two-level page table — one F16 directory entry per 256 values, a 4- to 8-bit entry per
// 16 or 32. Element e of a super-block is in sub-block e / 16 (or e / 32).
// Q2_K (84 / 256): scales@0[16] (low nibble sc_b, high nibble m_b), qs@16[64], d@80, dmin@82.
//   e = 128h + 32k + l (h < 2, k < 4, l < 32): q_e = (qs[32h + l] >> 2k) & 3;
//   x[e] = d·sc_b·q_e - dmin·m_b.
// Q3_K (110 / 256): hmask@0[32], qs@32[64], scales@96[12], d@108. e = 128h + 32k + l:
//   q_e = ((qs[32h + l] >> 2k) & 3) - (bit (4h + k) of hmask[l] set ? 0 : 4), in [-4, 3];
//   x[e] = d·(sc_b - 32)·q_e, sc_b the 6-bit scale of sub-block b (see below).
// Q4_K (144 / 256): d@0, dmin@2, scales@4[12] (8 6-bit scales, 8 6-bit mins), qs@16[128].
//   e = 64c + 32k + l (c < 4, k < 2): q_e = (qs[32c + l] >> 4k) & 15; x[e] = d·sc_b·q_e - dmin·m_b.
// Q5_K (176 / 256): d@0, dmin@2, scales@4[12], qh@16[32], qs@48[128]. As Q4_K, and
//   q_e += 16 if bit (2c + k) of qh[l] is set.
// Q6_K (210 / 256): ql@0[128], qh@128[64], scales@192[16] int8, d@208. e = 128h + 32k + l:
//   low nibble: k = 0: ql[64h + l] & 15, k = 1: ql[64h + 32 + l] & 15, k = 2: ql[64h + l] >> 4,
//   k = 3: ql[64h + 32 + l] >> 4; high 2 bits: (qh[32h + l] >> 2k) & 3; q_e = that - 32, in [-32, 31];
//   x[e] = d·sc_b·q_e.
// Q8_K (292 / 256): d@0 (F32, not F16), qs@4[256] int8, bsums@260[16] (int16: Σ of each 16 qs).
//   x[e] = d·q_e. bsums let the min term of Q2_K/Q4_K/Q5_K cost 16 products instead of 256.
//
// The 6-bit scales. Analogy: bit-packed struct fields — 16 (or 8 + 8) six-bit numbers in 12 bytes,
// the bits that do not fit a nibble or a 6-bit field parked in the spare bits of other bytes.
//   Q3_K, 16 scales in b[0..11]: sc_j = (j < 8 ? b[j] & 15 : b[j - 8] >> 4) | ((b[8 + j % 4] >> 2(j / 4)) & 3) << 4.
//   Q4_K / Q5_K, scale sc_j and min m_j (j < 8) in b[0..11]:
//     j < 4:  sc_j = b[j] & 63, m_j = b[j + 4] & 63;
//     j >= 4: sc_j = (b[j + 4] & 15) | (b[j - 4] >> 6) << 4, m_j = (b[j + 4] >> 4) | (b[j] >> 6) << 4.

// ---- Dequantization --------------------------------------------------------------------------------

// out[i] = element i of the row `bytes` (row_bytes(type, out.size()) bytes), exactly as ggml's
// dequantize_row_<type> computes it, float operation for float operation (so the same bits).
// Every type of the table: the weight types, and the activation types Q8_1 and Q8_K (x = d·q; ggml
// has dequantize_row_q8_K and no dequantize_row_q8_1, whose arithmetic we define the same way).
void dequantize_row(Type type, std::span<const std::uint8_t> bytes, std::span<float> out);

// ---- Weight quantization (kernels/ggml_quantize.cpp) --------------------------------------------

// x [n] -> row_bytes(type, n) bytes of `type` (a weight type), by ggml's quantize_row_<type>_ref,
// float operation for float operation: the same floats give the bytes llama.cpp's quantizer writes
// without an importance matrix. Q8_0 is quantize_activations' Q8_0 (ggml uses one function for
// both). std::invalid_argument for a non-weight type, a wrong size, or a value that is not finite
// (naming its index: a model file with inf or NaN weights is refused, never quantized).
void quantize_row(Type type, std::span<const float> x, std::span<std::uint8_t> out);

// ---- Activations ---------------------------------------------------------------------------------

// x [n] -> row_bytes(act, n) bytes of `act` blocks, act one of Q8_0, Q8_1, Q8_K, with ggml's
// reference arithmetic:
//   Q8_0, Q8_1 (quantize_row_q8_0_ref / _q8_1_ref): amax = max|x|, d = amax / 127 (float),
//     id = d ? 1/d : 0, q = roundf(x·id) (halves away from zero), d stored as F16 (so the stored
//     scale is rounded after the q were computed with the float one); Q8_1: s = F16((float)Σq · d).
//   Q8_K (quantize_row_q8_K_ref): max = the x of largest |x| (the first one), iscale = -127/max,
//     q = nearest_int(iscale·x) (halves to even), capped at 127; d = 1/iscale (F32: d has the sign
//     opposite to max, and max is coded -127); bsums = Σ of each 16 q. An all-zero block: d = 0,
//     q = 0, bsums = 0 (ggml leaves its bsums unwritten there; every use multiplies them by d = 0).
// Defined where ggml is not: a block holding inf or NaN gets d = NaN (s = NaN), q = 0, so every
// output that reads it is NaN (ggml casts NaN to int8: undefined); a block so tiny that 1/d
// overflows to inf (max|x| < ~1e-36) gets q clamped to ±127 (0 where x·inf is NaN), and its stored
// d (F16: 0) makes its products 0.
void quantize_activations(Type act, std::span<const float> x, std::span<std::uint8_t> out);

// ---- Dot products ------------------------------------------------------------------------------

// Σ_j w_j · x_j for one weight row of a quantized type (Q4_0 .. Q6_K, Q8_0) and the activations
// already quantized to its vec_dot_type (x_act: row_bytes(vec_dot_type, n), n = the row's elements).
// Integer sums per block, then ggml's float operations in ggml's order (per type):
//   Q4_0: sumf += ((float)sumi·d_w)·d_x            Q5_0: sumf += (d_w·d_x)·(float)sumi
//   Q8_0: sumf += (float)sumi·(d_w·d_x)            Q4_1, Q5_1: sumf += (d_w·d_x)·(float)sumi + m_w·s_x
//   Q2_K: sumf += (d_x·d_w)·(float)isum - (d_x·dmin_w)·(float)Σ bsums·m
//   Q3_K, Q6_K: 8 float lanes, lane l += (d_w·d_x)·(float)(integer lane sum of elements e % 8 == l)
//     per super-block, summed 0..7 at the end;
//   Q4_K, Q5_K: the same lanes, and sumf -= (dmin_w·d_x)·(float)Σ bsums·m per super-block; the lanes
//     are added to that sumf at the end.
float vec_dot(Type type, std::span<const std::uint8_t> w_row, std::span<const std::uint8_t> x_act);

// ---- Matrix-vector products --------------------------------------------------------------------
// W: [rows, cols] of `type`, row-major, each row row_bytes(type, cols) bytes (a GGUF tensor of shape
// ne = {cols, rows}); x: [cols]; y: [rows].

// The readable reference: each row dequantized into scratch (cols floats), then y[i] = Σ_j w_j·x_j
// accumulated in double and rounded once (kernels.h's matvec on the dequantized row). No threads.
void matvec(Type type, std::span<const std::uint8_t> W, std::span<const float> x, std::span<float> scratch,
            std::span<float> y);
inline std::size_t matvec_scratch_floats(std::size_t cols) { return cols; }

// What ggml's CPU backend computes: x quantized once into scratch (quantize_activations to
// vec_dot_type), then y[i] = vec_dot(row i, scratch). OpenMP threads over rows (kernel_threads(),
// kernels.h): each row is one vec_dot call on one thread, so any thread count gives the same bits.
// F32, F16, BF16 weights: no activation quantization; each weight converted to float, products
// accumulated in float in 8 lanes (element j to lane j % 8, the lanes added pairwise at the end, as
// kernels.h's matvec_fast). ggml instead rounds the activations to F16 (BF16) and accumulates in
// double (both operands F16, so its SIMD code multiplies halves). We keep the activations exact:
// rounding them to F16 puts an error of up to 2^-11 relative on every product (8192 times float's
// rounding unit 2^-24, so it dominates the float accumulation's error at any row length we meet),
// overflows to inf past 65504 (activation outliers of LLMs reach the thousands) and keeps only a few
// bits below 6e-5 (F16 subnormals); and the float lanes vectorise without F16 hardware.
void matvec_fast(Type type, std::span<const std::uint8_t> W, std::span<const float> x, std::span<std::uint8_t> scratch,
                 std::span<float> y);
// Bytes of scratch matvec_fast needs for rows of cols elements: row_bytes(vec_dot_type, cols) and the
// prepared activations (detail::prepare_activations; Q8_0, Q5_0, Q4_0: a multiple of 16); 0 for
// F32, F16, BF16. The scratch's data must be 4-byte aligned (a std::vector's is). Throws
// like row_bytes when cols is not a whole number of blocks.
std::size_t matvec_fast_scratch_bytes(Type type, std::size_t cols);

// ---- Fast paths (kernels/ggml_fast.cpp) -------------------------------------------------------------
// Beside the generic dot products above, verified against them bit for bit (ggml_quant_test.cpp).

// vec_dot's result, every bit, computed faster for Q8_0, Q5_0, Q5_1, Q4_K and Q6_K: the same exact integer sums,
// formed by widening loops the compiler vectorises (int8·int8 in 16-bit lanes), and the same float
// operations in the same order. Other types: vec_dot itself. matvec_fast and matmul_fast use it.
float vec_dot_fast(Type type, std::span<const std::uint8_t> w_row, std::span<const std::uint8_t> x_act);

// Y = X · Wᵀ for T rows at once (the prompt as a matrix): X: [T, cols], Y: [T, rows]; row t of Y is
// matvec_fast(W, X[t]), every bit. Each row of X is quantized once into scratch (T ·
// matvec_fast_scratch_bytes(type, cols) bytes); the weight rows are walked in blocks that stay in the
// cache while every row of X passes over them, so a weight is read from memory once per block of
// rows, not once per token. Threads over blocks of weight rows (one output = one thread: bit-identical
// for any count).
void matmul_fast(Type type, std::span<const std::uint8_t> W, std::span<const float> X, std::size_t T,
                 std::span<std::uint8_t> scratch, std::span<float> Y);

namespace detail {
// fp16_to_fp32 without branches, inline, so that a loop over halves vectorises: the same float for
// every one of the 65536 halves (NaNs: the same quiet NaN, payload kept). FP16's
// fp16_ieee_to_fp32_value (Maratyszcza; ggml's software path): a normal half is moved into place and
// its exponent re-biased by a multiplication by 2^-112 (exponent 31 -> inf or NaN, which the
// multiplication makes quiet); a subnormal half (exponent 0) is made exactly as the float
// (0.5 + m·2^-24) - 0.5.
inline float fp16_to_fp32_fast(std::uint16_t h) {
    const std::uint32_t w = static_cast<std::uint32_t>(h) << 16;
    const std::uint32_t sign = w & 0x80000000u;
    const std::uint32_t two_w = w + w;
    const float normalized = std::bit_cast<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = std::bit_cast<float>((two_w >> 17) | (126u << 23)) - 0.5f;
    // the select as a mask (all ones for a subnormal), not ?:, which GCC may turn into a branch
    const std::uint32_t sub = 0u - static_cast<std::uint32_t>(two_w < (1u << 27));
    const std::uint32_t bits = (std::bit_cast<std::uint32_t>(denormalized) & sub) | (std::bit_cast<std::uint32_t>(normalized) & ~sub);
    return std::bit_cast<float>(sign | bits);
}
// ggml's generic vec_dot over nb blocks (kernels/ggml_quant.cpp), and the fast one (ggml_fast.cpp):
// no checks, the callers have made them.
float vec_dot_blocks(Type type, const std::uint8_t* w, const std::uint8_t* x, std::size_t nb);
float vec_dot_fast_blocks(Type type, const std::uint8_t* w, const std::uint8_t* x, std::size_t nb);
// matvec_fast's activations for one row of x, in its scratch: the row quantized to vec_dot_type, at
// prepared_offset the same values in the form the fast kernel reads (Q8_0, Q5_0, Q4_0, whose
// activations are Q8_0: int16s and float scales, prepared_bytes of them; other types: nothing).
// prepare_activations fills that part from the first.
std::size_t prepared_offset(Type type, std::size_t cols);
std::size_t prepared_bytes(Type type, std::size_t cols);
void prepare_activations(Type type, std::uint8_t* act, std::size_t cols);
// y[i] = vec_dot_fast of weight row i (rows rows, rb bytes apart) with the prepared activations act
// of cols elements, every bit; Q8_0, Q5_0 and Q4_0 take 4 rows at a time (ggml_fast.cpp, dot_q8_rows).
void dot_rows_fast(Type type, const std::uint8_t* w, std::size_t rb, std::size_t rows, const std::uint8_t* act,
                   std::size_t cols, float* y);
// Y[t][i] = the same for T rows of prepared activations (act_stride bytes apart; y_stride floats
// between Y's rows): matmul_fast's block of weight rows; Q8_0 widens each weight row once for all T.
void matmul_rows_fast(Type type, const std::uint8_t* w, std::size_t rb, std::size_t rows, const std::uint8_t* act,
                      std::size_t act_stride, std::size_t T, std::size_t cols, float* y, std::size_t y_stride);
// Float weights (F32, F16, BF16; w: n little-endian values) against float x: matvec_fast's rows.
float dot_float(Type type, const std::uint8_t* w, const float* x, std::size_t n);
}  // namespace detail

}  // namespace lmlab::ggml
