#include "model/forward.h"

#include <algorithm>
#include <fmt/format.h>
#include <utility>

#include "kernels/threads.h"
#include "model/family.h"

namespace lmlab {

RunState::RunState(const Config& c, std::size_t rows)
    : max_rows(rows),
      x(rows * c.dim),
      attn_norm(rows * c.dim),
      q(rows * c.n_heads * c.head_dim()),
      k(rows * c.kv_dim()),
      v(rows * c.kv_dim()),
      heads(rows * c.n_heads * c.head_dim()),
      attn_out(rows * c.dim),
      h(rows * c.dim),
      ffn_norm(rows * c.dim),
      gate(rows * std::max(c.ffn_dim, c.shared_ffn_dim)),
      up(gate.size()),
      act(gate.size()),
      router_logits(rows * c.n_experts),
      expert_ids(rows * c.top_k),
      expert_weights(rows * c.top_k),
      shared_out(c.shared_ffn_dim ? rows * c.dim : 0),
      ffn_out(rows * c.dim),
      out(rows * c.dim),
      final_norm(rows * c.dim),
      logits(c.vocab_size),
      qkv(rows * 3 * c.dim),
      router_probs(rows * c.n_experts),
      expert_order(c.n_experts),
      expert_out(c.moe() ? c.dim : 0),
      scores(c.max_seq_len),
      inv_freq(c.head_dim() / 2),
      xq(std::max({c.dim, c.n_heads * c.head_dim(), std::max(c.ffn_dim, c.shared_ffn_dim)})),
      xs(xq.size()),
      gg_row(xq.size()),
      // ggml::matvec_fast_scratch_bytes: at most 3.2 bytes per value (Q8_0's blocks, 34 per 32 values,
      // then their int16 and float copy, 2 + 4/32), and alignment
      gg_act(rows * (4 * xq.size() + 512)) {
    if (rows == 0) throw ModelError("RunState: max_rows must be at least 1");
}

namespace {
// A float buffer's row t of width n.
std::vector<float> float_row(const std::vector<float>& buf, std::size_t t, std::size_t n) {
    const auto r = row(buf, t, n);
    return {r.begin(), r.end()};
}
}  // namespace

const std::vector<IntermediateBuffer>& intermediate_buffers() {
    using C = const Config&;
    using S = const RunState&;
    static const std::vector<IntermediateBuffer> table = {
        {"in", [](S s, C c, std::size_t t) { return float_row(s.x, t, c.dim); }},
        {"attn_norm", [](S s, C c, std::size_t t) { return float_row(s.attn_norm, t, c.dim); }},
        {"q", [](S s, C c, std::size_t t) { return float_row(s.q, t, c.n_heads * c.head_dim()); }},
        {"k", [](S s, C c, std::size_t t) { return float_row(s.k, t, c.kv_dim()); }},
        {"v", [](S s, C c, std::size_t t) { return float_row(s.v, t, c.kv_dim()); }},
        {"heads", [](S s, C c, std::size_t t) { return float_row(s.heads, t, c.n_heads * c.head_dim()); }},
        {"attn_out", [](S s, C c, std::size_t t) { return float_row(s.attn_out, t, c.dim); }},
        {"h", [](S s, C c, std::size_t t) { return float_row(s.h, t, c.dim); }},
        {"ffn_norm", [](S s, C c, std::size_t t) { return float_row(s.ffn_norm, t, c.dim); }},
        // the dense feed-forward's (a mixture of experts uses these buffers as scratch and lists none)
        {"ffn_gate", [](S s, C c, std::size_t t) { return float_row(s.gate, t, c.ffn_dim); }},
        {"ffn_up", [](S s, C c, std::size_t t) { return float_row(s.up, t, c.ffn_dim); }},
        {"ffn_act", [](S s, C c, std::size_t t) { return float_row(s.act, t, c.ffn_dim); }},
        {"router_logits", [](S s, C c, std::size_t t) { return float_row(s.router_logits, t, c.n_experts); }},
        {"experts",
         [](S s, C c, std::size_t t) {
             const auto ids = std::span<const int>(s.expert_ids).subspan(t * c.top_k, c.top_k);
             return std::vector<float>(ids.begin(), ids.end());  // ids as floats, as the fixtures store them
         }},
        {"expert_weights", [](S s, C c, std::size_t t) { return float_row(s.expert_weights, t, c.top_k); }},
        {"shared_out", [](S s, C c, std::size_t t) { return float_row(s.shared_out, t, c.dim); }},
        {"ffn_out", [](S s, C c, std::size_t t) { return float_row(s.ffn_out, t, c.dim); }},
        {"out", [](S s, C c, std::size_t t) { return float_row(s.out, t, c.dim); }},
    };
    return table;
}

const IntermediateBuffer& intermediate_buffer(const std::string& name) {
    for (const IntermediateBuffer& b : intermediate_buffers())
        if (name == b.name) return b;
    throw ModelError("no intermediate named '" + name + "' in RunState (model/forward.h lists them)");
}

// ---- where rows keep their keys and values --------------------------------------------------------

ContiguousRows::ContiguousRows(KVCache& cache, std::size_t pos0, std::size_t head_dim)
    : cache_(cache), pos0_(pos0), head_dim_(head_dim) {}

void ContiguousRows::append(std::size_t layer, std::size_t row, std::span<const float> k, std::span<const float> v) {
    cache_.append(layer, pos(row), k, v);
    // a windowed layer's ring must still hold what this call's first row reads (checked here, on the
    // caller's thread: attend runs on the kernel threads, where an exception cannot be thrown)
    const std::size_t window = cache_.window(layer), first = window && pos0_ + 1 > window ? pos0_ + 1 - window : 0;
    if (first < cache_.held_from(layer))
        throw ModelError(fmt::format("KV cache: layer {} has overwritten position {}, which the query at position {} "
                                     "reads: the cache was made for fewer rows per forward than this one runs ({} rows "
                                     "of its ring of {})",
                                     layer, cache_.held_from(layer) - 1, pos0_, row + 1, cache_.ring(layer)));
}

void ContiguousRows::attend(std::size_t layer, std::size_t row, std::size_t kv_head, std::span<const float> q,
                            std::span<float> out, std::span<float> scores) const {
    // causal: row t sees positions up to pos0 + t, although the cache may already hold later rows;
    // under a sliding window of W only the last W of them
    const std::size_t n_pos = pos(row) + 1, window = cache_.window(layer);
    const KvPositions at{window && n_pos > window ? n_pos - window : 0, cache_.ring(layer)};  // (append checked the ring)
    const auto keys = cache_.keys(layer).subspan(kv_head * head_dim_), values = cache_.values(layer).subspan(kv_head * head_dim_);
    if (kernel_path() == KernelPath::Plain)
        attention(q, keys, values, n_pos, cache_.kv_dim(), scores.first(n_pos - at.first), out, at);
    else attention_tiled(q, keys, values, n_pos, cache_.kv_dim(), out, at);
}

// ---- the kernel path --------------------------------------------------------------------------------

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
// y = W x for a matrix in a ggml type: the plain path dequantizes a row at a time and sums in
// double; the fast path quantizes x once (ggml's activation type) and runs ggml's integer dot
// products (kernels/ggml_quant.h).
void matvec_gg(const GgmlMatrix& w, std::span<const float> x, std::span<float> y, RunState& s) {
    if (g_kernel_path == KernelPath::Plain) ggml::matvec(w.type, w.data, x, std::span<float>(s.gg_row).first(x.size()), y);
    else ggml::matvec_fast(w.type, w.data, x, s.gg_act, y);
}
}  // namespace

void project_rows(const Linear& l, std::span<const float> X, std::span<float> Y, std::size_t T, RunState& s) {
    const std::size_t in = X.size() / T, out = Y.size() / T;
    if (!l.gg.empty()) {  // a GGUF weight in its ggml type
        if (g_kernel_path == KernelPath::Plain || T == 1) {  // row by row
            for (std::size_t t = 0; t < T; ++t) matvec_gg(l.gg, X.subspan(t * in, in), Y.subspan(t * out, out), s);
        } else {  // rows at once, each weight block read once for all of them: row t = matvec_fast's bits.
            // As many rows as the scratch holds quantized (a RunState may be asked for more rows than
            // it was sized for, e.g. by a caller that reuses it for a longer span)
            const std::size_t act = ggml::matvec_fast_scratch_bytes(l.gg.type, in);
            const std::size_t step = act == 0 ? T : std::max<std::size_t>(1, s.gg_act.size() / act);
            for (std::size_t t0 = 0; t0 < T; t0 += step) {
                const std::size_t n = std::min(step, T - t0);
                ggml::matmul_fast(l.gg.type, l.gg.data, X.subspan(t0 * in, n * in), n, s.gg_act, Y.subspan(t0 * out, n * out));
            }
        }
        if (!l.b.empty())
            for (std::size_t t = 0; t < T; ++t) add(Y.subspan(t * out, out), l.b, Y.subspan(t * out, out));
        return;
    }
    if (!l.q8.empty()) {  // int8: runq.c's matvec, row by row
        for (std::size_t t = 0; t < T; ++t) {
            matvec_q8(l.q8, X.subspan(t * in, in), Y.subspan(t * out, out), s.xq, s.xs);
            if (!l.b.empty()) add(Y.subspan(t * out, out), l.b, Y.subspan(t * out, out));
        }
        return;
    }
    if (g_kernel_path == KernelPath::Plain) {  // the readable reference: one linear() per row
        for (std::size_t t = 0; t < T; ++t) linear(l.w, l.b, X.subspan(t * in, in), Y.subspan(t * out, out));
        return;
    }
    matmul_xwt(X, l.w, Y, T, in, out);
    if (!l.b.empty())
        for (std::size_t t = 0; t < T; ++t) add(Y.subspan(t * out, out), l.b, Y.subspan(t * out, out));
}

void attend_rows(const Config& c, std::size_t layer, std::size_t T, const RowCache& cache, RunState& s) {
    const std::size_t head_dim = c.head_dim(), q_dim = c.n_heads * head_dim;
    const std::size_t group = c.n_heads / c.n_kv_heads;  // query heads per kv head
    auto one = [&](std::size_t i, std::span<float> scores) {
        const std::size_t t = i / c.n_heads, h = i % c.n_heads;
        cache.attend(layer, t, h / group, std::span<const float>(s.q).subspan(t * q_dim + h * head_dim, head_dim),
                     std::span<float>(s.heads).subspan(t * q_dim + h * head_dim, head_dim), scores);
    };
    const auto n = static_cast<long>(T * c.n_heads);
    if (g_kernel_path == KernelPath::Plain) {  // one scores buffer: one thread
        for (long i = 0; i < n; ++i) one(static_cast<std::size_t>(i), s.scores);
        return;
    }
    // rows x heads are independent (tiled attention needs no shared scores buffer): threads split
    // them, each result computed by one thread in the same order: bit-identical for any count. One
    // short row (decode early in a sequence) is not worth waking the team.
    parallel_for(static_cast<std::size_t>(n), T > 1 || cache.pos(0) >= 64, [&](std::size_t i0, std::size_t i1) {
        for (std::size_t i = i0; i < i1; ++i) one(i, {});
    });
}

// ---- the steps ---------------------------------------------------------------------------------------

void embed(const Model& m, int token, std::size_t pos, std::span<float> x) {
    const Config& c = m.config;
    if (token < 0 || static_cast<std::size_t>(token) >= c.vocab_size)
        throw ModelError(fmt::format("token id {} is outside the vocabulary [0, {}) of {}", token, c.vocab_size, m.source));
    // the embedding is a row lookup: token -> x [dim]
    std::span<const float> emb;
    if (!m.tok_embeddings_gg.empty()) {  // a GGUF table in a ggml type: dequantize this row into x
        ggml::dequantize_row(m.tok_embeddings_gg.type, m.tok_embeddings_gg.row(static_cast<std::size_t>(token)), x);
        emb = x;
    } else if (m.quantized()) {  // int8 table: dequantize this row (q · scale, runq.c's dequantized table) into x
        const QuantizedMatrix& e = m.tok_embeddings_q8;
        const std::size_t at = static_cast<std::size_t>(token) * c.dim;
        dequantize_q8_0(std::span<const std::int8_t>(e.q).subspan(at, c.dim),
                        std::span<const float>(e.scales).subspan(at / e.group, c.dim / e.group), e.group, x);
        emb = x;
    } else {
        emb = std::span<const float>(m.tok_embeddings).subspan(static_cast<std::size_t>(token) * c.dim, c.dim);
    }
    switch (c.positions) {
        case Positions::Rope:  // positions enter later, inside attention (RoPE rotates q and k)
            if (emb.data() != x.data()) std::copy(emb.begin(), emb.end(), x.begin());
            break;
        case Positions::Learned:  // GPT-2: a learned vector per position is added to the token's row
            if (pos >= c.max_seq_len)
                throw ModelError(fmt::format("position {} is past the {} learned positions of {} (n_positions)", pos,
                                             c.max_seq_len, m.source));
            add(emb, std::span<const float>(m.pos_embeddings).subspan(pos * c.dim, c.dim), x);
            break;
    }
}

void block(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, RunState& s) {
    family(m.config.arch).block(m, layer, T, cache, s);
}

void final_norm(const Model& m, std::span<const float> x, std::span<float> out) {
    const Config& c = m.config;
    switch (c.norm) {
        case NormKind::RMSNorm: rmsnorm(x, m.final_norm.weight, c.norm_eps, out); break;
        case NormKind::LayerNorm: layernorm(x, m.final_norm.weight, m.final_norm.bias, c.norm_eps, out); break;
    }
}

void classifier_rows(const Model& m, std::span<const float> xn, std::size_t n, std::span<float> logits, RunState& s) {
    const Config& c = m.config;
    if (!m.classifier_gg().empty()) {  // a GGUF classifier in a ggml type, row by row
        for (std::size_t i = 0; i < n; ++i)
            matvec_gg(m.classifier_gg(), xn.subspan(i * c.dim, c.dim), logits.subspan(i * c.vocab_size, c.vocab_size), s);
    } else if (m.quantized()) {  // int8 classifier (runq.c quantizes it too): its matvec row by row
        for (std::size_t i = 0; i < n; ++i)
            matvec_q8(m.classifier_q8(), xn.subspan(i * c.dim, c.dim), logits.subspan(i * c.vocab_size, c.vocab_size), s.xq,
                      s.xs);
    } else if (g_kernel_path == KernelPath::Plain) {
        for (std::size_t i = 0; i < n; ++i)
            matvec(m.classifier(), xn.subspan(i * c.dim, c.dim), logits.subspan(i * c.vocab_size, c.vocab_size));
    } else {  // one matrix product [n, dim] · [vocab, dim]ᵀ
        matmul_xwt(xn.first(n * c.dim), m.classifier(), logits.first(n * c.vocab_size), n, c.dim, c.vocab_size);
    }
}

void head(const Model& m, std::span<const std::size_t> which, RunState& s, std::span<float> logits) {
    const std::size_t dim = m.config.dim;
    for (std::size_t i = 0; i < which.size(); ++i) final_norm(m, row(s.x, which[i], dim), row(s.final_norm, i, dim));
    classifier_rows(m, s.final_norm, which.size(), logits, s);
}

// ---- the whole model -----------------------------------------------------------------------------------

void forward_rows(const Model& m, std::span<const int> tokens, RowCache& cache, RunState& s) {
    const Config& c = m.config;
    const std::size_t T = tokens.size();
    if (T == 0) throw ModelError("forward: no tokens");
    if (T > s.max_rows)
        throw ModelError(fmt::format("forward: {} tokens, but the run state holds {} rows", T, s.max_rows));
    // refused before anything is appended to the cache
    for (std::size_t t = 0; t < T; ++t)
        if (cache.pos(t) >= c.max_seq_len)
            throw ModelError(fmt::format("position {} is beyond the context of {} (max_seq_len) of {}", cache.pos(t),
                                         c.max_seq_len, m.source));
    for (std::size_t t = 0; t < T; ++t) embed(m, tokens[t], cache.pos(t), row(s.x, t, c.dim));
    for (std::size_t l = 0; l < c.n_layers; ++l) {
        block(m, l, T, cache, s);
        std::swap(s.x, s.out);  // this block's output is the next one's input
    }
}

std::span<const float> forward(const Model& m, int token, std::size_t pos, KVCache& cache, RunState& s) {
    ContiguousRows rows(cache, pos, m.config.head_dim());
    forward_rows(m, std::span<const int>(&token, 1), rows, s);
    const std::size_t last = 0;
    head(m, std::span<const std::size_t>(&last, 1), s, s.logits);
    return s.logits;
}

std::span<const float> prefill(const Model& m, std::span<const int> tokens, KVCache& cache, RunState& s,
                               std::vector<float>* all_logits) {
    const Config& c = m.config;
    const std::size_t T = tokens.size();
    if (T == 0) throw ModelError("prefill: no tokens");
    if (all_logits) all_logits->resize(T * c.vocab_size);
    std::vector<std::size_t> every;
    for (std::size_t t0 = 0; t0 < T; t0 += s.max_rows) {  // chunks of at most s.max_rows rows
        const std::size_t n = std::min(s.max_rows, T - t0);
        ContiguousRows rows(cache, cache.length(), c.head_dim());
        forward_rows(m, tokens.subspan(t0, n), rows, s);
        if (!all_logits) continue;
        // every row (speculative decoding's verification): the classifier over the chunk's rows at once
        every.resize(n);
        for (std::size_t t = 0; t < n; ++t) every[t] = t;
        head(m, every, s, std::span<float>(*all_logits).subspan(t0 * c.vocab_size, n * c.vocab_size));
    }
    if (!all_logits) {  // the classifier only for the last row: the next token's distribution
        const std::size_t last = (T - 1) % s.max_rows;  // its row in the last chunk
        head(m, std::span<const std::size_t>(&last, 1), s, s.logits);
        return s.logits;
    }
    std::copy(all_logits->end() - static_cast<std::ptrdiff_t>(c.vocab_size), all_logits->end(), s.logits.begin());
    return s.logits;
}

}  // namespace lmlab
