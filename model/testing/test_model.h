// Helpers for the model/ unit tests: tiny in-memory models (forward_test.cpp, session_test.cpp)
// and a check that an exception's message names what it should.
//
// The weights are fixed pseudo-random multiples of 1/64 in [-1, 1] (norm weights in [0.5, 1.5]),
// made by an integer hash of (tensor, element): exact in float, independent of any file or RNG
// library, and irregular enough that no two heads, layers or positions coincide by accident.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/tensors.h"

namespace lmlab::test {

// A fresh directory per use (mkdtemp: unique even when ctest runs tests in parallel), removed
// with everything in it at the end of the scope.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "lmlab_test_XXXXXX").string();
        if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string str() const { return path_.string(); }
    std::string file(const std::string& name) const { return (path_ / name).string(); }

private:
    std::filesystem::path path_;
};

// Runs fn, which must throw E (exactly E or a subclass: any other exception, or none, fails), and
// checks that E's message contains every one of `parts` (the numbers and names a user needs).
template <class E>
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> parts) {
    try {
        fn();
    } catch (const E& e) {
        const std::string what = e.what();
        for (const std::string& p : parts) EXPECT_TRUE(what.find(p) != std::string::npos) << "\"" << p << "\" not in: " << what;
        return;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "threw the wrong exception type: " << e.what();
        return;
    } catch (...) {
        ADD_FAILURE() << "threw something that is not a std::exception";
        return;
    }
    ADD_FAILURE() << "did not throw";
}

// dim 4, 2 query heads sharing 1 kv head (grouped-query attention), ffn 8, vocab 5, context 8.
inline Config tiny_config() {
    Config c = Config::of(Arch::Llama);
    c.dim = 4;
    c.n_layers = 2;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.ffn_dim = 8;
    c.vocab_size = 5;
    c.max_seq_len = 8;
    c.rope_theta = 10000.0f;
    c.rope_style = RopeStyle::AdjacentPairs;
    c.norm_eps = 1e-5f;
    c.tied_embeddings = false;
    return c;
}

// A tiny GPT-2: dim 8, 2 layers, 2 heads of 4, ffn 16, vocab 9, 8 learned positions.
inline Config tiny_gpt2_config() {
    Config c = Config::of(Arch::Gpt2);
    c.dim = 8;
    c.n_layers = 2;
    c.n_heads = c.n_kv_heads = 2;
    c.ffn_dim = 16;
    c.vocab_size = 9;
    c.max_seq_len = 8;
    return c;
}

// A tiny mixture of experts: Mixtral (renormalised top-2 of 4 experts) or Qwen2-MoE (top-2 not
// renormalised, plus a gated shared expert of width 8); dim 8, 2 layers, 2 query heads on 1 kv head.
inline Config tiny_moe_config(bool qwen) {
    Config c = qwen ? Config::of(Arch::Qwen2Moe) : Config::of(Arch::Mixtral);
    c.dim = 8;
    c.n_layers = 2;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.ffn_dim = 6;
    c.vocab_size = 7;
    c.max_seq_len = 8;
    c.n_experts = 4;
    c.top_k = 2;
    c.norm_topk_prob = !qwen;
    c.shared_ffn_dim = qwen ? 8 : 0;
    return c;
}

// A multiple of 1/64 in [-1, 1], fixed by (tensor, i) (splitmix64 finaliser as the hash).
inline float hashed_weight(std::uint64_t tensor, std::uint64_t i) {
    std::uint64_t z = tensor * 0x9E3779B97F4A7C15ull + i + 1;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<float>(static_cast<int>(z % 129) - 64) / 64.0f;
}

inline std::vector<float> hashed_tensor(std::uint64_t tensor, std::size_t n) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = hashed_weight(tensor, i);
    return v;
}

// RMSNorm weights near 1 (in [0.5, 1.5]), so normalised activations keep their scale.
inline std::vector<float> hashed_norm(std::uint64_t tensor, std::size_t n) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = 1.0f + 0.5f * hashed_weight(tensor, i);
    return v;
}

// A complete Model for config c (validated), every tensor of its family's table (model/tensors.h)
// filled with hashed values; norm weights (names ending "norm.weight", "ln_*.weight") near 1.
// `salt` changes every weight (two salts: two different models of the same shape).
inline Model make_model(const Config& c, std::uint64_t salt = 1) {
    c.validate("test model");
    Model m;
    m.config = c;
    m.source = "test model (in memory)";
    std::uint64_t t = salt * 1000;  // tensor number, unique per tensor
    for (const BoundTensor& b : bind_tensors(m)) {
        const bool is_norm_weight = b.shape.size() == 1 && (b.name.find("norm.weight") != std::string::npos ||
                                                            b.name.find("ln_") != std::string::npos) &&
                                    b.name.find(".bias") == std::string::npos;
        *b.dst = is_norm_weight ? hashed_norm(++t, numel(b.shape)) : hashed_tensor(++t, numel(b.shape));
    }
    return m;
}

inline Model tiny_model() { return make_model(tiny_config()); }

}  // namespace lmlab::test
