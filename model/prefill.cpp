// Batched prefill: the prompt as matrices (see forward.h). The per-family batched blocks are here,
// next to each other, because they mirror llama.cpp and gpt2.cpp line by line with a loop over the
// T rows where those work on one vector.
#include <algorithm>
#include <utility>
#include <fmt/format.h>

#include "model/forward.h"

namespace lmlab {

PrefillState::PrefillState(const Config& c, std::size_t T)
    : max_tokens(T), x(T * c.dim), xn(T * c.dim), qkv(c.arch == Arch::Gpt2 ? T * 3 * c.dim : 0),
      q(T * c.n_heads * c.head_dim()), heads(T * c.n_heads * c.head_dim()), k(T * c.kv_dim()), v(T * c.kv_dim()),
      att_out(T * c.dim), gate(T * c.ffn_dim), up(T * c.ffn_dim), act(T * c.ffn_dim), ffn_out(T * c.dim), one(c) {}

namespace {
// Row t of a [T, n] buffer.
std::span<float> row(std::vector<float>& buf, std::size_t t, std::size_t n) { return std::span<float>(buf).subspan(t * n, n); }
std::span<const float> row(const std::vector<float>& buf, std::size_t t, std::size_t n) {
    return std::span<const float>(buf).subspan(t * n, n);
}
}  // namespace

void project_rows(const Linear& l, std::span<const float> X, std::span<float> Y, std::size_t T, std::size_t in,
                  PrefillState& ps) {
    if (!l.q8.empty()) {  // int8: no batched int8 kernel; project()'s int8 matvec row by row (the same bits)
        const std::size_t out = Y.size() / ps.max_tokens;
        for (std::size_t t = 0; t < T; ++t) {
            matvec_q8(l.q8, X.subspan(t * in, in), Y.subspan(t * out, out), ps.one.xq, ps.one.xs);
            if (!l.b.empty()) add(Y.subspan(t * out, out), l.b, Y.subspan(t * out, out));
        }
        return;
    }
    const std::size_t out = l.w.size() / in;  // (the buffers hold max_tokens rows; only T are used)
    matmul_xwt(X.first(T * in), l.w, Y.first(T * out), T, in, out);
    if (!l.b.empty())
        for (std::size_t t = 0; t < T; ++t) add(Y.subspan(t * out, out), l.b, Y.subspan(t * out, out));
}

void attend_rows(const Config& c, std::size_t layer, std::size_t T, const RowCache& cache, PrefillState& ps) {
    const std::size_t head_dim = c.head_dim(), q_dim = c.n_heads * head_dim;
    const std::size_t group = c.n_heads / c.n_kv_heads;
    // rows x heads are independent: threads split them, each result computed by one thread alone
    const auto n = static_cast<long>(T * c.n_heads);
#pragma omp parallel for schedule(static) num_threads(kernel_threads()) if (kernel_threads() > 1)
    for (long i = 0; i < n; ++i) {
        const std::size_t t = static_cast<std::size_t>(i) / c.n_heads, h = static_cast<std::size_t>(i) % c.n_heads;
        cache.attend(layer, t, h / group, std::span<const float>(ps.q).subspan(t * q_dim + h * head_dim, head_dim),
                     std::span<float>(ps.heads).subspan(t * q_dim + h * head_dim, head_dim));
    }
}

namespace {
// Prefill's rows: one sequence in a contiguous cache, row t at position pos0 + t.
class ContiguousRows final : public RowCache {
public:
    ContiguousRows(KVCache& cache, std::size_t pos0, std::size_t head_dim)
        : cache_(cache), pos0_(pos0), head_dim_(head_dim) {}
    std::size_t pos(std::size_t row) const override { return pos0_ + row; }
    void append(std::size_t layer, std::size_t row, std::span<const float> k, std::span<const float> v) override {
        cache_.append(layer, pos(row), k, v);
    }
    void attend(std::size_t layer, std::size_t row, std::size_t kv_head, std::span<const float> q,
                std::span<float> out) const override {
        // causal: row t sees positions 0 .. pos0 + t, although the cache already holds all T rows
        attention_tiled(q, cache_.keys(layer).subspan(kv_head * head_dim_), cache_.values(layer).subspan(kv_head * head_dim_),
                        pos(row) + 1, cache_.kv_dim(), out);
    }

private:
    KVCache& cache_;
    std::size_t pos0_, head_dim_;
};
}  // namespace

void llama_block_rows(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t T, RowCache& cache,
                      PrefillState& ps) {
    const std::size_t dim = c.dim, kv = c.kv_dim(), qd = c.n_heads * c.head_dim();
    for (std::size_t t = 0; t < T; ++t) rmsnorm(row(ps.x, t, dim), w.attn_norm.weight, c.norm_eps, row(ps.xn, t, dim));
    project_rows(w.wq, ps.xn, ps.q, T, dim, ps);
    project_rows(w.wk, ps.xn, ps.k, T, dim, ps);
    project_rows(w.wv, ps.xn, ps.v, T, dim, ps);
    for (std::size_t t = 0; t < T; ++t) {
        rope(row(ps.q, t, qd), c.head_dim(), cache.pos(t), c.rope_theta, c.rope_style);
        rope(row(ps.k, t, kv), c.head_dim(), cache.pos(t), c.rope_theta, c.rope_style);
        cache.append(layer, t, row(ps.k, t, kv), row(ps.v, t, kv));
    }
    attend_rows(c, layer, T, cache, ps);
    project_rows(w.wo, ps.heads, ps.att_out, T, c.n_heads * c.head_dim(), ps);
    add(std::span<const float>(ps.x).first(T * dim), std::span<const float>(ps.att_out).first(T * dim),
        std::span<float>(ps.x).first(T * dim));  // first residual
    for (std::size_t t = 0; t < T; ++t) rmsnorm(row(ps.x, t, dim), w.ffn_norm.weight, c.norm_eps, row(ps.xn, t, dim));
    if (c.moe()) {  // each row picks its own experts: the mixture row by row, forward()'s own code
        for (std::size_t t = 0; t < T; ++t) moe_ffn(c, w, row(std::as_const(ps.xn), t, dim), ps.one, row(ps.ffn_out, t, dim));
    } else {
        project_rows(w.w_gate, ps.xn, ps.gate, T, dim, ps);
        project_rows(w.w_up, ps.xn, ps.up, T, dim, ps);
        const std::size_t f = c.ffn_dim;
        swiglu(std::span<const float>(ps.gate).first(T * f), std::span<const float>(ps.up).first(T * f),
               std::span<float>(ps.act).first(T * f));
        project_rows(w.w_down, ps.act, ps.ffn_out, T, c.ffn_dim, ps);
    }
    add(std::span<const float>(ps.x).first(T * dim), std::span<const float>(ps.ffn_out).first(T * dim),
        std::span<float>(ps.x).first(T * dim));  // second residual
}

void gpt2_block_rows(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t T, RowCache& cache,
                     PrefillState& ps) {
    const std::size_t dim = c.dim;
    for (std::size_t t = 0; t < T; ++t)
        layernorm(row(ps.x, t, dim), w.attn_norm.weight, w.attn_norm.bias, c.norm_eps, row(ps.xn, t, dim));
    project_rows(w.wqkv, ps.xn, ps.qkv, T, dim, ps);  // [T, 3*dim]: q | k | v per row
    for (std::size_t t = 0; t < T; ++t) {
        const auto qkv = row(std::as_const(ps.qkv), t, 3 * dim);
        std::ranges::copy(qkv.subspan(0, dim), row(ps.q, t, dim).begin());
        std::ranges::copy(qkv.subspan(dim, dim), row(ps.k, t, dim).begin());
        std::ranges::copy(qkv.subspan(2 * dim, dim), row(ps.v, t, dim).begin());
        cache.append(layer, t, row(ps.k, t, dim), row(ps.v, t, dim));
    }
    attend_rows(c, layer, T, cache, ps);
    project_rows(w.wo, ps.heads, ps.att_out, T, c.n_heads * c.head_dim(), ps);
    add(std::span<const float>(ps.x).first(T * dim), std::span<const float>(ps.att_out).first(T * dim),
        std::span<float>(ps.x).first(T * dim));
    for (std::size_t t = 0; t < T; ++t)
        layernorm(row(ps.x, t, dim), w.ffn_norm.weight, w.ffn_norm.bias, c.norm_eps, row(ps.xn, t, dim));
    project_rows(w.w_up, ps.xn, ps.up, T, dim, ps);
    const std::size_t f = c.ffn_dim;
    if (c.activation == Activation::GeluTanh) gelu_tanh(std::span<const float>(ps.up).first(T * f), std::span<float>(ps.act).first(T * f));
    else gelu_erf(std::span<const float>(ps.up).first(T * f), std::span<float>(ps.act).first(T * f));
    project_rows(w.w_down, ps.act, ps.ffn_out, T, c.ffn_dim, ps);
    add(std::span<const float>(ps.x).first(T * dim), std::span<const float>(ps.ffn_out).first(T * dim),
        std::span<float>(ps.x).first(T * dim));
}

void block_rows(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, PrefillState& ps) {
    switch (m.config.arch) {
        case Arch::Llama:
        case Arch::Qwen2:
        case Arch::Qwen2Moe:
        case Arch::Mixtral: return llama_block_rows(m.config, m.layers[layer], layer, T, cache, ps);
        case Arch::Gpt2: return gpt2_block_rows(m.config, m.layers[layer], layer, T, cache, ps);
    }
}

std::span<const float> prefill(const Model& m, std::span<const int> tokens, KVCache& cache, PrefillState& ps,
                               RunState& s, std::vector<float>* all_logits) {
    const Config& c = m.config;
    const std::size_t T = tokens.size(), pos0 = cache.length();
    if (T == 0) throw ModelError("prefill: no tokens");
    if (T > ps.max_tokens)
        throw ModelError(fmt::format("prefill: {} tokens, but the prefill buffers hold {}", T, ps.max_tokens));
    if (all_logits) all_logits->clear();
    // the readable reference: one token at a time (int8 layers and MoE feed-forwards run row by row
    // inside the batched blocks below, with forward()'s own code)
    if (kernel_path() == KernelPath::Plain) {
        std::span<const float> logits;
        for (std::size_t t = 0; t < T; ++t) {
            logits = forward(m, tokens[t], pos0 + t, cache, s);
            if (all_logits) all_logits->insert(all_logits->end(), logits.begin(), logits.end());
        }
        return logits;
    }
    if (pos0 + T > c.max_seq_len)  // refused before anything is appended to the cache
        throw ModelError(fmt::format("prefill: positions up to {} are beyond the context of {} (max_seq_len)",
                                     pos0 + T - 1, c.max_seq_len));
    for (std::size_t t = 0; t < T; ++t) embed(m, tokens[t], pos0 + t, row(ps.x, t, c.dim));
    ContiguousRows rows(cache, pos0, c.head_dim());
    for (std::size_t l = 0; l < c.n_layers; ++l) block_rows(m, l, T, rows, ps);
    // the classifier only for the rows asked for: usually just the last one (head(), as forward())
    if (!all_logits) {
        head(m, row(std::as_const(ps.x), T - 1, c.dim), s);
        return s.logits;
    }
    // every row (speculative decoding's verification): the final norm row by row, then the
    // classifier over all rows at once (classifier_rows: each row equals head() on it)
    for (std::size_t t = 0; t < T; ++t) final_norm(m, row(std::as_const(ps.x), t, c.dim), row(ps.xn, t, c.dim));
    all_logits->resize(T * c.vocab_size);
    classifier_rows(m, ps.xn, T, *all_logits, s);
    std::copy(all_logits->end() - static_cast<std::ptrdiff_t>(c.vocab_size), all_logits->end(), s.logits.begin());
    return s.logits;
}

}  // namespace lmlab
