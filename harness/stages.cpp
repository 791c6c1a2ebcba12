#include "stages.h"

namespace lmlab {

// PyTorch's float32 defaults for assert_close: atol 1e-5, rtol 1.3e-6.
constexpr Tolerance kFloat32Default{1e-5, 1.3e-6};

const std::vector<std::string>& levels() {
    static const std::vector<std::string> order = {"kernel", "layer", "model", "generation"};
    return order;
}

int level_rank(const std::string& level) {
    const auto& ls = levels();
    for (std::size_t i = 0; i < ls.size(); ++i)
        if (ls[i] == level) return static_cast<int>(i);
    return -1;
}

const std::vector<Stage>& stages() {
    static const std::vector<Stage> table = {
        // id                  level     fixture                 tolerance        why
        {"kernel.matvec", "kernel", "kernel/matvec.h5", {1e-5, 1e-5},
         "sums of up to 16384 products: torch's float32 blocked sum drifts ~1 ulp per doubling of length",
         stage_matvec},
        {"kernel.matmul", "kernel", "kernel/matmul.h5", {1e-5, 1e-5},
         "same reductions as matvec, batched", stage_matmul},
        {"kernel.softmax", "kernel", "kernel/softmax.h5", kFloat32Default,
         "outputs in [0, 1]: float32 default is already generous", stage_softmax},
        {"kernel.rmsnorm", "kernel", "kernel/rmsnorm.h5", kFloat32Default,
         "one sum of squares and a scale: float32 default", stage_rmsnorm},
        {"kernel.rope", "kernel", "kernel/rope.h5", kFloat32Default,
         "same float32 angle as the reference, so only cos/sin rounding differs", stage_rope},
        {"kernel.silu", "kernel", "kernel/silu.h5", kFloat32Default, "elementwise: float32 default",
         stage_silu},
        {"kernel.swiglu", "kernel", "kernel/swiglu.h5", kFloat32Default, "elementwise: float32 default",
         stage_swiglu},
        {"kernel.attention", "kernel", "kernel/attention.h5", kFloat32Default,
         "softmax then a convex combination of values: float32 default", stage_attention},
        {"kernel.argmax", "kernel", "kernel/argmax.h5", {0.0, 0.0}, "an index: must be exact",
         stage_argmax},

        {"layer.attention", "layer", "layer/attention.h5", {1e-5, 1e-5},
         "a few chained matvecs and a softmax: float32 sums of ~256 terms", stage_layer_attention},
        {"layer.ffn", "layer", "layer/ffn.h5", {1e-5, 1e-5}, "three matvecs over 256 and 1024 terms", stage_layer_ffn},
        {"layer.block", "layer", "layer/block.h5", {1e-5, 1e-5}, "attention + ffn + two residual adds",
         stage_layer_block},

        {"model.forward", "model", "model/forward.h5", {1e-4, 1e-4},
         "the seed spec's logits tolerance; errors compound over layers and positions", stage_model_forward},
        {"model.kv_cache", "model", "model/kv_cache.h5", {1e-5, 1e-5}, "k and v are one projection + RoPE away from the residual stream",
         stage_model_kv_cache},

        {"generation.greedy", "generation", "generation/greedy.h5", {1e-4, 1e-4},
         "tokens must match exactly; logits within the seed spec's 1e-4", stage_generation_greedy},
    };
    return table;
}

}  // namespace lmlab
