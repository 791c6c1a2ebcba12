// ggml's tensor types (kernels/ggml_quant.h): the table, exact F16/BF16, one hand-built block of every
// type, the activation quantizers, ggml's float order in the dot products, fast against plain within a
// derived bound, thread-count invariance, size errors. The fast path bit for bit against the Python
// reference of ggml's arithmetic (scripts/lmlab_ref/ggml_quants.py) is the stage kernel.ggml.matvec.<type>.
//
// The bound of fast against plain (GgmlMatvec.FastWithinTheDerivedBoundOfPlain), for one row:
// plain = Σ_j ŵ_j·x_j rounded once (ŵ the dequantized weights). The fast path computes, up to its float
// roundings, F = Σ_j w'_j·x̂_j (+ Σ_b m_b·s_b for Q4_1/Q5_1), where x̂_j = d_b·q_j are the quantized
// activations read back exactly (in double), w'_j the weight before dequantize_row's own rounding
// (|w' - ŵ| <= u|ŵ|: only the "- min" or "+ m" rounds), s_b the F16 block sum of Q8_1. So
//   |fast - plain| <= Σ_j |ŵ_j|·|x_j - x̂_j|                   the activation quantization
//                   + Σ_b |m_b|·|s_b - Σ_{j in b} x̂_j|        (Q8_1 only: s is rounded to F16)
//                   + (nb + 16)·u·Σ_j (|ŵ_j| + 2|μ_j|)·|x̂_j|   the fast path's float roundings
//                   + u·Σ_j |ŵ_j|·|x_j| + u·|plain|            dequantization, plain's rounding
// with u = 2^-24, nb the blocks of the row, μ_j element j's min term (0 for symmetric types): the
// per-block float terms have at most 4 roundings each and the block (or lane) sums at most nb + 8
// more (each rounding at most u relative to a partial sum bounded by Σ (|scale part| + |min part|)·|x̂|,
// and |scale part| <= |ŵ| + |μ|). F32/F16/BF16 (no activation quantization, 8 float lanes):
// |fast - plain| <= (n/8 + 4)·u·Σ_j |ŵ_j·x_j| + u·|plain| (kernels/fast_test.cpp's bound).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/ggml_quant.h"
#include "kernels/kernels.h"

namespace lmlab::ggml {
namespace {

using Bytes = std::vector<std::uint8_t>;
constexpr float kInf = std::numeric_limits<float>::infinity();
const std::vector<Type> kWeightTypes = {Type::F32,  Type::F16,  Type::BF16, Type::Q4_0, Type::Q4_1,
                                        Type::Q5_0, Type::Q5_1, Type::Q8_0, Type::Q2_K, Type::Q3_K,
                                        Type::Q4_K, Type::Q5_K, Type::Q6_K};

std::uint32_t bits(float f) { return std::bit_cast<std::uint32_t>(f); }
void put16(Bytes& b, std::size_t at, std::uint16_t v) {
    b[at] = static_cast<std::uint8_t>(v);
    b[at + 1] = static_cast<std::uint8_t>(v >> 8);
}
void put32(Bytes& b, std::size_t at, std::uint32_t v) {
    for (int k = 0; k < 4; ++k) b[at + k] = static_cast<std::uint8_t>(v >> (8 * k));
}
std::vector<float> deq(Type t, const Bytes& b, std::size_t n) {
    std::vector<float> y(n);
    dequantize_row(t, b, y);
    return y;
}
template <typename F>
std::string thrown(F&& f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "(nothing thrown)";
}

// ---- the table -------------------------------------------------------------------------------------

TEST(GgmlTypes, TableHasGgmlIdsNamesAndBlockSizes) {
    struct Row {
        std::uint32_t id;
        const char* name;
        std::size_t elems, bytes;
        Type vec_dot;
    };
    const Row rows[] = {{0, "F32", 1, 4, Type::F32},         {1, "F16", 1, 2, Type::F32},
                        {2, "Q4_0", 32, 18, Type::Q8_0},     {3, "Q4_1", 32, 20, Type::Q8_1},
                        {6, "Q5_0", 32, 22, Type::Q8_0},     {7, "Q5_1", 32, 24, Type::Q8_1},
                        {8, "Q8_0", 32, 34, Type::Q8_0},     {9, "Q8_1", 32, 36, Type::Q8_1},
                        {10, "Q2_K", 256, 84, Type::Q8_K},   {11, "Q3_K", 256, 110, Type::Q8_K},
                        {12, "Q4_K", 256, 144, Type::Q8_K},  {13, "Q5_K", 256, 176, Type::Q8_K},
                        {14, "Q6_K", 256, 210, Type::Q8_K},  {15, "Q8_K", 256, 292, Type::Q8_K},
                        {30, "BF16", 1, 2, Type::F32}};
    for (const Row& r : rows) {
        const auto t = find_type(r.id);
        ASSERT_TRUE(t.has_value()) << r.name;
        EXPECT_EQ(static_cast<std::uint32_t>(t->type), r.id);
        EXPECT_EQ(t->name, r.name);
        EXPECT_EQ(t->block_elems, r.elems) << r.name;
        EXPECT_EQ(t->block_bytes, r.bytes) << r.name;
        EXPECT_EQ(t->vec_dot_type, r.vec_dot) << r.name;
        EXPECT_EQ(t->is_weight, r.id != 9 && r.id != 15) << r.name;
        EXPECT_EQ(&type_info(t->type), &type_info(t->type));
    }
}

TEST(GgmlTypes, UnsupportedIdsAreRefused) {
    // 4, 5: the removed Q4_2/Q4_3; 16..29: IQ2_XXS .., I8 .. I64, F64, IQ1_M; 34, 35: TQ1_0, TQ2_0; 39: MXFP4
    for (std::uint32_t id : {4u, 5u, 16u, 17u, 20u, 24u, 28u, 29u, 31u, 34u, 35u, 39u, 40u, 1000u, 0xffffffffu})
        EXPECT_FALSE(find_type(id).has_value()) << id;
    EXPECT_NE(thrown([] { type_info(static_cast<Type>(16)); }).find("16"), std::string::npos);
}

TEST(GgmlTypes, RowBytesAreWholeBlocksOrAnErrorNamingTypeAndLength) {
    EXPECT_EQ(row_bytes(Type::F32, 7), 28u);
    EXPECT_EQ(row_bytes(Type::BF16, 3), 6u);
    EXPECT_EQ(row_bytes(Type::Q4_0, 4096), 128u * 18);
    EXPECT_EQ(row_bytes(Type::Q6_K, 4096), 16u * 210);
    EXPECT_EQ(row_bytes(Type::Q8_K, 0), 0u);
    const std::string e = thrown([] { row_bytes(Type::Q4_K, 100); });
    EXPECT_NE(e.find("Q4_K"), std::string::npos) << e;
    EXPECT_NE(e.find("100"), std::string::npos) << e;
    EXPECT_NE(e.find("256"), std::string::npos) << e;
    EXPECT_THROW(row_bytes(Type::Q8_0, 33), std::invalid_argument);
}

// ---- F16 and BF16 ------------------------------------------------------------------------------------

TEST(GgmlHalf, F16ToF32EdgeValuesAreExact) {
    EXPECT_EQ(bits(fp16_to_fp32(0x0000)), 0x00000000u);
    EXPECT_EQ(bits(fp16_to_fp32(0x8000)), 0x80000000u);  // -0 keeps its sign
    EXPECT_EQ(fp16_to_fp32(0x3C00), 1.0f);
    EXPECT_EQ(fp16_to_fp32(0xC000), -2.0f);
    EXPECT_EQ(fp16_to_fp32(0x3C01), 1.0f + 0x1p-10f);
    EXPECT_EQ(fp16_to_fp32(0x7BFF), 65504.0f);             // largest finite
    EXPECT_EQ(fp16_to_fp32(0x0400), 0x1p-14f);             // smallest normal
    EXPECT_EQ(fp16_to_fp32(0x0001), 0x1p-24f);             // smallest subnormal
    EXPECT_EQ(fp16_to_fp32(0x03FF), 1023 * 0x1p-24f);      // largest subnormal
    EXPECT_EQ(fp16_to_fp32(0x8201), -513 * 0x1p-24f);
    EXPECT_EQ(fp16_to_fp32(0x7C00), kInf);
    EXPECT_EQ(fp16_to_fp32(0xFC00), -kInf);
    EXPECT_EQ(bits(fp16_to_fp32(0x7E00)), 0x7FC00000u);    // the quiet NaN
    EXPECT_EQ(bits(fp16_to_fp32(0x7C01)), 0x7FC02000u);    // a signalling NaN comes back quiet, payload kept
    EXPECT_EQ(bits(fp16_to_fp32(0xFD00)), 0xFFE00000u);
}

TEST(GgmlHalf, F32ToF16RoundsToNearestEvenEverywhere) {
    // every half comes back from its float; every midpoint between neighbours goes to the even one
    for (std::uint32_t h = 0; h < 0x10000; ++h) {
        const auto h16 = static_cast<std::uint16_t>(h);
        const float f = fp16_to_fp32(h16);
        if (std::isnan(f)) continue;
        ASSERT_EQ(fp32_to_fp16(f), h16) << std::hex << h;
        if ((h & 0x7fffu) >= 0x7bffu) continue;  // the neighbour of 65504 is inf (below)
        const float next = fp16_to_fp32(static_cast<std::uint16_t>(h + 1));
        const float mid = static_cast<float>((static_cast<double>(f) + next) / 2);  // exact: 12 bits
        const std::uint16_t even = (h & 1u) ? static_cast<std::uint16_t>(h + 1) : h16;
        ASSERT_EQ(fp32_to_fp16(mid), even) << std::hex << h;
        ASSERT_EQ(fp32_to_fp16(std::nextafter(mid, 0.0f)), h16) << std::hex << h;  // just short of it: towards 0
        ASSERT_EQ(fp32_to_fp16(std::nextafter(mid, (h & 0x8000u) ? -kInf : kInf)),  // just past: away from 0
                  static_cast<std::uint16_t>(h + 1))
            << std::hex << h;
    }
    EXPECT_EQ(fp32_to_fp16(65519.996f), 0x7BFFu);  // below the midpoint 65520: the largest half
    EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00u);     // the midpoint: ties to even, which is inf
    EXPECT_EQ(fp32_to_fp16(-1e6f), 0xFC00u);
    EXPECT_EQ(fp32_to_fp16(kInf), 0x7C00u);
    EXPECT_EQ(fp32_to_fp16(0x1p-25f), 0x0000u);     // half the smallest subnormal: ties to even (0)
    EXPECT_EQ(fp32_to_fp16(std::nextafter(0x1p-25f, 1.0f)), 0x0001u);
    EXPECT_EQ(fp32_to_fp16(1.5f * 0x1p-24f), 0x0002u);  // 1.5 units: to even, 2
    EXPECT_EQ(fp32_to_fp16(-1e-30f), 0x8000u);
    EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000u);
    EXPECT_EQ(fp32_to_fp16(NAN), 0x7E00u);
    EXPECT_EQ(fp32_to_fp16(-NAN), 0xFE00u);
}

TEST(GgmlHalf, Bf16IsTheTopHalfOfAFloat) {
    EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
    EXPECT_EQ(bf16_to_fp32(0xC020), -2.5f);
    EXPECT_EQ(bf16_to_fp32(0x0001), 0x1p-133f);  // smallest subnormal
    EXPECT_EQ(bf16_to_fp32(0x7F7F), 0x1.FEp127f);
    EXPECT_EQ(bf16_to_fp32(0xFF80), -kInf);
    EXPECT_EQ(bits(bf16_to_fp32(0x7FC1)), 0x7FC10000u);
    EXPECT_EQ(bits(bf16_to_fp32(0x8000)), 0x80000000u);
    // to bf16: ties to even, NaN made quiet, overflow to inf
    EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80u);  // tie, 0x3F80 even
    EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82u);  // tie, 0x3F82 even
    EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81u);
    EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x7F7FFFFFu)), 0x7F80u);  // the largest float rounds to inf
    EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x7F800001u)), 0x7FC0u);  // signalling NaN -> quiet
    EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x00000001u)), 0x0000u);
    for (std::uint32_t h = 0; h < 0x10000; ++h) {
        if (!std::isnan(bf16_to_fp32(static_cast<std::uint16_t>(h)))) {
            ASSERT_EQ(fp32_to_bf16(bf16_to_fp32(static_cast<std::uint16_t>(h))), h);
        }
    }
}

// ---- one hand-built block of each type -------------------------------------------------------------------

TEST(GgmlDequantize, FloatRowsAreLittleEndian) {
    const Bytes f32 = {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC0};  // 1.0f, -2.5f
    EXPECT_EQ(deq(Type::F32, f32, 2), (std::vector<float>{1.0f, -2.5f}));
    const Bytes f16 = {0x00, 0x3C, 0x01, 0x00, 0x00, 0xFC};  // 1, 2^-24, -inf
    EXPECT_EQ(deq(Type::F16, f16, 3), (std::vector<float>{1.0f, 0x1p-24f, -kInf}));
    const Bytes bf16 = {0x80, 0x3F, 0x20, 0xC0};  // 1, -2.5
    EXPECT_EQ(deq(Type::BF16, bf16, 2), (std::vector<float>{1.0f, -2.5f}));
}

TEST(GgmlDequantize, Q4_0ByHand) {
    // d = 0.5; qs[j] = j | (15 - j) << 4: x[j] = (j - 8)·0.5, x[j + 16] = (7 - j)·0.5
    Bytes b(18);
    put16(b, 0, 0x3800);
    for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<std::uint8_t>(j | (15 - j) << 4);
    const auto y = deq(Type::Q4_0, b, 32);
    EXPECT_EQ(y[0], -4.0f);
    EXPECT_EQ(y[8], 0.0f);
    EXPECT_EQ(y[15], 3.5f);
    EXPECT_EQ(y[16], 3.5f);
    EXPECT_EQ(y[31], -4.0f);
}

TEST(GgmlDequantize, Q4_1ByHand) {
    // d = 0.25, m = -1: x = q·0.25 - 1 (the min term: an offset shared by the block)
    Bytes b(20);
    put16(b, 0, 0x3400);
    put16(b, 2, 0xBC00);
    for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<std::uint8_t>(j | (15 - j) << 4);
    const auto y = deq(Type::Q4_1, b, 32);
    EXPECT_EQ(y[0], -1.0f);
    EXPECT_EQ(y[15], 2.75f);
    EXPECT_EQ(y[16], 2.75f);
    EXPECT_EQ(y[31], -1.0f);
}

TEST(GgmlDequantize, Q5_0And5_1ByHandWithTheFifthBitsLittleEndian) {
    // qh = bits 0, 16 and 31 (byte 3's top bit: element 31): read as a little-endian uint32
    Bytes b(22);
    put16(b, 0, 0x3C00);  // d = 1
    put32(b, 2, 0x80010001u);
    b[6] = 0x21;   // element 0: nibble 1, element 16: nibble 2
    b[21] = 0xF3;  // element 15: nibble 3, element 31: nibble 15
    const auto y = deq(Type::Q5_0, b, 32);
    EXPECT_EQ(y[0], 1.0f);     // (1 | 16) - 16
    EXPECT_EQ(y[16], 2.0f);    // (2 | 16) - 16
    EXPECT_EQ(y[15], -13.0f);  // 3 - 16
    EXPECT_EQ(y[31], 15.0f);   // (15 | 16) - 16
    EXPECT_EQ(y[1], -16.0f);
    Bytes c(24);
    put16(c, 0, 0x3800);  // d = 0.5
    put16(c, 2, 0x4200);  // m = 3
    put32(c, 4, 0x80000000u);
    c[23] = 0xF0;  // element 31: 15 | 16 = 31
    const auto z = deq(Type::Q5_1, c, 32);
    EXPECT_EQ(z[31], 31 * 0.5f + 3);
    EXPECT_EQ(z[0], 3.0f);
}

TEST(GgmlDequantize, Q8_0ByHand) {
    Bytes b(34);
    put16(b, 0, 0x4000);  // d = 2
    for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(j * 8 - 128));
    const auto y = deq(Type::Q8_0, b, 32);
    EXPECT_EQ(y[0], -256.0f);  // int8 -128
    EXPECT_EQ(y[16], 0.0f);
    EXPECT_EQ(y[31], 2.0f * 120);
}

TEST(GgmlDequantize, Q2_KByHand) {
    // qs all 0xE4 (2-bit fields 0, 1, 2, 3 at shifts 0, 2, 4, 6): element 128h + 32k + l has q = k.
    // Sub-block b: scale b (low nibble), min 1 (high nibble). d = 1, dmin = 0.5: x = b·k - 0.5.
    Bytes blk(84);
    for (int s = 0; s < 16; ++s) blk[s] = static_cast<std::uint8_t>(s | 1 << 4);
    for (int j = 0; j < 64; ++j) blk[16 + j] = 0xE4;
    put16(blk, 80, 0x3C00);
    put16(blk, 82, 0x3800);
    const auto y = deq(Type::Q2_K, blk, 256);
    EXPECT_EQ(y[0], -0.5f);    // b 0, k 0
    EXPECT_EQ(y[37], 1.5f);    // b 2, k 1
    EXPECT_EQ(y[200], 23.5f);  // b 12, k 2 (200 - 128 = 72)
    EXPECT_EQ(y[255], 44.5f);  // b 15, k 3
}

// Q3_K's 16 six-bit scales into 12 bytes: the inverse of the formula in ggml_quant.h
Bytes pack_q3_k_scales(const int (&sc)[16]) {
    Bytes b(12);
    for (int j = 0; j < 16; ++j) {
        if (j < 8) b[j] |= static_cast<std::uint8_t>(sc[j] & 15);
        else b[j - 8] |= static_cast<std::uint8_t>((sc[j] & 15) << 4);
        b[8 + j % 4] |= static_cast<std::uint8_t>((sc[j] >> 4) << (2 * (j / 4)));
    }
    return b;
}

TEST(GgmlDequantize, Q3_KByHand) {
    // qs all 0xE4: low bits k; hmask 0x0F: the high bit set (no -4) for h = 0, clear (-4) for h = 1.
    // Scales sc_j = j + 24, i.e. sc - 32 = j - 8 (24 = 0b011000 .. 39 = 0b100111: both high bits used).
    Bytes blk(110);
    for (int l = 0; l < 32; ++l) blk[l] = 0x0F;
    for (int j = 0; j < 64; ++j) blk[32 + j] = 0xE4;
    int sc[16];
    for (int j = 0; j < 16; ++j) sc[j] = j + 24;
    const Bytes packed = pack_q3_k_scales(sc);
    std::copy(packed.begin(), packed.end(), blk.begin() + 96);
    put16(blk, 108, 0x3800);  // d = 0.5
    const auto y = deq(Type::Q3_K, blk, 256);
    EXPECT_EQ(y[40], -3.0f);   // b 2: -6; h 0, k 1: q = 1
    EXPECT_EQ(y[130], 0.0f);   // b 8: 0
    EXPECT_EQ(y[150], 0.5f * 1 * -4);  // b 9: 1; h 1, k 0: q = 0 - 4
    EXPECT_EQ(y[250], -3.5f);  // b 15: 7; h 1, k 3: q = 3 - 4
    EXPECT_EQ(y[127], 0.5f * -1 * 3);  // b 7: -1; h 0, k 3
}

// Q4_K / Q5_K: 8 six-bit scales and mins into 12 bytes (the inverse of get_scale_min_k4)
Bytes pack_k4_scales(const int (&sc)[8], const int (&mn)[8]) {
    Bytes b(12);
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            b[j] = static_cast<std::uint8_t>(sc[j]);
            b[j + 4] = static_cast<std::uint8_t>(mn[j]);
        } else {
            b[j + 4] = static_cast<std::uint8_t>((sc[j] & 15) | (mn[j] & 15) << 4);
            b[j - 4] |= static_cast<std::uint8_t>((sc[j] >> 4) << 6);
            b[j] |= static_cast<std::uint8_t>((mn[j] >> 4) << 6);
        }
    }
    return b;
}

TEST(GgmlDequantize, Q4_KAndQ5_KByHand) {
    // scales 0, 9, .., 63 and mins 63, 54, .., 0 (every 6-bit position sees high bits); d = 1, dmin = 2;
    // qs[32c + l] = c | (15 - c) << 4: element 64c + l has q = c, element 64c + 32 + l has q = 15 - c
    int sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
        sc[j] = 9 * j;
        mn[j] = 63 - 9 * j;
    }
    const Bytes s = pack_k4_scales(sc, mn);
    Bytes q4(144);
    put16(q4, 0, 0x3C00);
    put16(q4, 2, 0x4000);
    std::copy(s.begin(), s.end(), q4.begin() + 4);
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) q4[16 + 32 * c + l] = static_cast<std::uint8_t>(c | (15 - c) << 4);
    const auto y = deq(Type::Q4_K, q4, 256);
    EXPECT_EQ(y[0], 0 * 0 - 2.0f * 63);       // sub-block 0, q 0
    EXPECT_EQ(y[40], 9 * 15 - 2.0f * 54);     // sub-block 1 (64·0 + 32 + 8): q 15
    EXPECT_EQ(y[64 * 2 + 5], 36 * 2 - 2.0f * 27);  // sub-block 4 (133 / 32), q 2
    EXPECT_EQ(y[255], 63 * 12 - 2.0f * 0);    // sub-block 7, q 15 - 3
    // Q5_K: the same, and qh[l] = 0b01010101: the first half of every 64 gets +16
    Bytes q5(176);
    std::copy(q4.begin(), q4.begin() + 16, q5.begin());
    for (int l = 0; l < 32; ++l) q5[16 + l] = 0x55;
    std::copy(q4.begin() + 16, q4.end(), q5.begin() + 48);
    const auto z = deq(Type::Q5_K, q5, 256);
    EXPECT_EQ(z[0], 0 * 16 - 2.0f * 63);
    EXPECT_EQ(z[64 * 2 + 5], 36 * 18 - 2.0f * 27);  // q 2 + 16
    EXPECT_EQ(z[40], 9 * 15 - 2.0f * 54);           // second half: no +16
    EXPECT_EQ(z[64 * 3 + 1], 54 * 19 - 2.0f * 9);   // sub-block 6, q 3 + 16
}

TEST(GgmlDequantize, Q6_KByHand) {
    // ql all 0x5A (low nibble 10, high 5), qh all 0xE4 (2-bit fields k): q = (low | k << 4) - 32:
    // k 0: 10 - 32 = -22; k 1: 26 - 32 = -6; k 2: 5 + 32 - 32 = 5; k 3: 5 + 48 - 32 = 21.
    // Scales (int8): -128, 127, -1, 1, 2, .., d = 0.25.
    Bytes blk(210);
    for (int j = 0; j < 128; ++j) blk[j] = 0x5A;
    for (int j = 0; j < 64; ++j) blk[128 + j] = 0xE4;
    const int sc[16] = {-128, 127, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
    for (int s = 0; s < 16; ++s) blk[192 + s] = static_cast<std::uint8_t>(static_cast<std::int8_t>(sc[s]));
    put16(blk, 208, 0x3400);
    const auto y = deq(Type::Q6_K, blk, 256);
    EXPECT_EQ(y[0], 0.25f * -128 * -22);
    EXPECT_EQ(y[20], 0.25f * 127 * -22);  // sub-block 1, k 0
    EXPECT_EQ(y[40], 0.25f * -1 * -6);    // sub-block 2, k 1
    EXPECT_EQ(y[70], 0.25f * 2 * 5);      // sub-block 4, k 2
    EXPECT_EQ(y[255], 0.25f * 13 * 21);   // sub-block 15, h 1, k 3
}

TEST(GgmlDequantize, Q8_KAndQ8_1ByHand) {
    Bytes k(292);
    put32(k, 0, bits(-0.5f));  // F32 scale
    for (int j = 0; j < 256; ++j) k[4 + j] = static_cast<std::uint8_t>(j);  // int8 0..127, -128..-1
    const auto y = deq(Type::Q8_K, k, 256);
    EXPECT_EQ(y[3], -1.5f);
    EXPECT_EQ(y[128], 64.0f);
    EXPECT_EQ(y[255], 0.5f);
    Bytes one(36);
    put16(one, 0, 0x4400);  // d = 4, s ignored
    one[4 + 5] = 0xFF;      // -1
    EXPECT_EQ(deq(Type::Q8_1, one, 32)[5], -4.0f);
}

TEST(GgmlDequantize, ReadsFromAnyByteOffset) {
    // bytes are assembled one by one: a row at an odd address dequantizes the same
    std::mt19937 rng(3);
    for (const Type t : kWeightTypes) {
        const std::size_t n = 512;
        Bytes buf(row_bytes(t, n) + 1);
        for (auto& v : buf) v = static_cast<std::uint8_t>(rng());
        const std::span<const std::uint8_t> odd = std::span<const std::uint8_t>(buf).subspan(1);
        const Bytes copy(odd.begin(), odd.end());
        std::vector<float> a(n), b(n);
        dequantize_row(t, odd, a);
        dequantize_row(t, copy, b);
        EXPECT_EQ(0, std::memcmp(a.data(), b.data(), n * sizeof(float))) << type_info(t).name;
    }
}

// ---- activation quantization -----------------------------------------------------------------------------

TEST(GgmlActivations, Q8_0RoundsHalvesAwayFromZeroWithTheFloatScale) {
    // amax 127: d = 1, x·id = x, halves exact: C's roundf (2.5 -> 3, -0.5 -> -1)
    std::vector<float> x(32, 0.0f);
    const float v[] = {127, 2.5f, -0.5f, 0.5f, -2.5f, 1.5f, -126.5f};
    std::copy(std::begin(v), std::end(v), x.begin());
    Bytes out(34);
    quantize_activations(Type::Q8_0, x, out);
    EXPECT_EQ(out[0] | out[1] << 8, 0x3C00);
    const std::int8_t want[] = {127, 3, -1, 1, -3, 2, -127};
    for (int j = 0; j < 7; ++j) EXPECT_EQ(static_cast<std::int8_t>(out[2 + j]), want[j]) << j;
    // a scale that F16 rounds: the q were made with the float d = 0.3/127, the stored d is F16(d)
    x.assign(32, 0.0f);
    x[0] = 0.3f;
    x[1] = -0.1f;
    quantize_activations(Type::Q8_0, x, out);
    const float d = 0.3f / 127.0f;
    EXPECT_EQ(out[0] | out[1] << 8, fp32_to_fp16(d));
    EXPECT_NE(fp16_to_fp32(fp32_to_fp16(d)), d);
    EXPECT_EQ(static_cast<std::int8_t>(out[2]), 127);
    EXPECT_EQ(static_cast<std::int8_t>(out[3]), static_cast<std::int8_t>(std::round(-0.1f * (1.0f / d))));
}

TEST(GgmlActivations, Q8_1CarriesTheBlockSumTimesTheFloatScale) {
    std::vector<float> x(64);
    for (int j = 0; j < 64; ++j) x[j] = static_cast<float>(j % 7) - 2.5f;
    Bytes out(72);
    quantize_activations(Type::Q8_1, x, out);
    for (int b = 0; b < 2; ++b) {
        const std::uint8_t* blk = out.data() + 36 * b;
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
        const float d = amax / 127.0f;
        int sum = 0;
        for (int j = 0; j < 32; ++j) sum += static_cast<std::int8_t>(blk[4 + j]);
        EXPECT_EQ(blk[0] | blk[1] << 8, fp32_to_fp16(d));
        EXPECT_EQ(blk[2] | blk[3] << 8, fp32_to_fp16(static_cast<float>(sum) * d)) << b;
    }
}

TEST(GgmlActivations, Q8_KRoundsHalvesToEvenAndCodesTheMaxAsMinus127) {
    std::vector<float> x(256, 0.0f);
    const float v[] = {-127, 2.5f, -0.5f, 1.5f, 3.5f, -2.5f, 126.5f, 0.49999997f};
    std::copy(std::begin(v), std::end(v), x.begin());
    Bytes out(292);
    quantize_activations(Type::Q8_K, x, out);
    // max = -127: iscale = -127 / -127 = 1, d = 1/iscale = 1; nearest_int: halves to even
    EXPECT_EQ(bits(std::bit_cast<float>(std::uint32_t{out[0]} | std::uint32_t{out[1]} << 8 |
                                        std::uint32_t{out[2]} << 16 | std::uint32_t{out[3]} << 24)),
              bits(1.0f));
    const std::int8_t want[] = {-127, 2, 0, 2, 4, -2, 126, 0};
    for (int j = 0; j < 8; ++j) EXPECT_EQ(static_cast<std::int8_t>(out[4 + j]), want[j]) << j;
    // bsums: Σ of each 16 quants (int16)
    EXPECT_EQ(static_cast<std::int16_t>(out[260] | out[261] << 8), -127 + 2 + 0 + 2 + 4 - 2 + 126 + 0);
    EXPECT_EQ(static_cast<std::int16_t>(out[262] | out[263] << 8), 0);
    // a positive max: iscale = -1, so every q flips sign and d = -1
    x[0] = 127;
    quantize_activations(Type::Q8_K, x, out);
    EXPECT_EQ(static_cast<std::int8_t>(out[4]), -127);
    EXPECT_EQ(static_cast<std::int8_t>(out[5]), -2);  // -2.5 -> -2 (even)
    EXPECT_EQ(deq(Type::Q8_K, out, 256)[0], 127.0f);
}

TEST(GgmlActivations, ZeroAndNonFiniteBlocks) {
    std::vector<float> x(256, 0.0f);
    x[40] = 1.0f;  // the second Q8_0 block is not zero
    Bytes q0(row_bytes(Type::Q8_0, 256), 0xAB), qk(292, 0xAB);
    quantize_activations(Type::Q8_0, x, q0);
    for (int j = 0; j < 34; ++j) EXPECT_EQ(q0[j], 0) << j;  // d = F16(0), q = 0
    x[40] = 0.0f;
    quantize_activations(Type::Q8_K, x, qk);
    for (int j = 0; j < 292; ++j) ASSERT_EQ(qk[j], 0) << j;  // d = 0, q = 0, bsums = 0
    x[7] = NAN;
    quantize_activations(Type::Q8_K, x, qk);
    EXPECT_TRUE(std::isnan(deq(Type::Q8_K, qk, 256)[0]));
    x[7] = -kInf;
    Bytes q1(row_bytes(Type::Q8_1, 256));
    quantize_activations(Type::Q8_1, x, q1);
    EXPECT_TRUE(std::isnan(fp16_to_fp32(static_cast<std::uint16_t>(q1[0] | q1[1] << 8))));
    EXPECT_TRUE(std::isnan(fp16_to_fp32(static_cast<std::uint16_t>(q1[2] | q1[3] << 8))));
    EXPECT_EQ(fp16_to_fp32(static_cast<std::uint16_t>(q1[36] | q1[37] << 8)), 0.0f);  // the next block is fine
}

TEST(GgmlActivations, TinyBlocksDoNotOverflowTheQuants) {
    // max|x| = 1e-38: d = 1e-38/127 is subnormal, 1/d overflows to inf; F16(d) = 0
    std::vector<float> x(32, 0.0f);
    x[0] = 1e-38f;
    x[1] = -5e-39f;
    Bytes out(34);
    quantize_activations(Type::Q8_0, x, out);
    EXPECT_EQ(out[0] | out[1] << 8, 0);
    EXPECT_EQ(static_cast<std::int8_t>(out[2]), 127);
    EXPECT_EQ(static_cast<std::int8_t>(out[3]), -127);
    EXPECT_EQ(out[4], 0);  // 0 · inf = NaN -> 0
}

// ---- dot products: ggml's float order ------------------------------------------------------------------

// A block of activations: d = F16 0x3C01 (1 + 2^-10), 31 quants of 127 and one of -124
Bytes act_block(Type act) {
    const std::size_t off = act == Type::Q8_1 ? 4 : 2;
    Bytes b(off + 32);
    put16(b, 0, 0x3C01);
    for (int j = 0; j < 32; ++j) b[off + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(j == 9 ? -124 : 127));
    return b;
}

TEST(GgmlVecDot, EachTypeKeepsGgmlsFloatOrder) {
    // all weights q = 7 and d_w = 1 + 2^-10: sumi = 7·(31·127 - 124) = 26691, whose product with the
    // scales needs 26 bits: ggml's Q4_0 computes (sumi·d_w)·d_x, Q8_0 and Q5_0 sumi·(d_w·d_x) (d_w·d_x is
    // exact), and the two differ in the last bit here.
    const float dw = fp16_to_fp32(0x3C01), dx = dw, s = 26691.0f;
    const float q4_order = (s * dw) * dx, q8_order = s * (dw * dx);
    ASSERT_NE(q4_order, q8_order);
    Bytes q4(18), q8(34), q5(22);
    put16(q4, 0, 0x3C01);
    for (int j = 0; j < 16; ++j) q4[2 + j] = 0xFF;  // nibbles 15: q = 7
    put16(q8, 0, 0x3C01);
    for (int j = 0; j < 32; ++j) q8[2 + j] = 7;
    put16(q5, 0, 0x3C01);
    put32(q5, 2, 0xFFFFFFFFu);  // fifth bits set, nibbles 7: 23 - 16 = 7
    for (int j = 0; j < 16; ++j) q5[6 + j] = 0x77;
    const Bytes a = act_block(Type::Q8_0);
    EXPECT_EQ(bits(vec_dot(Type::Q4_0, q4, a)), bits(q4_order));
    EXPECT_EQ(bits(vec_dot(Type::Q8_0, q8, a)), bits(q8_order));
    EXPECT_EQ(bits(vec_dot(Type::Q5_0, q5, a)), bits(q8_order));
    // and the fast kernels that take rows in groups (matvec_fast's and matmul_fast's), on the same blocks
    for (const auto& [t, w] : {std::pair<Type, const Bytes*>{Type::Q4_0, &q4}, {Type::Q8_0, &q8}, {Type::Q5_0, &q5}}) {
        Bytes act(matvec_fast_scratch_bytes(t, 32));
        std::copy(a.begin(), a.end(), act.begin());
        detail::prepare_activations(t, act.data(), 32);
        float y = 0, ym = 0;
        detail::dot_rows_fast(t, w->data(), w->size(), 1, act.data(), 32, &y);
        detail::matmul_rows_fast(t, w->data(), w->size(), 1, act.data(), act.size(), 1, 32, &ym, 1);
        EXPECT_EQ(bits(y), bits(vec_dot(t, *w, a))) << type_info(t).name;
        EXPECT_EQ(bits(ym), bits(vec_dot(t, *w, a))) << type_info(t).name;
    }
    // Q4_1: (d_w·d_x)·sumi + m_w·s_x, the two products added before they meet sumf
    Bytes q41(20);
    put16(q41, 0, 0x3C01);
    put16(q41, 2, 0xC100);  // m = -2.5
    for (int j = 0; j < 16; ++j) q41[4 + j] = 0x77;
    Bytes a1 = act_block(Type::Q8_1);
    put16(a1, 2, 0x6E40);  // s = 6400
    EXPECT_EQ(bits(vec_dot(Type::Q4_1, q41, a1)), bits((dw * dx) * s + -2.5f * 6400.0f));
}

TEST(GgmlVecDot, KQuantsUseEightFloatLanesAndTheMinTermPerSuperBlock) {
    // Q6_K, one super-block: all q = 1 (low nibble 1, high bits 2: 1 + 32 - 32), scales 1, d = 1;
    // activations d = 1, q8[e] = e % 8 + 1: lane l's integer sum is 32·(l + 1); the float lanes are
    // summed 0..7 at the end: 32·36 = 1152
    Bytes w(210);
    for (int j = 0; j < 128; ++j) w[j] = 0x11;
    for (int j = 0; j < 64; ++j) w[128 + j] = 0xAA;
    for (int s = 0; s < 16; ++s) w[192 + s] = 1;
    put16(w, 208, 0x3C00);
    Bytes a(292);
    put32(a, 0, bits(1.0f));
    for (int e = 0; e < 256; ++e) a[4 + e] = static_cast<std::uint8_t>(e % 8 + 1);
    EXPECT_EQ(vec_dot(Type::Q6_K, w, a), 1152.0f);
    // Q4_K: the min term uses the activation's bsums, not its quants: set bsums by hand to 1 each,
    // q = 0 everywhere: the result is -dmin·d_x·Σ_j bsums_j·m_(j/2) = -(1·1)·(2·(1 + .. + 8)) = -72
    Bytes k4(144);
    put16(k4, 0, 0x3C00);
    put16(k4, 2, 0x3C00);
    int sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
        sc[j] = 5;
        mn[j] = j + 1;
    }
    const Bytes s = pack_k4_scales(sc, mn);
    std::copy(s.begin(), s.end(), k4.begin() + 4);
    Bytes a2(292);
    put32(a2, 0, bits(1.0f));
    for (int j = 0; j < 16; ++j) put16(a2, 260 + 2 * j, 1);
    EXPECT_EQ(vec_dot(Type::Q4_K, k4, a2), -72.0f);
}

// ---- fast against plain ----------------------------------------------------------------------------------

// F16 fields per block (offsets), set to finite random halves in random weight rows
std::vector<std::size_t> f16_fields(Type t) {
    switch (t) {
        case Type::Q4_0: case Type::Q5_0: case Type::Q8_0: return {0};
        case Type::Q4_1: case Type::Q5_1: case Type::Q4_K: case Type::Q5_K: return {0, 2};
        case Type::Q2_K: return {80, 82};
        case Type::Q3_K: return {108};
        case Type::Q6_K: return {208};
        default: return {};
    }
}
// the quant bytes of the types with a min term: zeroed, dequantization leaves the min term alone
std::pair<std::size_t, std::size_t> quant_bytes(Type t) {
    switch (t) {
        case Type::Q4_1: return {4, 20};
        case Type::Q5_1: return {4, 24};
        case Type::Q2_K: return {16, 80};
        case Type::Q4_K: return {16, 144};
        case Type::Q5_K: return {16, 176};
        default: return {0, 0};
    }
}

// A random weight matrix of `type`: random bytes, the F16 scales made finite (|d| ~ 0.01)
Bytes random_weights(Type t, std::size_t rows, std::size_t cols, std::mt19937& rng) {
    Bytes W(rows * row_bytes(t, cols));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    if (t == Type::F32 || t == Type::F16 || t == Type::BF16) {
        for (std::size_t i = 0; i < rows * cols; ++i) {
            const float v = nd(rng) * 0.1f;
            if (t == Type::F32) put32(W, 4 * i, bits(v));
            else put16(W, 2 * i, t == Type::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v));
        }
        return W;
    }
    for (auto& b : W) b = static_cast<std::uint8_t>(rng());
    const std::size_t bb = type_info(t).block_bytes;
    for (std::size_t at = 0; at < W.size(); at += bb)
        for (std::size_t o : f16_fields(t)) put16(W, at + o, fp32_to_fp16(nd(rng) * 0.01f));
    return W;
}

// x̂ (the activations as the fast path sees them, exactly, in double) and Q8_1's block sums s
void quantized_view(Type act, const Bytes& xa, std::size_t n, std::vector<double>& xh, std::vector<double>& s) {
    xh.assign(n, 0.0);
    s.clear();
    const std::size_t be = type_info(act).block_elems, bb = type_info(act).block_bytes;
    for (std::size_t b = 0; b < n / be; ++b) {
        const std::uint8_t* p = xa.data() + b * bb;
        double d;
        std::size_t qoff;
        if (act == Type::Q8_K) {
            d = std::bit_cast<float>(std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 |
                                     std::uint32_t{p[3]} << 24);
            qoff = 4;
        } else {
            d = fp16_to_fp32(static_cast<std::uint16_t>(p[0] | p[1] << 8));
            qoff = act == Type::Q8_1 ? 4 : 2;
            if (act == Type::Q8_1) s.push_back(fp16_to_fp32(static_cast<std::uint16_t>(p[2] | p[3] << 8)));
        }
        for (std::size_t j = 0; j < be; ++j) xh[b * be + j] = d * static_cast<std::int8_t>(p[qoff + j]);
    }
}

// The bound of the header comment for row i of W
double fast_bound(Type t, const Bytes& W, std::size_t i, const std::vector<float>& x, float plain) {
    const std::size_t n = x.size(), rb = row_bytes(t, n);
    const Bytes row(W.begin() + static_cast<std::ptrdiff_t>(i * rb), W.begin() + static_cast<std::ptrdiff_t>((i + 1) * rb));
    const std::vector<float> w = deq(t, row, n);
    const double u = std::ldexp(1.0, -24);
    double wx = 0;
    for (std::size_t j = 0; j < n; ++j) wx += std::fabs(static_cast<double>(w[j]) * x[j]);
    const TypeInfo& info = type_info(t);
    if (info.vec_dot_type == Type::F32) return (static_cast<double>(n) / 8 + 4) * u * 1.01 * wx + u * std::fabs(plain);
    // μ: dequantize with the quants zeroed
    std::vector<double> mu(n, 0.0);
    if (const auto [lo, hi] = quant_bytes(t); hi > lo) {
        Bytes z = row;
        for (std::size_t at = 0; at < z.size(); at += info.block_bytes) std::fill(z.begin() + at + lo, z.begin() + at + hi, 0);
        const auto m = deq(t, z, n);
        for (std::size_t j = 0; j < n; ++j) mu[j] = std::fabs(m[j]);
    }
    Bytes xa(row_bytes(info.vec_dot_type, n));
    quantize_activations(info.vec_dot_type, x, xa);
    std::vector<double> xh, s;
    quantized_view(info.vec_dot_type, xa, n, xh, s);
    double b = 0, fl = 0;
    for (std::size_t j = 0; j < n; ++j) {
        b += std::fabs(w[j]) * std::fabs(x[j] - xh[j]);
        fl += (std::fabs(w[j]) + 2 * mu[j]) * std::fabs(xh[j]);
    }
    for (std::size_t blk = 0; blk < s.size(); ++blk) {
        double sum = 0;
        for (std::size_t j = 0; j < 32; ++j) sum += xh[32 * blk + j];
        b += mu[32 * blk] * std::fabs(s[blk] - sum);
    }
    const double nb = static_cast<double>(n / info.block_elems);
    return b + (nb + 16) * u * 1.01 * fl + u * wx * (1 + std::ldexp(1.0, -16)) + u * std::fabs(plain);
}

TEST(GgmlMatvec, FastWithinTheDerivedBoundOfPlain) {
    std::mt19937 rng(2024);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const std::size_t rows = 24, cols = 1024;
    std::printf("  fast vs plain (rows %zu, cols %zu): max |fast - plain| / bound, and relative to max |plain|\n", rows, cols);
    for (const Type t : kWeightTypes) {
        const Bytes W = random_weights(t, rows, cols, rng);
        double worst_ratio = 0, worst_rel = 0;
        for (int trial = 0; trial < 3; ++trial) {
            std::vector<float> x(cols);
            for (float& v : x) v = nd(rng);
            if (trial == 1) x[cols / 3] = 300.0f;                   // one outlier: its block's scale is coarse
            if (trial == 2) for (float& v : x) v = std::fabs(v) + 2;  // all positive: the min terms add up
            std::vector<float> plain(rows), fast(rows), sf(matvec_scratch_floats(cols));
            Bytes sb(matvec_fast_scratch_bytes(t, cols));
            matvec(t, W, x, sf, plain);
            matvec_fast(t, W, x, sb, fast);
            double ymax = 0;
            for (float v : plain) ymax = std::max(ymax, static_cast<double>(std::fabs(v)));
            for (std::size_t i = 0; i < rows; ++i) {
                const double err = std::fabs(static_cast<double>(fast[i]) - plain[i]);
                const double bound = fast_bound(t, W, i, x, plain[i]);
                EXPECT_LE(err, bound) << type_info(t).name << " row " << i << " trial " << trial;
                worst_ratio = std::max(worst_ratio, err / bound);
                worst_rel = std::max(worst_rel, err / ymax);
            }
        }
        std::printf("  %-5s %.3f  %.2e\n", std::string(type_info(t).name).c_str(), worst_ratio, worst_rel);
    }
}

TEST(GgmlMatvec, FloatFastIsKernelsMatvecFastBitForBit) {
    // the same 8 lanes and pairwise combination as kernels/fast.cpp, on the weights as floats (F16 and
    // BF16 convert to float exactly), columns across the 64-value chunks and the 8-lane tail. Only
    // without FMA in the target: with it (-march=native) fast.cpp fuses its multiply-adds (mul_add),
    // ggml_quant.cpp does not
#if defined(__FMA__)
    GTEST_SKIP() << "built with FMA: kernels/fast.cpp's multiply-adds are fused, ours are not";
#endif
    std::mt19937 rng(5);
    for (const Type t : {Type::F32, Type::F16, Type::BF16})
        for (const std::size_t cols : {1u, 7u, 8u, 9u, 63u, 64u, 65u, 100u, 136u, 1027u}) {
            const std::size_t rows = 10;
            const Bytes W = random_weights(t, rows, cols, rng);
            const std::vector<float> Wf = deq(t, W, rows * cols);  // exact for the three types
            std::vector<float> x(cols), a(rows), b(rows);
            std::normal_distribution<float> nd;
            for (float& v : x) v = nd(rng);
            Bytes none;
            matvec_fast(t, W, x, none, a);
            lmlab::matvec_fast(Wf, x, b);
            EXPECT_EQ(0, std::memcmp(a.data(), b.data(), rows * sizeof(float))) << type_info(t).name << " cols " << cols;
        }
}

TEST(GgmlMatvec, ThreadCountNeverChangesABit) {
    std::mt19937 rng(9);
    std::normal_distribution<float> nd;
    const std::size_t rows = 67, cols = 4096;  // 67·4096 multiply-adds: past the parallel threshold
    ASSERT_GE(rows * cols, kParallelMin);
    std::vector<float> x(cols);
    for (float& v : x) v = nd(rng);
    for (const Type t : kWeightTypes) {
        const Bytes W = random_weights(t, rows, cols, rng);
        Bytes sb(matvec_fast_scratch_bytes(t, cols));
        std::vector<float> one(rows), many(rows);
        set_kernel_threads(1);
        matvec_fast(t, W, x, sb, one);
        for (int threads : {2, 3, 4}) {
            set_kernel_threads(threads);
            matvec_fast(t, W, x, sb, many);
            EXPECT_EQ(0, std::memcmp(one.data(), many.data(), rows * sizeof(float))) << type_info(t).name << " " << threads;
        }
        set_kernel_threads(1);
        // and each row is vec_dot of that row (ggml's generic C), whatever its place in a group of rows
        // (Q8_0 takes 4 at a time: 67 = 16 groups and 3 more)
        if (type_info(t).vec_dot_type != Type::F32) {
            const std::size_t rb = row_bytes(t, cols);
            const auto act = std::span<const std::uint8_t>(sb).first(row_bytes(type_info(t).vec_dot_type, cols));
            for (std::size_t i = 0; i < rows; ++i)
                ASSERT_EQ(bits(one[i]), bits(vec_dot(t, std::span<const std::uint8_t>(W).subspan(i * rb, rb), act)))
                    << type_info(t).name << " row " << i;
        }
    }
}

TEST(GgmlMatvec, NanActivationsReachEveryOutput) {
    std::mt19937 rng(1);
    std::vector<float> x(256, 1.0f);
    x[100] = NAN;
    for (const Type t : kWeightTypes) {
        const Bytes W = random_weights(t, 3, 256, rng);
        Bytes sb(matvec_fast_scratch_bytes(t, 256));
        std::vector<float> y(3), sf(256);
        matvec_fast(t, W, x, sb, y);
        for (float v : y) EXPECT_TRUE(std::isnan(v)) << type_info(t).name;
        matvec(t, W, x, sf, y);
        for (float v : y) EXPECT_TRUE(std::isnan(v)) << type_info(t).name;
    }
}

// ---- the fast paths (kernels/ggml_fast.cpp): the plain ones' bits ----------------------------------------

TEST(GgmlFast, Fp16ToFp32FastIsFp16ToFp32ForAllHalves) {
    for (std::uint32_t h = 0; h < 65536; ++h)
        ASSERT_EQ(bits(detail::fp16_to_fp32_fast(static_cast<std::uint16_t>(h))), bits(fp16_to_fp32(static_cast<std::uint16_t>(h))))
            << std::hex << h;
}

// vec_dot_fast against vec_dot (ggml's generic C): every bit, on random quants (every nibble and sign
// pattern, the integer bounds included) and activations at the int8 extremes (every q8 ±127: the
// largest integer sums) as well as normal ones
TEST(GgmlFast, VecDotFastIsVecDotBitForBit) {
    std::mt19937 rng(77);
    std::normal_distribution<float> nd;
    for (const Type t : kWeightTypes) {
        if (type_info(t).vec_dot_type == Type::F32) continue;
        for (const std::size_t cols : {256u, 512u, 4864u}) {
            const std::size_t rows = 8, rb = row_bytes(t, cols);
            const Bytes W = random_weights(t, rows, cols, rng);
            for (int trial = 0; trial < 3; ++trial) {
                std::vector<float> x(cols);
                for (float& v : x) v = trial == 0 ? nd(rng) : trial == 1 ? (rng() & 1 ? 1.0f : -1.0f) : -1.0f;
                Bytes xa(row_bytes(type_info(t).vec_dot_type, cols));
                quantize_activations(type_info(t).vec_dot_type, x, xa);
                for (std::size_t i = 0; i < rows; ++i) {
                    const auto row = std::span<const std::uint8_t>(W).subspan(i * rb, rb);
                    ASSERT_EQ(bits(vec_dot_fast(t, row, xa)), bits(vec_dot(t, row, xa)))
                        << type_info(t).name << " cols " << cols << " row " << i << " trial " << trial;
                }
            }
        }
    }
    EXPECT_THROW(vec_dot_fast(Type::Q8_0, Bytes(34), Bytes(33)), std::invalid_argument);
    EXPECT_THROW(vec_dot_fast(Type::F32, Bytes(4), Bytes(4)), std::invalid_argument);
}

// matmul_fast: row t of Y is matvec_fast of row t of X, every bit, for every type and thread count
TEST(GgmlFast, MatmulRowsAreMatvecFastBitForBit) {
    std::mt19937 rng(12);
    std::normal_distribution<float> nd;
    const std::size_t rows = 37, T = 5;  // 37: blocks of 16 weight rows and a partial one
    // 2304: 72 blocks of 32, past one chunk of 64 (Q8_0's float chains carried from chunk to chunk),
    // and past the parallel threshold (512 stays on one thread)
    ASSERT_GE(T * rows * 2304, kParallelMin);
    for (const std::size_t cols : {512u, 2304u})
    for (const Type t : kWeightTypes) {
        const Bytes W = random_weights(t, rows, cols, rng);
        std::vector<float> X(T * cols), Y(T * rows), y(rows);
        for (float& v : X) v = nd(rng);
        Bytes sb(std::max<std::size_t>(1, T * matvec_fast_scratch_bytes(t, cols))), s1(matvec_fast_scratch_bytes(t, cols));
        for (int threads : {1, 2, 3}) {
            set_kernel_threads(threads);
            matmul_fast(t, W, X, T, sb, Y);
            for (std::size_t r = 0; r < T; ++r) {
                matvec_fast(t, W, std::span<const float>(X).subspan(r * cols, cols), s1, y);
                EXPECT_EQ(0, std::memcmp(y.data(), Y.data() + r * rows, rows * sizeof(float)))
                    << type_info(t).name << " cols " << cols << " row " << r << " threads " << threads;
            }
        }
        set_kernel_threads(1);
    }
    std::vector<float> X(2 * 256), Y(2 * 3);
    Bytes sb(2 * row_bytes(Type::Q8_0, 256)), W(3 * row_bytes(Type::Q8_0, 256));
    EXPECT_THROW(matmul_fast(Type::Q8_0, W, X, 2, std::span<std::uint8_t>(sb).first(10), Y), std::invalid_argument);
    EXPECT_THROW(matmul_fast(Type::Q8_0, W, X, 3, sb, Y), std::invalid_argument);
}

// ---- size errors -----------------------------------------------------------------------------------------

TEST(GgmlErrors, WrongSizesThrowNamingTheKernelAndType) {
    std::vector<float> x(256), y(2), sf(256), out(256);
    Bytes W(2 * 144), sb(292), act(292);
    EXPECT_NO_THROW(matvec_fast(Type::Q4_K, W, x, sb, y));
    std::string e = thrown([&] { matvec(Type::Q4_K, Bytes(143), x, sf, y); });
    EXPECT_NE(e.find("ggml::matvec: Q4_K"), std::string::npos) << e;
    e = thrown([&] { std::vector<float> x100(100); matvec_fast(Type::Q4_K, W, x100, sb, y); });
    EXPECT_NE(e.find("Q4_K"), std::string::npos) << e;
    EXPECT_NE(e.find("100"), std::string::npos) << e;
    Bytes sb_short(291), out_short(144), act_short(291);
    std::vector<float> sf_short(255), out33(33);
    EXPECT_NE(thrown([&] { matvec_fast(Type::Q4_K, W, x, sb_short, y); }).find("scratch"), std::string::npos);
    EXPECT_NE(thrown([&] { matvec(Type::Q4_K, W, x, sf_short, y); }).find("scratch"), std::string::npos);
    EXPECT_NE(thrown([&] { matvec(Type::Q8_K, Bytes(2 * 292), x, sf, y); }).find("activation type"), std::string::npos);
    EXPECT_NE(thrown([&] { dequantize_row(Type::Q6_K, Bytes(209), out); }).find("Q6_K"), std::string::npos);
    EXPECT_THROW(dequantize_row(Type::Q8_0, Bytes(34), out33), std::invalid_argument);
    EXPECT_THROW(quantize_activations(Type::Q4_0, x, out_short), std::invalid_argument);
    EXPECT_THROW(quantize_activations(Type::Q8_K, x, act_short), std::invalid_argument);
    EXPECT_THROW(vec_dot(Type::F16, Bytes(64), act), std::invalid_argument);
    EXPECT_THROW(vec_dot(Type::Q8_K, Bytes(292), act), std::invalid_argument);
    EXPECT_THROW(vec_dot(Type::Q4_K, Bytes(145), act), std::invalid_argument);
    EXPECT_THROW(vec_dot(Type::Q4_K, Bytes(144), Bytes(34)), std::invalid_argument);
    EXPECT_EQ(matvec_fast_scratch_bytes(Type::F16, 3), 0u);
    EXPECT_EQ(matvec_fast_scratch_bytes(Type::Q4_1, 64), 72u);
    EXPECT_THROW(matvec_fast_scratch_bytes(Type::Q4_1, 48), std::invalid_argument);
}

// ---- weight quantization (quantize_row) -------------------------------------------------------------
// Bit for bit against ggml's C is the stage kernel.ggml_quantize (the Python port) and the test
// QuantizeModelGguf.Stories260KQ8_0IsLlamaQuantizesFileByteForByte (llama-quantize's own file).

TEST(GgmlQuantizeRow, Q4_0ByHand) {
    // x_j = j - 16: the extreme is -16 (j = 0), so d = -16 / -8 = 2 and id = 0.5;
    // q_j = min(15, (int8)(x_j·0.5 + 8.5)): j = 0 -> 0, j = 15 -> 8 (exact half 8.0 truncated), j = 31 -> 15 (16 clamped)
    std::vector<float> x(32);
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
    Bytes b(18);
    quantize_row(Type::Q4_0, x, b);
    EXPECT_EQ(fp16_to_fp32(static_cast<std::uint16_t>(b[0] | b[1] << 8)), 2.0f);
    EXPECT_EQ(b[2] & 0xF, 0);        // q_0
    EXPECT_EQ(b[2 + 15] & 0xF, 8);   // q_15: x = -1 -> -0.5 + 8.5 = 8
    EXPECT_EQ(b[2 + 15] >> 4, 15);   // q_31: x = 15 -> 7.5 + 8.5 = 16, clamped
    const std::vector<float> y = deq(Type::Q4_0, b, 32);
    EXPECT_EQ(y[0], -16.0f);
    EXPECT_EQ(y[15], 0.0f);   // -1 rounds up to 0 (truncation of x·id + 8.5)
    EXPECT_EQ(y[31], 14.0f);  // the positive side has one code less: 15 -> 7·2
}

TEST(GgmlQuantizeRow, Q8_0IsTheActivationQuantizer) {
    std::vector<float> x(64);
    for (int j = 0; j < 64; ++j) x[j] = std::sin(0.37f * static_cast<float>(j)) * 3.0f;
    Bytes w(68), a(68);
    quantize_row(Type::Q8_0, x, w);
    quantize_activations(Type::Q8_0, x, a);
    EXPECT_EQ(w, a);
}

TEST(GgmlQuantizeRow, ZeroRowsReadBackAsZeroInEveryType) {
    const std::vector<float> x(256, 0.0f);
    for (Type t : kWeightTypes) {
        Bytes b(row_bytes(t, 256));
        quantize_row(t, x, b);
        for (float v : deq(t, b, 256)) ASSERT_EQ(v, 0.0f) << type_info(t).name;
    }
}

TEST(GgmlQuantizeRow, ErrorsNameTheTypeTheSizeOrTheBadValue) {
    std::vector<float> x(256, 1.0f);
    Bytes b(144);
    Bytes b143(143), b292(292);
    EXPECT_NE(thrown([&] { quantize_row(Type::Q4_K, x, b143); }).find("Q4_K"), std::string::npos);
    EXPECT_NE(thrown([&] { quantize_row(Type::Q8_K, x, b292); }).find("not a weight type"), std::string::npos);
    EXPECT_THROW(quantize_row(Type::Q4_K, std::vector<float>(100), b), std::invalid_argument);
    x[77] = kInf;
    const std::string e = thrown([&] { quantize_row(Type::Q4_K, x, b); });
    EXPECT_NE(e.find("element 77"), std::string::npos) << e;
    x[77] = std::nanf("");
    EXPECT_NE(thrown([&] { quantize_row(Type::Q4_K, x, b); }).find("finite"), std::string::npos);
}

}  // namespace
}  // namespace lmlab::ggml
