// Tests of the model loaders. Small HDF5 files (the layout scripts/export_golden.py writes) and
// llama2.c checkpoints (the layout of ../shared/models/stories260K/README.md) are written here
// with known values, then loaded: a valid file must give exactly those values in the right
// fields, and every kind of broken file must give a ModelError that says what is wrong.
#include <H5Cpp.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "model/load/load.h"
#include "model/model.h"
#include "model/tensors.h"
#include "model/testing/test_model.h"

#include "model/testing/test_shared.h"

namespace lmlab {

namespace {

namespace fs = std::filesystem;
using test::expect_error;

using test::TempDir;

void truncate_file(const std::string& path, std::uintmax_t size) { fs::resize_file(path, size); }

// ---- HDF5 files ---------------------------------------------------------------------------------

struct H5Tensor {
    std::string name;
    std::vector<hsize_t> shape;
};

// Every tensor of an HDF5 model file, in the order written, with the shape the config demands:
// the LLaMA tensor table (model/tensors.h), the one list of tensor names.
std::vector<H5Tensor> h5_tensors(const Config& c) {
    Model m;
    m.config = c;
    std::vector<H5Tensor> t;
    for (const BoundTensor& b : bind_tensors(m)) t.push_back({b.name, std::vector<hsize_t>(b.shape.begin(), b.shape.end())});
    return t;
}

// Element e of the tensor written t-th: t + e/256, exact in float and unique across the file.
float h5_value(std::size_t t, std::size_t e) { return static_cast<float>(t) + static_cast<float>(e) / 256.0f; }

std::size_t tensor_index(const Config& c, const std::string& name) {
    const auto all = h5_tensors(c);
    for (std::size_t i = 0; i < all.size(); ++i)
        if (all[i].name == name) return i;
    throw std::logic_error("no tensor " + name);
}

// dim 8, 2 layers, 4 heads on 2 kv heads (head_dim 2, kv_dim 4), ffn 6, vocab 5, context 16.
Config h5_config() {
    Config c;
    c.dim = 8;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.ffn_dim = 6;
    c.vocab_size = 5;
    c.max_seq_len = 16;
    c.rope_theta = 500000.0f;
    c.rope_style = RopeStyle::RotateHalf;
    c.norm_eps = 1e-6f;
    c.tied_embeddings = false;
    return c;
}

// What write_h5 writes: a valid file for `config`, unless told to break something.
struct H5Spec {
    explicit H5Spec(const Config& c) : config(c) {}
    H5Spec& set_arch(const std::string& a) {
        arch = a;
        return *this;
    }
    H5Spec& set_rope_style(const std::string& r) {
        rope_style = r;
        return *this;
    }
    H5Spec& omit_tensor(const std::string& name) {
        omit.insert(name);
        return *this;
    }
    H5Spec& reshape(const std::string& name, std::vector<hsize_t> shape) {
        wrong_shape[name] = std::move(shape);
        return *this;
    }
    H5Spec& omit_attr(const std::string& name) {
        omit_attrs.insert(name);
        return *this;
    }
    H5Spec& retype_attr(const std::string& name) {
        retyped_attrs.insert(name);
        return *this;
    }
    H5Spec& set_pieces(std::vector<std::string> p) {
        pieces = std::move(p);
        return *this;
    }
    H5Spec& set_offset(std::size_t i, std::int64_t v) {
        bad_offsets[i] = v;
        return *this;
    }

    Config config;
    std::string arch = "llama";
    std::string rope_style = "rotate_half";
    std::set<std::string> omit;                               // tensors not written
    std::map<std::string, std::vector<hsize_t>> wrong_shape;  // tensors written with another shape
    std::set<std::string> omit_attrs;                         // root attributes not written
    std::set<std::string> retyped_attrs;                      // numbers written as text, text as a number
    std::vector<std::string> pieces;                          // tokenizer/ written when not empty
    std::map<std::size_t, std::int64_t> bad_offsets;          // piece_offsets entries overwritten
};

H5::StrType utf8_string() {
    H5::StrType t(H5::PredType::C_S1, H5T_VARIABLE);
    t.setCset(H5T_CSET_UTF8);
    return t;
}

void write_h5(const std::string& path, const H5Spec& s) {
    H5::H5File f(path, H5F_ACC_TRUNC);
    const H5::DataSpace scalar(H5S_SCALAR);
    auto string_attr = [&](const char* name, const std::string& v) {
        f.createAttribute(name, utf8_string(), scalar).write(utf8_string(), v);
    };
    auto text = [&](const char* name, const std::string& v) {
        if (s.omit_attrs.count(name)) return;
        if (s.retyped_attrs.count(name)) {
            const std::int64_t one = 1;
            f.createAttribute(name, H5::PredType::STD_I64LE, scalar).write(H5::PredType::NATIVE_INT64, &one);
            return;
        }
        string_attr(name, v);
    };
    auto integer = [&](const char* name, std::int64_t v) {
        if (s.omit_attrs.count(name)) return;
        if (s.retyped_attrs.count(name)) return string_attr(name, std::to_string(v));
        f.createAttribute(name, H5::PredType::STD_I64LE, scalar).write(H5::PredType::NATIVE_INT64, &v);
    };
    auto real = [&](const char* name, double v) {
        if (s.omit_attrs.count(name)) return;
        if (s.retyped_attrs.count(name)) return string_attr(name, std::to_string(v));
        f.createAttribute(name, H5::PredType::IEEE_F64LE, scalar).write(H5::PredType::NATIVE_DOUBLE, &v);
    };
    const Config& c = s.config;
    text("arch", s.arch);
    integer("dim", static_cast<std::int64_t>(c.dim));
    integer("n_layers", static_cast<std::int64_t>(c.n_layers));
    integer("n_heads", static_cast<std::int64_t>(c.n_heads));
    integer("n_kv_heads", static_cast<std::int64_t>(c.n_kv_heads));
    integer("ffn_dim", static_cast<std::int64_t>(c.ffn_dim));
    integer("vocab_size", static_cast<std::int64_t>(c.vocab_size));
    integer("max_seq_len", static_cast<std::int64_t>(c.max_seq_len));
    real("rope_theta", static_cast<double>(c.rope_theta));
    text("rope_style", s.rope_style);
    real("norm_eps", static_cast<double>(c.norm_eps));
    integer("tied_embeddings", c.tied_embeddings ? 1 : 0);

    if (c.n_heads == 0 || c.dim % c.n_heads != 0) return;  // a config that cannot have tensors
    const auto tensors = h5_tensors(c);
    for (std::size_t t = 0; t < tensors.size(); ++t) {
        if (s.omit.count(tensors[t].name)) continue;
        auto shape = tensors[t].shape;
        if (auto it = s.wrong_shape.find(tensors[t].name); it != s.wrong_shape.end()) shape = it->second;
        std::size_t n = 1;
        for (hsize_t d : shape) n *= d;
        std::vector<float> data(n);
        for (std::size_t e = 0; e < n; ++e) data[e] = h5_value(t, e);
        const H5::DataSpace space(static_cast<int>(shape.size()), shape.data());
        f.createDataSet(tensors[t].name, H5::PredType::IEEE_F32LE, space).write(data.data(), H5::PredType::NATIVE_FLOAT);
    }
    if (!s.pieces.empty()) {  // the exporter's layout: one byte buffer cut by vocab_size + 1 offsets
        H5::Group g = f.createGroup("tokenizer");
        std::string bytes;
        std::vector<std::int64_t> offsets = {0};
        std::vector<float> scores;
        for (const std::string& p : s.pieces) {
            bytes += p;
            offsets.push_back(static_cast<std::int64_t>(bytes.size()));
            scores.push_back(-static_cast<float>(scores.size()) / 2.0f);
        }
        for (const auto& [i, v] : s.bad_offsets) offsets[i] = v;
        const hsize_t n = s.pieces.size(), n1 = n + 1, nb = bytes.size();
        g.createDataSet("piece_bytes", H5::PredType::STD_U8LE, H5::DataSpace(1, &nb))
            .write(bytes.data(), H5::PredType::NATIVE_UINT8);
        g.createDataSet("piece_offsets", H5::PredType::STD_I64LE, H5::DataSpace(1, &n1))
            .write(offsets.data(), H5::PredType::NATIVE_INT64);
        g.createDataSet("scores", H5::PredType::IEEE_F32LE, H5::DataSpace(1, &n))
            .write(scores.data(), H5::PredType::NATIVE_FLOAT);
    }
}

// ---- llama2.c checkpoints ---------------------------------------------------------------------

// Header for dim 4, hidden 6, 2 layers, 2 heads on 1 kv head (head_size 2, kv_dim 2), seq_len 3.
struct L2Header {
    std::int32_t dim = 4, hidden = 6, n_layers = 2, n_heads = 2, n_kv_heads = 1, vocab = 5, seq_len = 3;
};

// The body for header h: tok_emb[i] = i/4; per-layer block b (1 = rms_att ... 9 = w3) of layer l
// filled with 10*b + l; rms_final 100; the two RoPE tables 999 (must be skipped); wcls[i] = -i/2.
std::vector<float> l2_body(const L2Header& h) {
    const std::size_t dim = static_cast<std::size_t>(h.dim), ffn = static_cast<std::size_t>(h.hidden),
                      L = static_cast<std::size_t>(h.n_layers), V = static_cast<std::size_t>(std::abs(h.vocab)),
                      kv = dim / static_cast<std::size_t>(h.n_heads) * static_cast<std::size_t>(h.n_kv_heads),
                      head = dim / static_cast<std::size_t>(h.n_heads);
    std::vector<float> b;
    for (std::size_t i = 0; i < V * dim; ++i) b.push_back(static_cast<float>(i) / 4.0f);
    const std::size_t per_layer[9] = {dim, dim * dim, kv * dim, kv * dim, dim * dim, dim, ffn * dim, dim * ffn, ffn * dim};
    for (std::size_t block = 0; block < 9; ++block)
        for (std::size_t l = 0; l < L; ++l) b.insert(b.end(), per_layer[block], static_cast<float>(10 * (block + 1) + l));
    b.insert(b.end(), dim, 100.0f);
    b.insert(b.end(), static_cast<std::size_t>(h.seq_len) * head, 999.0f);  // 2 x seq_len * head / 2
    if (h.vocab < 0)
        for (std::size_t i = 0; i < V * dim; ++i) b.push_back(-static_cast<float>(i) / 2.0f);
    return b;
}

void write_l2(const std::string& path, const L2Header& h, const std::vector<float>& body) {
    std::ofstream out(path, std::ios::binary);
    const std::int32_t fields[7] = {h.dim, h.hidden, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab, h.seq_len};
    out.write(reinterpret_cast<const char*>(fields), sizeof fields);
    out.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size() * sizeof(float)));
}

// 28 header bytes + 4 * (20 tok_emb + 2*(4+16+8+8+16+4+24+24+24) layers + 4 rms_final + 6 rope)
constexpr std::uintmax_t kTiedBytes = 28 + 4 * (20 + 2 * 128 + 4 + 6);  // 1172
constexpr std::uintmax_t kUntiedBytes = kTiedBytes + 4 * 20;              // 1252

bool all_equal(const std::vector<float>& v, float x) {
    for (float e : v)
        if (e != x) return false;
    return true;
}

using test::shared_dir;

}  // namespace

// ---- HDF5 ---------------------------------------------------------------------------------------

TEST(LoadHdf5, ValidFileGivesItsConfigAndValues) {
    // every root attribute lands in its Config field and every tensor in its Model field, intact
    TempDir dir;
    const std::string path = dir.file("tiny.h5");
    const Config c = h5_config();
    write_h5(path, H5Spec(c));
    const Model m = load_model_hdf5(path);
    EXPECT_EQ(m.source, path);
    EXPECT_EQ(m.config.arch, Arch::Llama);
    EXPECT_EQ(m.config.dim, 8u);
    EXPECT_EQ(m.config.n_layers, 2u);
    EXPECT_EQ(m.config.n_heads, 4u);
    EXPECT_EQ(m.config.n_kv_heads, 2u);
    EXPECT_EQ(m.config.ffn_dim, 6u);
    EXPECT_EQ(m.config.vocab_size, 5u);
    EXPECT_EQ(m.config.max_seq_len, 16u);
    EXPECT_EQ(m.config.rope_theta, 500000.0f);
    EXPECT_EQ(m.config.norm_eps, 1e-6f);
    EXPECT_EQ(m.config.rope_style, RopeStyle::RotateHalf);
    EXPECT_FALSE(m.config.tied_embeddings);
    EXPECT_FALSE(m.vocabulary.has_value());

    ASSERT_EQ(m.tok_embeddings.size(), 40u);
    EXPECT_EQ(m.tok_embeddings[0], h5_value(0, 0));
    EXPECT_EQ(m.tok_embeddings[39], h5_value(0, 39));
    ASSERT_EQ(m.layers.size(), 2u);
    // table order, all layers of a slot together: tok_embeddings, attention_norm x2, wq x2, then
    // wk of layer 0 (5) and layer 1 (6) ([4, 8]); element [3, 5] is index 29
    ASSERT_EQ(tensor_index(c, "layers.1.attention.wk.weight"), 6u);
    ASSERT_EQ(m.layers[1].wk.w.size(), 32u);
    EXPECT_EQ(m.layers[1].wk.w[29], 6.0f + 29.0f / 256.0f);
    EXPECT_EQ(m.layers[0].wq.w.size(), 64u);
    EXPECT_EQ(m.layers[0].wq.w[63], h5_value(tensor_index(c, "layers.0.attention.wq.weight"), 63));
    EXPECT_EQ(m.layers[0].wo.w[7], h5_value(tensor_index(c, "layers.0.attention.wo.weight"), 7));
    EXPECT_EQ(m.layers[1].attn_norm.weight[3], h5_value(tensor_index(c, "layers.1.attention_norm.weight"), 3));
    EXPECT_EQ(m.layers[1].ffn_norm.weight[0], h5_value(tensor_index(c, "layers.1.ffn_norm.weight"), 0));
    ASSERT_EQ(m.layers[0].w_down.w.size(), 48u);
    EXPECT_EQ(m.layers[0].w_down.w[47], h5_value(tensor_index(c, "layers.0.feed_forward.w2.weight"), 47));
    EXPECT_EQ(m.layers[1].w_gate.w[10], h5_value(tensor_index(c, "layers.1.feed_forward.w1.weight"), 10));
    EXPECT_EQ(m.layers[1].w_up.w[20], h5_value(tensor_index(c, "layers.1.feed_forward.w3.weight"), 20));
    EXPECT_EQ(m.layers[0].wv.w[1], h5_value(tensor_index(c, "layers.0.attention.wv.weight"), 1));
    // norm is tensor 19, output tensor 20
    ASSERT_EQ(m.final_norm.weight.size(), 8u);
    EXPECT_EQ(m.final_norm.weight[2], 19.0f + 2.0f / 256.0f);
    ASSERT_EQ(m.output.size(), 40u);
    EXPECT_EQ(m.output[5], 20.0f + 5.0f / 256.0f);
    EXPECT_EQ(m.classifier().data(), m.output.data());
}

TEST(LoadHdf5, LoadModelDispatchesOnTheExtension) {
    // .h5 and .hdf5 are read as HDF5 (a llama2.c read of this file would fail its size check)
    TempDir dir;
    for (const char* name : {"a.h5", "b.hdf5"}) {
        write_h5(dir.file(name), H5Spec(h5_config()));
        EXPECT_EQ(load_model(dir.file(name)).config.dim, 8u) << name;
    }
}

TEST(LoadHdf5, TiedModelUsesTheEmbeddingsAsClassifier) {
    // tied: no output.weight in the file, Model::output empty, classifier() is tok_embeddings
    TempDir dir;
    Config c = h5_config();
    c.tied_embeddings = true;
    write_h5(dir.file("tied.h5"), H5Spec(c).set_rope_style("adjacent"));
    const Model m = load_model_hdf5(dir.file("tied.h5"));
    EXPECT_TRUE(m.config.tied_embeddings);
    EXPECT_EQ(m.config.rope_style, RopeStyle::AdjacentPairs);
    EXPECT_TRUE(m.output.empty());
    EXPECT_EQ(m.classifier().data(), m.tok_embeddings.data());
    EXPECT_EQ(m.classifier().size(), 40u);
}

TEST(LoadHdf5, VocabularyIsReadWhenPresent) {
    // pieces are UTF-8 strings (multi-byte ones included), scores floats, in id order
    TempDir dir;
    const std::vector<std::string> pieces = {"<unk>", "<s>", " the", "caf\xc3\xa9", "\xe2\x96\x81x"};
    write_h5(dir.file("vocab.h5"), H5Spec(h5_config()).set_pieces(pieces));
    const Model m = load_model_hdf5(dir.file("vocab.h5"));
    ASSERT_TRUE(m.vocabulary.has_value());
    EXPECT_EQ(m.vocabulary->pieces, pieces);
    EXPECT_EQ(m.vocabulary->scores, (std::vector<float>{0.0f, -0.5f, -1.0f, -1.5f, -2.0f}));
    const Vocabulary v = load_vocabulary_hdf5(dir.file("vocab.h5"));
    EXPECT_EQ(v.pieces, pieces);
    EXPECT_EQ(v.scores.size(), 5u);
}

TEST(LoadHdf5, ExternalStorageIsRefusedBeforeAnyAllocation) {
    // a dataset whose data lives in another file: its header may declare 2^24 x 64 floats read from
    // /dev/zero; getStorageSize() reports the declared size, so the layout itself is refused (found by review)
    TempDir dir;
    write_h5(dir.file("ext.h5"), H5Spec(h5_config()).omit_tensor("tok_embeddings.weight"));
    {
        H5::H5File f(dir.file("ext.h5"), H5F_ACC_RDWR);
        H5::DSetCreatPropList plist;
        plist.setExternal("/dev/zero", 0, H5F_UNLIMITED);
        const hsize_t dims[2] = {5, 8};  // the shape the config asks for
        f.createDataSet("tok_embeddings.weight", H5::PredType::IEEE_F32LE, H5::DataSpace(2, dims), plist);
    }
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("ext.h5")); },
                             {"tok_embeddings.weight", "not stored in this file"});
}

TEST(LoadHdf5, VocabularyKeepsEveryByteOfAPiece) {
    // bytes plus offsets: a piece may hold a NUL byte or half of a UTF-8 character (byte pieces)
    TempDir dir;
    const std::vector<std::string> pieces = {std::string("a\0b", 3), "\xe2", "", "x", "yz"};
    write_h5(dir.file("v.h5"), H5Spec(h5_config()).set_pieces(pieces));
    EXPECT_EQ(load_vocabulary_hdf5(dir.file("v.h5")).pieces, pieces);
}

TEST(LoadHdf5, VocabularyOfEmptyPiecesLoads) {
    // every piece empty: piece_bytes has no bytes at all (found by fuzz_hdf5_model: a null data pointer)
    TempDir dir;
    const std::vector<std::string> pieces(5);
    write_h5(dir.file("v.h5"), H5Spec(h5_config()).set_pieces({"", "", "", "", ""}));
    EXPECT_EQ(load_vocabulary_hdf5(dir.file("v.h5")).pieces, pieces);
}

TEST(LoadHdf5, DamagedVocabularyOffsetsThrow) {
    // offsets that decrease, do not start at 0, or run past the byte buffer: a ModelError, never a read
    // outside piece_bytes
    TempDir dir;
    const std::vector<std::string> pieces = {"a", "bb", "ccc", "d", "e"};  // offsets 0 1 3 6 7 8
    write_h5(dir.file("dec.h5"), H5Spec(h5_config()).set_pieces(pieces).set_offset(2, 0));
    expect_error<ModelError>([&] { load_vocabulary_hdf5(dir.file("dec.h5")); }, {"piece_offsets decreases at entry 2"});
    write_h5(dir.file("start.h5"), H5Spec(h5_config()).set_pieces(pieces).set_offset(0, 1));
    expect_error<ModelError>([&] { load_vocabulary_hdf5(dir.file("start.h5")); }, {"from 0 to the size of piece_bytes (8)", "from 1"});
    write_h5(dir.file("end.h5"), H5Spec(h5_config()).set_pieces(pieces).set_offset(5, 1000000));
    expect_error<ModelError>([&] { load_vocabulary_hdf5(dir.file("end.h5")); }, {"to 1000000"});
    // a spike past the buffer that comes back down: checked before any piece is cut (found by fuzz_hdf5_model)
    write_h5(dir.file("spike.h5"), H5Spec(h5_config()).set_pieces(pieces).set_offset(1, 1000));
    expect_error<ModelError>([&] { load_vocabulary_hdf5(dir.file("spike.h5")); }, {"decreases at entry 2"});
    write_h5(dir.file("neg.h5"), H5Spec(h5_config()).set_pieces(pieces).set_offset(1, -5));
    expect_error<ModelError>([&] { load_vocabulary_hdf5(dir.file("neg.h5")); }, {"decreases at entry 1"});
}

TEST(LoadHdf5, VocabularyOfTheWrongSizeThrows) {
    TempDir dir;
    write_h5(dir.file("v.h5"), H5Spec(h5_config()).set_pieces({"a", "b", "c"}));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("v.h5")); }, {"piece_offsets has 4 entries", "vocab_size + 1 = 6"});
}

TEST(LoadHdf5, MissingTensorNamesItAndItsExpectedShape) {
    // the error says which tensor to look for and what shape it should have
    TempDir dir;
    write_h5(dir.file("m.h5"), H5Spec(h5_config()).omit_tensor("layers.1.feed_forward.w2.weight"));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("m.h5")); },
                             {dir.file("m.h5"), "'layers.1.feed_forward.w2.weight'", "missing", "[8, 6]"});
    write_h5(dir.file("o.h5"), H5Spec(h5_config()).omit_tensor("output.weight"));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("o.h5")); }, {"'output.weight'", "missing", "[5, 8]"});
}

TEST(LoadHdf5, WrongShapeNamesTensorActualAndExpectedShapes) {
    // a transposed matrix has the right element count but must still be refused
    TempDir dir;
    write_h5(dir.file("t.h5"), H5Spec(h5_config()).reshape("layers.0.attention.wk.weight", {8, 4}));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("t.h5")); },
                             {"'layers.0.attention.wk.weight'", "has shape [8, 4]", "expected [4, 8]"});
    write_h5(dir.file("r.h5"), H5Spec(h5_config()).reshape("norm.weight", {1, 8}));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("r.h5")); },
                             {"'norm.weight'", "has shape [1, 8]", "expected [8]"});
}

TEST(LoadHdf5, InvalidConfigThrows) {
    // numbers that cannot make a model are refused before any tensor is read
    TempDir dir;
    Config c = h5_config();
    c.n_heads = 3;  // 8 % 3 != 0
    write_h5(dir.file("h.h5"), H5Spec(c));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("h.h5")); }, {"n_heads must divide dim", "n_heads 3"});
    c = h5_config();
    c.n_kv_heads = 3;  // 4 % 3 != 0
    write_h5(dir.file("k.h5"), H5Spec(c));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("k.h5")); }, {"n_kv_heads must divide n_heads"});
    c = h5_config();
    c.vocab_size = 0;
    write_h5(dir.file("v.h5"), H5Spec(c));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("v.h5")); }, {"positive"});
}

TEST(LoadHdf5, BadAttributesThrow) {
    TempDir dir;
    write_h5(dir.file("a.h5"), H5Spec(h5_config()).set_arch("gpt2"));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("a.h5")); }, {"'gpt2'", "hold llama models"});
    write_h5(dir.file("s.h5"), H5Spec(h5_config()).set_rope_style("interleaved"));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("s.h5")); }, {"'interleaved'"});
    write_h5(dir.file("n.h5"), H5Spec(h5_config()).omit_attr("n_kv_heads"));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("n.h5")); }, {"'n_kv_heads'", "missing"});
}

TEST(LoadHdf5, AttributeOfTheWrongTypeThrowsModelError) {
    // a file from another exporter may store numbers as strings or the reverse: that must be a
    // ModelError naming the attribute, not a raw H5::Exception (which is not even a std::exception)
    TempDir dir;
    write_h5(dir.file("d.h5"), H5Spec(h5_config()).retype_attr("dim"));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("d.h5")); }, {dir.file("d.h5"), "'dim'"});
    write_h5(dir.file("a.h5"), H5Spec(h5_config()).retype_attr("arch"));
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("a.h5")); }, {dir.file("a.h5"), "'arch'"});
}

TEST(LoadHdf5, TruncatedOrForeignFileThrowsModelError) {
    // a damaged download must give a ModelError naming the file, never a crash or a raw HDF5 error
    TempDir dir;
    const std::string good = dir.file("good.h5");
    write_h5(good, H5Spec(h5_config()));
    const std::uintmax_t size = fs::file_size(good);
    for (const std::uintmax_t keep : {std::uintmax_t{0}, std::uintmax_t{10}, std::uintmax_t{600}, size / 2,
                                      size * 9 / 10, size - 8}) {
        const std::string path = dir.file("cut_" + std::to_string(keep) + ".h5");
        fs::copy_file(good, path);
        truncate_file(path, keep);
        expect_error<ModelError>([&] { load_model_hdf5(path); }, {path});
    }
    const std::string text = dir.file("text.h5");
    std::ofstream(text) << "this is not an HDF5 file\n";
    expect_error<ModelError>([&] { load_model_hdf5(text); }, {text});
    expect_error<ModelError>([&] { load_model_hdf5(dir.file("absent.h5")); }, {"absent.h5"});
}

// ---- llama2.c -----------------------------------------------------------------------------------

TEST(LoadLlama2c, TiedCheckpointFillsEveryField) {
    // each block of the body lands in its field, per-layer blocks split layer by layer, and the RoPE
    // tables (999) are skipped
    TempDir dir;
    const std::string path = dir.file("tiny.bin");
    const L2Header h;
    write_l2(path, h, l2_body(h));
    ASSERT_EQ(fs::file_size(path), kTiedBytes);
    const Model m = load_model_llama2c(path);
    const Config& c = m.config;
    EXPECT_EQ(c.dim, 4u);
    EXPECT_EQ(c.ffn_dim, 6u);
    EXPECT_EQ(c.n_layers, 2u);
    EXPECT_EQ(c.n_heads, 2u);
    EXPECT_EQ(c.n_kv_heads, 1u);
    EXPECT_EQ(c.vocab_size, 5u);
    EXPECT_EQ(c.max_seq_len, 3u);
    EXPECT_TRUE(c.tied_embeddings);
    EXPECT_EQ(c.rope_theta, 10000.0f);
    EXPECT_EQ(c.rope_style, RopeStyle::AdjacentPairs);
    EXPECT_EQ(c.norm_eps, 1e-5f);

    ASSERT_EQ(m.tok_embeddings.size(), 20u);
    for (std::size_t i = 0; i < 20; ++i) EXPECT_EQ(m.tok_embeddings[i], static_cast<float>(i) / 4.0f);
    ASSERT_EQ(m.layers.size(), 2u);
    for (std::size_t l = 0; l < 2; ++l) {
        const LayerWeights& w = m.layers[l];
        const float fl = static_cast<float>(l);
        EXPECT_EQ(w.attn_norm.weight.size(), 4u);
        EXPECT_TRUE(all_equal(w.attn_norm.weight, 10 + fl)) << "layer " << l;
        EXPECT_EQ(w.wq.w.size(), 16u);
        EXPECT_TRUE(all_equal(w.wq.w, 20 + fl)) << "layer " << l;
        EXPECT_EQ(w.wk.w.size(), 8u);
        EXPECT_TRUE(all_equal(w.wk.w, 30 + fl)) << "layer " << l;
        EXPECT_EQ(w.wv.w.size(), 8u);
        EXPECT_TRUE(all_equal(w.wv.w, 40 + fl)) << "layer " << l;
        EXPECT_EQ(w.wo.w.size(), 16u);
        EXPECT_TRUE(all_equal(w.wo.w, 50 + fl)) << "layer " << l;
        EXPECT_EQ(w.ffn_norm.weight.size(), 4u);
        EXPECT_TRUE(all_equal(w.ffn_norm.weight, 60 + fl)) << "layer " << l;
        EXPECT_EQ(w.w_gate.w.size(), 24u);
        EXPECT_TRUE(all_equal(w.w_gate.w, 70 + fl)) << "layer " << l;
        EXPECT_EQ(w.w_down.w.size(), 24u);
        EXPECT_TRUE(all_equal(w.w_down.w, 80 + fl)) << "layer " << l;
        EXPECT_EQ(w.w_up.w.size(), 24u);
        EXPECT_TRUE(all_equal(w.w_up.w, 90 + fl)) << "layer " << l;
    }
    EXPECT_EQ(m.final_norm.weight, std::vector<float>(4, 100.0f));
    EXPECT_TRUE(m.output.empty());
    EXPECT_EQ(m.classifier().data(), m.tok_embeddings.data());
    EXPECT_FALSE(m.vocabulary.has_value());
}

TEST(LoadLlama2c, NegativeVocabMeansAClassifierAtTheEnd) {
    // vocab_size < 0: untied, |vocab| tokens, wcls read after the RoPE tables
    TempDir dir;
    const std::string path = dir.file("untied.bin");
    L2Header h;
    h.vocab = -5;
    write_l2(path, h, l2_body(h));
    ASSERT_EQ(fs::file_size(path), kUntiedBytes);
    const Model m = load_model_llama2c(path);
    EXPECT_FALSE(m.config.tied_embeddings);
    EXPECT_EQ(m.config.vocab_size, 5u);
    ASSERT_EQ(m.output.size(), 20u);
    for (std::size_t i = 0; i < 20; ++i) EXPECT_EQ(m.output[i], -static_cast<float>(i) / 2.0f);
    EXPECT_EQ(m.classifier().data(), m.output.data());
    EXPECT_EQ(m.tok_embeddings[19], 4.75f);
    EXPECT_EQ(m.final_norm.weight, std::vector<float>(4, 100.0f));
}

TEST(LoadLlama2c, LoadModelTreatsOtherExtensionsAsLlama2c) {
    TempDir dir;
    const L2Header h;
    write_l2(dir.file("model.bin"), h, l2_body(h));
    EXPECT_EQ(load_model(dir.file("model.bin")).config.ffn_dim, 6u);
}

TEST(LoadLlama2c, FileSizeDisagreeingWithTheHeaderThrowsWithByteCounts) {
    // truncated, padded, or tied/untied mixed up: the error gives actual and required sizes
    TempDir dir;
    L2Header h;
    h.vocab = -5;
    auto body = l2_body(h);
    body.pop_back();  // one float short
    write_l2(dir.file("short.bin"), h, body);
    expect_error<ModelError>([&] { load_model_llama2c(dir.file("short.bin")); },
                             {dir.file("short.bin"), "1248 bytes", "requires 1252 bytes", "untied"});

    const L2Header tied;
    body = l2_body(tied);
    body.push_back(0.0f);  // one float too many
    write_l2(dir.file("long.bin"), tied, body);
    expect_error<ModelError>([&] { load_model_llama2c(dir.file("long.bin")); }, {"1176 bytes", "requires 1172 bytes"});

    write_l2(dir.file("mixed.bin"), tied, l2_body(h));  // an untied body under a tied header
    expect_error<ModelError>([&] { load_model_llama2c(dir.file("mixed.bin")); }, {"1252 bytes", "requires 1172 bytes"});
}

TEST(LoadLlama2c, FileShorterThanTheHeaderThrows) {
    TempDir dir;
    std::ofstream(dir.file("tiny.bin"), std::ios::binary) << "0123456789";
    expect_error<ModelError>([&] { load_model_llama2c(dir.file("tiny.bin")); }, {"10 bytes", "28-byte"});
    std::ofstream(dir.file("empty.bin"), std::ios::binary).flush();
    expect_error<ModelError>([&] { load_model_llama2c(dir.file("empty.bin")); }, {"0 bytes"});
    expect_error<ModelError>([&] { load_model_llama2c(dir.file("absent.bin")); }, {"absent.bin"});
}

TEST(LoadLlama2c, AbsurdHeadersThrow) {
    // non-positive sizes, heads that do not divide, or sizes no machine could hold: a ModelError
    // from the header alone (not a bad_alloc, not a read past the end)
    TempDir dir;
    const std::string path = dir.file("bad.bin");
    auto expect_bad = [&](L2Header h, std::initializer_list<std::string> parts) {
        write_l2(path, h, std::vector<float>(64, 1.0f));
        expect_error<ModelError>([&] { load_model_llama2c(path); }, parts);
    };
    L2Header h;
    h.dim = 0;
    expect_bad(h, {"header field 0 is 0"});
    h = {};
    h.n_layers = -2;
    expect_bad(h, {"header field 2 is -2"});
    h = {};
    h.vocab = 0;
    expect_bad(h, {"header field 5 is 0"});
    h = {};
    h.seq_len = -1;
    expect_bad(h, {"header field 6 is -1"});
    h = {};
    h.n_heads = 3;  // 4 % 3 != 0
    expect_bad(h, {"n_heads must divide dim"});
    h = {};
    h.n_kv_heads = 3;  // 2 % 3 != 0
    expect_bad(h, {"n_kv_heads must divide n_heads"});
    h = {};
    h.dim = 1 << 20;
    h.vocab = 1 << 20;
    h.n_heads = 1 << 10;
    h.n_kv_heads = 1 << 10;
    expect_bad(h, {"40 billion"});
    h = {};
    h.vocab = INT32_MIN;
    expect_bad(h, {"header field 5"});
}

TEST(LoadModel, ATextFileIsNotAModel) {
    // no format's magic number or extension: read as llama2.c, whose "header" is then text; the
    // message says it is not a model file and which files are (not "n_heads must divide dim" alone)
    TempDir dir;
    const std::string path = dir.file("README.md");
    std::ofstream(path) << "# lmlab\n\nA readable, CPU-only C++ inference engine for decoder-only transformers.\n";
    expect_error<ModelError>([&] { load_model(path); },
                             {"README.md: not a model file lmlab can read", "the file has 82 bytes", "n_heads must divide dim", "GGUF (.gguf)"});
}

TEST(LoadLlama2c, Stories260K) {
    // the real checkpoint in shared/: the config its README documents
    const std::string path = shared_dir() + "/models/stories260K/stories260K.bin";
    if (!fs::exists(path)) GTEST_SKIP() << path << " not found; set LMLAB_SHARED to the shared/ directory to run this";
    const Model m = load_model_llama2c(path);
    const Config& c = m.config;
    EXPECT_EQ(c.dim, 64u);
    EXPECT_EQ(c.ffn_dim, 172u);
    EXPECT_EQ(c.n_layers, 5u);
    EXPECT_EQ(c.n_heads, 8u);
    EXPECT_EQ(c.n_kv_heads, 4u);
    EXPECT_EQ(c.vocab_size, 512u);
    EXPECT_EQ(c.max_seq_len, 512u);
    EXPECT_TRUE(c.tied_embeddings);
    EXPECT_EQ(c.kv_dim(), 32u);
    EXPECT_EQ(m.tok_embeddings.size(), 512u * 64u);
    ASSERT_EQ(m.layers.size(), 5u);
    EXPECT_EQ(m.layers[4].wk.w.size(), 32u * 64u);
    EXPECT_EQ(m.layers[4].w_down.w.size(), 64u * 172u);
    EXPECT_TRUE(m.output.empty());
    EXPECT_EQ(m.classifier().data(), m.tok_embeddings.data());
}

}  // namespace lmlab
