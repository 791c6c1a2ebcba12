#include "stages.h"

#include <map>

namespace lmlab {

// PyTorch's float32 defaults for assert_close: atol 1e-5, rtol 1.3e-6.
constexpr Tolerance kFloat32Default{1e-5, 1.3e-6};
constexpr const char* kStories260K = "models/stories260K/stories260K.bin";

const std::vector<std::string>& levels() {
    static const std::vector<std::string> order = {"kernel", "layer", "model", "generation", "tokenizer"};
    return order;
}

const std::vector<std::string>& level_requires(const std::string& level) {
    static const std::map<std::string, std::vector<std::string>> requires_ = {
        {"kernel", {}},
        {"layer", {"kernel"}},
        {"model", {"kernel", "layer"}},
        {"generation", {"kernel", "layer", "model"}},
        {"tokenizer", {}},
    };
    return requires_.at(level);
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

        {"model.forward.stories260k", "model", "model/forward_stories260k.h5", {1e-4, 1e-4},
         "a real trained model (5 layers, GQA): the same logits tolerance", stage_model_forward,
         kStories260K},

        {"generation.greedy", "generation", "generation/greedy.h5", {1e-4, 1e-4},
         "tokens must match exactly; logits within the seed spec's 1e-4", stage_generation_greedy},
        {"generation.greedy.stories260k", "generation", "generation/greedy_stories260k.h5", {1e-4, 1e-4},
         "256 greedy tokens from BOS must match exactly; logits within 1e-4", stage_generation_greedy,
         kStories260K},

        {"tokenizer.default", "tokenizer", "tokenizer/default.h5", {0.0, 0.0},
         "token ids: SentencePiece's exactly (the tiny LLaMA's trained 16384-piece vocabulary)", stage_tokenizer},
        {"tokenizer.llama2", "tokenizer", "tokenizer/llama2.h5", {0.0, 0.0},
         "token ids: SentencePiece's exactly (Llama 2, 32000 pieces)", stage_tokenizer,
         "tokenizers/llama2/tokenizer.bin"},
        {"tokenizer.stories260k", "tokenizer", "tokenizer/stories260k.h5", {0.0, 0.0},
         "token ids: SentencePiece's exactly (stories260K's 512 pieces)", stage_tokenizer,
         "models/stories260K/tok512.bin"},
    };
    return table;
}

}  // namespace lmlab
