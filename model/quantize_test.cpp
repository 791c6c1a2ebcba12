// Int8 models: quantize_model (any family), the forward pass on int8 weights, the memory they
// take, and llama2.c's int8 checkpoint format ("ak42", version 2), written here byte by byte as
// llama2.c's export.py version2_export lays it out.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "model/load/load.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/tensors.h"
#include "model/testing/test_model.h"
#include "model/testing/test_shared.h"

namespace lmlab {

namespace {

namespace fs = std::filesystem;
using test::expect_error;

using test::TempDir;

// every logit of a few tokens from position 0
std::vector<float> logits_of(const Model& m, const std::vector<int>& tokens) {
    KVCache cache(m.config.n_layers, m.config.max_seq_len, m.config.kv_dim());
    RunState s(m.config);
    std::vector<float> all;
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        const auto l = forward(m, tokens[p], p, cache, s);
        all.insert(all.end(), l.begin(), l.end());
    }
    return all;
}

// llama2.c's version-2 file of a LLaMA model (export.py version2_export's layout): header, norms
// in float32, then each matrix as int8 values and float32 scales. The values come from our
// quantize_q8_0 (export.py uses torch.round, which only differs at exact halves).
void write_ak42(const std::string& path, const Model& m, std::int32_t group, int version = 2) {
    const Config& c = m.config;
    std::vector<char> hdr(256, 0);
    const std::uint32_t magic = 0x616b3432;
    const std::int32_t fields[9] = {version,
                                    static_cast<std::int32_t>(c.dim),
                                    static_cast<std::int32_t>(c.ffn_dim),
                                    static_cast<std::int32_t>(c.n_layers),
                                    static_cast<std::int32_t>(c.n_heads),
                                    static_cast<std::int32_t>(c.n_kv_heads),
                                    static_cast<std::int32_t>(c.vocab_size),
                                    static_cast<std::int32_t>(c.max_seq_len),
                                    0};
    std::memcpy(hdr.data(), &magic, 4);
    std::memcpy(hdr.data() + 4, fields, 8 * 4);
    hdr[36] = c.tied_embeddings ? 1 : 0;
    std::memcpy(hdr.data() + 37, &group, 4);
    std::ofstream out(path, std::ios::binary);
    out.write(hdr.data(), static_cast<std::streamsize>(hdr.size()));
    Model copy = m;
    const auto tensors = bind_tensors(copy);
    for (const BoundTensor& t : tensors)
        if (!q8_slot(copy, t.dst)) out.write(reinterpret_cast<const char*>(t.dst->data()), static_cast<std::streamsize>(t.dst->size() * 4));
    for (const BoundTensor& t : tensors)
        if (q8_slot(copy, t.dst)) {
            const auto g = static_cast<std::size_t>(group);
            std::vector<std::int8_t> q(t.dst->size());
            std::vector<float> s(t.dst->size() / g);
            quantize_q8_0(*t.dst, g, q, s);
            out.write(reinterpret_cast<const char*>(q.data()), static_cast<std::streamsize>(q.size()));
            out.write(reinterpret_cast<const char*>(s.data()), static_cast<std::streamsize>(s.size() * 4));
        }
}

}  // namespace

TEST(QuantizeModel, EveryMatrixBecomesInt8AndTheFloatsAreFreed) {
    const Model f = test::tiny_model();  // dim 4, ffn 8, vocab 5, untied
    const Model q = quantize_model(f, 4);
    EXPECT_TRUE(q.quantized());
    EXPECT_TRUE(q.tok_embeddings.empty());
    EXPECT_TRUE(q.output.empty());
    EXPECT_EQ(q.tok_embeddings_q8.q.size(), 20u);
    EXPECT_EQ(q.output_q8.scales.size(), 5u);  // one group per row of 4
    for (const LayerWeights& l : q.layers) {
        for (const Linear* lin : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
            EXPECT_TRUE(lin->w.empty());
            EXPECT_EQ(lin->q8.group, 4u);
        }
        EXPECT_EQ(l.attn_norm.weight.size(), 4u);  // norms stay float
    }
    // each matrix is quantize_q8_0 of the float one, row-major, groups within rows
    std::vector<std::int8_t> qv(32);
    std::vector<float> sv(8);
    quantize_q8_0(f.layers[1].w_down.w, 4, qv, sv);
    EXPECT_EQ(q.layers[1].w_down.q8.q, qv);
    EXPECT_EQ(q.layers[1].w_down.q8.scales, sv);
}

TEST(QuantizeModel, WeightMemoryIsMeasuredAndShrinks) {
    // float: 348 floats = 1392 bytes. int8 (group 4): 16 norm floats per layer + 1 final norm x4 bytes,
    // 20 + 20 bytes of int8 for the tables, 144 per layer, and one float scale per 4 values
    const Model f = test::tiny_model();
    EXPECT_EQ(weight_bytes(f), 348u * 4);
    const Model q = quantize_model(f, 4);
    EXPECT_EQ(weight_bytes(q), (2 * 8 + 4) * 4u + (20 + 20 + 2 * 144) * 1u + (20 + 20 + 2 * 144) / 4 * 4u);
}

TEST(QuantizeModel, LogitsStayCloseToTheFloatModel) {
    Config c = test::tiny_config();
    c.dim = 64;
    c.ffn_dim = 128;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.vocab_size = 32;
    Model f = test::make_model(c);
    for (const BoundTensor& t : bind_tensors(f))  // as a trained layer: W ~ 1/sqrt(in), outputs O(1)
        if (t.shape.size() == 2)
            for (float& v : *t.dst) v /= std::sqrt(static_cast<float>(t.shape[1]));
    const Model q = quantize_model(f, 32);
    const std::vector<int> tokens = {1, 7, 3, 31, 0};
    const auto lf = logits_of(f, tokens), lq = logits_of(q, tokens);
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < lf.size(); ++i) {
        worst = std::max(worst, std::fabs(static_cast<double>(lf[i]) - lq[i]));
        scale = std::max(scale, std::fabs(static_cast<double>(lf[i])));
    }
    EXPECT_GT(worst, 0.0);             // it is a different computation
    EXPECT_LT(worst, 0.05 * scale);    // but close: ~1% error per quantized matvec
}

TEST(QuantizeModel, RowsNotWholeGroupsThrowNamingTheTensorAndAGroupThatFits) {
    const Model f = test::tiny_model();  // rows of 4 and 8
    expect_error<ModelError>([&] { quantize_model(f, 3); },
                             {"tok_embeddings.weight", "[5, 4]", "not a multiple of 3", "--group 2"});
    expect_error<ModelError>([&] { quantize_model(f, 8); }, {"tok_embeddings.weight", "--group 4"});
    expect_error<ModelError>([&] { quantize_model(f, 0); }, {"group size 0"});
    const Model q = quantize_model(f, 4);
    expect_error<ModelError>([&] { quantize_model(q, 4); }, {"already quantized"});
    Model bad = f;
    bad.layers[1].wk.w[3] = NAN;
    expect_error<ModelError>([&] { quantize_model(bad, 4); }, {"layers.1.attention.wk.weight", "non-finite"});
}

TEST(QuantizeModel, Gpt2KeepsBiasesAndPositionsFloatAndTiesTheClassifier) {
    Config c = Config::of(Arch::Gpt2);
    c.dim = 8;
    c.n_layers = 1;
    c.n_heads = c.n_kv_heads = 2;
    c.ffn_dim = 32;
    c.vocab_size = 7;
    c.max_seq_len = 6;
    c.tied_embeddings = true;
    const Model f = test::make_model(c);
    const Model q = quantize_model(f, 8);
    EXPECT_EQ(q.layers[0].wqkv.b, f.layers[0].wqkv.b);
    EXPECT_EQ(q.pos_embeddings, f.pos_embeddings);
    EXPECT_EQ(&q.classifier_q8(), &q.tok_embeddings_q8);  // tied: runq.c's wcls = q_tokens
    const auto lq = logits_of(q, {1, 2, 3});
    for (float v : lq) EXPECT_TRUE(std::isfinite(v));
}

TEST(QuantizeModel, EmbeddingRowIsDequantizedOnLookup) {
    const Model f = test::tiny_model();
    const Model q = quantize_model(f, 4);
    std::vector<float> x(4), expect(4);
    embed(q, 3, 0, x);
    dequantize_q8_0(std::span<const std::int8_t>(q.tok_embeddings_q8.q).subspan(12, 4),
                    std::span<const float>(q.tok_embeddings_q8.scales).subspan(3, 1), 4, expect);
    EXPECT_EQ(x, expect);
}

TEST(QuantizeModel, PrefillOfAnInt8ModelEqualsTokenByToken) {
    const Model q = quantize_model(test::tiny_model(), 4);
    const std::vector<int> tokens = {1, 4, 2};
    KVCache cache(q.config.n_layers, q.config.max_seq_len, q.config.kv_dim());
    RunState s(q.config, tokens.size());
    std::vector<float> all;
    prefill(q, tokens, cache, s, &all);
    EXPECT_EQ(all, logits_of(q, tokens));
}

// ---- llama2.c's int8 checkpoint ------------------------------------------------------------------

TEST(LoadLlama2cQ8, Ak42FileGivesTheSameModelAsQuantizeModel) {
    TempDir dir;
    for (bool tied : {false, true}) {
        Config c = test::tiny_config();
        c.tied_embeddings = tied;
        const Model f = test::make_model(c);
        const std::string path = dir.file(tied ? "tied.bin" : "untied.bin");
        write_ak42(path, f, 4);
        const Model a = load_model(path);  // dispatches on the magic
        const Model q = quantize_model(f, 4);
        EXPECT_TRUE(a.quantized());
        EXPECT_EQ(a.config.tied_embeddings, tied);
        EXPECT_EQ(a.config.ffn_dim, 8u);
        EXPECT_EQ(a.layers[1].attn_norm.weight, f.layers[1].attn_norm.weight);
        EXPECT_EQ(a.final_norm.weight, f.final_norm.weight);
        EXPECT_EQ(a.tok_embeddings_q8.q, q.tok_embeddings_q8.q);
        EXPECT_EQ(a.classifier_q8().scales, q.classifier_q8().scales);
        EXPECT_EQ(a.layers[0].w_up.q8.q, q.layers[0].w_up.q8.q);
        EXPECT_EQ(a.layers[1].wo.q8.scales, q.layers[1].wo.q8.scales);
        EXPECT_EQ(logits_of(a, {1, 2, 3, 4}), logits_of(q, {1, 2, 3, 4}));  // bit-identical
        EXPECT_EQ(weight_bytes(a), weight_bytes(q));
    }
}

TEST(LoadLlama2cQ8, BrokenFilesThrowNamingTheFile) {
    TempDir dir;
    const Model f = test::tiny_model();
    const std::string path = dir.file("m.bin");
    write_ak42(path, f, 4);
    const auto size = fs::file_size(path);
    fs::resize_file(path, size - 1);
    expect_error<ModelError>([&] { load_model_llama2c_q8(path); },
                             {path, std::to_string(size - 1) + " bytes", "requires " + std::to_string(size) + " bytes"});
    write_ak42(path, f, 4, /*version=*/1);
    expect_error<ModelError>([&] { load_model(path); }, {path, "version 1"});
    std::ofstream(dir.file("short.bin"), std::ios::binary) << "24ka and not much more";
    expect_error<ModelError>([&] { load_model(dir.file("short.bin")); }, {"shorter than the 256-byte header"});
    // group 8: rows of dim 4 are not whole groups, though every tensor's size is a multiple of 8
    // (which is all export.py checks); runq.c would compute garbage, we refuse
    Config c = test::tiny_config();
    c.vocab_size = 6;  // 6 x 4 = 24 = 3 groups of 8
    const Model g = test::make_model(c);
    Model flat = g;  // write with groups of 8 over the flattened tensors, as export.py does
    write_ak42(path, flat, 8);
    expect_error<ModelError>([&] { load_model(path); }, {path, "tok_embeddings.weight", "not a multiple of the file's group_size 8"});
}

TEST(QuantizeModel, Stories260KNeedsAGroupOf4) {
    const std::string path = test::shared_dir() + "/models/stories260K/stories260K.bin";
    if (!fs::exists(path)) GTEST_SKIP() << path << " not found (../shared absent)";
    const Model f = load_model(path);
    // hidden 172 = 4 · 43: w2's rows are not whole groups of 64 (nor 8, 16, 32)
    expect_error<ModelError>([&] { quantize_model(f, 64); }, {"layers.0.feed_forward.w2.weight", "[64, 172]", "--group 4"});
    const Model q = quantize_model(f, 4);
    EXPECT_LT(weight_bytes(q), weight_bytes(f) * 6 / 10);  // int8 + one float per 4: about half
    const auto lq = logits_of(q, {1, 403, 407});
    const auto lf = logits_of(f, {1, 403, 407});
    for (std::size_t i = 0; i < lq.size(); ++i) EXPECT_NEAR(lq[i], lf[i], 0.5) << i;
}

}  // namespace lmlab

// ---- ggml's types (quantize_model_gguf) ---------------------------------------------------------------

namespace lmlab {
namespace {

// tiny_config's LLaMA with rows of `dim` and `ffn` elements (K-quants need whole 256-blocks)
Config wide_config(std::size_t dim, std::size_t ffn) {
    Config c = test::tiny_config();
    c.dim = dim;
    c.ffn_dim = ffn;
    return c;
}

// The matrices of a model in a ggml type: (gguf name, type) for every bound tensor that has one
std::vector<std::pair<std::string, ggml::Type>> ggml_types_of(Model& m) {
    std::vector<std::pair<std::string, ggml::Type>> out;
    for (const BoundTensor& t : bind_tensors(m))
        if (GgmlMatrix* g = gg_slot(m, t.dst); g && !g->empty()) out.emplace_back(t.gguf_name, g->type);
    return out;
}

}  // namespace

TEST(QuantizeModelGguf, EveryMatrixTakesTheTypeAndTheFloatsAreFreed) {
    const Config c = wide_config(256, 512);
    Model q = quantize_model_gguf(test::make_model(c), ggml::Type::Q4_K);
    const auto types = ggml_types_of(q);
    EXPECT_EQ(types.size(), 2 + 7 * c.n_layers);  // token_embd, output, 7 matrices per layer
    for (const auto& [name, type] : types) EXPECT_EQ(type, ggml::Type::Q4_K) << name;
    EXPECT_TRUE(q.tok_embeddings.empty());
    EXPECT_TRUE(q.layers[0].wq.w.empty());
    EXPECT_FALSE(q.layers[0].attn_norm.weight.empty());  // norms stay float
}

TEST(QuantizeModelGguf, RowsThatAreNotWholeBlocksFallBackAsLlamaCppDoes) {
    EXPECT_EQ(gguf_type_for_rows(ggml::Type::Q4_K, 512), ggml::Type::Q4_K);
    EXPECT_EQ(gguf_type_for_rows(ggml::Type::Q4_K, 64), ggml::Type::Q5_0);
    EXPECT_EQ(gguf_type_for_rows(ggml::Type::Q5_K, 64), ggml::Type::Q5_1);
    EXPECT_EQ(gguf_type_for_rows(ggml::Type::Q6_K, 96), ggml::Type::Q8_0);
    EXPECT_EQ(gguf_type_for_rows(ggml::Type::Q2_K, 32), ggml::Type::Q4_0);
    EXPECT_EQ(gguf_type_for_rows(ggml::Type::Q3_K, 32), ggml::Type::Q4_0);
    EXPECT_EQ(gguf_type_for_rows(ggml::Type::Q4_K, 172), ggml::Type::F16);  // not even 32-blocks
    EXPECT_EQ(gguf_type_for_rows(ggml::Type::Q8_0, 172), ggml::Type::F16);
    EXPECT_EQ(gguf_type_for_rows(ggml::Type::F16, 172), ggml::Type::F16);

    Model m = test::make_model(wide_config(64, 96));  // no row is whole 256-blocks; all are 32-blocks
    std::vector<std::string> notes;
    Model q = quantize_model_gguf(std::move(m), ggml::Type::Q6_K, &notes);
    for (const auto& [name, type] : ggml_types_of(q)) EXPECT_NE(type, ggml::Type::Q6_K) << name;
    ASSERT_FALSE(notes.empty());
    EXPECT_NE(notes[0].find("Q8_0"), std::string::npos) << notes[0];
}

// Each matrix read back (dequantize_row) against the float weights it came from: the relative RMS
// error must shrink with every bit per weight the type spends (Q2_K 2.6 .. Q8_0 8.5 bits), and stay
// near the error of a uniform grid of 2^b levels over the weights' range.
TEST(QuantizeModelGguf, WeightsReadBackCloserWithMoreBits) {
    Model f = test::make_model(wide_config(256, 512));
    const std::vector<BoundTensor> ft = bind_tensors(f);
    double previous = 1.0;
    for (ggml::Type t : {ggml::Type::Q2_K, ggml::Type::Q3_K, ggml::Type::Q4_K, ggml::Type::Q5_K, ggml::Type::Q6_K,
                         ggml::Type::Q8_0}) {
        Model q = quantize_model_gguf(f, t);
        const std::vector<BoundTensor> qt = bind_tensors(q);
        double err = 0, ref = 0;
        for (std::size_t i = 0; i < qt.size(); ++i) {
            const GgmlMatrix* g = gg_slot(q, qt[i].dst);
            if (!g || g->empty()) continue;
            std::vector<float> row(g->cols);
            for (std::size_t r = 0; r < g->rows; ++r) {
                ggml::dequantize_row(g->type, g->row(r), row);
                for (std::size_t j = 0; j < g->cols; ++j) {
                    const double w = (*ft[i].dst)[r * g->cols + j];
                    err += (row[j] - w) * (row[j] - w);
                    ref += w * w;
                }
            }
        }
        const double rel = std::sqrt(err / ref);
        EXPECT_LT(rel, previous) << ggml::type_info(t).name << ": more bits, smaller error";
        // weights uniform in [-1, 1] (RMS 1/sqrt(3)); a uniform grid of 2^b levels over that range has
        // an RMS error of step/sqrt(12), step = 2/2^b: relative 1/2^b, b = the type's quant bits. The
        // per-block scales win some back (a block rarely spans the whole range); the symmetric types
        // (Q3_K, Q6_K, Q8_0) lose some (the extreme takes -2^(b-1), its mirror has no code) and the
        // weighted fits favour large weights: measured 0.86 .. 1.0 of 1/2^b, so 1.25 allowed
        const int bits = t == ggml::Type::Q8_0 ? 8 : t == ggml::Type::Q6_K ? 6 : t == ggml::Type::Q5_K ? 5
                       : t == ggml::Type::Q4_K ? 4 : t == ggml::Type::Q3_K ? 3 : 2;
        EXPECT_LT(rel, 1.25 / (1 << bits)) << ggml::type_info(t).name;
        previous = rel;
    }
}

TEST(QuantizeModelGguf, RefusesQuantizedModelsNonWeightTypesAndNonFiniteWeights) {
    Model f = test::make_model(wide_config(64, 96));
    expect_error<ModelError>([&] { quantize_model_gguf(f, ggml::Type::F32); }, {"F32", "weight types"});
    expect_error<ModelError>([&] { quantize_model_gguf(f, ggml::Type::Q8_K); }, {"Q8_K"});
    const Model q = quantize_model_gguf(f, ggml::Type::Q8_0);
    expect_error<ModelError>([&] { quantize_model_gguf(q, ggml::Type::Q4_0); }, {"already", "float file"});
    expect_error<ModelError>([&] { quantize_model_gguf(quantize_model(f, 32), ggml::Type::Q4_0); }, {"already int8"});
    f.layers[1].wv.w[70] = std::numeric_limits<float>::infinity();
    expect_error<ModelError>([&] { quantize_model_gguf(f, ggml::Type::Q4_0); }, {"layers.1.attention.wv.weight", "row 1", "column 6"});
}

// The real tool: llama.cpp's llama-quantize made stories260K-q8_0.gguf from stories260K.gguf. Our
// quantizer on the float file must give the same bytes, tensor for tensor (the ffn_down rows of 172
// are not whole 32-blocks: F16 in both).
TEST(QuantizeModelGguf, Stories260KQ8_0IsLlamaQuantizesFileByteForByte) {
    const std::string dir = test::shared_dir() + "/models/stories260K/";
    if (!fs::exists(dir + "stories260K.gguf") || !fs::exists(dir + "stories260K-q8_0.gguf"))
        GTEST_SKIP() << dir << "stories260K.gguf / -q8_0.gguf not found (../shared absent)";
    Model ours = quantize_model_gguf(load_model(dir + "stories260K.gguf"), ggml::Type::Q8_0);
    Model theirs = load_model(dir + "stories260K-q8_0.gguf");
    const auto a = bind_tensors(ours), b = bind_tensors(theirs);
    ASSERT_EQ(a.size(), b.size());
    std::size_t compared = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const GgmlMatrix* x = gg_slot(ours, a[i].dst);
        const GgmlMatrix* y = gg_slot(theirs, b[i].dst);
        if (!x) continue;
        ASSERT_TRUE(y && !y->empty() && !x->empty()) << a[i].gguf_name;
        EXPECT_EQ(ggml::type_info(x->type).name, ggml::type_info(y->type).name) << a[i].gguf_name;
        EXPECT_TRUE(x->data == y->data) << a[i].gguf_name << ": bytes differ";
        ++compared;
    }
    EXPECT_EQ(compared, 2u + 7u * 5u);  // token_embd, output, 7 matrices in each of 5 layers
}

}  // namespace lmlab
