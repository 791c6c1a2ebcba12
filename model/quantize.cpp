// Int8 weights (Q8_0) for a whole model, as llama2.c's runq.c runs them: every matrix that a
// matvec reads (the Linears and the classifier) becomes int8 + one float scale per group of a row,
// and the activation entering it is quantized the same way at run time (model/forward.cpp,
// project_rows()). The token embedding table is quantized too and a row is dequantized when a token is
// looked up: the same floats as runq.c's dequantized table, at a quarter of the memory. Norms,
// biases and GPT-2's learned positions stay float (they are added, not multiplied through a matvec).
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>

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
