// Tests of the safetensors reader (model/load/safetensors.h), the Hugging Face loader (model/load/hf.cpp) and
// the llm.c loader (model/load/llmc.cpp), on tiny files each test writes into its own temp directory.
//
// The tiny GPT-2: dim 8, 2 layers, 2 heads, ffn 32, vocab 11, 6 positions. Every element of HF
// tensor number `id` (in the order below) holds id * 1000 + i, i its flat index in the FILE's layout:
// exact in float32, and any misplaced, transposed or swapped tensor shows up as a wrong number.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/load/load.h"
#include "model/model.h"
#include "model/load/safetensors.h"
#include "model/testing/test_model.h"

namespace lmlab {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Shape = std::vector<std::size_t>;

using test::expect_error;

// ---- files ----------------------------------------------------------------------------------------

using test::TempDir;

std::string f32_bytes(const std::vector<float>& v) { return {reinterpret_cast<const char*>(v.data()), v.size() * 4}; }
std::string u16_bytes(const std::vector<std::uint16_t>& v) { return {reinterpret_cast<const char*>(v.data()), v.size() * 2}; }

struct RawTensor {
    std::string name, dtype;
    Shape shape;
    std::string bytes;
};

// The raw file: 8-byte little-endian length (or `len` when given: to lie), header text, data.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               std::optional<std::uint64_t> len = std::nullopt) {
    std::ofstream out(path, std::ios::binary);
    const std::uint64_t n = len.value_or(header.size());
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << data;
}

// A valid safetensors file: the tensors' bytes one after the other, in list order.
void write_safetensors(const std::string& path, const std::vector<RawTensor>& ts) {
    json h = json::object();
    h["__metadata__"] = {{"format", "pt"}};
    std::string data;
    for (const RawTensor& t : ts) {
        h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
        data += t.bytes;
    }
    write_raw(path, h.dump(), data);
}

// ---- the tiny GPT-2 -------------------------------------------------------------------------------

constexpr std::size_t C = 8, L = 2, F = 32, V = 11, T = 6;

float value(std::size_t id, std::size_t i) { return static_cast<float>(id * 1000 + i); }

// Where each Hugging Face tensor must land, written out here independently of model/tensors.cpp.
struct Expect {
    std::string name;  // HF's, without "transformer."
    Shape file_shape;  // in the file: Conv1D weights are [in, out]
    std::function<std::vector<float>&(Model&)> field;
    bool conv1d;
};

std::vector<Expect> gpt2_layout() {
    std::vector<Expect> e = {
        {"wte.weight", {V, C}, [](Model& m) -> std::vector<float>& { return m.tok_embeddings; }, false},
        {"wpe.weight", {T, C}, [](Model& m) -> std::vector<float>& { return m.pos_embeddings; }, false},
    };
    for (std::size_t l = 0; l < L; ++l) {
        const std::string p = fmt::format("h.{}.", l);
        auto f = [l](auto member) {
            return [l, member](Model& m) -> std::vector<float>& { return member(m.layers[l]); };
        };
        e.push_back({p + "ln_1.weight", {C}, f([](LayerWeights& w) -> auto& { return w.attn_norm.weight; }), false});
        e.push_back({p + "ln_1.bias", {C}, f([](LayerWeights& w) -> auto& { return w.attn_norm.bias; }), false});
        e.push_back({p + "attn.c_attn.weight", {C, 3 * C}, f([](LayerWeights& w) -> auto& { return w.wqkv.w; }), true});
        e.push_back({p + "attn.c_attn.bias", {3 * C}, f([](LayerWeights& w) -> auto& { return w.wqkv.b; }), false});
        e.push_back({p + "attn.c_proj.weight", {C, C}, f([](LayerWeights& w) -> auto& { return w.wo.w; }), true});
        e.push_back({p + "attn.c_proj.bias", {C}, f([](LayerWeights& w) -> auto& { return w.wo.b; }), false});
        e.push_back({p + "ln_2.weight", {C}, f([](LayerWeights& w) -> auto& { return w.ffn_norm.weight; }), false});
        e.push_back({p + "ln_2.bias", {C}, f([](LayerWeights& w) -> auto& { return w.ffn_norm.bias; }), false});
        e.push_back({p + "mlp.c_fc.weight", {C, F}, f([](LayerWeights& w) -> auto& { return w.w_up.w; }), true});
        e.push_back({p + "mlp.c_fc.bias", {F}, f([](LayerWeights& w) -> auto& { return w.w_up.b; }), false});
        e.push_back({p + "mlp.c_proj.weight", {F, C}, f([](LayerWeights& w) -> auto& { return w.w_down.w; }), true});
        e.push_back({p + "mlp.c_proj.bias", {C}, f([](LayerWeights& w) -> auto& { return w.w_down.b; }), false});
    }
    e.push_back({"ln_f.weight", {C}, [](Model& m) -> std::vector<float>& { return m.final_norm.weight; }, false});
    e.push_back({"ln_f.bias", {C}, [](Model& m) -> std::vector<float>& { return m.final_norm.bias; }, false});
    return e;
}

std::size_t count(const Shape& s) {
    std::size_t n = 1;
    for (std::size_t d : s) n *= d;
    return n;
}

// Tensor number id (1-based, layout order) filled with value(id, i).
std::vector<RawTensor> gpt2_tensors(const std::string& prefix = "") {
    std::vector<RawTensor> out;
    std::size_t id = 0;
    for (const Expect& e : gpt2_layout()) {
        ++id;
        std::vector<float> v(count(e.file_shape));
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = value(id, i);
        out.push_back({prefix + e.name, "F32", e.file_shape, f32_bytes(v)});
    }
    return out;
}

json gpt2_config() {
    return {{"model_type", "gpt2"}, {"n_embd", C},       {"n_layer", L},
            {"n_head", 2},          {"vocab_size", V},   {"n_positions", T},
            {"n_inner", nullptr},   {"activation_function", "gelu_new"},
            {"layer_norm_epsilon", 1e-5}};
}

void write_config(const TempDir& d, const json& config) { std::ofstream(d.file("config.json")) << config.dump(2); }

void write_model_dir(const TempDir& d, const std::vector<RawTensor>& ts, const json& config = gpt2_config()) {
    write_config(d, config);
    write_safetensors(d.file("model.safetensors"), ts);
}

std::vector<RawTensor> without(std::vector<RawTensor> ts, const std::string& name) {
    std::erase_if(ts, [&](const RawTensor& t) { return t.name == name; });
    return ts;
}

RawTensor& find(std::vector<RawTensor>& ts, const std::string& name) {
    for (RawTensor& t : ts)
        if (t.name == name) return t;
    throw std::logic_error("no tensor " + name);
}

// Every tensor of the layout landed in its field with every value, Conv1D weights transposed.
void expect_gpt2_weights(Model& m) {
    std::size_t id = 0;
    for (const Expect& e : gpt2_layout()) {
        ++id;
        const std::vector<float>& got = e.field(m);
        ASSERT_EQ(got.size(), count(e.file_shape)) << e.name;
        for (std::size_t i = 0; i < got.size(); ++i) {
            // file [in, out] element (r, c) is our [out, in] element (c, r)
            const std::size_t ours = e.conv1d ? (i % e.file_shape[1]) * e.file_shape[0] + i / e.file_shape[1] : i;
            ASSERT_EQ(got[ours], value(id, i)) << e.name << " file element " << i;
        }
    }
}

// ---- safetensors: the reader ----------------------------------------------------------------------

TEST(Safetensors, ReadsTensorsShapesAndMetadata) {
    TempDir d;
    write_safetensors(d.file("a.safetensors"), {{"w", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6})},
                                                {"scalar", "F32", {}, f32_bytes({-7.5f})},
                                                {"empty", "F32", {0, 4}, ""}});
    SafetensorsFile f(d.file("a.safetensors"));
    EXPECT_EQ(f.names(), (std::vector<std::string>{"empty", "scalar", "w"}));
    EXPECT_EQ(f.shape("w"), (Shape{2, 3}));
    EXPECT_EQ(f.read_f32("w"), (std::vector<float>{1, 2, 3, 4, 5, 6}));
    EXPECT_EQ(f.read_f32("scalar"), (std::vector<float>{-7.5f}));
    EXPECT_TRUE(f.read_f32("empty").empty());
    EXPECT_EQ(f.metadata().at("format"), "pt");
    EXPECT_FALSE(f.has("nope"));
    expect_error<ModelError>([&] { f.read_f32("nope"); }, {"a.safetensors", "'nope'"});
}

std::uint32_t bits(float f) { return std::bit_cast<std::uint32_t>(f); }

// The conversions themselves are kernels/ggml_quant.h's (GgmlHalf tests); here, through a file
TEST(Safetensors, F16ConvertsExactly) {
    TempDir d;
    write_safetensors(d.file("h.safetensors"),
                      {{"h", "F16", {7}, u16_bytes({0x3C00, 0xC100, 0x7BFF, 0x0001, 0x7C00, 0x7E00, 0x8000})}});
    const std::vector<float> v = SafetensorsFile(d.file("h.safetensors")).read_f32("h");
    ASSERT_EQ(v.size(), 7u);
    EXPECT_EQ(v[0], 1.0f);
    EXPECT_EQ(v[1], -2.5f);
    EXPECT_EQ(v[2], 65504.0f);
    EXPECT_EQ(v[3], 5.9604644775390625e-08f);  // 2^-24
    EXPECT_EQ(v[4], std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isnan(v[5]));
    EXPECT_EQ(bits(v[6]), 0x80000000u);
}

TEST(Safetensors, BF16ConvertsExactly) {
    TempDir d;
    write_safetensors(d.file("b.safetensors"), {{"b", "BF16", {2, 3}, u16_bytes({0x3F80, 0xC020, 0x0001, 0x7F80, 0x7FC0, 0x477F})}});
    const std::vector<float> v = SafetensorsFile(d.file("b.safetensors")).read_f32("b");
    ASSERT_EQ(v.size(), 6u);
    EXPECT_EQ(v[0], 1.0f);
    EXPECT_EQ(v[1], -2.5f);
    EXPECT_EQ(v[2], std::ldexp(1.0f, -133));
    EXPECT_EQ(v[3], std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isnan(v[4]));
    EXPECT_EQ(v[5], 65280.0f);
}

// ---- safetensors: bad files, one test each ----------------------------------------------------------

// A file with this header text and `data` bytes after it; then opening it must fail naming `parts`.
void expect_bad_file(const std::string& header, const std::string& data, std::initializer_list<std::string> parts,
                     std::optional<std::uint64_t> len = std::nullopt) {
    TempDir d;
    const std::string path = d.file("bad.safetensors");
    write_raw(path, header, data, len);
    std::vector<std::string> all(parts);
    all.push_back("bad.safetensors");
    try {
        SafetensorsFile f(path);
        ADD_FAILURE() << "opened a bad file: " << header;
    } catch (const ModelError& e) {
        const std::string what = e.what();
        for (const std::string& p : all) EXPECT_TRUE(what.find(p) != std::string::npos) << "\"" << p << "\" not in: " << what;
    }
}

TEST(SafetensorsBad, ShorterThanTheLengthField) {
    TempDir d;
    std::ofstream(d.file("tiny.safetensors")) << "abc";
    expect_error<ModelError>([&] { SafetensorsFile f(d.file("tiny.safetensors")); }, {"tiny.safetensors", "3 bytes", "8-byte"});
}

TEST(SafetensorsBad, AbsurdHeaderLength) {
    expect_bad_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1}),
                    {"absurd header length", "1099511627776"}, std::uint64_t{1} << 40);
}

TEST(SafetensorsBad, HeaderLengthBeyondTheFile) {
    // claims 1000 header bytes; the file has 54 (header) + 4 (data) after the length field
    expect_bad_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1}),
                    {"absurd header length 1000", "58 bytes"}, 1000);
}

TEST(SafetensorsBad, InvalidJson) {
    expect_bad_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", f32_bytes({1}), {"not valid JSON"});
}

TEST(SafetensorsBad, HeaderNotAnObject) { expect_bad_file("[1, 2]", "", {"JSON object", "0x5b"}); }

TEST(SafetensorsBad, DuplicateTensorName) {
    expect_bad_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    f32_bytes({1, 2}), {"'a' twice"});
}

TEST(SafetensorsBad, MissingField) {
    expect_bad_file(R"({"w":{"dtype":"F32","shape":[1]}})", f32_bytes({1}), {"tensor 'w'", "missing field 'data_offsets'"});
}

TEST(SafetensorsBad, NegativeShape) {
    expect_bad_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", f32_bytes({1}),
                    {"tensor 'w'", "non-negative integers"});
}

TEST(SafetensorsBad, UnknownDtype) {
    expect_bad_file(R"({"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1}),
                    {"tensor 'w'", "unknown dtype 'Q4_K'"});
}

TEST(SafetensorsBad, UnsupportedDtypeIsRefusedWhenRead) {
    // I64 is a valid safetensors dtype (the file opens) but not a weight type we read
    TempDir d;
    write_safetensors(d.file("i.safetensors"), {{"ids", "I64", {2}, std::string(16, '\0')}});
    SafetensorsFile f(d.file("i.safetensors"));
    EXPECT_EQ(f.dtype("ids"), "I64");
    expect_error<ModelError>([&] { f.read_f32("ids"); }, {"i.safetensors", "'ids'", "dtype I64", "F32, F16 and BF16"});
}

TEST(SafetensorsBad, SizeDoesNotMatchShape) {
    expect_bad_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", std::string(20, '\0'),
                    {"tensor 'w'", "shape [2, 3] of F32 needs 24 bytes", "[0, 20] span 20 bytes"});
}

TEST(SafetensorsBad, HalfSizeDoesNotMatchShape) {
    // F16 [3] is 6 bytes, not 12: a float32 tensor mislabelled F16
    expect_bad_file(R"({"w":{"dtype":"F16","shape":[3],"data_offsets":[0,12]}})", std::string(12, '\0'),
                    {"tensor 'w'", "needs 6 bytes", "span 12 bytes"});
}

TEST(SafetensorsBad, BeginAfterEnd) {
    expect_bad_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", std::string(8, '\0'),
                    {"tensor 'w'", "[8, 4]", "begin after end"});
}

TEST(SafetensorsBad, TensorOutsideTheFile) {
    expect_bad_file(R"({"w":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}})", std::string(16, '\0'),
                    {"tensor 'w'", "[0, 400]", "16-byte data buffer"});
}

TEST(SafetensorsBad, OverlappingTensors) {
    expect_bad_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                    std::string(24, '\0'), {"'b'", "overlaps tensor 'a'", "[8, 24)"});
}

TEST(SafetensorsBad, HoleBetweenTensors) {
    expect_bad_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                    std::string(24, '\0'), {"bytes [8, 16)", "belong to no tensor", "'b'"});
}

TEST(SafetensorsBad, TrailingBytes) {
    expect_bad_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(12, '\0'),
                    {"cover 8 bytes", "has 12", "4 trailing bytes"});
}

TEST(SafetensorsBad, TruncatedFile) {
    TempDir d;
    write_safetensors(d.file("t.safetensors"), {{"a", "F32", {2}, f32_bytes({1, 2})}, {"b", "F32", {3}, f32_bytes({3, 4, 5})}});
    fs::resize_file(d.file("t.safetensors"), fs::file_size(d.file("t.safetensors")) - 4);
    expect_error<ModelError>([&] { SafetensorsFile f(d.file("t.safetensors")); },
                             {"t.safetensors", "tensor 'b'", "[8, 20]", "16-byte data buffer", "truncated"});
}

// ---- Hugging Face GPT-2 ------------------------------------------------------------------------------

TEST(LoadHf, Gpt2LoadsEveryTensorWhereTheTableSays) {
    TempDir d;
    write_model_dir(d, gpt2_tensors());
    Model m = load_model_hf(d.str());
    const Config& c = m.config;
    EXPECT_EQ(c.arch, Arch::Gpt2);
    EXPECT_EQ(c.dim, 8u);
    EXPECT_EQ(c.n_layers, 2u);
    EXPECT_EQ(c.n_heads, 2u);
    EXPECT_EQ(c.n_kv_heads, 2u);
    EXPECT_EQ(c.ffn_dim, 32u);  // n_inner null: 4 * n_embd
    EXPECT_EQ(c.vocab_size, 11u);
    EXPECT_EQ(c.max_seq_len, 6u);
    EXPECT_EQ(c.norm, NormKind::LayerNorm);
    EXPECT_EQ(c.norm_eps, 1e-5f);
    EXPECT_EQ(c.activation, Activation::GeluTanh);
    EXPECT_EQ(c.positions, Positions::Learned);
    EXPECT_TRUE(c.tied_embeddings);
    EXPECT_TRUE(m.output.empty());
    EXPECT_EQ(m.source, d.str());
    EXPECT_EQ(m.classifier().data(), m.tok_embeddings.data());

    // a few by hand (ids: wte 1, wpe 2, layer 0 = 3..14, layer 1 = 15..26, ln_f 27, 28)
    EXPECT_EQ(m.tok_embeddings[3 * 8 + 5], 1029.0f);  // token 3, channel 5
    EXPECT_EQ(m.pos_embeddings[5 * 8 + 7], 2047.0f);  // position 5, channel 7
    // layer 1 c_attn.weight (id 17), file [in 8, out 24]: file (in 2, out 5) = 17000 + 2*24 + 5,
    // ours [out 24, in 8]: (out 5, in 2) = index 5*8 + 2
    EXPECT_EQ(m.layers[1].wqkv.w[5 * 8 + 2], 17053.0f);
    EXPECT_EQ(m.layers[1].wqkv.w[0 * 8 + 1], 17024.0f);  // file (in 1, out 0) = 1*24
    // layer 0 mlp.c_proj.weight (id 13), file [in 32, out 8]: (in 10, out 3) = 10*8 + 3 -> ours [8, 32] (3, 10)
    EXPECT_EQ(m.layers[0].w_down.w[3 * 32 + 10], 13083.0f);
    EXPECT_EQ(m.layers[1].w_up.b[31], 24031.0f);  // layer 1 mlp.c_fc.bias (id 24)
    EXPECT_EQ(m.final_norm.bias[7], 28007.0f);
    // and all of them
    expect_gpt2_weights(m);
}

TEST(LoadHf, Gpt2WithTransformerPrefix) {
    TempDir d;
    write_model_dir(d, gpt2_tensors("transformer."));
    Model m = load_model_hf(d.str());
    expect_gpt2_weights(m);
}

TEST(LoadHf, Gpt2MixedPrefixesRefused) {
    TempDir d;
    auto ts = gpt2_tensors("transformer.");
    find(ts, "transformer.ln_f.bias").name = "ln_f.bias";
    write_model_dir(d, ts);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"model.safetensors", "'transformer.' prefix", "ln_f.bias"});
}

TEST(LoadHf, Gpt2CausalMaskBuffersIgnored) {
    TempDir d;
    auto ts = gpt2_tensors("transformer.");
    // older transformers saved GPT2Attention's buffers: a [1, 1, n_positions, n_positions] mask
    // (uint8/bool) and the masked_bias scalar
    ts.push_back({"transformer.h.0.attn.bias", "BOOL", {1, 1, T, T}, std::string(T * T, '\1')});
    ts.push_back({"transformer.h.1.attn.bias", "U8", {1, 1, T, T}, std::string(T * T, '\1')});
    ts.push_back({"transformer.h.1.attn.masked_bias", "F32", {}, f32_bytes({-1e4f})});
    write_model_dir(d, ts);
    Model m = load_model_hf(d.str());
    expect_gpt2_weights(m);
}

TEST(LoadHf, Gpt2HalfPrecisionTensor) {
    // wpe (id 2) holds 2000..2047: integers below 2048 are exact in float16
    TempDir d;
    auto ts = gpt2_tensors();
    RawTensor& wpe = find(ts, "wpe.weight");
    std::vector<std::uint16_t> h(T * C);
    for (std::size_t i = 0; i < h.size(); ++i) {
        const std::uint32_t f = bits(value(2, i));  // float -> half by hand: exponent rebias, mantissa exact
        h[i] = static_cast<std::uint16_t>((((f >> 23) & 0xff) - 127 + 15) << 10 | ((f >> 13) & 0x3ff));
    }
    wpe.dtype = "F16";
    wpe.bytes = u16_bytes(h);
    write_model_dir(d, ts);
    Model m = load_model_hf(d.str());
    expect_gpt2_weights(m);
}

TEST(LoadHf, Gpt2TiedLmHeadEqualToEmbeddingsIgnored) {
    TempDir d;
    auto ts = gpt2_tensors("transformer.");
    ts.push_back({"lm_head.weight", "F32", {V, C}, find(ts, "transformer.wte.weight").bytes});
    write_model_dir(d, ts);
    Model m = load_model_hf(d.str());
    EXPECT_TRUE(m.output.empty());
    expect_gpt2_weights(m);
}

TEST(LoadHf, Gpt2TiedLmHeadThatDiffersRefused) {
    TempDir d;
    auto ts = gpt2_tensors();
    std::vector<float> head(V * C, 0.5f);
    ts.push_back({"lm_head.weight", "F32", {V, C}, f32_bytes(head)});
    write_model_dir(d, ts);
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"config.json", "tie_word_embeddings", "lm_head.weight", "element 0", "0.5 vs 1000"});
}

TEST(LoadHf, Gpt2UntiedLoadsLmHead) {
    TempDir d;
    auto ts = gpt2_tensors("transformer.");
    std::vector<float> head(V * C);
    for (std::size_t i = 0; i < head.size(); ++i) head[i] = value(99, i);
    ts.push_back({"lm_head.weight", "F32", {V, C}, f32_bytes(head)});
    json cfg = gpt2_config();
    cfg["tie_word_embeddings"] = false;
    write_model_dir(d, ts, cfg);
    Model m = load_model_hf(d.str());
    EXPECT_FALSE(m.config.tied_embeddings);
    ASSERT_EQ(m.output.size(), V * C);
    EXPECT_EQ(m.output[10 * 8 + 7], 99087.0f);
    EXPECT_EQ(m.classifier().data(), m.output.data());
    expect_gpt2_weights(m);
}

TEST(LoadHf, Gpt2UntiedWithoutLmHeadRefused) {
    TempDir d;
    json cfg = gpt2_config();
    cfg["tie_word_embeddings"] = false;
    write_model_dir(d, gpt2_tensors(), cfg);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"model.safetensors", "'lm_head.weight' is missing", "[11, 8]"});
}

TEST(LoadHf, Gpt2ConfigVariantsMapped) {
    TempDir d;
    json cfg = gpt2_config();
    cfg["activation_function"] = "gelu";
    cfg["layer_norm_epsilon"] = 1e-6;
    cfg["n_inner"] = 16;
    auto ts = gpt2_tensors();
    // n_inner 16: the feed-forward tensors shrink
    for (std::size_t l = 0; l < L; ++l) {
        find(ts, fmt::format("h.{}.mlp.c_fc.weight", l)) = {fmt::format("h.{}.mlp.c_fc.weight", l), "F32", {C, 16}, f32_bytes(std::vector<float>(C * 16))};
        find(ts, fmt::format("h.{}.mlp.c_fc.bias", l)) = {fmt::format("h.{}.mlp.c_fc.bias", l), "F32", {16}, f32_bytes(std::vector<float>(16))};
        find(ts, fmt::format("h.{}.mlp.c_proj.weight", l)) = {fmt::format("h.{}.mlp.c_proj.weight", l), "F32", {16, C}, f32_bytes(std::vector<float>(16 * C))};
    }
    write_model_dir(d, ts, cfg);
    Model m = load_model_hf(d.str());
    EXPECT_EQ(m.config.activation, Activation::GeluErf);
    EXPECT_EQ(m.config.norm_eps, 1e-6f);
    EXPECT_EQ(m.config.ffn_dim, 16u);
    EXPECT_EQ(m.layers[1].w_down.w.size(), C * 16);
}

TEST(LoadHfBad, DeeplyNestedConfigIsRefusedNotACrash) {
    // 200000 nested arrays parse fine, but printing one in an error message (json::dump recurses)
    // overflowed the stack: config.json is refused past 64 levels (found by review; the fuzzers cap
    // inputs at 64 KB)
    TempDir d;
    std::ofstream(d.file("config.json")) << R"({"model_type": "qwen2", "hidden_size": )" << std::string(200000, '[')
                                         << std::string(200000, ']') << "}";
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "nested deeper than 64 levels"});
}

// -- sharded

// Layer 0 and the embeddings in shard 1, the rest in shard 2, and the index mapping them.
void write_sharded(const TempDir& d, std::vector<RawTensor> ts, json* map_out = nullptr) {
    write_config(d, gpt2_config());
    std::vector<RawTensor> one, two;
    json map = json::object();
    for (RawTensor& t : ts) {
        const bool first = t.name.find("h.1.") == std::string::npos && t.name.find("ln_f") == std::string::npos;
        map[t.name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
        (first ? one : two).push_back(std::move(t));
    }
    write_safetensors(d.file("model-00001-of-00002.safetensors"), one);
    write_safetensors(d.file("model-00002-of-00002.safetensors"), two);
    if (map_out) *map_out = map;
    std::ofstream(d.file("model.safetensors.index.json")) << json{{"metadata", {{"total_size", 1234}}}, {"weight_map", map}}.dump(2);
}

void write_index(const TempDir& d, const json& map) {
    std::ofstream(d.file("model.safetensors.index.json")) << json{{"metadata", json::object()}, {"weight_map", map}}.dump(2);
}

TEST(LoadHf, Gpt2Sharded) {
    TempDir d;
    write_sharded(d, gpt2_tensors("transformer."));
    Model m = load_model_hf(d.str());
    expect_gpt2_weights(m);
    SafetensorsCheckpoint ck = SafetensorsCheckpoint::open_dir(d.str());
    EXPECT_NE(ck.file_of("transformer.h.1.ln_1.weight").find("model-00002-of-00002.safetensors"), std::string::npos);
    EXPECT_NE(ck.file_of("transformer.wte.weight").find("model-00001-of-00002.safetensors"), std::string::npos);
}

TEST(LoadHf, ShardFileMissing) {
    TempDir d;
    write_sharded(d, gpt2_tensors());
    fs::remove(d.file("model-00002-of-00002.safetensors"));
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"model.safetensors.index.json", "shard 'model-00002-of-00002.safetensors'", "is missing"});
}

TEST(LoadHf, IndexListsTensorAbsentFromItsShard) {
    TempDir d;
    json map;
    write_sharded(d, gpt2_tensors(), &map);
    map["h.1.ln_2.weight"] = "model-00001-of-00002.safetensors";  // it is in shard 2
    write_index(d, map);
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"model.safetensors.index.json", "'h.1.ln_2.weight'", "model-00001-of-00002.safetensors",
                              "does not contain it"});
}

TEST(LoadHf, ShardHasTensorTheIndexDoesNotList) {
    TempDir d;
    json map;
    write_sharded(d, gpt2_tensors(), &map);
    map.erase("ln_f.bias");
    write_index(d, map);
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"model-00002-of-00002.safetensors", "'ln_f.bias'", "does not list"});
}

// -- bad model directories

TEST(LoadHfBad, NoWeightsFile) {
    TempDir d;
    write_config(d, gpt2_config());
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {d.str(), "no model.safetensors or model.safetensors.index.json"});
}

TEST(LoadHfBad, MissingTensor) {
    TempDir d;
    write_model_dir(d, without(gpt2_tensors(), "h.1.mlp.c_fc.bias"));
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"model.safetensors", "'h.1.mlp.c_fc.bias' is missing", "[32]"});
}

TEST(LoadHfBad, WrongShape) {
    TempDir d;
    auto ts = gpt2_tensors();
    find(ts, "wpe.weight") = {"wpe.weight", "F32", {7, C}, f32_bytes(std::vector<float>(7 * C))};
    write_model_dir(d, ts);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"model.safetensors", "'wpe.weight'", "shape [7, 8]", "expected [6, 8]"});
}

TEST(LoadHfBad, Conv1DWeightNotTransposed) {
    // a c_attn weight saved in nn.Linear's [out, in] instead of Conv1D's [in, out]
    TempDir d;
    auto ts = gpt2_tensors();
    find(ts, "h.0.attn.c_attn.weight").shape = {3 * C, C};
    write_model_dir(d, ts);
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"'h.0.attn.c_attn.weight'", "shape [24, 8]", "expected [8, 24]", "Conv1D", "[24, 8]"});
}

TEST(LoadHfBad, WeightWithIntegerDtype) {
    TempDir d;
    auto ts = gpt2_tensors();
    find(ts, "ln_f.weight").dtype = "I32";
    write_model_dir(d, ts);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"model.safetensors", "'ln_f.weight'", "dtype I32"});
}

TEST(LoadHfBad, UnknownExtraTensors) {
    TempDir d;
    auto ts = gpt2_tensors();
    ts.push_back({"h.0.attn.q_norm.weight", "F32", {C}, f32_bytes(std::vector<float>(C))});
    ts.push_back({"score.weight", "F32", {2, C}, f32_bytes(std::vector<float>(2 * C))});
    write_model_dir(d, ts);
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"model.safetensors", "tensors this engine would ignore", "h.0.attn.q_norm.weight", "score.weight",
                              "a different architecture?"});
}

TEST(LoadHfBad, UnsupportedModelType) {
    TempDir d;
    json cfg = gpt2_config();
    cfg["model_type"] = "mamba";
    write_model_dir(d, gpt2_tensors(), cfg);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "model_type 'mamba'", "supported: ", "gpt2", "qwen2_moe"});
}

TEST(LoadHfBad, MissingModelType) {
    TempDir d;
    json cfg = gpt2_config();
    cfg.erase("model_type");
    write_model_dir(d, gpt2_tensors(), cfg);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "'model_type' is missing"});
}

TEST(LoadHfBad, InvalidConfigJson) {
    TempDir d;
    write_safetensors(d.file("model.safetensors"), gpt2_tensors());
    std::ofstream(d.file("config.json")) << "{\"model_type\": \"gpt2\",";
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "not valid JSON"});
}

TEST(LoadHfBad, MissingDimension) {
    TempDir d;
    json cfg = gpt2_config();
    cfg.erase("n_head");
    write_model_dir(d, gpt2_tensors(), cfg);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "'n_head' is missing"});
}

TEST(LoadHfBad, DimensionOfTheWrongType) {
    TempDir d;
    json cfg = gpt2_config();
    cfg["n_layer"] = -2;
    write_model_dir(d, gpt2_tensors(), cfg);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "'n_layer' is -2", "positive integer"});
}

TEST(LoadHfBad, ConfigThatDoesNotMakeAModel) {
    TempDir d;
    json cfg = gpt2_config();
    cfg["n_head"] = 3;  // does not divide 8
    write_model_dir(d, gpt2_tensors(), cfg);
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"config.json", "n_heads must divide dim", "num_attention_heads must divide hidden_size"});
}

TEST(LoadHfBad, UnsupportedActivation) {
    TempDir d;
    json cfg = gpt2_config();
    cfg["activation_function"] = "relu";
    write_model_dir(d, gpt2_tensors(), cfg);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "activation_function 'relu'", "gelu_new"});
}

void expect_refused_field(const char* field, bool v, std::initializer_list<std::string> parts) {
    TempDir d;
    json cfg = gpt2_config();
    cfg[field] = v;
    write_model_dir(d, gpt2_tensors(), cfg);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, parts);
}

TEST(LoadHfBad, AddCrossAttention) {
    expect_refused_field("add_cross_attention", true, {"config.json", "add_cross_attention is true", "cross-attention"});
}

TEST(LoadHfBad, UnscaledAttention) {
    expect_refused_field("scale_attn_weights", false, {"config.json", "scale_attn_weights is false", "unsupported numerical variant"});
}

TEST(LoadHfBad, ScaleAttentionByInverseLayer) {
    expect_refused_field("scale_attn_by_inverse_layer_idx", true,
                         {"config.json", "scale_attn_by_inverse_layer_idx is true", "unsupported numerical variant"});
}

TEST(LoadHfBad, ReorderAndUpcastAttention) {
    expect_refused_field("reorder_and_upcast_attn", true,
                         {"config.json", "reorder_and_upcast_attn is true", "unsupported numerical variant"});
}

TEST(LoadHfBad, SupportedValuesOfThoseFieldsAccepted) {
    TempDir d;
    json cfg = gpt2_config();
    cfg["add_cross_attention"] = false;
    cfg["scale_attn_weights"] = true;
    cfg["scale_attn_by_inverse_layer_idx"] = false;
    cfg["reorder_and_upcast_attn"] = false;
    write_model_dir(d, gpt2_tensors(), cfg);
    EXPECT_NO_THROW(load_model_hf(d.str()));
}

TEST(LoadHfBad, DamagedSafetensorsNamesTheFile) {
    TempDir d;
    write_model_dir(d, gpt2_tensors());
    fs::resize_file(d.file("model.safetensors"), fs::file_size(d.file("model.safetensors")) - 1);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"model.safetensors", "'ln_f.bias'", "truncated"});
}

// ---- llm.c ----------------------------------------------------------------------------------------

// The number of parameters llm.c's fill_in_parameter_sizes gives (wte padded to Vp rows).
std::size_t llmc_floats(std::size_t maxT, std::size_t Vp, std::size_t nl, std::size_t c) {
    return Vp * c + maxT * c + nl * (c + c + 3 * c * c + 3 * c + c * c + c + c + c + 4 * c * c + 4 * c + 4 * c * c + c) +
           2 * c;
}

// header {magic, version, maxT, V, L, NH, C, Vp}, then `floats` parameters: the k-th is k (float32),
// or k % 256 (bfloat16, exact there). `extra` adds (or removes) parameters to break the size;
// header_only writes no parameters at all.
void write_llmc(const std::string& path, std::array<std::int32_t, 8> head, std::ptrdiff_t extra = 0,
                bool header_only = false) {
    std::vector<std::int32_t> h(256, 0);
    std::copy(head.begin(), head.end(), h.begin());
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(h.data()), 1024);
    if (header_only) return;
    const bool bf16 = head[1] == 5;
    const std::size_t n = static_cast<std::size_t>(
        static_cast<std::ptrdiff_t>(llmc_floats(std::max(head[2], 0), std::max(head[7], 0), std::max(head[4], 0), std::max(head[6], 0))) +
        extra);
    for (std::size_t k = 0; k < n; ++k) {
        if (bf16) {
            const auto b = static_cast<std::uint16_t>(bits(static_cast<float>(k % 256)) >> 16);
            out.write(reinterpret_cast<const char*>(&b), 2);
        } else {
            const float f = static_cast<float>(k);
            out.write(reinterpret_cast<const char*>(&f), 4);
        }
    }
}

constexpr std::int32_t kMagic = 20240326;

TEST(LoadLlmc, LoadsWithPaddedRowsDropped) {
    TempDir d;
    // vocab 11 padded to 16 rows: file floats 0..127 are wte, of which 88..127 are padding
    write_llmc(d.file("gpt2.bin"), {kMagic, 3, 6, 11, 2, 2, 8, 16});
    Model m = load_model_llmc(d.file("gpt2.bin"));
    const Config& c = m.config;
    EXPECT_EQ(c.arch, Arch::Gpt2);
    EXPECT_EQ(c.dim, 8u);
    EXPECT_EQ(c.n_layers, 2u);
    EXPECT_EQ(c.n_heads, 2u);
    EXPECT_EQ(c.n_kv_heads, 2u);
    EXPECT_EQ(c.ffn_dim, 32u);
    EXPECT_EQ(c.vocab_size, 11u);
    EXPECT_EQ(c.max_seq_len, 6u);
    EXPECT_EQ(c.activation, Activation::GeluTanh);
    EXPECT_EQ(c.norm_eps, 1e-5f);
    EXPECT_TRUE(c.tied_embeddings);
    EXPECT_TRUE(m.output.empty());

    ASSERT_EQ(m.tok_embeddings.size(), 11u * 8);
    EXPECT_EQ(m.tok_embeddings[0], 0.0f);
    EXPECT_EQ(m.tok_embeddings[87], 87.0f);  // last real row
    ASSERT_EQ(m.pos_embeddings.size(), 6u * 8);
    EXPECT_EQ(m.pos_embeddings[0], 128.0f);  // padding rows 88..127 skipped
    // then ln1w (L, C) at 176, ln1b at 192, qkvw (L, 3C, C) at 208: layer 1's starts 192 later
    EXPECT_EQ(m.layers[0].attn_norm.weight[0], 176.0f);
    EXPECT_EQ(m.layers[1].attn_norm.weight[0], 184.0f);
    EXPECT_EQ(m.layers[1].attn_norm.bias[7], 207.0f);  // ln1b: layer 0 at 192, layer 1 at 200
    EXPECT_EQ(m.layers[0].wqkv.w[0], 208.0f);
    EXPECT_EQ(m.layers[1].wqkv.w[1], 401.0f);  // [out, in] as stored: no transpose
    EXPECT_EQ(m.layers[0].wqkv.b[0], 592.0f);   // qkvb (L, 3C) after 2 * 192 weights
    EXPECT_EQ(m.final_norm.bias[7], static_cast<float>(llmc_floats(6, 16, 2, 8) - 1));  // the last float
    EXPECT_EQ(m.final_norm.weight[0], static_cast<float>(llmc_floats(6, 16, 2, 8) - 16));
}

TEST(LoadLlmc, LoadsBfloat16Version5) {
    TempDir d;
    write_llmc(d.file("gpt2_bf16.bin"), {kMagic, 5, 6, 11, 2, 2, 8, 16});
    Model m = load_model_llmc(d.file("gpt2_bf16.bin"));
    EXPECT_EQ(m.tok_embeddings[87], 87.0f);
    EXPECT_EQ(m.pos_embeddings[0], 128.0f);
    EXPECT_EQ(m.layers[1].wqkv.w[1], 401.0f - 256);
    EXPECT_EQ(m.final_norm.bias[7], static_cast<float>((llmc_floats(6, 16, 2, 8) - 1) % 256));
}

TEST(LoadLlmc, BadMagic) {
    TempDir d;
    write_llmc(d.file("x.bin"), {20240327, 3, 6, 11, 2, 2, 8, 16});
    expect_error<ModelError>([&] { load_model_llmc(d.file("x.bin")); }, {"x.bin", "bad magic 20240327", "20240326"});
}

TEST(LoadLlmc, UnsupportedVersion) {
    TempDir d;
    write_llmc(d.file("x.bin"), {kMagic, 2, 6, 11, 2, 2, 8, 16});
    expect_error<ModelError>([&] { load_model_llmc(d.file("x.bin")); }, {"x.bin", "version 2", "3 = float32", "5 = bfloat16"});
}

TEST(LoadLlmc, SizeMismatch) {
    TempDir d;
    write_llmc(d.file("x.bin"), {kMagic, 3, 6, 11, 2, 2, 8, 16}, -1);  // one float short
    const std::size_t want = 1024 + 4 * llmc_floats(6, 16, 2, 8);
    expect_error<ModelError>([&] { load_model_llmc(d.file("x.bin")); },
                             {"x.bin", fmt::format("file is {} bytes", want - 4), fmt::format("requires {} bytes", want),
                              "maxT 6, V 11, L 2, NH 2, C 8, Vp 16"});
}

TEST(LoadLlmc, PaddedVocabSmallerThanVocab) {
    TempDir d;
    write_llmc(d.file("x.bin"), {kMagic, 3, 6, 11, 2, 2, 8, 10});
    expect_error<ModelError>([&] { load_model_llmc(d.file("x.bin")); }, {"x.bin", "Vp 10", "vocabulary V 11"});
}

TEST(LoadLlmc, NonPositiveHeaderField) {
    TempDir d;
    write_llmc(d.file("x.bin"), {kMagic, 3, 6, 11, 2, 0, 8, 16});
    expect_error<ModelError>([&] { load_model_llmc(d.file("x.bin")); }, {"x.bin", "header field 5 (NH) is 0"});
}

TEST(LoadLlmc, HeadsThatDoNotDivideTheWidth) {
    TempDir d;
    write_llmc(d.file("x.bin"), {kMagic, 3, 6, 11, 2, 3, 8, 16});
    expect_error<ModelError>([&] { load_model_llmc(d.file("x.bin")); }, {"x.bin", "n_heads must divide dim"});
}

TEST(LoadLlmc, AbsurdHeaderRefusedBeforeAllocating) {
    TempDir d;
    // C = 2^20: a 100-billion-float embedding table, refused by validate() from the header alone
    write_llmc(d.file("x.bin"), {kMagic, 3, 1024, 50257, 2, 16, 1 << 20, 50304}, 0, true);
    expect_error<ModelError>([&] { load_model_llmc(d.file("x.bin")); }, {"x.bin", "invalid gpt2 model config", "dim 1048576"});
}

TEST(LoadLlmc, ShorterThanTheHeader) {
    TempDir d;
    std::ofstream(d.file("x.bin")) << "short";
    expect_error<ModelError>([&] { load_model_llmc(d.file("x.bin")); }, {"x.bin", "5 bytes", "1024-byte llm.c header"});
}

}  // namespace
}  // namespace lmlab

// ---- LLaMA and Qwen2 directories (LlamaForCausalLM / Qwen2ForCausalLM names) ------------------------
namespace lmlab {
namespace {

// dim 8, 4 query heads on 2 kv heads (head_dim 2), ffn 12, vocab 5, the tensors named as
// transformers saves them (with "model."), written out here independently of model/tensors.cpp.
std::vector<RawTensor> llama_tensors(bool qkv_bias, bool untied) {
    std::vector<RawTensor> out;
    std::size_t id = 0;
    auto add = [&](const std::string& name, Shape shape) {
        std::vector<float> v(count(shape));
        ++id;
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = value(id, i) / 1e4f;
        out.push_back({name, "F32", shape, f32_bytes(v)});
    };
    add("model.embed_tokens.weight", {5, 8});
    for (int l = 0; l < 2; ++l) {
        const std::string p = fmt::format("model.layers.{}.", l);
        add(p + "input_layernorm.weight", {8});
        add(p + "self_attn.q_proj.weight", {8, 8});
        add(p + "self_attn.k_proj.weight", {4, 8});
        add(p + "self_attn.v_proj.weight", {4, 8});
        if (qkv_bias) {
            add(p + "self_attn.q_proj.bias", {8});
            add(p + "self_attn.k_proj.bias", {4});
            add(p + "self_attn.v_proj.bias", {4});
        }
        add(p + "self_attn.o_proj.weight", {8, 8});
        add(p + "post_attention_layernorm.weight", {8});
        add(p + "mlp.gate_proj.weight", {12, 8});
        add(p + "mlp.up_proj.weight", {12, 8});
        add(p + "mlp.down_proj.weight", {8, 12});
    }
    add("model.norm.weight", {8});
    if (untied) add("lm_head.weight", {5, 8});
    return out;
}

json llama_like_config(const char* type) {
    return {{"model_type", type},        {"hidden_size", 8},       {"num_hidden_layers", 2},
            {"num_attention_heads", 4},  {"num_key_value_heads", 2}, {"intermediate_size", 12},
            {"vocab_size", 5},           {"max_position_embeddings", 16}, {"rms_norm_eps", 1e-6},
            {"rope_theta", 1e6},         {"hidden_act", "silu"},   {"tie_word_embeddings", std::string(type) == "qwen2"},
            {"eos_token_id", std::string(type) == "qwen2" ? json(3) : json::array({3, 4})}};
}

}  // namespace

TEST(LoadHfLlama, Qwen2LoadsWithBiasesRotateHalfAndGqa) {
    TempDir d;
    write_model_dir(d, llama_tensors(true, false), llama_like_config("qwen2"));
    const Model m = load_model_hf(d.str());
    const Config& c = m.config;
    EXPECT_EQ(c.arch, Arch::Qwen2);
    EXPECT_EQ(c.n_heads, 4u);
    EXPECT_EQ(c.n_kv_heads, 2u);
    EXPECT_EQ(c.rope_style, RopeStyle::RotateHalf);
    EXPECT_EQ(c.rope_theta, 1e6f);
    EXPECT_EQ(c.norm_eps, 1e-6f);
    EXPECT_TRUE(c.tied_embeddings);
    // tensor 6 in the file's order (embed, norm, q, k, v, then q bias) is layers.0's q_proj.bias
    ASSERT_EQ(m.layers[0].wq.b.size(), 8u);
    EXPECT_EQ(m.layers[0].wq.b[3], value(6, 3) / 1e4f);
    EXPECT_EQ(m.layers[1].wk.b.size(), 4u);
    EXPECT_EQ(m.eos_token_ids, std::vector<int>{3});
}

TEST(LoadHfLlama, LlamaUntiedWithoutPrefixAndRotaryBuffersIgnored) {
    TempDir d;
    auto ts = llama_tensors(false, true);
    for (RawTensor& t : ts)
        if (t.name.rfind("model.", 0) == 0) t.name = t.name.substr(6);  // LlamaModel saves without "model."
    ts.push_back({"layers.0.self_attn.rotary_emb.inv_freq", "F32", {1}, f32_bytes({1.0f})});  // older checkpoints
    write_model_dir(d, ts, llama_like_config("llama"));
    const Model m = load_model_hf(d.str());
    EXPECT_EQ(m.config.arch, Arch::Llama);
    EXPECT_FALSE(m.config.tied_embeddings);
    EXPECT_EQ(m.output.size(), 40u);
    EXPECT_TRUE(m.layers[0].wq.b.empty());
    EXPECT_EQ(m.eos_token_ids, (std::vector<int>{3, 4}));
}

TEST(LoadHfLlama, UnsupportedConfigFieldsAreRefusedByName) {
    const std::vector<std::pair<std::pair<const char*, json>, const char*>> bad = {
        {{"rope_scaling", json{{"type", "longrope"}, {"factor", 2.0}}}, "type 'longrope' is not implemented"},
        {{"use_sliding_window", true}, "use_sliding_window is true but sliding_window is null"},
        {{"hidden_act", "gelu"}, "hidden_act 'gelu'"},
        {{"head_dim", 4}, "head_dim 4"},
        {{"partial_rotary_factor", 0.5}, "partial_rotary_factor"},
    };
    for (const auto& [field, expect] : bad) {
        TempDir d;
        json config = llama_like_config("qwen2");
        config[field.first] = field.second;
        write_model_dir(d, llama_tensors(true, false), config);
        test::expect_error<ModelError>([&] { load_model_hf(d.str()); }, {expect});
    }
    TempDir d;
    json config = llama_like_config("llama");
    config["attention_bias"] = true;
    write_model_dir(d, llama_tensors(false, true), config);
    test::expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"attention_bias"});
}

TEST(LoadHfLlama, RopeScalingOfEveryImplementedKind) {
    struct Case {
        json scaling;
        RopeScalingKind kind;
        double factor;
        std::size_t original, context;  // original_context, max_seq_len (max_position_embeddings is 16)
    };
    const std::vector<Case> cases = {
        {{{"rope_type", "linear"}, {"factor", 2.0}}, RopeScalingKind::Linear, 2.0, 16, 32},
        {{{"type", "dynamic"}, {"factor", 4.0}}, RopeScalingKind::Dynamic, 4.0, 16, 64},  // the old key name
        {{{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 16}}, RopeScalingKind::Yarn, 4.0, 16, 64},
        {{{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
          {"original_max_position_embeddings", 8}},
         RopeScalingKind::Llama3, 8.0, 8, 16},
        {{{"rope_type", "default"}}, RopeScalingKind::None, 1.0, 0, 16},
    };
    for (const Case& k : cases) {
        TempDir d;
        json config = llama_like_config("llama");
        config["rope_scaling"] = k.scaling;
        write_model_dir(d, llama_tensors(false, true), config);
        const Config c = load_model_hf(d.str()).config;
        EXPECT_EQ(c.rope_scaling.kind, k.kind) << k.scaling.dump();
        EXPECT_EQ(c.rope_scaling.factor, k.factor) << k.scaling.dump();
        EXPECT_EQ(c.rope_scaling.original_context, k.original) << k.scaling.dump();
        EXPECT_EQ(c.max_seq_len, k.context) << k.scaling.dump();
    }
    // yarn's defaults: betas 32 and 1, attention factor 0.1 ln(factor) + 1
    TempDir d;
    json config = llama_like_config("qwen2");
    config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_fast", 16.0}};
    write_model_dir(d, llama_tensors(true, false), config);
    const RopeScaling y = load_model_hf(d.str()).config.rope_scaling;
    EXPECT_EQ(y.beta_fast, 16.0);
    EXPECT_EQ(y.beta_slow, 1.0);
    EXPECT_DOUBLE_EQ(y.attention_factor, 0.1 * std::log(4.0) + 1.0);
}

TEST(LoadHfLlama, RopeScalingThatWouldComputeAnotherModelIsRefusedByName) {
    const std::vector<std::pair<json, std::vector<std::string>>> bad = {
        {{{"rope_type", "longrope"}, {"long_factor", {1.0}}, {"short_factor", {1.0}}}, {"'longrope' is not implemented"}},
        {{{"rope_type", "su"}, {"factor", 2.0}}, {"'su' is not implemented"}},
        {{{"rope_type", "linear"}}, {"rope_scaling.factor is missing"}},
        {{{"rope_type", "linear"}, {"factor", 0.5}}, {"factor 0.5 must be at least 1"}},
        {{{"rope_type", "yarn"}, {"factor", 4.0}, {"mscale", 0.7}}, {"rope_scaling.mscale is not read by transformers 4.46.3"}},
        // 4.46.3's yarn ignores it and uses max_position_embeddings (16), later versions read it
        {{{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 8}},
         {"rope_scaling.original_max_position_embeddings", "equal max_position_embeddings"}},
        {{{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"original_max_position_embeddings", 8}},
         {"rope_scaling.high_freq_factor is missing"}},
        {{{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0}, {"high_freq_factor", 1.0},
          {"original_max_position_embeddings", 8}},
         {"low_freq_factor 4 and high_freq_factor 1"}},
        {json("linear"), {"expected an object"}},
    };
    for (const auto& [scaling, parts] : bad) {
        TempDir d;
        json config = llama_like_config("llama");
        config["rope_scaling"] = scaling;
        write_model_dir(d, llama_tensors(false, true), config);
        std::vector<std::string> all = {"config.json"};
        all.insert(all.end(), parts.begin(), parts.end());
        for (const std::string& p : all)
            try {
                load_model_hf(d.str());
                ADD_FAILURE() << scaling.dump() << " loaded";
            } catch (const ModelError& e) {
                EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
            }
    }
}

TEST(LoadHfLlama, Qwen2SlidingWindowFromMaxWindowLayers) {
    TempDir d;
    json config = llama_like_config("qwen2");
    config["use_sliding_window"] = true;
    config["sliding_window"] = 4;
    config["max_window_layers"] = 1;
    write_model_dir(d, llama_tensors(true, false), config);
    const Config c = load_model_hf(d.str()).config;
    EXPECT_EQ(c.window(0), 0u);  // below max_window_layers: every position
    EXPECT_EQ(c.window(1), 4u);
    // switched off (Qwen2.5's configs): the window means nothing
    config["use_sliding_window"] = false;
    write_model_dir(d, llama_tensors(true, false), config);
    EXPECT_EQ(load_model_hf(d.str()).config.sliding_window, 0u);
}

TEST(LoadHfMistral, LlamasTensorsWithAWindowOnEveryLayer) {
    // model_type mistral: LLaMA's names, no biases; sliding_window a number (v0.1), null (v0.2+) or
    // absent (MistralConfig's default 4096, beyond this context of 16: no window)
    for (const json& window : {json(4), json(nullptr)}) {
        TempDir d;
        json config = llama_like_config("llama");
        config["model_type"] = "mistral";
        config["sliding_window"] = window;
        write_model_dir(d, llama_tensors(false, true), config);
        const Model m = load_model_hf(d.str());
        EXPECT_EQ(m.config.arch, Arch::Mistral);
        EXPECT_EQ(m.config.rope_style, RopeStyle::RotateHalf);
        EXPECT_EQ(m.config.window(0), window.is_null() ? 0u : 4u);
        EXPECT_EQ(m.config.window(1), window.is_null() ? 0u : 4u);
    }
    TempDir d;
    json config = llama_like_config("llama");
    config["model_type"] = "mistral";
    write_model_dir(d, llama_tensors(false, true), config);
    EXPECT_EQ(load_model_hf(d.str()).config.sliding_window, 0u);
    config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};  // transformers 4.46.3's Mistral ignores it
    write_model_dir(d, llama_tensors(false, true), config);
    test::expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"rope_scaling", "Mistral ignores it"});
}

TEST(LoadHfLlama, QwenWithoutItsBiasesIsAMissingTensor) {
    TempDir d;
    write_model_dir(d, llama_tensors(false, false), llama_like_config("qwen2"));
    test::expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"model.layers.0.self_attn.q_proj.bias", "missing"});
}

}  // namespace lmlab

// ---- Mixtures of experts (Qwen2MoeForCausalLM / MixtralForCausalLM names) -----------------------------
namespace lmlab {
namespace {

// dim 8, 4 heads on 2 kv heads, 4 experts of width 6 (top-2), Qwen2-MoE's shared expert of width 10;
// names as transformers saves them, written out here independently of model/tensors.cpp.
std::vector<RawTensor> moe_tensors(bool mixtral) {
    std::vector<RawTensor> out;
    std::size_t id = 0;
    auto add = [&](const std::string& name, Shape shape) {
        std::vector<float> v(count(shape));
        ++id;
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = value(id, i) / 1e4f;
        out.push_back({name, "F32", shape, f32_bytes(v)});
    };
    add("model.embed_tokens.weight", {5, 8});
    for (int l = 0; l < 2; ++l) {
        const std::string p = fmt::format("model.layers.{}.", l);
        add(p + "input_layernorm.weight", {8});
        add(p + "self_attn.q_proj.weight", {8, 8});
        add(p + "self_attn.k_proj.weight", {4, 8});
        add(p + "self_attn.v_proj.weight", {4, 8});
        if (!mixtral) {
            add(p + "self_attn.q_proj.bias", {8});
            add(p + "self_attn.k_proj.bias", {4});
            add(p + "self_attn.v_proj.bias", {4});
        }
        add(p + "self_attn.o_proj.weight", {8, 8});
        add(p + "post_attention_layernorm.weight", {8});
        const std::string moe = p + (mixtral ? "block_sparse_moe." : "mlp.");
        add(moe + "gate.weight", {4, 8});
        for (int e = 0; e < 4; ++e) {
            const std::string x = fmt::format("{}experts.{}.", moe, e);
            add(x + (mixtral ? "w1.weight" : "gate_proj.weight"), {6, 8});
            add(x + (mixtral ? "w2.weight" : "down_proj.weight"), {8, 6});
            add(x + (mixtral ? "w3.weight" : "up_proj.weight"), {6, 8});
        }
        if (!mixtral) {
            add(moe + "shared_expert.gate_proj.weight", {10, 8});
            add(moe + "shared_expert.up_proj.weight", {10, 8});
            add(moe + "shared_expert.down_proj.weight", {8, 10});
            add(moe + "shared_expert_gate.weight", {1, 8});
        }
    }
    add("model.norm.weight", {8});
    add("lm_head.weight", {5, 8});
    return out;
}

json moe_config(bool mixtral) {
    json c = {{"model_type", mixtral ? "mixtral" : "qwen2_moe"},
              {"hidden_size", 8},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"vocab_size", 5},
              {"max_position_embeddings", 16},
              {"rms_norm_eps", 1e-6},
              {"hidden_act", "silu"},
              {"tie_word_embeddings", false},
              {"num_experts_per_tok", 2}};
    if (mixtral) {
        c["intermediate_size"] = 6;
        c["num_local_experts"] = 4;
        c["sliding_window"] = nullptr;
    } else {
        c["intermediate_size"] = 99;  // the dense MLP's width: unused when every layer is sparse
        c["moe_intermediate_size"] = 6;
        c["shared_expert_intermediate_size"] = 10;
        c["num_experts"] = 4;
        c["norm_topk_prob"] = false;
        c["decoder_sparse_step"] = 1;
        c["mlp_only_layers"] = json::array();
        c["use_sliding_window"] = false;
        c["sliding_window"] = nullptr;
    }
    return c;
}

TEST(LoadHfMoe, Qwen2MoeLoadsRouterExpertsAndSharedExpert) {
    TempDir d;
    write_model_dir(d, moe_tensors(false), moe_config(false));
    const Model m = load_model_hf(d.str());
    const Config& c = m.config;
    EXPECT_EQ(c.arch, Arch::Qwen2Moe);
    EXPECT_EQ(c.n_experts, 4u);
    EXPECT_EQ(c.top_k, 2u);
    EXPECT_EQ(c.ffn_dim, 6u);
    EXPECT_EQ(c.shared_ffn_dim, 10u);
    EXPECT_FALSE(c.norm_topk_prob);
    EXPECT_TRUE(c.qkv_bias);
    ASSERT_EQ(m.layers[1].experts.size(), 4u);
    // ids are 1-based in file order: the embedding (1), layer 0's 26 tensors (2..27), then layer 1's
    // norm, q, k, v, 3 biases, o, norm (28..36): its router is 37, expert 2's gate_proj 37 + 1 + 2·3 = 44
    EXPECT_EQ(m.layers[1].router.w.size(), 32u);
    EXPECT_EQ(m.layers[1].router.w[5], value(37, 5) / 1e4f);
    EXPECT_EQ(m.layers[1].experts[2].w_gate.w[7], value(44, 7) / 1e4f);
    EXPECT_EQ(m.layers[1].experts[2].w_down.w.size(), 48u);
    EXPECT_EQ(m.layers[1].shared_gate.w.size(), 8u);
    EXPECT_EQ(m.layers[0].shared_expert.w_down.w.size(), 80u);
}

TEST(LoadHfMoe, MixtralLoadsW1W2W3AndRenormalises) {
    TempDir d;
    write_model_dir(d, moe_tensors(true), moe_config(true));
    const Model m = load_model_hf(d.str());
    EXPECT_EQ(m.config.arch, Arch::Mixtral);
    EXPECT_TRUE(m.config.norm_topk_prob);
    EXPECT_EQ(m.config.shared_ffn_dim, 0u);
    EXPECT_FALSE(m.config.qkv_bias);
    // layer 0: embedding 1, then norm, q, k, v, o, norm (2..7), router 8, expert 0: w1 9, w2 10, w3 11
    EXPECT_EQ(m.layers[0].experts[0].w_gate.w[3], value(9, 3) / 1e4f);
    EXPECT_EQ(m.layers[0].experts[0].w_down.w[3], value(10, 3) / 1e4f);
    EXPECT_EQ(m.layers[0].experts[0].w_up.w[3], value(11, 3) / 1e4f);
}

TEST(LoadHfMoe, DecoderSparseStepRefused) {
    TempDir d;
    json c = moe_config(false);
    c["decoder_sparse_step"] = 2;
    write_model_dir(d, moe_tensors(false), c);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "decoder_sparse_step is 2", "every layer sparse"});
}

TEST(LoadHfMoe, MlpOnlyLayersRefused) {
    TempDir d;
    json c = moe_config(false);
    c["mlp_only_layers"] = json::array({0});
    write_model_dir(d, moe_tensors(false), c);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "mlp_only_layers is [0]", "dense MLP"});
}

TEST(LoadHfMoe, TopKBeyondTheExpertsRefused) {
    TempDir d;
    json c = moe_config(true);
    c["num_experts_per_tok"] = 5;
    write_model_dir(d, moe_tensors(true), c);
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"config.json", "num_experts_per_tok is 5", "num_local_experts is 4"});
}

TEST(LoadHfMoe, SlidingWindowInUseRefused) {
    TempDir d;
    json c = moe_config(true);
    c["sliding_window"] = 8;
    write_model_dir(d, moe_tensors(true), c);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "sliding_window is 8", "not verified"});
    json q = moe_config(false);
    q["use_sliding_window"] = true;
    write_model_dir(d, moe_tensors(false), q);
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"config.json", "use_sliding_window is true"});
}

TEST(LoadHfMoe, MissingExpertTensorRefused) {
    TempDir d;
    write_model_dir(d, without(moe_tensors(true), "model.layers.1.block_sparse_moe.experts.3.w2.weight"), moe_config(true));
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"model.safetensors", "'model.layers.1.block_sparse_moe.experts.3.w2.weight' is missing", "[8, 6]"});
}

TEST(LoadHfMoe, ExpertOfTheWrongShapeRefused) {
    TempDir d;
    std::vector<RawTensor> ts = moe_tensors(false);
    RawTensor& t = find(ts, "model.layers.0.mlp.experts.1.up_proj.weight");
    t.shape = {8, 6};  // transposed
    write_model_dir(d, ts, moe_config(false));
    expect_error<ModelError>([&] { load_model_hf(d.str()); },
                             {"'model.layers.0.mlp.experts.1.up_proj.weight' has shape [8, 6], expected [6, 8]"});
}

TEST(LoadHfMoe, ExtraExpertRefused) {  // 5 experts in the file, 4 in config.json: never silently dropped
    TempDir d;
    std::vector<RawTensor> ts = moe_tensors(true);
    ts.push_back({"model.layers.0.block_sparse_moe.experts.4.w1.weight", "F32", {6, 8}, f32_bytes(std::vector<float>(48))});
    write_model_dir(d, ts, moe_config(true));
    expect_error<ModelError>([&] { load_model_hf(d.str()); }, {"tensors this engine would ignore", "experts.4.w1.weight"});
}

TEST(LoadHfMoe, QuantizeRefusesExperts) {
    TempDir d;
    write_model_dir(d, moe_tensors(true), moe_config(true));
    expect_error<ModelError>([&] { quantize_model(load_model_hf(d.str()), 2); }, {"mixture of experts", "4 experts", "float32"});
}

}  // namespace
}  // namespace lmlab
