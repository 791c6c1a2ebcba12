#include "model/tensors.h"

#include "model/family.h"

namespace lmlab {

const std::vector<TensorSlot>& tensor_table(const Config& c) { return family(c.arch).tensors(); }

std::string tensor_name(const char* pattern, std::size_t layer, std::size_t expert) {
    std::string name = pattern;
    auto at = name.find("{}");
    if (at != std::string::npos) name.replace(at, 2, std::to_string(layer));
    at = name.find("{}");
    if (at != std::string::npos) name.replace(at, 2, std::to_string(expert));
    return name;
}

std::vector<BoundTensor> bind_tensors(Model& m) {
    const Config& c = m.config;
    m.layers.resize(c.n_layers);
    for (LayerWeights& l : m.layers) l.experts.resize(c.n_experts);
    std::vector<BoundTensor> out;
    for (const TensorSlot& s : tensor_table(c)) {
        if (s.present && !s.present(c)) continue;
        for (std::size_t l = 0; l < (s.per_layer ? c.n_layers : 1); ++l)
            for (std::size_t e = 0; e < (s.per_expert ? c.n_experts : 1); ++e)
                out.push_back({tensor_name(s.name, l, e), tensor_name(s.hf ? s.hf : s.name, l, e),
                               s.gguf ? tensor_name(s.gguf, l, e) : "", e, s.per_expert, s.shape(c), &s.field(m, l, e),
                               s.hf_conv1d});
    }
    return out;
}

std::size_t numel(const std::vector<std::size_t>& shape) {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    return n;
}

}  // namespace lmlab
