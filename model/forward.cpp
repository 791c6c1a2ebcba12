#include "model/forward.h"

#include <algorithm>
#include <fmt/format.h>

namespace lmlab {

RunState::RunState(const Config& c)
    : x(c.dim), xn(c.dim), qkv(c.arch == Arch::Gpt2 ? 3 * c.dim : 0), q(c.n_heads * c.head_dim()), k(c.kv_dim()),
      v(c.kv_dim()), heads(c.n_heads * c.head_dim()), att_out(c.dim), gate(std::max(c.ffn_dim, c.shared_ffn_dim)),
      up(gate.size()), act(gate.size()), ffn_out(c.dim), router_logits(c.n_experts), router_probs(c.n_experts),
      expert_order(c.n_experts), expert_ids(c.top_k), expert_weights(c.top_k), expert_out(c.moe() ? c.dim : 0),
      shared_out(c.shared_ffn_dim ? c.dim : 0), scores(c.max_seq_len), logits(c.vocab_size),
      xq(std::max({c.dim, c.n_heads * c.head_dim(), gate.size()})), xs(xq.size()) {}

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
    // mixture of experts: the routing, then the expert sum, in place of the single SwiGLU's intermediates
    static const std::vector<TraceField> qwen2_moe = {
        {"in", &T::in},           {"attn_norm", &T::attn_norm}, {"q", &T::q},           {"k", &T::k},
        {"v", &T::v},             {"heads", &T::heads},         {"attn_out", &T::attn_out}, {"h", &T::h},
        {"ffn_norm", &T::ffn_norm}, {"router_logits", &T::router_logits}, {"experts", &T::experts},
        {"expert_weights", &T::expert_weights}, {"shared_out", &T::shared_out}, {"ffn_out", &T::ffn_out},
        {"out", &T::out}};
    static const std::vector<TraceField> mixtral = {
        {"in", &T::in},           {"attn_norm", &T::attn_norm}, {"q", &T::q},           {"k", &T::k},
        {"v", &T::v},             {"heads", &T::heads},         {"attn_out", &T::attn_out}, {"h", &T::h},
        {"ffn_norm", &T::ffn_norm}, {"router_logits", &T::router_logits}, {"experts", &T::experts},
        {"expert_weights", &T::expert_weights}, {"ffn_out", &T::ffn_out}, {"out", &T::out}};
    switch (arch) {
        case Arch::Gpt2: return gpt2;
        case Arch::Qwen2Moe: return qwen2_moe;
        case Arch::Mixtral: return mixtral;
        default: return llama;
    }
}

namespace {
KernelPath g_kernel_path = KernelPath::Fast;
}  // namespace

void set_kernel_path(KernelPath p) { g_kernel_path = p; }
KernelPath kernel_path() { return g_kernel_path; }

void matvec_q8(const QuantizedMatrix& w, std::span<const float> x, std::span<float> y, std::span<std::int8_t> xq_buf,
               std::span<float> xs_buf) {
    const auto xq = xq_buf.first(x.size());
    const auto xs = xs_buf.first(x.size() / w.group);
    quantize_q8_0(x, w.group, xq, xs);
    matvec_q8_0(w.q, w.scales, xq, xs, w.group, y);
}

namespace {
void matvec_q8(const QuantizedMatrix& w, std::span<const float> x, std::span<float> y, RunState& s) {
    matvec_q8(w, x, y, s.xq, s.xs);
}
}  // namespace

void project(const Linear& l, std::span<const float> x, std::span<float> y, RunState& s) {
    if (!l.q8.empty()) {
        matvec_q8(l.q8, x, y, s);
        if (!l.b.empty()) add(y, l.b, y);
        return;
    }
    if (g_kernel_path == KernelPath::Plain) {
        linear(l.w, l.b, x, y);
        return;
    }
    matvec_fast(l.w, x, y);
    if (!l.b.empty()) add(y, l.b, y);
}

void attend(const Config& c, std::size_t layer, std::size_t pos, const KVCache& cache, RunState& s) {
    const std::size_t head_dim = c.head_dim(), kv_dim = c.kv_dim();
    const std::size_t n_pos = pos + 1;                    // every query attends over all cached positions 0..pos
    const std::size_t group = c.n_heads / c.n_kv_heads;   // query heads per kv head
    const auto keys = cache.keys(layer), values = cache.values(layer);
    if (g_kernel_path == KernelPath::Plain) {
        for (std::size_t h = 0; h < c.n_heads; ++h) {
            const std::size_t kv_head = h / group;
            attention(std::span<const float>(s.q).subspan(h * head_dim, head_dim), keys.subspan(kv_head * head_dim),
                      values.subspan(kv_head * head_dim), n_pos, kv_dim, s.scores,
                      std::span<float>(s.heads).subspan(h * head_dim, head_dim));
        }
        return;
    }
    // fast path: heads are independent (tiled attention needs no shared scores buffer), so threads
    // may split them; each head is computed by one thread in the same order: bit-identical results
    const auto n_heads = static_cast<long>(c.n_heads);
#pragma omp parallel for schedule(static) num_threads(kernel_threads()) if (kernel_threads() > 1 && n_pos >= 64)
    for (long h = 0; h < n_heads; ++h) {
        const std::size_t hh = static_cast<std::size_t>(h), kv_head = hh / group;
        attention_tiled(std::span<const float>(s.q).subspan(hh * head_dim, head_dim), keys.subspan(kv_head * head_dim),
                        values.subspan(kv_head * head_dim), n_pos, kv_dim,
                        std::span<float>(s.heads).subspan(hh * head_dim, head_dim));
    }
}

void embed(const Model& m, int token, std::size_t pos, std::span<float> x) {
    const Config& c = m.config;
    if (token < 0 || static_cast<std::size_t>(token) >= c.vocab_size)
        throw ModelError(fmt::format("token id {} is outside the vocabulary [0, {}) of {}", token, c.vocab_size, m.source));
    // the embedding is a row lookup: token -> x [dim]
    std::span<const float> row;
    if (m.quantized()) {  // int8 table: dequantize this row (q · scale, runq.c's dequantized table) into x
        const QuantizedMatrix& e = m.tok_embeddings_q8;
        const std::size_t at = static_cast<std::size_t>(token) * c.dim;
        dequantize_q8_0(std::span<const std::int8_t>(e.q).subspan(at, c.dim),
                        std::span<const float>(e.scales).subspan(at / e.group, c.dim / e.group), e.group, x);
        row = x;
    } else {
        row = std::span<const float>(m.tok_embeddings).subspan(static_cast<std::size_t>(token) * c.dim, c.dim);
    }
    switch (c.positions) {
        case Positions::Rope:  // positions enter later, inside attention (RoPE rotates q and k)
            if (row.data() != x.data()) std::copy(row.begin(), row.end(), x.begin());
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
        case Arch::Qwen2:
        case Arch::Qwen2Moe:  // the LLaMA block; its feed-forward is moe_ffn (llama_block asks the config)
        case Arch::Mixtral: return llama_block(m.config, m.layers[layer], layer, pos, x, cache, s, trace);
        case Arch::Gpt2: return gpt2_block(m.config, m.layers[layer], layer, pos, x, cache, s, trace);
    }
}

void final_norm(const Model& m, std::span<const float> x, std::span<float> out) {
    const Config& c = m.config;
    switch (c.norm) {
        case NormKind::RMSNorm: rmsnorm(x, m.final_norm.weight, c.norm_eps, out); break;
        case NormKind::LayerNorm: layernorm(x, m.final_norm.weight, m.final_norm.bias, c.norm_eps, out); break;
    }
}

void head(const Model& m, std::span<const float> x, RunState& s) {
    final_norm(m, x, s.xn);
    // [vocab, dim] · [dim] -> [vocab]
    if (m.quantized()) matvec_q8(m.classifier_q8(), s.xn, s.logits, s);  // runq.c quantizes the classifier too
    else if (g_kernel_path == KernelPath::Plain) matvec(m.classifier(), s.xn, s.logits);
    else matvec_fast(m.classifier(), s.xn, s.logits);
}

void classifier_rows(const Model& m, std::span<const float> xn, std::size_t n, std::span<float> logits, RunState& s) {
    const Config& c = m.config;
    if (m.quantized()) {  // int8 classifier: head()'s int8 matvec, row by row
        for (std::size_t i = 0; i < n; ++i)
            matvec_q8(m.classifier_q8(), xn.subspan(i * c.dim, c.dim), logits.subspan(i * c.vocab_size, c.vocab_size), s);
    } else if (g_kernel_path == KernelPath::Plain) {
        for (std::size_t i = 0; i < n; ++i)
            matvec(m.classifier(), xn.subspan(i * c.dim, c.dim), logits.subspan(i * c.vocab_size, c.vocab_size));
    } else {  // one matrix product [n, dim] · [vocab, dim]ᵀ; row i is bit for bit head()'s matvec_fast
        matmul_xwt(xn.first(n * c.dim), m.classifier(), logits.first(n * c.vocab_size), n, c.dim, c.vocab_size);
    }
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
