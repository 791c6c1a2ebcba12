#include "model/record.h"

#include <algorithm>

#include "model/family.h"

namespace lmlab {

LayerRecord record_layer(const Model& m, const RunState& s, std::size_t T) {
    LayerRecord rec;
    for (const std::string& name : family(m.config.arch).intermediates) {
        const IntermediateBuffer& buf = intermediate_buffer(name);
        std::vector<float>& all = rec[name];
        for (std::size_t t = 0; t < T; ++t) {
            const std::vector<float> r = buf.row(s, m.config, t);
            all.insert(all.end(), r.begin(), r.end());
        }
    }
    return rec;
}

Trace traced_forward(const Model& m, std::span<const int> tokens, RowCache& cache, RunState& s) {
    const Config& c = m.config;
    const std::size_t T = tokens.size();
    if (T == 0 || T > s.max_rows) throw ModelError("traced_forward: 1 .. max_rows tokens");
    Trace tr;
    // forward_rows(), step by step, with a copy of the activations after each block
    for (std::size_t t = 0; t < T; ++t) embed(m, tokens[t], cache.pos(t), row(s.x, t, c.dim));
    tr.embedding.assign(s.x.begin(), s.x.begin() + static_cast<std::ptrdiff_t>(T * c.dim));
    for (std::size_t l = 0; l < c.n_layers; ++l) {
        block(m, l, T, cache, s);
        tr.layers.push_back(record_layer(m, s, T));
        std::swap(s.x, s.out);
    }
    std::vector<std::size_t> every(T);
    for (std::size_t t = 0; t < T; ++t) every[t] = t;
    tr.logits.resize(T * c.vocab_size);
    head(m, every, s, tr.logits);
    tr.final_norm.assign(s.final_norm.begin(), s.final_norm.begin() + static_cast<std::ptrdiff_t>(T * c.dim));
    return tr;
}

Trace traced_decode(const Model& m, std::span<const int> tokens) {
    const Config& c = m.config;
    KVCache cache(c, std::min(tokens.size(), c.max_seq_len));
    cache.set_prompt_length(tokens.size());  // the tokens are one prompt (a full-sequence forward's fixture)
    RunState s(c);
    Trace all;
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        ContiguousRows rows(cache, p, c.head_dim());
        append_rows(all, traced_forward(m, tokens.subspan(p, 1), rows, s));
    }
    return all;
}

void append_rows(Trace& a, const Trace& b) {
    auto cat = [](std::vector<float>& dst, const std::vector<float>& src) { dst.insert(dst.end(), src.begin(), src.end()); };
    cat(a.embedding, b.embedding);
    if (a.layers.empty()) a.layers.resize(b.layers.size());
    for (std::size_t l = 0; l < b.layers.size(); ++l)
        for (const auto& [name, v] : b.layers[l]) cat(a.layers[l][name], v);
    cat(a.final_norm, b.final_norm);
    cat(a.logits, b.logits);
}

}  // namespace lmlab
