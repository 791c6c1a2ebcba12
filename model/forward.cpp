#include "forward.h"

#include <algorithm>
#include <fmt/format.h>

namespace lmlab {

RunState::RunState(const Config& c)
    : x(c.dim), xn(c.dim), qkv(c.arch == Arch::Gpt2 ? 3 * c.dim : 0), q(c.n_heads * c.head_dim()), k(c.kv_dim()),
      v(c.kv_dim()), heads(c.n_heads * c.head_dim()), att_out(c.dim), gate(c.ffn_dim), up(c.ffn_dim), act(c.ffn_dim),
      ffn_out(c.dim), scores(c.max_seq_len), logits(c.vocab_size) {}

const std::vector<TraceField>& layer_trace_fields(Arch arch) {
    using T = LayerTrace;
    static const std::vector<TraceField> llama = {
        {"in", &T::in},           {"attn_norm", &T::attn_norm}, {"q", &T::q},           {"k", &T::k},
        {"v", &T::v},             {"heads", &T::heads},         {"attn_out", &T::attn_out}, {"h", &T::h},
        {"ffn_norm", &T::ffn_norm}, {"ffn_gate", &T::ffn_gate}, {"ffn_up", &T::ffn_up}, {"ffn_act", &T::ffn_act},
        {"ffn_out", &T::ffn_out}, {"out", &T::out}};
    static const std::vector<TraceField> gpt2 = {
        {"in", &T::in},           {"attn_norm", &T::attn_norm}, {"q", &T::q},           {"k", &T::k},
        {"v", &T::v},             {"heads", &T::heads},         {"attn_out", &T::attn_out}, {"h", &T::h},
        {"ffn_norm", &T::ffn_norm}, {"ffn_up", &T::ffn_up},     {"ffn_act", &T::ffn_act}, {"ffn_out", &T::ffn_out},
        {"out", &T::out}};
    return arch == Arch::Gpt2 ? gpt2 : llama;
}

void attend(const Config& c, std::size_t layer, std::size_t pos, const KVCache& cache, RunState& s) {
    const std::size_t head_dim = c.head_dim(), kv_dim = c.kv_dim();
    const std::size_t n_pos = pos + 1;                    // every query attends over all cached positions 0..pos
    const std::size_t group = c.n_heads / c.n_kv_heads;   // query heads per kv head
    const auto keys = cache.keys(layer), values = cache.values(layer);
    for (std::size_t h = 0; h < c.n_heads; ++h) {
        const std::size_t kv_head = h / group;
        attention(std::span<const float>(s.q).subspan(h * head_dim, head_dim), keys.subspan(kv_head * head_dim),
                  values.subspan(kv_head * head_dim), n_pos, kv_dim, s.scores,
                  std::span<float>(s.heads).subspan(h * head_dim, head_dim));
    }
}

void embed(const Model& m, int token, std::size_t pos, std::span<float> x) {
    const Config& c = m.config;
    if (token < 0 || static_cast<std::size_t>(token) >= c.vocab_size)
        throw ModelError(fmt::format("token id {} is outside the vocabulary [0, {}) of {}", token, c.vocab_size, m.source));
    // the embedding is a row lookup: token -> x [dim]
    const auto row = std::span<const float>(m.tok_embeddings).subspan(static_cast<std::size_t>(token) * c.dim, c.dim);
    switch (c.positions) {
        case Positions::Rope:  // positions enter later, inside attention (RoPE rotates q and k)
            std::copy(row.begin(), row.end(), x.begin());
            break;
        case Positions::Learned:  // GPT-2: a learned vector per position is added to the token's row
            if (pos >= c.max_seq_len)
                throw ModelError(fmt::format("position {} is past the {} learned positions of {} (n_positions)", pos,
                                             c.max_seq_len, m.source));
            add(row, std::span<const float>(m.pos_embeddings).subspan(pos * c.dim, c.dim), x);
            break;
    }
}

void block(const Model& m, std::size_t layer, std::size_t pos, std::span<float> x, KVCache& cache, RunState& s,
           LayerTrace* trace) {
    switch (m.config.arch) {
        case Arch::Llama:
        case Arch::Qwen2: return llama_block(m.config, m.layers[layer], layer, pos, x, cache, s, trace);
        case Arch::Gpt2: return gpt2_block(m.config, m.layers[layer], layer, pos, x, cache, s, trace);
    }
}

void head(const Model& m, std::span<const float> x, RunState& s) {
    const Config& c = m.config;
    switch (c.norm) {
        case NormKind::RMSNorm: rmsnorm(x, m.final_norm.weight, c.norm_eps, s.xn); break;
        case NormKind::LayerNorm: layernorm(x, m.final_norm.weight, m.final_norm.bias, c.norm_eps, s.xn); break;
    }
    matvec(m.classifier(), s.xn, s.logits);  // [vocab, dim] · [dim] -> [vocab]
}

std::span<const float> forward(const Model& m, int token, std::size_t pos, KVCache& cache, RunState& s, Trace* t) {
    const Config& c = m.config;
    embed(m, token, pos, s.x);
    if (t) {
        t->embedding = s.x;
        t->layers.resize(c.n_layers);
    }
    for (std::size_t l = 0; l < c.n_layers; ++l) block(m, l, pos, s.x, cache, s, t ? &t->layers[l] : nullptr);
    head(m, s.x, s);
    if (t) {
        t->final_norm = s.xn;
        t->logits = s.logits;
    }
    return s.logits;
}

}  // namespace lmlab
