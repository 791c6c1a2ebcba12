// Int8 weights (Q8_0) for a whole model, as llama2.c's runq.c runs them: every matrix that a
// matvec reads (the Linears and the classifier) becomes int8 + one float scale per group of a row,
// and the activation entering it is quantized the same way at run time (model/forward.cpp,
// project_rows()). The token embedding table is quantized too and a row is dequantized when a token is
// looked up: the same floats as runq.c's dequantized table, at a quarter of the memory. Norms,
// biases and GPT-2's learned positions stay float (they are added, not multiplied through a matvec).
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <map>
#include <numeric>

#include "kernels/ggml_quant.h"
#include "model/model.h"
#include "model/tensors.h"

namespace lmlab {

QuantizedMatrix* q8_slot(Model& m, const std::vector<float>* dst) {
    if (dst == &m.tok_embeddings) return &m.tok_embeddings_q8;
    if (dst == &m.output) return &m.output_q8;
    for (LayerWeights& l : m.layers)
        for (Linear* lin : {&l.wq, &l.wk, &l.wv, &l.wqkv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
            if (dst == &lin->w) return &lin->q8;
    return nullptr;
}

GgmlMatrix* gg_slot(Model& m, const std::vector<float>* dst) {
    if (dst == &m.tok_embeddings) return &m.tok_embeddings_gg;
    if (dst == &m.output) return &m.output_gg;
    for (LayerWeights& l : m.layers) {
        for (Linear* lin : {&l.wq, &l.wk, &l.wv, &l.wqkv, &l.wo, &l.w_gate, &l.w_up, &l.w_down, &l.router})
            if (dst == &lin->w) return &lin->gg;
        for (Expert* e : {&l.shared_expert})
            for (Linear* lin : {&e->w_gate, &e->w_up, &e->w_down})
                if (dst == &lin->w) return &lin->gg;
        for (Expert& e : l.experts)
            for (Linear* lin : {&e.w_gate, &e.w_up, &e.w_down})
                if (dst == &lin->w) return &lin->gg;
    }
    return nullptr;
}

Model quantize_model(Model m, std::size_t group) {
    if (m.quantized()) throw ModelError(m.source + " is already quantized (Q8_0, group " +
                                        std::to_string(m.tok_embeddings_q8.group) + ")");
    if (m.config.moe())
        throw ModelError(fmt::format("{}: {} is a mixture of experts ({} experts); int8 (Q8_0) is implemented for dense "
                                     "models only: run it in float32 (without --quantize / #q8_0)",
                                     m.source, arch_name(m.config.arch), m.config.n_experts));
    if (group == 0 || group > kQ8MaxGroup)
        throw ModelError(fmt::format("Q8_0 group size {} is out of range: give 1 .. {} (64 is llama2.c's default)", group,
                                     kQ8MaxGroup));
    const std::vector<BoundTensor> tensors = bind_tensors(m);
    // First check every row length (nothing changes unless the whole model can be quantized): a
    // group must not straddle two rows, since each row is one dot product.
    std::size_t common = 0;  // gcd of all row lengths: every group that divides it works
    const BoundTensor* bad = nullptr;
    for (const BoundTensor& t : tensors) {
        if (!q8_slot(m, t.dst)) continue;
        const std::size_t cols = t.shape.at(1);
        common = std::gcd(common, cols);
        if (cols % group != 0 && !bad) bad = &t;
    }
    if (bad) {
        std::size_t fits = 1;  // the largest divisor of every row length that is <= group
        for (std::size_t d = 1; d <= std::min(group, common); ++d)
            if (common % d == 0) fits = d;
        throw ModelError(fmt::format(
            "{}: cannot quantize {} {} to Q8_0 in groups of {}: its rows have {} elements, not a multiple of {}. "
            "Every row of every matrix must be whole groups (llama2.c's runq.c requires it too, and silently "
            "drops the tail otherwise); the largest group <= {} that fits this model is {} (--group {})",
            m.source, bad->name, shape_str(bad->shape), group, bad->shape.at(1), group, group, fits, fits));
    }
    for (const BoundTensor& t : tensors) {
        QuantizedMatrix* qm = q8_slot(m, t.dst);
        if (!qm) continue;
        qm->group = group;
        qm->q.resize(t.dst->size());
        qm->scales.resize(t.dst->size() / group);
        quantize_q8_0(*t.dst, group, qm->q, qm->scales);  // each row is whole groups: rows never mix
        for (std::size_t g = 0; g < qm->scales.size(); ++g)
            if (!std::isfinite(qm->scales[g]))
                throw ModelError(fmt::format("{}: {} holds a non-finite weight (row {}): cannot quantize it", m.source,
                                             t.name, g * group / t.shape.at(1)));
        std::vector<float>().swap(*t.dst);  // free the float weights
    }
    return m;
}

// ---- ggml's types (GGUF), as llama.cpp's quantizer makes them ----------------------------------------

bool has_ggml_tensors(const Model& m) {
    if (!m.tok_embeddings_gg.empty() || !m.output_gg.empty()) return true;
    for (const LayerWeights& l : m.layers) {
        for (const Linear* lin : {&l.wq, &l.wk, &l.wv, &l.wqkv, &l.wo, &l.w_gate, &l.w_up, &l.w_down, &l.router})
            if (!lin->gg.empty()) return true;
        for (const Expert* e : {&l.shared_expert})
            for (const Linear* lin : {&e->w_gate, &e->w_up, &e->w_down})
                if (!lin->gg.empty()) return true;
        for (const Expert& e : l.experts)
            for (const Linear* lin : {&e.w_gate, &e.w_up, &e.w_down})
                if (!lin->gg.empty()) return true;
    }
    return false;
}

ggml::Type gguf_type_for_rows(ggml::Type type, std::size_t cols) {
    using ggml::Type;
    if (cols % ggml::type_info(type).block_elems == 0) return type;
    Type fallback = type;  // llama.cpp's tensor_type_fallback: a 256-block type steps down to a 32-block one
    switch (type) {
        case Type::Q2_K:
        case Type::Q3_K: fallback = Type::Q4_0; break;
        case Type::Q4_K: fallback = Type::Q5_0; break;
        case Type::Q5_K: fallback = Type::Q5_1; break;
        case Type::Q6_K: fallback = Type::Q8_0; break;
        default: break;
    }
    return cols % ggml::type_info(fallback).block_elems == 0 ? fallback : Type::F16;
}

Model quantize_model_gguf(Model m, ggml::Type type, std::vector<std::string>* notes) {
    const ggml::TypeInfo& info = ggml::type_info(type);
    if (!info.is_weight || type == ggml::Type::F32)
        throw ModelError(fmt::format("cannot quantize to {}: give one of ggml's weight types F16, BF16, Q8_0, Q6_K, "
                                     "Q5_K, Q5_1, Q5_0, Q4_K, Q4_1, Q4_0, Q3_K, Q2_K", info.name));
    if (m.quantized())
        throw ModelError(m.source + " is already int8 (llama2.c's Q8_0): give its float file to quantize it to " +
                         std::string(info.name));
    if (has_ggml_tensors(m))
        throw ModelError(m.source + " already holds tensors in a ggml type (a quantized or F16 GGUF file): "
                         "quantizing again would stack two roundings; give the float file (F32) to quantize it to " +
                         std::string(info.name));
    std::map<std::string, std::size_t> fallbacks;  // "Q5_0 (rows of 64)" -> tensors
    for (const BoundTensor& t : bind_tensors(m)) {
        GgmlMatrix* gg = gg_slot(m, t.dst);
        // llama.cpp leaves the router (ffn_gate_inp) in float: a few rows that pick the experts
        if (!gg || t.gguf_name.find("ffn_gate_inp") != std::string::npos) continue;
        const std::size_t rows = t.shape.at(0), cols = t.shape.at(1);
        const ggml::Type tt = gguf_type_for_rows(type, cols);
        if (tt != type) ++fallbacks[fmt::format("{} (rows of {})", ggml::type_info(tt).name, cols)];
        const std::size_t rb = ggml::row_bytes(tt, cols);
        gg->type = tt;
        gg->rows = rows;
        gg->cols = cols;
        gg->data.assign(rows * rb, 0);
        for (std::size_t r = 0; r < rows; ++r) {
            const auto x = std::span<const float>(*t.dst).subspan(r * cols, cols);
            for (std::size_t j = 0; j < cols; ++j)
                if (!std::isfinite(x[j]))
                    throw ModelError(fmt::format("{}: {} holds a non-finite weight ({} at row {}, column {}): cannot "
                                                 "quantize it", m.source, t.name, x[j], r, j));
            ggml::quantize_row(tt, x, std::span<std::uint8_t>(gg->data).subspan(r * rb, rb));
        }
        std::vector<float>().swap(*t.dst);  // free the float weights
    }
    if (notes)
        for (const auto& [what, n] : fallbacks)
            notes->push_back(fmt::format("{} {} in {}: their rows are not whole {}-element blocks of {} (llama.cpp's "
                                         "quantizer falls back the same way)",
                                         n, n == 1 ? "tensor" : "tensors", what, info.block_elems, info.name));
    return m;
}

std::string Quantization::name() const {
    return kind == Kind::Int8 ? fmt::format("Q8_0 (runq.c, group {})", group) : std::string(ggml::type_info(type).name);
}

Quantization parse_quantization(const std::string& spec, std::size_t group) {
    Quantization q;
    q.group = group;
    if (spec == "q8_0") return q;
    const std::string prefix = "gguf-";
    if (spec.rfind(prefix, 0) == 0) {
        const auto t = ggml::find_type_named(spec.substr(prefix.size()));
        if (t && t->is_weight && t->type != ggml::Type::F32) {
            q.kind = Quantization::Kind::Ggml;
            q.type = t->type;
            return q;
        }
    }
    throw ModelError(fmt::format("quantization '{}' is not known: give q8_0 (int8 in groups, llama2.c's runq.c) or "
                                 "gguf-<type> with one of ggml's weight types: gguf-q8_0, gguf-q6_k, gguf-q5_k, "
                                 "gguf-q5_1, gguf-q5_0, gguf-q4_k, gguf-q4_1, gguf-q4_0, gguf-q3_k, gguf-q2_k, "
                                 "gguf-f16, gguf-bf16",
                                 spec));
}

Model quantize(Model m, const Quantization& q, std::vector<std::string>* notes) {
    return q.kind == Quantization::Kind::Int8 ? quantize_model(std::move(m), q.group)
                                               : quantize_model_gguf(std::move(m), q.type, notes);
}

std::size_t weight_bytes(const Model& m) {
    std::size_t bytes = 0;
    auto add = [&](const std::vector<float>& v) { bytes += v.capacity() * sizeof(float); };
    auto add_q = [&](const QuantizedMatrix& q) { bytes += q.q.capacity() + q.scales.capacity() * sizeof(float); };
    auto add_lin = [&](const Linear& lin) {
        add(lin.w);
        add(lin.b);
        add_q(lin.q8);
        bytes += lin.gg.data.capacity();
    };
    add(m.tok_embeddings);
    add(m.pos_embeddings);
    add(m.output);
    add(m.final_norm.weight);
    add(m.final_norm.bias);
    add_q(m.tok_embeddings_q8);
    add_q(m.output_q8);
    bytes += m.tok_embeddings_gg.data.capacity() + m.output_gg.data.capacity();
    for (const LayerWeights& l : m.layers) {
        for (const Norm* n : {&l.attn_norm, &l.ffn_norm}) {
            add(n->weight);
            add(n->bias);
        }
        for (const Linear* lin : {&l.wq, &l.wk, &l.wv, &l.wqkv, &l.wo, &l.w_gate, &l.w_up, &l.w_down, &l.router, &l.shared_gate})
            add_lin(*lin);
        for (const Expert* e : {&l.shared_expert})
            for (const Linear* lin : {&e->w_gate, &e->w_up, &e->w_down}) add_lin(*lin);
        for (const Expert& e : l.experts)
            for (const Linear* lin : {&e.w_gate, &e.w_up, &e.w_down}) add_lin(*lin);
    }
    return bytes;
}

}  // namespace lmlab
