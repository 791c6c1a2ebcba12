// compare_quantized (harness/quantization.h): the two models run layer by layer side by side over
// the first chunk of the text, a third run of the quantized model's blocks on the float model's
// inputs (teacher-forced), and each tensor's projection redone on both models' inputs.
#include "harness/quantization.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <map>
#include <memory>

#include "harness/fixture.h"
#include "kernels/kernels.h"
#include "model/family.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/tensors.h"

namespace lmlab {

namespace {

// |a - b|² and |b|² summed: the relative RMS of a against b over everything added
struct RelErr {
    double err = 0, ref = 0;
    void add(std::span<const float> a, std::span<const float> b) {
        for (std::size_t i = 0; i < b.size(); ++i) {
            const double d = static_cast<double>(a[i]) - b[i];
            err += d * d;
            ref += static_cast<double>(b[i]) * b[i];
        }
    }
    double rel() const { return ref > 0 ? std::sqrt(err / ref) : (err > 0 ? INFINITY : 0.0); }
};

// What each tensor kind multiplies: an intermediate of the block (model/forward.h's names), or the
// activation of its expert (recomputed: the block keeps only the expert being run). The kinds are
// llama.cpp's tensor names (the gguf column of the families' tables, without "blk.N." and
// ".weight"); this table is in pipeline order, the order of the report's columns.
enum class Input { Intermediate, ExpertAct, SharedAct };
struct KindInput {
    const char* kind;
    Input from;
    const char* intermediate;
};
const std::vector<KindInput>& kind_inputs() {
    static const std::vector<KindInput> table = {
        {"attn_q", Input::Intermediate, "attn_norm"},   {"attn_k", Input::Intermediate, "attn_norm"},
        {"attn_v", Input::Intermediate, "attn_norm"},   {"attn_qkv", Input::Intermediate, "attn_norm"},
        {"attn_output", Input::Intermediate, "heads"},  {"ffn_gate_inp", Input::Intermediate, "ffn_norm"},
        {"ffn_gate", Input::Intermediate, "ffn_norm"},  {"ffn_up", Input::Intermediate, "ffn_norm"},
        {"ffn_down", Input::Intermediate, "ffn_act"},   {"ffn_gate_exps", Input::Intermediate, "ffn_norm"},
        {"ffn_up_exps", Input::Intermediate, "ffn_norm"}, {"ffn_down_exps", Input::ExpertAct, ""},
        {"ffn_gate_shexp", Input::Intermediate, "ffn_norm"}, {"ffn_up_shexp", Input::Intermediate, "ffn_norm"},
        {"ffn_down_shexp", Input::SharedAct, ""},
    };
    return table;
}

// The Linear of a kind in one layer (expert: which one, for the *_exps kinds)
const Linear& layer_linear(const LayerWeights& l, const std::string& kind, std::size_t expert) {
    if (kind == "attn_q") return l.wq;
    if (kind == "attn_k") return l.wk;
    if (kind == "attn_v") return l.wv;
    if (kind == "attn_qkv") return l.wqkv;
    if (kind == "attn_output") return l.wo;
    if (kind == "ffn_gate_inp") return l.router;
    if (kind == "ffn_gate") return l.w_gate;
    if (kind == "ffn_up") return l.w_up;
    if (kind == "ffn_down") return l.w_down;
    if (kind == "ffn_gate_exps") return l.experts.at(expert).w_gate;
    if (kind == "ffn_up_exps") return l.experts.at(expert).w_up;
    if (kind == "ffn_down_exps") return l.experts.at(expert).w_down;
    if (kind == "ffn_gate_shexp") return l.shared_expert.w_gate;
    if (kind == "ffn_up_shexp") return l.shared_expert.w_up;
    if (kind == "ffn_down_shexp") return l.shared_expert.w_down;
    throw HarnessError("no matrix of kind '" + kind + "'");
}

std::size_t linear_weights(const Linear& l) {
    if (!l.gg.empty()) return l.gg.rows * l.gg.cols;
    if (!l.q8.empty()) return l.q8.q.size();
    return l.w.size();
}
std::size_t linear_bytes(const Linear& l) {
    if (!l.gg.empty()) return l.gg.data.size();
    if (!l.q8.empty()) return l.q8.q.size() + l.q8.scales.size() * sizeof(float);
    return l.w.size() * sizeof(float);
}
// The kinds of the family's tensor table, per layer, in the order of kind_inputs()
std::vector<std::string> layer_kinds(const Config& c) {
    std::vector<std::string> present;
    for (const TensorSlot& t : tensor_table(c)) {
        if (!t.per_layer || (t.present && !t.present(c))) continue;
        std::string g = t.gguf;
        const std::string pre = "blk.{}.", suf = ".weight";
        if (g.rfind(pre, 0) != 0 || g.size() < pre.size() + suf.size() || g.compare(g.size() - suf.size(), suf.size(), suf) != 0)
            continue;
        present.push_back(g.substr(pre.size(), g.size() - pre.size() - suf.size()));
    }
    std::vector<std::string> kinds;
    for (const KindInput& k : kind_inputs())
        if (std::find(present.begin(), present.end(), k.kind) != present.end()) kinds.push_back(k.kind);
    return kinds;
}

const KindInput& kind_input(const std::string& kind) {
    for (const KindInput& k : kind_inputs())
        if (kind == k.kind) return k;
    throw HarnessError("no input known for tensor kind '" + kind + "'");
}

// rows [0, A) of an intermediate of s, [A, width]
std::vector<float> rows_of(const RunState& s, const Config& c, const std::string& name, std::size_t A) {
    const IntermediateBuffer& buf = intermediate_buffer(name);
    std::vector<float> all;
    for (std::size_t t = 0; t < A; ++t) {
        const std::vector<float> r = buf.row(s, c, t);
        all.insert(all.end(), r.begin(), r.end());
    }
    return all;
}

// Y [A, out] = X [A, in] · Wᵀ (+ b) on the model's own path (int8, ggml type or float)
std::vector<float> project(const Linear& l, const std::vector<float>& X, std::size_t A, std::size_t out, RunState& s) {
    std::vector<float> Y(A * out);
    project_rows(l, X, Y, A, s);
    return Y;
}

// silu(gate·x) ⊙ (up·x) of one expert for A rows
std::vector<float> expert_act(const Expert& e, const std::vector<float>& X, std::size_t A, std::size_t width, RunState& s) {
    const std::vector<float> g = project(e.w_gate, X, A, width, s), u = project(e.w_up, X, A, width, s);
    std::vector<float> act(A * width);
    swiglu(g, u, act);
    return act;
}

void check_same_model(const Model& q, const Model& f) {
    const Config &a = q.config, &b = f.config;
    auto differ = [&](const char* field, const std::string& va, const std::string& vb) {
        throw HarnessError(fmt::format("{} has {} {} but {} has {} {}: --model and --against must be the same model (the "
                                       "same architecture and shapes), one of them quantized",
                                       q.source, field, va, f.source, field, vb));
    };
    if (a.arch != b.arch) differ("architecture", arch_name(a.arch), arch_name(b.arch));
    const std::pair<const char*, std::pair<std::size_t, std::size_t>> sizes[] = {
        {"dim", {a.dim, b.dim}},           {"n_layers", {a.n_layers, b.n_layers}},
        {"n_heads", {a.n_heads, b.n_heads}}, {"n_kv_heads", {a.n_kv_heads, b.n_kv_heads}},
        {"ffn_dim", {a.ffn_dim, b.ffn_dim}}, {"vocab_size", {a.vocab_size, b.vocab_size}},
        {"n_experts", {a.n_experts, b.n_experts}}, {"top_k", {a.top_k, b.top_k}},
        {"shared_ffn_dim", {a.shared_ffn_dim, b.shared_ffn_dim}}};
    for (const auto& [name, v] : sizes)
        if (v.first != v.second) differ(name, std::to_string(v.first), std::to_string(v.second));
    if (a.rope_theta != b.rope_theta) differ("rope_theta", fmt::format("{}", a.rope_theta), fmt::format("{}", b.rope_theta));
    if (a.norm_eps != b.norm_eps) differ("norm_eps", fmt::format("{}", a.norm_eps), fmt::format("{}", b.norm_eps));
    if (a.rope_style != b.rope_style) {
        // most often the same model in two layouts: llama2.c and GGUF files of a LLaMA keep q and k
        // rows in the order RoPE on adjacent pairs wants, Hugging Face folders in rotate-half's
        const auto layout = [](RopeStyle r) {
            return r == RopeStyle::AdjacentPairs ? "RoPE on adjacent pairs (the q/k row order of llama2.c and GGUF files)"
                                                 : "RoPE by rotate-half (the q/k row order of Hugging Face folders)";
        };
        throw HarnessError(fmt::format("{} has {} but {} has {}: even when they hold the same model, their q and k "
                                       "rows are in another order, which --against does not map. Compare two files of "
                                       "one layout: a GGUF file against a GGUF or llama2.c file, a Hugging Face folder "
                                       "against a Hugging Face folder",
                                       q.source, layout(a.rope_style), f.source, layout(b.rope_style)));
    }
}

// log-softmax of one row of logits, in double
std::vector<double> log_probs(std::span<const float> logits) {
    double mx = -INFINITY;
    for (float v : logits) mx = std::max(mx, static_cast<double>(v));
    double sum = 0;
    for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
    const double lse = mx + std::log(sum);
    std::vector<double> lp(logits.size());
    for (std::size_t i = 0; i < logits.size(); ++i) lp[i] = static_cast<double>(logits[i]) - lse;
    return lp;
}

double quantile(std::vector<double> v, double p) {  // nearest rank, as llama-perplexity's percentiles
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const auto i = static_cast<std::size_t>(std::lround(p * static_cast<double>(v.size() - 1)));
    return v[std::min(i, v.size() - 1)];
}

}  // namespace

std::string storage_label(const Linear& l) {
    if (!l.gg.empty()) return std::string(ggml::type_info(l.gg.type).name);
    if (!l.q8.empty()) return fmt::format("int8 (runq.c, group {})", l.q8.group);
    return "F32";
}

QuantReport compare_quantized(const Model& q, const Model& f, std::span<const int> text, std::size_t ctx,
                              std::size_t analysed_rows, int bos) {
    check_same_model(q, f);
    const Config& c = f.config;
    const std::size_t context = std::min(q.config.max_seq_len, f.config.max_seq_len);
    if (ctx == 0) ctx = context;
    if (ctx < 2 || ctx > context)
        throw HarnessError(fmt::format("--ctx {}: give 2 .. {} (the models' context)", ctx, context));
    if (text.size() < 2)
        throw HarnessError(fmt::format("the held-out text has {} token{}: KL divergence and perplexity need at least 2 "
                                       "(one to predict from, one to predict)",
                                       text.size(), text.size() == 1 ? "" : "s"));
    for (std::size_t i = 0; i < text.size(); ++i)
        if (text[i] < 0 || static_cast<std::size_t>(text[i]) >= c.vocab_size)
            throw HarnessError(fmt::format("held-out text: token {} (position {}) is outside the vocabulary of {}", text[i], i,
                                           c.vocab_size));

    QuantReport r;
    r.model = q.source;
    r.against = f.source;
    r.layers = c.n_layers;
    r.text_tokens = text.size();
    r.ctx = ctx;
    r.bytes_model = weight_bytes(q);
    r.bytes_against = weight_bytes(f);
    r.kinds = layer_kinds(c);

    // The chunks: the whole text when it fits (every position scored), else llama-perplexity's
    std::vector<std::vector<int>> chunks;
    std::size_t first_scored = 0;
    if (text.size() <= ctx) {
        chunks.emplace_back(text.begin(), text.end());
    } else {
        for (std::size_t k = 0; (k + 1) * ctx <= text.size(); ++k) {
            chunks.emplace_back(text.begin() + static_cast<std::ptrdiff_t>(k * ctx),
                                text.begin() + static_cast<std::ptrdiff_t>((k + 1) * ctx));
            if (bos >= 0) chunks.back()[0] = bos;
        }
        first_scored = ctx / 2;
    }
    r.chunks = chunks.size();

    const std::size_t V = c.vocab_size, D = c.dim;
    double nll_q = 0, nll_f = 0;
    RelErr logits_err;
    // the next-token statistics of rows [0, T) of a chunk whose last block's output is in sq.x, sf.x
    auto score_rows = [&](std::size_t chunk, const std::vector<int>& tokens, RunState& sq, RunState& sf) {
        constexpr std::size_t kBlock = 16;  // logits of 16 rows at a time: [16, vocab] per model
        std::vector<float> lq(kBlock * V), lf(kBlock * V);
        for (std::size_t t0 = first_scored; t0 + 1 < tokens.size(); t0 += kBlock) {
            const std::size_t n = std::min(kBlock, tokens.size() - 1 - t0);
            std::vector<std::size_t> which(n);
            for (std::size_t i = 0; i < n; ++i) which[i] = t0 + i;
            head(q, which, sq, lq);
            head(f, which, sf, lf);
            for (std::size_t i = 0; i < n; ++i) {
                const auto rq = std::span<const float>(lq).subspan(i * V, V), rf = std::span<const float>(lf).subspan(i * V, V);
                logits_err.add(rq, rf);
                const std::vector<double> pq = log_probs(rq), pf = log_probs(rf);
                double kl = 0;
                for (std::size_t v = 0; v < V; ++v) kl += std::exp(pf[v]) * (pf[v] - pq[v]);
                const auto next = static_cast<std::size_t>(tokens[t0 + i + 1]);
                nll_q -= pq[next];
                nll_f -= pf[next];
                r.positions.push_back(chunk * ctx + t0 + i);
                r.kl.push_back(std::max(kl, 0.0));  // >= 0 in exact arithmetic; rounding can give -1e-17
                r.top1_same.push_back(argmax(rq) == argmax(rf));
            }
        }
    };

    // ---- the first chunk: layer by layer, three runs side by side -------------------------------------
    const std::vector<int>& c0 = chunks[0];
    const std::size_t T = c0.size();
    const std::size_t A = analysed_rows ? std::min(analysed_rows, T) : T;
    r.analysed_rows = A;
    RunState sq(q.config, T), sf(c, T), st(q.config, T);  // quantized, float, quantized teacher-forced
    RunState pq(q.config, 1), pf(c, 1);                   // scratch of the redone projections
    // the model's own caches (a sliding window's layers read only their window), T rows in one forward
    KVCache kq(c, T, T), kf(c, T, T), kt(c, T, T);
    for (KVCache* k : {&kq, &kf, &kt}) k->set_prompt_length(T);  // dynamic RoPE: every row rotated for the chunk, as one forward
    ContiguousRows rq(kq, 0, c.head_dim()), rf(kf, 0, c.head_dim()), rt(kt, 0, c.head_dim());

    // token_embd: the rows the text looks up (no input: the table's own rounding)
    {
        RelErr e;
        for (std::size_t t = 0; t < T; ++t) {
            embed(q, c0[t], t, row(sq.x, t, D));
            embed(f, c0[t], t, row(sf.x, t, D));
            if (t < A) e.add(row(sq.x, t, D), row(sf.x, t, D));
        }
        TensorError te;
        te.kind = "token_embd";
        auto label = [](const Model& m) {
            if (!m.tok_embeddings_gg.empty()) return std::string(ggml::type_info(m.tok_embeddings_gg.type).name);
            if (m.quantized()) return fmt::format("int8 (runq.c, group {})", m.tok_embeddings_q8.group);
            return std::string("F32");
        };
        te.type = label(q);
        te.against_type = label(f);
        te.added = te.total = e.rel();
        te.weights = V * D;
        te.bytes = !q.tok_embeddings_gg.empty() ? q.tok_embeddings_gg.data.size()
                   : q.quantized()               ? q.tok_embeddings_q8.q.size() + q.tok_embeddings_q8.scales.size() * 4
                                                 : q.tok_embeddings.size() * 4;
        r.tensors.push_back(te);
    }

    for (std::size_t l = 0; l < c.n_layers; ++l) {
        std::copy(sf.x.begin(), sf.x.begin() + static_cast<std::ptrdiff_t>(T * D), st.x.begin());
        block(f, l, T, rf, sf);
        block(q, l, T, rq, sq);
        block(q, l, T, rt, st);  // the quantized block on the float model's input
        const LayerWeights &Lq = q.layers[l], &Lf = f.layers[l];
        for (const std::string& kind : r.kinds) {
            const KindInput& in = kind_input(kind);
            const std::size_t n_exp = kind.ends_with("_exps") ? c.n_experts : 1;
            RelErr added, inherited, total;
            TensorError te;
            te.layer = l;
            te.kind = kind;
            std::vector<float> xf, xq;
            if (in.from == Input::Intermediate) {
                xf = rows_of(sf, c, in.intermediate, A);
                xq = rows_of(sq, q.config, in.intermediate, A);
            }
            for (std::size_t e = 0; e < n_exp; ++e) {
                const Linear &wq = layer_linear(Lq, kind, e), &wf = layer_linear(Lf, kind, e);
                if (in.from != Input::Intermediate) {  // the expert's activation, each model's own
                    const Expert& eq = in.from == Input::ExpertAct ? Lq.experts[e] : Lq.shared_expert;
                    const Expert& ef = in.from == Input::ExpertAct ? Lf.experts[e] : Lf.shared_expert;
                    const std::size_t width = in.from == Input::ExpertAct ? c.ffn_dim : c.shared_ffn_dim;
                    const std::vector<float> nf = rows_of(sf, c, "ffn_norm", A), nq = rows_of(sq, q.config, "ffn_norm", A);
                    xf = expert_act(ef, nf, A, width, pf);
                    xq = expert_act(eq, nq, A, width, pq);
                }
                const std::size_t in_w = xf.size() / A;
                const std::size_t out = linear_weights(wf) / in_w;
                const std::vector<float> yff = project(wf, xf, A, out, pf), yqf = project(wq, xf, A, out, pq),
                                         yfq = project(wf, xq, A, out, pf), yqq = project(wq, xq, A, out, pq);
                added.add(yqf, yff);
                inherited.add(yfq, yff);
                total.add(yqq, yff);
                te.weights += linear_weights(wq);
                te.bytes += linear_bytes(wq);
                if (e == 0) {
                    te.type = storage_label(wq);
                    te.against_type = storage_label(wf);
                }
            }
            te.added = added.rel();
            te.inherited = inherited.rel();
            te.total = total.rel();
            r.tensors.push_back(te);
        }
        RelErr out_added, out_total;
        out_added.add(std::span<const float>(st.out).first(A * D), std::span<const float>(sf.out).first(A * D));
        out_total.add(std::span<const float>(sq.out).first(A * D), std::span<const float>(sf.out).first(A * D));
        r.layer_out.push_back({out_added.rel(), out_total.rel()});
        std::swap(sf.x, sf.out);
        std::swap(sq.x, sq.out);
        std::swap(st.x, st.out);
    }

    // output (the classifier): on the final norm of each model's last block output
    {
        RelErr added, inherited, total;
        constexpr std::size_t kBlock = 16;
        std::vector<float> nf(kBlock * D), nq(kBlock * D), yff(kBlock * V), yqf(kBlock * V), yfq(kBlock * V), yqq(kBlock * V);
        for (std::size_t t0 = 0; t0 < A; t0 += kBlock) {
            const std::size_t n = std::min(kBlock, A - t0);
            for (std::size_t i = 0; i < n; ++i) {
                final_norm(f, row(sf.x, t0 + i, D), row(nf, i, D));
                final_norm(q, row(sq.x, t0 + i, D), row(nq, i, D));
            }
            classifier_rows(f, nf, n, yff, pf);
            classifier_rows(q, nf, n, yqf, pq);
            classifier_rows(f, nq, n, yfq, pf);
            classifier_rows(q, nq, n, yqq, pq);
            added.add(std::span<const float>(yqf).first(n * V), std::span<const float>(yff).first(n * V));
            inherited.add(std::span<const float>(yfq).first(n * V), std::span<const float>(yff).first(n * V));
            total.add(std::span<const float>(yqq).first(n * V), std::span<const float>(yff).first(n * V));
        }
        TensorError te;
        te.kind = "output";
        auto label = [](const Model& m) {
            if (!m.classifier_gg().empty()) return std::string(ggml::type_info(m.classifier_gg().type).name);
            if (m.quantized()) return fmt::format("int8 (runq.c, group {})", m.classifier_q8().group);
            return std::string("F32");
        };
        te.type = label(q);
        te.against_type = label(f);
        te.added = added.rel();
        te.inherited = inherited.rel();
        te.total = total.rel();
        te.weights = V * D;
        te.bytes = !q.classifier_gg().empty() ? q.classifier_gg().data.size()
                   : q.quantized()            ? q.classifier_q8().q.size() + q.classifier_q8().scales.size() * 4
                                              : q.classifier().size() * 4;
        if (c.tied_embeddings && q.config.tied_embeddings) te.bytes = te.weights = 0;  // token_embd's own bytes: counted there
        r.tensors.push_back(te);
    }

    score_rows(0, c0, sq, sf);
    // ---- the other chunks: the plain forward of each model, scored -----------------------------------
    for (std::size_t k = 1; k < chunks.size(); ++k) {
        kq.reset();
        kf.reset();
        kq.set_prompt_length(chunks[k].size());
        kf.set_prompt_length(chunks[k].size());
        ContiguousRows rq2(kq, 0, c.head_dim()), rf2(kf, 0, c.head_dim());
        forward_rows(q, chunks[k], rq2, sq);
        forward_rows(f, chunks[k], rf2, sf);
        score_rows(k, chunks[k], sq, sf);
    }

    const double n = static_cast<double>(r.kl.size());
    double sum = 0, same = 0;
    for (std::size_t i = 0; i < r.kl.size(); ++i) {
        sum += r.kl[i];
        same += r.top1_same[i];
        r.kl_max = std::max(r.kl_max, r.kl[i]);
    }
    r.kl_mean = sum / n;
    r.kl_median = quantile(r.kl, 0.5);
    r.kl_p99 = quantile(r.kl, 0.99);
    r.top1_agreement = same / n;
    r.ppl_model = std::exp(nll_q / n);
    r.ppl_against = std::exp(nll_f / n);
    r.logits_rel_rms = logits_err.rel();

    // per type of the quantized model's matrices
    std::map<std::string, TypeSummary> by_type;
    for (const TensorError& te : r.tensors) {
        TypeSummary& s = by_type[te.type];
        s.type = te.type;
        ++s.tensors;
        s.weights += te.weights;
        s.bytes += te.bytes;
        if (te.added >= s.worst_added) {
            s.worst_added = te.added;
            s.worst = te.layer == TensorError::kGlobal ? te.kind : fmt::format("blk.{}.{}", te.layer, te.kind);
        }
    }
    for (auto& [_, s] : by_type) r.types.push_back(s);
    std::sort(r.types.begin(), r.types.end(), [](const TypeSummary& a, const TypeSummary& b) { return a.bytes > b.bytes; });
    return r;
}

}  // namespace lmlab
