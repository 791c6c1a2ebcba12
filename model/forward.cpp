#include "forward.h"

#include <algorithm>
#include <string>

namespace lmlab {

RunState::RunState(const Config& c)
    : x(c.dim), xn(c.dim), q(c.n_heads * c.head_dim()), k(c.kv_dim()), v(c.kv_dim()), heads(c.n_heads * c.head_dim()),
      att_out(c.dim), gate(c.ffn_dim), up(c.ffn_dim), ffn_out(c.dim), scores(c.max_seq_len), logits(c.vocab_size) {}

void attention_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos,
                     std::span<const float> xn, KVCache& cache, RunState& s, std::span<float> out) {
    const std::size_t head_dim = c.head_dim(), kv_dim = c.kv_dim();
    // projections: xn [dim] -> q [n_heads*head_dim], k, v [kv_dim]
    matvec(w.wq, xn, s.q);
    matvec(w.wk, xn, s.k);
    matvec(w.wv, xn, s.v);
    // position enters only here: q and k are rotated by angles proportional to pos
    rope(s.q, head_dim, pos, c.rope_theta, c.rope_style);
    rope(s.k, head_dim, pos, c.rope_theta, c.rope_style);
    cache.append(layer, pos, s.k, s.v);

    // every query head attends over all cached positions 0..pos of its kv head
    const std::size_t n_pos = pos + 1;
    const std::size_t group = c.n_heads / c.n_kv_heads;  // query heads per kv head
    const auto keys = cache.keys(layer), values = cache.values(layer);
    for (std::size_t h = 0; h < c.n_heads; ++h) {
        const std::size_t kv_head = h / group;
        attention(std::span<const float>(s.q).subspan(h * head_dim, head_dim), keys.subspan(kv_head * head_dim),
                  values.subspan(kv_head * head_dim), n_pos, kv_dim, s.scores,
                  std::span<float>(s.heads).subspan(h * head_dim, head_dim));
    }
    matvec(w.wo, s.heads, out);  // mix the heads back into the residual width
}

void ffn_block(const Config&, const LayerWeights& w, std::span<const float> xn, RunState& s, std::span<float> out) {
    matvec(w.w1, xn, s.gate);    // [ffn_dim]
    matvec(w.w3, xn, s.up);      // [ffn_dim]
    swiglu(s.gate, s.up, s.gate);
    matvec(w.w2, s.gate, out);   // [ffn_dim] -> [dim]
}

namespace {
void record(std::vector<float>& dst, std::span<const float> src) { dst.assign(src.begin(), src.end()); }
}  // namespace

void transformer_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos,
                       std::span<float> x, KVCache& cache, RunState& s, LayerTrace* t) {
    if (t) record(t->in, x);
    rmsnorm(x, w.attention_norm, c.norm_eps, s.xn);
    attention_block(c, w, layer, pos, s.xn, cache, s, s.att_out);
    if (t) {
        record(t->attn_norm, s.xn);
        record(t->q, s.q);
        record(t->k, s.k);
        record(t->v, s.v);
        record(t->attn_out, s.att_out);
    }
    for (std::size_t i = 0; i < c.dim; ++i) x[i] += s.att_out[i];  // first residual: h
    if (t) record(t->h, x);

    rmsnorm(x, w.ffn_norm, c.norm_eps, s.xn);
    ffn_block(c, w, s.xn, s, s.ffn_out);
    if (t) {
        record(t->ffn_norm, s.xn);
        record(t->ffn_out, s.ffn_out);
    }
    for (std::size_t i = 0; i < c.dim; ++i) x[i] += s.ffn_out[i];  // second residual: block output
    if (t) record(t->out, x);
}

std::span<const float> forward(const Model& m, int token, std::size_t pos, KVCache& cache, RunState& s, Trace* t) {
    const Config& c = m.config;
    if (token < 0 || static_cast<std::size_t>(token) >= c.vocab_size)
        throw ModelError("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                         std::to_string(c.vocab_size) + ") of " + m.source);
    // the embedding is a row lookup: token -> x [dim]
    const auto row = std::span<const float>(m.tok_embeddings).subspan(static_cast<std::size_t>(token) * c.dim, c.dim);
    std::copy(row.begin(), row.end(), s.x.begin());
    if (t) {
        record(t->embedding, s.x);
        t->layers.resize(c.n_layers);
    }
    for (std::size_t l = 0; l < c.n_layers; ++l)
        transformer_block(c, m.layers[l], l, pos, s.x, cache, s, t ? &t->layers[l] : nullptr);
    rmsnorm(s.x, m.norm, c.norm_eps, s.xn);
    matvec(m.classifier(), s.xn, s.logits);  // [vocab, dim] · [dim] -> [vocab]
    if (t) {
        record(t->final_norm, s.xn);
        record(t->logits, s.logits);
    }
    return s.logits;
}

}  // namespace lmlab
