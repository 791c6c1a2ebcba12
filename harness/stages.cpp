#include "stages.h"

#include <filesystem>
#include <map>
#include <sstream>

namespace lmlab {

// PyTorch's float32 defaults for assert_close: atol 1e-5, rtol 1.3e-6.
constexpr Tolerance kFloat32Default{1e-5, 1.3e-6};
constexpr Tolerance kExact{0.0, 0.0};
constexpr Tolerance kLogits{1e-4, 1e-4};  // the seed spec's logits tolerance

// The models and tokenizers stages run (the exporter builds or reads each of them).
constexpr const char* kTinyLlama = "models/tiny-llama.h5";
constexpr const char* kStories260K = "shared:models/stories260K/stories260K.bin";
constexpr const char* kTinyGpt2 = "models/tiny-gpt2";           // Hugging Face save_pretrained directory
constexpr const char* kTinyGpt2Hub = "models/tiny-gpt2-hub";    // hub-style: no prefix, attn.bias buffers, sharded
constexpr const char* kTinyGpt2Llmc = "models/tiny-gpt2.llmc.bin";  // llm.c checkpoint of the same weights
constexpr const char* kTinyQwen2 = "models/tiny-qwen2";         // transformers' Qwen2ForCausalLM, save_pretrained
constexpr const char* kTinyLlamaHf = "models/tiny-llama-hf";     // the tiny LLaMA converted to HF's LlamaForCausalLM
constexpr const char* kStories260KHf = "models/stories260k-hf";  // stories260K converted likewise (needs ../shared)
constexpr const char* kGpt2Tokenizer = "shared:tokenizers/gpt2";  // encoder.json + vocab.bpe
constexpr const char* kGpt2TokenizerJson = "models/tiny-gpt2/tokenizer.json";  // the same vocabulary as HF writes it

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

namespace {
std::vector<std::string> families_of(const Stage& s) {
    std::vector<std::string> out;
    std::istringstream in(s.family);
    for (std::string f; in >> f;) out.push_back(f);
    return out;
}
}  // namespace

std::vector<std::string> stage_provides(const Stage& s) {
    std::vector<std::string> out;
    for (const std::string& f : families_of(s)) out.push_back(std::string(s.level) == "kernel" ? "kernel." + f : f + "." + s.level);
    return out;
}

std::vector<std::string> stage_requires(const Stage& s) {
    std::vector<std::string> out;
    for (const std::string& f : families_of(s))
        for (const std::string& level : level_requires(s.level)) out.push_back(level == "kernel" ? "kernel." + f : f + "." + level);
    return out;
}

bool is_shared_path(const std::string& model) { return model.rfind("shared:", 0) == 0; }

std::string resolve_model_path(const std::string& model, const std::string& golden_dir, const std::string& shared_dir) {
    namespace fs = std::filesystem;
    return is_shared_path(model) ? (fs::path(shared_dir) / model.substr(7)).string() : (fs::path(golden_dir) / model).string();
}

const std::vector<Stage>& stages() {
    static const std::vector<Stage> table = {
        // id, level, families using it, model, fixture, tolerance, why, function
        {"kernel.matvec", "kernel", "llama gpt2", "", "kernel/matvec.h5", {1e-5, 1e-5},
         "sums of up to 16384 products: torch's float32 blocked sum drifts ~1 ulp per doubling of length", stage_matvec},
        {"kernel.linear", "kernel", "llama gpt2", "", "kernel/linear.h5", {1e-5, 1e-5},
         "a matvec plus one add per output: the matvec's tolerance", stage_linear},
        {"kernel.add", "kernel", "llama gpt2", "", "kernel/add.h5", kFloat32Default,
         "one float32 add per element: exact in both, the default is generous", stage_add},
        {"kernel.softmax", "kernel", "llama gpt2", "", "kernel/softmax.h5", kFloat32Default,
         "outputs in [0, 1]: float32 default is already generous", stage_softmax},
        {"kernel.rmsnorm", "kernel", "llama", "", "kernel/rmsnorm.h5", kFloat32Default,
         "one sum of squares and a scale: float32 default", stage_rmsnorm},
        {"kernel.layernorm", "kernel", "gpt2", "", "kernel/layernorm.h5", {1e-5, 1e-5},
         "normalised outputs are O(1) but torch rounds mean and variance in float32: for values around 1e4 "
         "the mean's rounding moves every output by ~1e-6 relative",
         stage_layernorm},
        {"kernel.rope", "kernel", "llama", "", "kernel/rope.h5", kFloat32Default,
         "same float32 angle as the reference, so only cos/sin rounding differs", stage_rope},
        {"kernel.silu", "kernel", "llama", "", "kernel/silu.h5", kFloat32Default, "elementwise: float32 default",
         stage_silu},
        {"kernel.swiglu", "kernel", "llama", "", "kernel/swiglu.h5", kFloat32Default, "elementwise: float32 default",
         stage_swiglu},
        {"kernel.gelu_tanh", "kernel", "gpt2", "", "kernel/gelu_tanh.h5", kFloat32Default,
         "elementwise: float32 default (the exact-erf form misses it by up to 5e-4)", stage_gelu_tanh},
        {"kernel.gelu_erf", "kernel", "gpt2", "", "kernel/gelu_erf.h5", kFloat32Default,
         "elementwise: float32 default (the tanh form misses it by up to 5e-4)", stage_gelu_erf},
        {"kernel.attention", "kernel", "llama gpt2", "", "kernel/attention.h5", kFloat32Default,
         "softmax then a convex combination of values: float32 default", stage_attention},
        {"kernel.argmax", "kernel", "llama gpt2", "", "kernel/argmax.h5", kExact, "an index: must be exact",
         stage_argmax},

        {"layer.attention", "layer", "llama", kTinyLlama, "layer/attention.h5", {1e-5, 1e-5},
         "a few chained matvecs and a softmax: float32 sums of ~256 terms", stage_layer_attention},
        {"layer.ffn", "layer", "llama", kTinyLlama, "layer/ffn.h5", {1e-5, 1e-5}, "three matvecs over 256 and 1024 terms",
         stage_layer_ffn},
        {"layer.block", "layer", "llama", kTinyLlama, "layer/block.h5", {1e-5, 1e-5},
         "attention + ffn + two residual adds", stage_layer_block},
        {"layer.block.gpt2", "layer", "gpt2", kTinyGpt2, "layer/block_gpt2.h5", {1e-5, 1e-5},
         "two LayerNorms, four linears with biases, GELU and two residual adds over 64 and 256 terms",
         stage_layer_block},

        {"layer.block.qwen2", "layer", "qwen2", kTinyQwen2, "layer/block_qwen2.h5", {1e-5, 1e-5},
         "RMSNorm, biased q/k/v, rotate-half RoPE with theta 1e6, 4:1 GQA, SwiGLU: sums over 64 and 160 terms",
         stage_layer_block},

        {"model.forward", "model", "llama", kTinyLlama, "model/forward.h5", kLogits,
         "the seed spec's logits tolerance; errors compound over layers and positions", stage_model_forward},
        {"model.kv_cache", "model", "llama", kTinyLlama, "model/kv_cache.h5", {1e-5, 1e-5},
         "k and v are one projection + RoPE away from the residual stream", stage_model_kv_cache},
        {"model.forward.stories260k", "model", "llama", kStories260K, "model/forward_stories260k.h5", kLogits,
         "a real trained model (5 layers, GQA): the same logits tolerance", stage_model_forward},
        {"model.forward.gpt2", "model", "gpt2", kTinyGpt2, "model/forward_gpt2.h5", kLogits,
         "transformers' GPT2LMHeadModel, full-sequence forward: the same logits tolerance", stage_model_forward},
        {"model.forward.gpt2.hub", "model", "gpt2", kTinyGpt2Hub, "model/forward_gpt2.h5", kLogits,
         "the same weights from a hub-style sharded directory (un-prefixed keys, attn.bias buffers)",
         stage_model_forward},
        {"model.forward.gpt2.llmc", "model", "gpt2", kTinyGpt2Llmc, "model/forward_gpt2.h5", kLogits,
         "the same weights from an llm.c checkpoint (padded vocabulary, [out, in] matrices)", stage_model_forward},
        {"model.forward.llama-hf", "model", "llama", kTinyLlamaHf, "model/forward.h5", kLogits,
         "the tiny LLaMA from a Hugging Face directory (q/k rows permuted for rotate-half): the same logits as "
         "from the original file",
         stage_model_logits},
        {"model.forward.stories260k-hf", "model", "llama", kStories260KHf, "model/forward_stories260k.h5", kLogits,
         "stories260K converted to a Hugging Face directory: the same logits as from llama2.c's file",
         stage_model_logits},
        {"model.forward.qwen2", "model", "qwen2", kTinyQwen2, "model/forward_qwen2.h5", kLogits,
         "transformers' Qwen2ForCausalLM, full-sequence forward, q/k captured after its RoPE: the logits tolerance",
         stage_model_forward},
        {"model.kv_cache.qwen2", "model", "qwen2", kTinyQwen2, "model/kv_cache_qwen2.h5", {1e-5, 1e-5},
         "k (after RoPE) and v of 2 kv heads: one RMSNorm and a biased projection from the residual stream",
         stage_model_kv_cache},
        {"model.kv_cache.gpt2", "model", "gpt2", kTinyGpt2, "model/kv_cache_gpt2.h5", {1e-5, 1e-5},
         "k and v are one LayerNorm + linear away from the residual stream", stage_model_kv_cache},

        {"generation.greedy", "generation", "llama", kTinyLlama, "generation/greedy.h5", kLogits,
         "tokens must match exactly; logits within the seed spec's 1e-4", stage_generation_greedy},
        {"generation.greedy.stories260k", "generation", "llama", kStories260K, "generation/greedy_stories260k.h5",
         kLogits, "256 greedy tokens from BOS must match exactly; logits within 1e-4", stage_generation_greedy},
        {"generation.greedy.gpt2", "generation", "gpt2", kTinyGpt2, "generation/greedy_gpt2.h5", kLogits,
         "transformers' generate(do_sample=False): tokens exactly, logits within 1e-4", stage_generation_greedy},
        {"generation.greedy.qwen2", "generation", "qwen2", kTinyQwen2, "generation/greedy_qwen2.h5", kLogits,
         "transformers' generate(do_sample=False): tokens exactly, logits within 1e-4", stage_generation_greedy},

        {"tokenizer.default", "tokenizer", "", kTinyLlama, "tokenizer/default.h5", kExact,
         "token ids: SentencePiece's exactly (the tiny LLaMA's trained 16384-piece vocabulary)", stage_tokenizer},
        {"tokenizer.llama2", "tokenizer", "", "shared:tokenizers/llama2/tokenizer.bin", "tokenizer/llama2.h5", kExact,
         "token ids: SentencePiece's exactly (Llama 2, 32000 pieces)", stage_tokenizer},
        {"tokenizer.stories260k", "tokenizer", "", "shared:models/stories260K/tok512.bin", "tokenizer/stories260k.h5",
         kExact, "token ids: SentencePiece's exactly (stories260K's 512 pieces)", stage_tokenizer},
        {"tokenizer.gpt2", "tokenizer", "", kGpt2Tokenizer, "tokenizer/gpt2.h5", kExact,
         "token ids: tiktoken's and HF tokenizers' exactly (they agree), from encoder.json + vocab.bpe", stage_tokenizer},
        {"tokenizer.gpt2.json", "tokenizer", "", kGpt2TokenizerJson, "tokenizer/gpt2.h5", kExact,
         "the same ids from the same vocabulary in Hugging Face's tokenizer.json format", stage_tokenizer},
        {"tokenizer.qwen", "tokenizer", "", "shared:tokenizers/qwen/tokenizer.json", "tokenizer/qwen.h5", kExact,
         "token ids: HF tokenizers' exactly (NFC, the Split regex from the file, added tokens recognised)",
         stage_tokenizer},
    };
    return table;
}

const Stage* find_stage(const std::string& id) {
    for (const Stage& s : stages())
        if (id == s.id) return &s;
    return nullptr;
}

}  // namespace lmlab
