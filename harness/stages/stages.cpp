#include "harness/stages/stages.h"

#include <algorithm>

#include "model/family.h"

#include <filesystem>
#include <map>
#include <sstream>

namespace lmlab {

// PyTorch's float32 defaults for assert_close: atol 1e-5, rtol 1.3e-6.
constexpr Tolerance kFloat32Default{1e-5, 1.3e-6};

// kernel.ggml.matvec.*: act and y_fast are exact (their own tolerance in ggml_stages.cpp); this one is y_plain's
constexpr Tolerance kGgmlPlain{1e-9, 1.2e-7};
// The quantization report's numbers: both sides dequantize and compute in float32, the engine's and
// PyTorch's logits ~1e-5 apart, so a KL of ~1e-3 moves by about 1e-5 · Σ|p_q - p_f| ≈ 1e-6 and a
// relative RMS of ~1e-2 by ~1e-2 of the engine's own relative error (~1e-6): atol 1e-5, rtol 2e-3.
constexpr Tolerance kQuantReport{1e-5, 2e-3};
constexpr const char* kGgmlPlainWhy =
    "y_plain: a float64 sum of exact float products, rounded once: within 1 ulp (2^-23 relative) of the exact "
    "dot rounded, plus the sum's n·2^-53·Σ|w·x| (< 1e-9 here); act and y_fast bit for bit; |fast - plain| "
    "within the fixture's bound";

// The models and tokenizers stages run (the exporter builds or reads each of them).
constexpr const char* kTinyLlama = "models/tiny-llama.h5";
constexpr const char* kStories260K = "shared:models/stories260K/stories260K.bin";
constexpr const char* kTinyGpt2 = "models/tiny-gpt2";           // Hugging Face save_pretrained directory
constexpr const char* kTinyGpt2Hub = "models/tiny-gpt2-hub";    // hub-style: no prefix, attn.bias buffers, sharded
constexpr const char* kTinyGpt2Llmc = "models/tiny-gpt2.llmc.bin";  // llm.c checkpoint of the same weights
constexpr const char* kTinyQwen2 = "models/tiny-qwen2";         // transformers' Qwen2ForCausalLM, save_pretrained
constexpr const char* kTinyQwen2Moe = "models/tiny-qwen2moe";   // transformers' Qwen2MoeForCausalLM, save_pretrained
constexpr const char* kTinyMixtral = "models/tiny-mixtral";     // transformers' MixtralForCausalLM, save_pretrained
constexpr const char* kTinyMixtralTied = "models/tiny-mixtral-tied";  // the same, experts 6 and 7 of layer 1 tied in the router
constexpr const char* kTinyLlamaHf = "models/tiny-llama-hf";     // the tiny LLaMA converted to HF's LlamaForCausalLM
constexpr const char* kStories260KHf = "models/stories260k-hf";  // stories260K converted likewise (needs ../shared)
// Long context and Llama 3: transformers' own classes with random weights, save_pretrained
constexpr const char* kTinyLlama3 = "models/tiny-llama3";  // Llama 3.2-shaped: GQA, tied, theta 5e5, rope_scaling llama3, real vocab
constexpr const char* kTinyLlamaLinear = "models/tiny-llama-linear";    // LlamaForCausalLM, 32 positions, linear x2
constexpr const char* kTinyLlamaDynamic = "models/tiny-llama-dynamic";  // dynamic NTK x2
constexpr const char* kTinyLlamaYarn = "models/tiny-llama-yarn";        // yarn x4, default betas
constexpr const char* kTinyQwen2Linear = "models/tiny-qwen2-linear";    // Qwen2ForCausalLM, 32 positions, linear x2
constexpr const char* kTinyQwen2Dynamic = "models/tiny-qwen2-dynamic";  // dynamic x4
constexpr const char* kTinyQwen2Yarn = "models/tiny-qwen2-yarn";        // yarn x4, Qwen2.5's recipe, betas 16/2
constexpr const char* kTinyQwen2Llama3 = "models/tiny-qwen2-llama3";    // llama3 x8 from 32 positions
constexpr const char* kTinyQwen2Swa = "models/tiny-qwen2-swa";  // use_sliding_window: window 8 from layer 1 (max_window_layers 1)
constexpr const char* kTinyMistral = "models/tiny-mistral";     // MistralForCausalLM: 3 layers, window 8
constexpr const char* kGpt2Tokenizer = "shared:tokenizers/gpt2";  // encoder.json + vocab.bpe
constexpr const char* kGpt2TokenizerJson = "models/tiny-gpt2/tokenizer.json";  // the same vocabulary as HF writes it
constexpr const char* kStories260KGguf = "shared:models/stories260K/stories260K.gguf";        // llama.cpp's conversion
constexpr const char* kStories260KGgufQ8 = "shared:models/stories260K/stories260K-q8_0.gguf";  // and its Q8_0 quantization
// GGUF files the exporter writes from the tiny models (scripts/lmlab_ref/gguf_models.py)
constexpr const char* kGguf_llama_f16 = "models/gguf/tiny-llama.f16.gguf";
constexpr const char* kGguf_llama_q8_0 = "models/gguf/tiny-llama.q8_0.gguf";
constexpr const char* kGguf_llama_q6_k = "models/gguf/tiny-llama.q6_k.gguf";
constexpr const char* kGguf_qwen2_f32 = "models/gguf/tiny-qwen2.f32.gguf";
constexpr const char* kGguf_qwen2_q8_0 = "models/gguf/tiny-qwen2.q8_0.gguf";
constexpr const char* kGguf_gpt2_f32 = "models/gguf/tiny-gpt2.f32.gguf";
constexpr const char* kGguf_gpt2_f16 = "models/gguf/tiny-gpt2.f16.gguf";
constexpr const char* kGguf_gpt2_q8_0 = "models/gguf/tiny-gpt2.q8_0.gguf";
constexpr const char* kGguf_qwen2moe_f32 = "models/gguf/tiny-qwen2moe.f32.gguf";
constexpr const char* kGguf_qwen2moe_f16 = "models/gguf/tiny-qwen2moe.f16.gguf";
constexpr const char* kGguf_qwen2moe_q8_0 = "models/gguf/tiny-qwen2moe.q8_0.gguf";
constexpr const char* kGguf_mixtral_f32 = "models/gguf/tiny-mixtral.f32.gguf";
constexpr const char* kGguf_mixtral_f16 = "models/gguf/tiny-mixtral.f16.gguf";
constexpr const char* kGguf_mixtral_q8_0 = "models/gguf/tiny-mixtral.q8_0.gguf";
constexpr const char* kGguf_gpt2_256_q6_k = "models/gguf/tiny-gpt2-256.q6_k.gguf";
constexpr const char* kGguf_qwen2moe_256_q6_k = "models/gguf/tiny-qwen2moe-256.q6_k.gguf";
constexpr const char* kGguf_mixtral_256_q6_k = "models/gguf/tiny-mixtral-256.q6_k.gguf";
// int8: "#q8_0" asks the harness to quantize on load (parse_model_spec); the .q8_0.bin is llama2.c's
// own int8 file ("ak42", version 2), written by the exporter as llama2.c's export.py does
constexpr const char* kTinyLlamaQ8 = "models/tiny-llama.h5#q8_0";
constexpr const char* kTinyLlamaAk42 = "models/tiny-llama.q8_0.bin";
constexpr const char* kStories260KQ8 = "shared:models/stories260K/stories260K.bin#q8_0,group=4";  // 172 = 4·43

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

std::vector<std::string> stage_provides(const Stage& s) {
    std::vector<std::string> out;
    if (std::string(s.level) == "kernel") {  // every family whose row lists this kernel
        for (const Family* f : families())
            if (std::find(f->kernels.begin(), f->kernels.end(), s.id) != f->kernels.end())
                out.push_back(std::string("kernel.") + f->name);
        const auto& q8 = int8_kernels();
        if (std::find(q8.begin(), q8.end(), s.id) != q8.end()) out.push_back("kernel.int8");
        if (std::string(s.id).rfind("kernel.ggml.", 0) == 0) out.push_back("kernel.ggml");  // ggml's tensor types
        return out;
    }
    if (*s.family)
        out.push_back(std::string(s.family) + (s.int8 ? ".int8." : is_gguf_model(s.model) ? ".gguf." : ".") + s.level);
    return out;
}

std::vector<std::string> stage_requires(const Stage& s) {
    std::vector<std::string> out;
    if (!*s.family) return out;
    // a GGUF model: ggml's tensor types too, and the GGUF stages of its family below it (there are no
    // GGUF layer stages: a GGUF model runs the float block's code, gated by the float layer stages)
    const bool gguf = is_gguf_model(s.model);
    for (const std::string& level : level_requires(s.level)) {
        if (level == "kernel") {
            out.push_back(std::string("kernel.") + s.family);
            if (s.int8) out.push_back("kernel.int8");
            if (gguf) out.push_back("kernel.ggml");
        } else {
            out.push_back(std::string(s.family) + "." + level);  // an int8 model runs the float block's code too
            if (s.int8) out.push_back(std::string(s.family) + ".int8." + level);
            if (gguf && level != "layer") out.push_back(std::string(s.family) + ".gguf." + level);
        }
    }
    return out;
}

nlohmann::json stage_table_json() {
    nlohmann::json rows = nlohmann::json::array(), fams = nlohmann::json::array();
    for (const Stage& s : stages())
        rows.push_back({{"id", s.id}, {"level", s.level}, {"family", s.family}, {"int8", s.int8}, {"model", s.model},
                        {"fixture", s.fixture}, {"recipe", s.recipe}});
    for (const Family* f : families())
        fams.push_back({{"name", f->name}, {"about", f->about}, {"hf_model_types", f->hf_model_types},
                        {"intermediates", f->intermediates}, {"kernels", f->kernels}});
    return {{"stages", rows}, {"families", fams}, {"int8_kernels", int8_kernels()}};
}

std::string stage_family_label(const Stage& s) {
    if (std::string(s.level) != "kernel") return std::string(s.family) + (s.int8 ? " int8" : "");
    std::string label;
    for (const std::string& g : stage_provides(s)) label += (label.empty() ? "" : " ") + g.substr(std::string("kernel.").size());
    return label;
}

bool is_shared_path(const std::string& model) { return model.rfind("shared:", 0) == 0; }

bool is_gguf_model(const std::string& model) {
    const std::string path = model.substr(0, model.find('#'));
    return path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

std::string resolve_model_path(const std::string& model, const std::string& golden_dir, const std::string& shared_dir) {
    namespace fs = std::filesystem;
    return is_shared_path(model) ? (fs::path(shared_dir) / model.substr(7)).string() : (fs::path(golden_dir) / model).string();
}

ModelSpec parse_model_spec(const std::string& model) {
    const auto hash = model.find('#');
    if (hash == std::string::npos) return {model, 0};
    const std::string suffix = model.substr(hash + 1);
    ModelSpec spec{model.substr(0, hash), 64};  // llama2.c's default group
    if (suffix == "q8_0") return spec;
    const std::string prefix = "q8_0,group=";
    if (suffix.rfind(prefix, 0) == 0 && suffix.size() > prefix.size() &&
        suffix.find_first_not_of("0123456789", prefix.size()) == std::string::npos) {
        const std::string digits = suffix.substr(prefix.size());
        // at most 6 digits: no stoul overflow; 0 would mean "not quantized" to the caller
        if (digits.size() <= 6 && (spec.q8_group = std::stoul(digits)) > 0) return spec;
        throw HarnessError("model '" + model + "': group '" + digits + "' is not a group size (1 to 999999)");
    }
    throw HarnessError("model '" + model + "': unknown suffix '#" + suffix +
                                "'; known: '#q8_0' (int8 on load, group 64) and '#q8_0,group=N'");
}

const std::vector<Stage>& stages() {
    static const std::vector<Stage> table = {
        // id, level, family, int8, model, fixture, fixture recipe, tolerance, why, function
        {"kernel.matvec", "kernel", "", false, "", "kernel/matvec.h5", "kernel.matvec", {1e-5, 1e-5},
         "sums of up to 16384 products: torch's float32 blocked sum drifts ~1 ulp per doubling of length", stage_matvec},
        {"kernel.matvec.fast", "kernel", "", false, "", "kernel/matvec.h5", "kernel.matvec", {1e-5, 1e-5},
         "float accumulation in 8 independent lanes combined pairwise: each lane sums in/8 products (2048 at "
         "in = 16384), rounding errors grow like sqrt(in/8) ulp of the partial sums: the plain matvec's tolerance",
         stage_matvec_fast},
        {"kernel.matmul_xwt", "kernel", "", false, "", "kernel/matmul_xwt.h5", "kernel.matmul_xwt", {1e-5, 1e-5},
         "every output is a matvec_fast row (the same 8-lane float sum, bit for bit): the matvec tolerance",
         stage_matmul_xwt},
        {"kernel.linear", "kernel", "", false, "", "kernel/linear.h5", "kernel.linear", {1e-5, 1e-5},
         "a matvec plus one add per output: the matvec's tolerance", stage_linear},
        {"kernel.add", "kernel", "", false, "", "kernel/add.h5", "kernel.add", kFloat32Default,
         "one float32 add per element: exact in both, the default is generous", stage_add},
        {"kernel.softmax", "kernel", "", false, "", "kernel/softmax.h5", "kernel.softmax", kFloat32Default,
         "outputs in [0, 1]: float32 default is already generous", stage_softmax},
        {"kernel.rmsnorm", "kernel", "", false, "", "kernel/rmsnorm.h5", "kernel.rmsnorm", kFloat32Default,
         "one sum of squares and a scale: float32 default", stage_rmsnorm},
        {"kernel.layernorm", "kernel", "", false, "", "kernel/layernorm.h5", "kernel.layernorm", {1e-5, 1e-5},
         "normalised outputs are O(1) but torch rounds mean and variance in float32: for values around 1e4 "
         "the mean's rounding moves every output by ~1e-6 relative",
         stage_layernorm},
        {"kernel.rope", "kernel", "", false, "", "kernel/rope.h5", "kernel.rope", kFloat32Default,
         "elementwise rotation; our angle is float64, PyTorch's float32, so from pos 256 cases are held to the float64 truth", stage_rope},
        {"kernel.silu", "kernel", "", false, "", "kernel/silu.h5", "kernel.silu", kFloat32Default, "elementwise: float32 default",
         stage_silu},
        {"kernel.swiglu", "kernel", "", false, "", "kernel/swiglu.h5", "kernel.swiglu", kFloat32Default, "elementwise: float32 default",
         stage_swiglu},
        {"kernel.sigmoid", "kernel", "", false, "", "kernel/sigmoid.h5", "kernel.sigmoid", kFloat32Default,
         "elementwise: float32 default", stage_sigmoid},
        {"kernel.gelu_tanh", "kernel", "", false, "", "kernel/gelu_tanh.h5", "kernel.gelu_tanh", kFloat32Default,
         "elementwise: float32 default (the exact-erf form misses it by up to 5e-4)", stage_gelu_tanh},
        {"kernel.gelu_erf", "kernel", "", false, "", "kernel/gelu_erf.h5", "kernel.gelu_erf", kFloat32Default,
         "elementwise: float32 default (the tanh form misses it by up to 5e-4)", stage_gelu_erf},
        {"kernel.attention", "kernel", "", false, "", "kernel/attention.h5", "kernel.attention", kFloat32Default,
         "softmax then a convex combination of values: float32 default", stage_attention},
        {"kernel.attention.tiled", "kernel", "", false, "", "kernel/attention.h5", "kernel.attention", kFloat32Default,
         "online softmax in tiles of 32: 8-lane float score dots, one exp(m_old - m_new) rescale per tile that "
         "raises the max, tile sums of <= 32 terms; still a convex combination of values: float32 default",
         stage_attention_tiled},
        {"kernel.attention.window", "kernel", "", false, "", "kernel/attention_window.h5", "kernel.attention_window",
         kFloat32Default,
         "a sliding window read from a ring buffer against transformers' -inf mask over every position: the same "
         "softmax and convex combination, float32 default",
         stage_attention_window},
        {"kernel.attention.window.tiled", "kernel", "", false, "", "kernel/attention_window.h5", "kernel.attention_window",
         kFloat32Default, "the tiled kernel's tiles from the window's first position: as kernel.attention.tiled",
         stage_attention_window_tiled},
        {"kernel.rope.scaling", "kernel", "", false, "", "kernel/rope_scaling.h5", "kernel.rope_scaling", kFloat32Default,
         "cos and sin: float32 default (positions past 31 against the float64 truth: transformers' float32 angle "
         "is off by pos x ulp); inv_freq 1e-6 relative: transformers forms it with float32 pow and blends",
         stage_rope_scaling},
        {"kernel.argmax", "kernel", "", false, "", "kernel/argmax.h5", "kernel.argmax", kExact, "an index: must be exact",
         stage_argmax},
        // int8 (Q8_0, llama2.c's runq.c): family "q8" is the int8 LLaMA (its float kernels above name it too),
        // so that a broken int8 kernel blocks only the int8 stages
        {"kernel.quantize_q8_0", "kernel", "", false, "", "kernel/quantize_q8_0.h5", "kernel.quantize_q8_0", {0.0, 1.2e-7},
         "the int8 values must be exact (tolerance 0 on q); a scale is one float32 division max|x|/127, "
         "correctly rounded in both: at most 1 ulp apart",
         stage_quantize_q8_0},
        {"kernel.matvec_q8_0", "kernel", "", false, "", "kernel/matvec_q8_0.h5", "kernel.matvec_q8_0", {1e-7, 2.4e-7},
         "exact int32 group sums, then runq.c's float steps (ival·ws·xs, float accumulation over groups) in the "
         "same order in both: bit-identical in practice, 2 ulp allowed",
         stage_matvec_q8_0},
        // ggml's weight quantizers (GGUF types, quantized in memory by `--quantize gguf-<type>`)
        {"kernel.ggml_quantize", "kernel", "", false, "", "kernel/ggml_quantize.h5", "kernel.ggml_quantize", kExact,
         "bytes: ggml's quantize_row_<type>_ref repeated operation for operation in float32 (no fused "
         "multiply-adds) in both: every byte must be equal",
         stage_ggml_quantize},

        // ggml's tensor types (GGUF files' weights; kernels/ggml_quant.h), one pair of stages per type: its
        // dequantization against the gguf package's own, and its fast path (activations quantized, integer
        // dots) against ggml's arithmetic (scripts/lmlab_ref/ggml_quants.py); together they gate every GGUF
        // model stage ("kernel.ggml")
        {"kernel.ggml.dequantize.f32", "kernel", "", false, "", "kernel/ggml/dequantize_f32.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.f16", "kernel", "", false, "", "kernel/ggml/dequantize_f16.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.bf16", "kernel", "", false, "", "kernel/ggml/dequantize_bf16.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q8_0", "kernel", "", false, "", "kernel/ggml/dequantize_q8_0.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q4_0", "kernel", "", false, "", "kernel/ggml/dequantize_q4_0.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q4_1", "kernel", "", false, "", "kernel/ggml/dequantize_q4_1.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q5_0", "kernel", "", false, "", "kernel/ggml/dequantize_q5_0.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q5_1", "kernel", "", false, "", "kernel/ggml/dequantize_q5_1.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q2_k", "kernel", "", false, "", "kernel/ggml/dequantize_q2_k.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q3_k", "kernel", "", false, "", "kernel/ggml/dequantize_q3_k.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q4_k", "kernel", "", false, "", "kernel/ggml/dequantize_q4_k.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q5_k", "kernel", "", false, "", "kernel/ggml/dequantize_q5_k.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.dequantize.q6_k", "kernel", "", false, "", "kernel/ggml/dequantize_q6_k.h5", "kernel.ggml.dequantize",
         kExact, "bit unpacking and ggml's float steps in ggml's order: the same bits as gguf.quants.dequantize",
         stage_ggml_dequantize},
        {"kernel.ggml.matvec.f32", "kernel", "", false, "", "kernel/ggml/matvec_f32.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.f16", "kernel", "", false, "", "kernel/ggml/matvec_f16.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.bf16", "kernel", "", false, "", "kernel/ggml/matvec_bf16.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q8_0", "kernel", "", false, "", "kernel/ggml/matvec_q8_0.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q4_0", "kernel", "", false, "", "kernel/ggml/matvec_q4_0.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q4_1", "kernel", "", false, "", "kernel/ggml/matvec_q4_1.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q5_0", "kernel", "", false, "", "kernel/ggml/matvec_q5_0.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q5_1", "kernel", "", false, "", "kernel/ggml/matvec_q5_1.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q2_k", "kernel", "", false, "", "kernel/ggml/matvec_q2_k.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q3_k", "kernel", "", false, "", "kernel/ggml/matvec_q3_k.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q4_k", "kernel", "", false, "", "kernel/ggml/matvec_q4_k.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q5_k", "kernel", "", false, "", "kernel/ggml/matvec_q5_k.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},
        {"kernel.ggml.matvec.q6_k", "kernel", "", false, "", "kernel/ggml/matvec_q6_k.h5", "kernel.ggml.matvec", kGgmlPlain,
         kGgmlPlainWhy, stage_ggml_matvec},

        // ONNX's operator conformance cases: the node tests every ONNX runtime must pass (onnx 1.18.0's
        // shipped test data, scripts/lmlab_ref/conformance.py), expected outputs from ONNX's numpy reference.
        // Each output is held to ONNX's own tolerance (its backend runner's rtol 1e-3, atol 1e-7, kept per
        // case) and to the tolerance below; a case whose attributes our kernel does not take is skipped
        // with the attribute named (harness/stages/conformance_stages.cpp). They gate no family: they test
        // our conventions against an outside suite; the kernel.* rows above gate the families' paths.
        {"conformance.softmax", "kernel", "", false, "", "conformance/softmax.h5", "conformance.softmax", kFloat32Default,
         "as kernel.softmax: outputs in [0, 1], float32 default", stage_conformance_softmax},
        {"conformance.layer_normalization", "kernel", "", false, "", "conformance/layer_normalization.h5",
         "conformance.layer_normalization", {1e-5, 1e-5},
         "as kernel.layernorm: the reference rounds mean and variance in float32 (numpy, stash_type 1)",
         stage_conformance_layer_normalization},
        {"conformance.rms_normalization", "kernel", "", false, "", "conformance/rms_normalization.h5",
         "conformance.rms_normalization", kFloat32Default, "as kernel.rmsnorm: one sum of squares and a scale",
         stage_conformance_rms_normalization},
        {"conformance.gelu", "kernel", "", false, "", "conformance/gelu.h5", "conformance.gelu", kFloat32Default,
         "as kernel.gelu_tanh and kernel.gelu_erf: elementwise, float32 default", stage_conformance_gelu},
        {"conformance.matmul", "kernel", "", false, "", "conformance/matmul.h5", "conformance.matmul", {1e-5, 1e-5},
         "as kernel.matvec: sums of products (here 4 terms)", stage_conformance_matmul},
        {"conformance.rotary_embedding", "kernel", "", false, "", "conformance/rotary_embedding.h5",
         "conformance.rotary_embedding", kFloat32Default,
         "two products and a sum per element with the given cos/sin: float32 default", stage_conformance_rotary_embedding},
        {"conformance.attention", "kernel", "", false, "", "conformance/attention.h5", "conformance.attention",
         kFloat32Default, "as kernel.attention: a softmax, then a convex combination of values",
         stage_conformance_attention},
        {"conformance.sigmoid", "kernel", "", false, "", "conformance/sigmoid.h5", "conformance.sigmoid", kFloat32Default,
         "as kernel.sigmoid: elementwise, float32 default", stage_conformance_sigmoid},
        {"conformance.argmax", "kernel", "", false, "", "conformance/argmax.h5", "conformance.argmax", kExact,
         "indices: exact", stage_conformance_argmax},

        {"layer.attention", "layer", "llama", false, kTinyLlama, "layer/attention.h5", "layer.attention", {1e-5, 1e-5},
         "a few chained matvecs and a softmax: float32 sums of ~256 terms", stage_layer_attention},
        {"layer.ffn", "layer", "llama", false, kTinyLlama, "layer/ffn.h5", "layer.ffn", {1e-5, 1e-5}, "three matvecs over 256 and 1024 terms",
         stage_layer_ffn},
        {"layer.block", "layer", "llama", false, kTinyLlama, "layer/block.h5", "layer.block", {1e-5, 1e-5},
         "attention + ffn + two residual adds", stage_layer_block},
        {"layer.block.gpt2", "layer", "gpt2", false, kTinyGpt2, "layer/block_gpt2.h5", "layer.block", {1e-5, 1e-5},
         "two LayerNorms, four linears with biases, GELU and two residual adds over 64 and 256 terms",
         stage_layer_block},

        {"layer.block.q8_0", "layer", "llama", true, kTinyLlamaQ8, "layer/block_q8_0.h5", "layer.block.q8_0", {1e-5, 1e-5},
         "an int8 block against ref_q8.py: each int8 matvec on the reference's input exactly; the block's own "
         "intermediates up to the first int8 rounding tie within the float block's tolerance",
         stage_layer_block_q8},
        {"layer.block.qwen2", "layer", "qwen2", false, kTinyQwen2, "layer/block_qwen2.h5", "layer.block", {1e-5, 1e-5},
         "RMSNorm, biased q/k/v, rotate-half RoPE with theta 1e6, 4:1 GQA, SwiGLU: sums over 64 and 160 terms",
         stage_layer_block},

        {"layer.block.mistral", "layer", "mistral", false, kTinyMistral, "layer/block_mistral.h5", "layer.block", {1e-5, 1e-5},
         "the LLaMA block with a sliding window of 8: at positions 17 and 62 the query reads its last 8 cached "
         "positions only (transformers' mask for that query); sums over 64 and 128 terms",
         stage_layer_block},
        {"layer.block.qwen2-swa", "layer", "qwen2", false, kTinyQwen2Swa, "layer/block_qwen2_swa.h5", "layer.block",
         {1e-5, 1e-5},
         "Qwen2 with use_sliding_window: layer 0 (below max_window_layers) reads every cached position, layer 1 its "
         "last 8 only; sums over 64 and 128 terms",
         stage_layer_block},

        // mixture of experts: expert ids exactly (a routing near-tie is reported, not failed: moe_stages.cpp)
        {"layer.moe.qwen2moe", "layer", "qwen2moe", false, kTinyQwen2Moe, "layer/moe_qwen2moe.h5", "layer.moe", {1e-5, 1e-5},
         "router logits are 64-term dot products; each output sums 2 experts (64- and 32-term matvecs) and the "
         "sigmoid-gated 64-wide shared expert: float32 sums of under 100 terms, O(1) values",
         stage_layer_moe},
        {"layer.moe.mixtral", "layer", "mixtral", false, kTinyMixtral, "layer/moe_mixtral.h5", "layer.moe", {1e-5, 1e-5},
         "router logits are 64-term dot products; each output is 2 renormalised experts (64- and 32-term matvecs): "
         "float32 sums of under 100 terms, O(1) values",
         stage_layer_moe},
        {"layer.moe.mixtral.tied", "layer", "mixtral", false, kTinyMixtralTied, "layer/moe_mixtral_tied.h5", "layer.moe", {1e-5, 1e-5},
         "the tiny Mixtral with two experts' router rows equal in layer 1: their scores tie exactly, torch's order "
         "among equals is unspecified; every swap must be reported as a routing near-tie; else as layer.moe.mixtral",
         stage_layer_moe},

        {"model.forward", "model", "llama", false, kTinyLlama, "model/forward.h5", "model.forward", kLogits,
         "the seed spec's logits tolerance; errors compound over layers and positions", stage_model_forward},
        {"model.kv_cache", "model", "llama", false, kTinyLlama, "model/kv_cache.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one projection + RoPE away from the residual stream", stage_model_kv_cache},
        {"model.forward.stories260k", "model", "llama", false, kStories260K, "model/forward_stories260k.h5", "model.forward", kLogits,
         "a real trained model (5 layers, GQA): the same logits tolerance", stage_model_forward},
        {"model.forward.gpt2", "model", "gpt2", false, kTinyGpt2, "model/forward_gpt2.h5", "model.forward", kLogits,
         "transformers' GPT2LMHeadModel, full-sequence forward: the same logits tolerance", stage_model_forward},
        {"model.forward.gpt2.hub", "model", "gpt2", false, kTinyGpt2Hub, "model/forward_gpt2.h5", "model.forward", kLogits,
         "the same weights from a hub-style sharded directory (un-prefixed keys, attn.bias buffers)",
         stage_model_forward},
        {"model.forward.gpt2.llmc", "model", "gpt2", false, kTinyGpt2Llmc, "model/forward_gpt2.h5", "model.forward", kLogits,
         "the same weights from an llm.c checkpoint (padded vocabulary, [out, in] matrices)", stage_model_forward},
        {"model.forward.llama-hf", "model", "llama", false, kTinyLlamaHf, "model/forward.h5", "model.forward", kLogits,
         "the tiny LLaMA from a Hugging Face directory (q/k rows permuted for rotate-half): the same logits as "
         "from the original file",
         stage_model_logits},
        {"model.forward.stories260k-hf", "model", "llama", false, kStories260KHf, "model/forward_stories260k.h5", "model.forward", kLogits,
         "stories260K converted to a Hugging Face directory: the same logits as from llama2.c's file",
         stage_model_logits},
        {"model.forward.qwen2", "model", "qwen2", false, kTinyQwen2, "model/forward_qwen2.h5", "model.forward", kLogits,
         "transformers' Qwen2ForCausalLM, full-sequence forward, q/k captured after its RoPE: the logits tolerance",
         stage_model_forward},
        {"model.forward.qwen2moe", "model", "qwen2moe", false, kTinyQwen2Moe, "model/forward_qwen2moe.h5", "model.forward", kLogits,
         "transformers' Qwen2MoeForCausalLM, full-sequence forward: the logits tolerance; expert ids exactly except at "
         "routing near-ties (reference's scores within the tolerance)",
         stage_model_forward},
        {"model.forward.mixtral", "model", "mixtral", false, kTinyMixtral, "model/forward_mixtral.h5", "model.forward", kLogits,
         "transformers' MixtralForCausalLM, full-sequence forward: the logits tolerance; expert ids exactly except at "
         "routing near-ties (reference's scores within the tolerance)",
         stage_model_forward},
        {"model.forward.mixtral.tied", "model", "mixtral", false, kTinyMixtralTied, "model/forward_mixtral_tied.h5", "model.forward", kLogits,
         "the tied-router Mixtral: free-running outputs before the first routing near-tie, teacher-forced ones re-run "
         "on the reference's experts there; the logits tolerance",
         stage_model_forward},
        {"model.kv_cache.qwen2", "model", "qwen2", false, kTinyQwen2, "model/kv_cache_qwen2.h5", "model.kv_cache", {1e-5, 1e-5},
         "k (after RoPE) and v of 2 kv heads: one RMSNorm and a biased projection from the residual stream",
         stage_model_kv_cache},
        {"model.prefill", "model", "llama", false, kTinyLlama, "model/forward.h5", "model.forward", kLogits,
         "batched prefill (the prompt as matrices, causal attention): the forward fixture's logits tolerance",
         stage_model_prefill},
        {"model.prefill.gpt2", "model", "gpt2", false, kTinyGpt2, "model/forward_gpt2.h5", "model.forward", kLogits,
         "batched prefill of GPT-2: the forward fixture's logits tolerance", stage_model_prefill},
        {"model.prefill.qwen2", "model", "qwen2", false, kTinyQwen2, "model/forward_qwen2.h5", "model.forward", kLogits,
         "batched prefill of Qwen2 (GQA 4:1): the forward fixture's logits tolerance", stage_model_prefill},
        {"model.prefill.qwen2moe", "model", "qwen2moe", false, kTinyQwen2Moe, "model/forward_qwen2moe.h5", "model.forward",
         kLogits, "the prompt in one call, each row routed to its own experts: the forward fixture's logits tolerance",
         stage_model_prefill},
        {"model.prefill.mixtral", "model", "mixtral", false, kTinyMixtral, "model/forward_mixtral.h5", "model.forward",
         kLogits, "the prompt in one call, each row routed to its own experts: the forward fixture's logits tolerance",
         stage_model_prefill},
        {"model.kv_cache.qwen2moe", "model", "qwen2moe", false, kTinyQwen2Moe, "model/kv_cache_qwen2moe.h5",
         "model.kv_cache", {1e-5, 1e-5},
         "k (after RoPE) and v: one RMSNorm and a biased projection from the residual stream, which the experts of "
         "the layers below fed",
         stage_model_kv_cache},
        {"model.kv_cache.mixtral", "model", "mixtral", false, kTinyMixtral, "model/kv_cache_mixtral.h5", "model.kv_cache",
         {1e-5, 1e-5},
         "k (after RoPE) and v: one RMSNorm and a projection from the residual stream, which the experts of the layers "
         "below fed",
         stage_model_kv_cache},
        {"model.kv_cache.paged", "model", "llama", false, kTinyLlama, "model/forward.h5", "model.forward", kLogits,
         "the forward fixture's logits tolerance against PyTorch; against our contiguous cache: bit-identical (paged "
         "attention is attention_tiled's arithmetic)",
         stage_model_paged},
        {"model.kv_cache.paged.gpt2", "model", "gpt2", false, kTinyGpt2, "model/forward_gpt2.h5", "model.forward", kLogits,
         "as model.kv_cache.paged, GPT-2 (learned positions, fused qkv)", stage_model_paged},
        {"model.kv_cache.paged.qwen2", "model", "qwen2", false, kTinyQwen2, "model/forward_qwen2.h5", "model.forward", kLogits,
         "as model.kv_cache.paged, Qwen2 (4:1 GQA: two query heads read each kv page)", stage_model_paged},
        {"model.kv_cache.paged.mistral", "model", "mistral", false, kTinyMistral, "model/forward_mistral.h5", "model.forward",
         kLogits,
         "as model.kv_cache.paged, under a window of 8: attention from the window's first position, the pages out of it "
         "given back after each step (the invariants and the pages held are checked)",
         stage_model_paged},
        {"model.kv_cache.paged.llama-dynamic", "model", "llama", false, kTinyLlamaDynamic, "model/forward_llama_dynamic.h5",
         "model.forward", kLogits, "as model.kv_cache.paged, dynamic RoPE: each row rotated for its sequence's prompt",
         stage_model_paged},
        {"model.kv_cache.gpt2", "model", "gpt2", false, kTinyGpt2, "model/kv_cache_gpt2.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one LayerNorm + linear away from the residual stream", stage_model_kv_cache},
        // Long context (docs/models.md): each RoPE scaling kind on transformers' LlamaForCausalLM and
        // Qwen2ForCausalLM, prompts past the original context; sliding windows smaller than the prompt
#define LMLAB_LONG_MODEL(suffix, family, model, file, why)                                                                 \
    {"model.forward." suffix, "model", family, false, model, "model/forward_" file ".h5", "model.forward", kLogits,          \
     "transformers' full-sequence forward: " why "; every intermediate, the logits tolerance", stage_model_forward},       \
    {"model.prefill." suffix, "model", family, false, model, "model/forward_" file ".h5", "model.forward", kLogits,          \
     "the prompt in one call: the forward fixture's logits tolerance", stage_model_prefill},                                 \
    {"model.kv_cache." suffix, "model", family, false, model, "model/kv_cache_" file ".h5", "model.kv_cache", {1e-5, 1e-5}, \
     "k (after the scaled RoPE) and v: one RMSNorm and a projection from the residual stream", stage_model_kv_cache},    \
    {"generation.greedy." suffix, "generation", family, false, model, "generation/greedy_" file ".h5", "generation.greedy", \
     kLogits, "transformers' generate(do_sample=False), 48 tokens past the original context or the window: tokens "      \
     "exactly, logits within 1e-4", stage_generation_greedy}
        LMLAB_LONG_MODEL("llama3", "llama", kTinyLlama3, "llama3",
                         "Llama 3.2-shaped (GQA 2:1, tied, theta 500000, rope_scaling llama3 x32 of 8192), 12 tokens"),
        LMLAB_LONG_MODEL("llama-linear", "llama", kTinyLlamaLinear, "llama_linear", "linear x2, 40 tokens of a 32-position model"),
        LMLAB_LONG_MODEL("llama-dynamic", "llama", kTinyLlamaDynamic, "llama_dynamic",
                         "dynamic NTK x2: 40 tokens, every row rotated for 40 (generate: each token after the prompt for pos + 1)"),
        LMLAB_LONG_MODEL("llama-yarn", "llama", kTinyLlamaYarn, "llama_yarn",
                         "yarn x4 (attention factor 1.139), 40 tokens of a 32-position model"),
        LMLAB_LONG_MODEL("qwen2-linear", "qwen2", kTinyQwen2Linear, "qwen2_linear", "linear x2 (the old key 'type'), 40 tokens"),
        LMLAB_LONG_MODEL("qwen2-dynamic", "qwen2", kTinyQwen2Dynamic, "qwen2_dynamic", "dynamic NTK x4, 40 tokens"),
        LMLAB_LONG_MODEL("qwen2-yarn", "qwen2", kTinyQwen2Yarn, "qwen2_yarn",
                         "yarn x4 with betas 16 and 2 and original_max_position_embeddings (Qwen2.5's recipe), 40 tokens"),
        LMLAB_LONG_MODEL("qwen2-llama3", "qwen2", kTinyQwen2Llama3, "qwen2_llama3", "llama3 x8 from 32 positions, 40 tokens"),
        LMLAB_LONG_MODEL("qwen2-swa", "qwen2", kTinyQwen2Swa, "qwen2_swa",
                         "use_sliding_window: layer 1 a window of 8, layer 0 every position (max_window_layers 1; "
                         "transformers 4.46.3's eager mask windows both: worked around, docs/models.md), 40 tokens"),
        LMLAB_LONG_MODEL("mistral", "mistral", kTinyMistral, "mistral", "a sliding window of 8 in all 3 layers, 24 tokens"),
#undef LMLAB_LONG_MODEL
        {"model.forward.q8_0", "model", "llama", true, kTinyLlamaQ8, "model/forward_q8_0.h5", "model.forward.q8_0", kLogits,
         "int8 tiny LLaMA (quantized on load) against scripts/ref_q8.py, runq.c's arithmetic in torch: the int8 "
         "steps are exact, the float ones (norms, attention) differ by float32 rounding as in model.forward",
         stage_model_forward_q8},
        {"model.forward.q8_0.ak42", "model", "llama", true, kTinyLlamaAk42, "model/forward_q8_0_ak42.h5", "model.forward.q8_0.ak42", kLogits,
         "llama2.c's int8 file of the tiny LLaMA (export.py's version2_export) against ref_q8.py with export.py's "
         "torch.round weights; its int8 weights must differ from quantize_model's exactly at the exact halves",
         stage_model_q8_file},

        {"generation.greedy", "generation", "llama", false, kTinyLlama, "generation/greedy.h5", "generation.greedy", kLogits,
         "tokens must match exactly; logits within the seed spec's 1e-4", stage_generation_greedy},
        {"generation.greedy.stories260k", "generation", "llama", false, kStories260K, "generation/greedy_stories260k.h5", "generation.greedy",
         kLogits, "256 greedy tokens from BOS must match exactly; logits within 1e-4", stage_generation_greedy},
        {"generation.greedy.gpt2", "generation", "gpt2", false, kTinyGpt2, "generation/greedy_gpt2.h5", "generation.greedy", kLogits,
         "transformers' generate(do_sample=False): tokens exactly, logits within 1e-4", stage_generation_greedy},
        {"generation.greedy.qwen2", "generation", "qwen2", false, kTinyQwen2, "generation/greedy_qwen2.h5", "generation.greedy", kLogits,
         "transformers' generate(do_sample=False): tokens exactly, logits within 1e-4", stage_generation_greedy},
        {"generation.serve_batch", "generation", "llama", false, kTinyLlama, "serve/batch_tiny_llama.h5", "serve.batch", kLogits,
         "10 requests served together (chunked prefill, paged cache): each one's tokens exactly as the reference "
         "alone, its logits within 1e-4; bit-identical to our run of it alone",
         stage_generation_serve_batch},
        {"generation.serve_batch.stories260k", "generation", "llama", false, kStories260K, "serve/batch_stories260k.h5", "serve.batch",
         kLogits, "the same schedules on a trained model (5 layers, GQA): tokens exactly, logits within 1e-4",
         stage_generation_serve_batch},
        {"generation.serve_batch.gpt2", "generation", "gpt2", false, kTinyGpt2, "serve/batch_gpt2.h5", "serve.batch", kLogits,
         "the same requests, each generated alone by transformers' GPT2LMHeadModel.generate(): tokens exactly, "
         "logits within 1e-4",
         stage_generation_serve_batch},
        {"generation.serve_batch.qwen2", "generation", "qwen2", false, kTinyQwen2, "serve/batch_qwen2.h5", "serve.batch", kLogits,
         "the same requests, each generated alone by transformers' Qwen2ForCausalLM.generate() (4:1 GQA, one kv "
         "page read by 4 query heads): tokens exactly, logits within 1e-4",
         stage_generation_serve_batch},
        // speculative decoding (model/serve/speculative.h): a draft guesses, the target verifies in one batched
        // forward; the output must still be the reference's greedy tokens exactly, for every draft and k.
        // The int8 drafts' family "llama q8": they run the int8 kernels too. No early exit on the tiny
        // LLaMA: its 1-layer draft keeps the 16 MB classifier (~80% of the target's cost) and agrees
        // 4-23% of the time: k = 1..8 took 2-5 s and checked nothing that stories260K's early exit does not
        {"generation.speculative.int8", "generation", "llama", true, kTinyLlama, "generation/greedy.h5", "generation.greedy", kExact,
         "tokens exactly the reference's greedy tokens (the draft changes only the speed); acceptance rates "
         "are measurements",
         stage_generation_speculative_int8},
        {"generation.speculative.early_exit.stories260k", "generation", "llama", false, kStories260K,
         "generation/greedy_stories260k.h5", "generation.greedy", kExact,
         "256 tokens from BOS exactly the reference's greedy tokens, for every early-exit depth and k",
         stage_generation_speculative_early_exit},
        {"generation.speculative.int8.stories260k", "generation", "llama", true, kStories260K,
         "generation/greedy_stories260k.h5", "generation.greedy", kExact,
         "256 tokens from BOS exactly the reference's greedy tokens with an int8 (group 4) draft",
         stage_generation_speculative_int8},
        {"generation.greedy.qwen2moe", "generation", "qwen2moe", false, kTinyQwen2Moe, "generation/greedy_qwen2moe.h5", "generation.greedy", kLogits,
         "transformers' generate(do_sample=False), 48 tokens (the context is 64): tokens exactly, logits within 1e-4",
         stage_generation_greedy},
        {"generation.greedy.mixtral", "generation", "mixtral", false, kTinyMixtral, "generation/greedy_mixtral.h5", "generation.greedy", kLogits,
         "transformers' generate(do_sample=False), 48 tokens (the context is 64): tokens exactly, logits within 1e-4",
         stage_generation_greedy},
        {"generation.serve_batch.mistral", "generation", "mistral", false, kTinyMistral, "serve/batch_mistral.h5", "serve.batch",
         kLogits,
         "the serving requests under a window of 8 (pages out of it given back), each generated alone by transformers' "
         "generate(): tokens exactly, logits within 1e-4",
         stage_generation_serve_batch},
        {"generation.serve_batch.llama-dynamic", "generation", "llama", false, kTinyLlamaDynamic, "serve/batch_llama_dynamic.h5",
         "serve.batch", kLogits,
         "the serving requests with dynamic RoPE (every row rotated for its own sequence's prompt, in any chunk): "
         "tokens exactly, logits within 1e-4",
         stage_generation_serve_batch},
        {"generation.speculative.early_exit.mistral", "generation", "mistral", false, kTinyMistral, "generation/greedy_mistral.h5",
         "generation.greedy", kExact,
         "48 tokens past the window exactly the reference's greedy tokens, rings rolled back after every rejected guess",
         stage_generation_speculative_early_exit},
        {"generation.speculative.early_exit.llama-dynamic", "generation", "llama", false, kTinyLlamaDynamic,
         "generation/greedy_llama_dynamic.h5", "generation.greedy", kExact,
         "dynamic RoPE: the target's batched verification rows rotated as one at a time: the reference's tokens exactly",
         stage_generation_speculative_early_exit},
        {"generation.speculative.early_exit.qwen2-yarn", "generation", "qwen2", false, kTinyQwen2Yarn, "generation/greedy_qwen2_yarn.h5",
         "generation.greedy", kExact, "yarn x4: the reference's tokens exactly", stage_generation_speculative_early_exit},
        {"generation.serve_batch.qwen2moe", "generation", "qwen2moe", false, kTinyQwen2Moe, "serve/batch_qwen2moe.h5", "serve.batch", kLogits,
         "the serving requests on Qwen2-MoE (each row its own experts, the shared expert), each generated alone by "
         "transformers' generate(): tokens exactly, logits within 1e-4",
         stage_generation_serve_batch},
        // the cost of int8: int8 model vs float model, reported (report.md "Measurements"), not judged;
        // only the float model's perplexity is checked against PyTorch's. Families "llama q8": it runs both
        {"generation.q8_0.cost", "generation", "llama", true, kTinyLlamaQ8, "quant/cost_tiny_llama.h5", "quant.cost", kLogits,
         "measurements (never fail unless non-finite); the float perplexity within the logits tolerance of "
         "PyTorch's",
         stage_quant_cost},
        {"generation.q8_0.cost.stories260k", "generation", "llama", true, kStories260KQ8, "quant/cost_stories260k.h5", "quant.cost", kLogits,
         "measurements (never fail unless non-finite); the float perplexity within the logits tolerance of "
         "PyTorch's",
         stage_quant_cost},

        // GGUF files of the tiny models (written like llama.cpp's converter by scripts/lmlab_ref/gguf_models.py)
        // against transformers' own GGUF loading (or, where it has a bug or no support, the workaround named):
        // every intermediate, the KV cache, greedy generation; ours on the plain path (ggml_stages.cpp)
        // (F32 llama: the stories260K.gguf rows below, llama.cpp's own conversion; a 40 MB F32 copy of the tiny
        // LLaMA would test the same reading and cost golden/ a fifteenth of its budget)
        {"model.forward.gguf.llama.f16", "model", "llama", false, kGguf_llama_f16, "model/gguf/forward_tiny_llama_f16.h5", "model.forward", kLogits,
         "F16 weights (exact in float32) against transformers' from_pretrained(gguf_file): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.llama.f16", "model", "llama", false, kGguf_llama_f16, "model/gguf/kv_cache_tiny_llama_f16.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.llama.f16", "generation", "llama", false, kGguf_llama_f16, "generation/gguf/greedy_tiny_llama_f16.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.llama.q8_0", "model", "llama", false, kGguf_llama_q8_0, "model/gguf/forward_tiny_llama_q8_0.h5", "model.forward", kLogits,
         "Q8_0 weights dequantized (d·q, exact in float32) against transformers' from_pretrained(gguf_file): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.llama.q8_0", "model", "llama", false, kGguf_llama_q8_0, "model/gguf/kv_cache_tiny_llama_q8_0.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.llama.q8_0", "generation", "llama", false, kGguf_llama_q8_0, "generation/gguf/greedy_tiny_llama_q8_0.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.llama.q6_k", "model", "llama", false, kGguf_llama_q6_k, "model/gguf/forward_tiny_llama_q6_k.h5", "model.forward", kLogits,
         "Q6_K weights dequantized (d·sc·q, exact in float32; norms F32) against transformers' from_pretrained(gguf_file): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.llama.q6_k", "model", "llama", false, kGguf_llama_q6_k, "model/gguf/kv_cache_tiny_llama_q6_k.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.llama.q6_k", "generation", "llama", false, kGguf_llama_q6_k, "generation/gguf/greedy_tiny_llama_q6_k.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.qwen2.f32", "model", "qwen2", false, kGguf_qwen2_f32, "model/gguf/forward_tiny_qwen2_f32.h5", "model.forward", kLogits,
         "F32 weights as stored against transformers' load_gguf_checkpoint, tied by hand (its from_pretrained leaves lm_head random): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.qwen2.f32", "model", "qwen2", false, kGguf_qwen2_f32, "model/gguf/kv_cache_tiny_qwen2_f32.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.qwen2.f32", "generation", "qwen2", false, kGguf_qwen2_f32, "generation/gguf/greedy_tiny_qwen2_f32.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.qwen2.q8_0", "model", "qwen2", false, kGguf_qwen2_q8_0, "model/gguf/forward_tiny_qwen2_q8_0.h5", "model.forward", kLogits,
         "Q8_0 weights dequantized (d·q, exact in float32) against transformers' load_gguf_checkpoint, tied by hand (its from_pretrained leaves lm_head random): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.qwen2.q8_0", "model", "qwen2", false, kGguf_qwen2_q8_0, "model/gguf/kv_cache_tiny_qwen2_q8_0.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.qwen2.q8_0", "generation", "qwen2", false, kGguf_qwen2_q8_0, "generation/gguf/greedy_tiny_qwen2_q8_0.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.gpt2.f32", "model", "gpt2", false, kGguf_gpt2_f32, "model/gguf/forward_tiny_gpt2_f32.h5", "model.forward", kLogits,
         "F32 weights as stored against transformers' load_gguf_checkpoint with the file's n_positions (its from_pretrained refuses 256 positions): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.gpt2.f32", "model", "gpt2", false, kGguf_gpt2_f32, "model/gguf/kv_cache_tiny_gpt2_f32.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.gpt2.f32", "generation", "gpt2", false, kGguf_gpt2_f32, "generation/gguf/greedy_tiny_gpt2_f32.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.gpt2.f16", "model", "gpt2", false, kGguf_gpt2_f16, "model/gguf/forward_tiny_gpt2_f16.h5", "model.forward", kLogits,
         "F16 weights (exact in float32) against transformers' load_gguf_checkpoint with the file's n_positions (its from_pretrained refuses 256 positions): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.gpt2.f16", "model", "gpt2", false, kGguf_gpt2_f16, "model/gguf/kv_cache_tiny_gpt2_f16.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.gpt2.f16", "generation", "gpt2", false, kGguf_gpt2_f16, "generation/gguf/greedy_tiny_gpt2_f16.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.gpt2.q8_0", "model", "gpt2", false, kGguf_gpt2_q8_0, "model/gguf/forward_tiny_gpt2_q8_0.h5", "model.forward", kLogits,
         "Q8_0 weights dequantized (d·q, exact in float32) against transformers' load_gguf_checkpoint with the file's n_positions (its from_pretrained refuses 256 positions): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.gpt2.q8_0", "model", "gpt2", false, kGguf_gpt2_q8_0, "model/gguf/kv_cache_tiny_gpt2_q8_0.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.gpt2.q8_0", "generation", "gpt2", false, kGguf_gpt2_q8_0, "generation/gguf/greedy_tiny_gpt2_q8_0.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.qwen2moe.f32", "model", "qwen2moe", false, kGguf_qwen2moe_f32, "model/gguf/forward_tiny_qwen2moe_f32.h5", "model.forward", kLogits,
         "F32 weights as stored against transformers' from_pretrained(gguf_file): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.qwen2moe.f32", "model", "qwen2moe", false, kGguf_qwen2moe_f32, "model/gguf/kv_cache_tiny_qwen2moe_f32.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.qwen2moe.f32", "generation", "qwen2moe", false, kGguf_qwen2moe_f32, "generation/gguf/greedy_tiny_qwen2moe_f32.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.qwen2moe.f16", "model", "qwen2moe", false, kGguf_qwen2moe_f16, "model/gguf/forward_tiny_qwen2moe_f16.h5", "model.forward", kLogits,
         "F16 weights (exact in float32) against transformers' from_pretrained(gguf_file): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.qwen2moe.f16", "model", "qwen2moe", false, kGguf_qwen2moe_f16, "model/gguf/kv_cache_tiny_qwen2moe_f16.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.qwen2moe.f16", "generation", "qwen2moe", false, kGguf_qwen2moe_f16, "generation/gguf/greedy_tiny_qwen2moe_f16.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.qwen2moe.q8_0", "model", "qwen2moe", false, kGguf_qwen2moe_q8_0, "model/gguf/forward_tiny_qwen2moe_q8_0.h5", "model.forward", kLogits,
         "Q8_0 weights dequantized (d·q, exact in float32) against transformers' from_pretrained(gguf_file): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.qwen2moe.q8_0", "model", "qwen2moe", false, kGguf_qwen2moe_q8_0, "model/gguf/kv_cache_tiny_qwen2moe_q8_0.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.qwen2moe.q8_0", "generation", "qwen2moe", false, kGguf_qwen2moe_q8_0, "generation/gguf/greedy_tiny_qwen2moe_q8_0.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.mixtral.f32", "model", "mixtral", false, kGguf_mixtral_f32, "model/gguf/forward_tiny_mixtral_f32.h5", "model.forward", kLogits,
         "F32 weights as stored against the gguf package's reader into MixtralForCausalLM (transformers 4.46 has no GGUF Mixtral): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.mixtral.f32", "model", "mixtral", false, kGguf_mixtral_f32, "model/gguf/kv_cache_tiny_mixtral_f32.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.mixtral.f32", "generation", "mixtral", false, kGguf_mixtral_f32, "generation/gguf/greedy_tiny_mixtral_f32.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.mixtral.f16", "model", "mixtral", false, kGguf_mixtral_f16, "model/gguf/forward_tiny_mixtral_f16.h5", "model.forward", kLogits,
         "F16 weights (exact in float32) against the gguf package's reader into MixtralForCausalLM (transformers 4.46 has no GGUF Mixtral): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.mixtral.f16", "model", "mixtral", false, kGguf_mixtral_f16, "model/gguf/kv_cache_tiny_mixtral_f16.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.mixtral.f16", "generation", "mixtral", false, kGguf_mixtral_f16, "generation/gguf/greedy_tiny_mixtral_f16.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.mixtral.q8_0", "model", "mixtral", false, kGguf_mixtral_q8_0, "model/gguf/forward_tiny_mixtral_q8_0.h5", "model.forward", kLogits,
         "Q8_0 weights dequantized (d·q, exact in float32) against the gguf package's reader into MixtralForCausalLM (transformers 4.46 has no GGUF Mixtral): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.mixtral.q8_0", "model", "mixtral", false, kGguf_mixtral_q8_0, "model/gguf/kv_cache_tiny_mixtral_q8_0.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.mixtral.q8_0", "generation", "mixtral", false, kGguf_mixtral_q8_0, "generation/gguf/greedy_tiny_mixtral_q8_0.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},

        // K-quant files need rows of whole 256-blocks: 256-wide twins of the 64-wide tiny models (gguf_models.WIDE)
        {"model.forward.gguf.gpt2-256.q6_k", "model", "gpt2", false, kGguf_gpt2_256_q6_k, "model/gguf/forward_tiny_gpt2_256_q6_k.h5", "model.forward", kLogits,
         "Q6_K weights dequantized (d·sc·q, exact in float32) against transformers' load_gguf_checkpoint with the file's n_positions (bug 2): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.gpt2-256.q6_k", "model", "gpt2", false, kGguf_gpt2_256_q6_k, "model/gguf/kv_cache_tiny_gpt2_256_q6_k.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.gpt2-256.q6_k", "generation", "gpt2", false, kGguf_gpt2_256_q6_k, "generation/gguf/greedy_tiny_gpt2_256_q6_k.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.qwen2moe-256.q6_k", "model", "qwen2moe", false, kGguf_qwen2moe_256_q6_k, "model/gguf/forward_tiny_qwen2moe_256_q6_k.h5", "model.forward", kLogits,
         "Q6_K weights dequantized (d·sc·q, exact in float32) against the gguf package's reader into Qwen2MoeForCausalLM (bug 3): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.qwen2moe-256.q6_k", "model", "qwen2moe", false, kGguf_qwen2moe_256_q6_k, "model/gguf/kv_cache_tiny_qwen2moe_256_q6_k.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.qwen2moe-256.q6_k", "generation", "qwen2moe", false, kGguf_qwen2moe_256_q6_k, "generation/gguf/greedy_tiny_qwen2moe_256_q6_k.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        {"model.forward.gguf.mixtral-256.q6_k", "model", "mixtral", false, kGguf_mixtral_256_q6_k, "model/gguf/forward_tiny_mixtral_256_q6_k.h5", "model.forward", kLogits,
         "Q6_K weights dequantized (d·sc·q, exact in float32) against the gguf package's reader into MixtralForCausalLM (no GGUF Mixtral in transformers 4.46): the logits tolerance", stage_gguf_forward},
        {"model.kv_cache.gguf.mixtral-256.q6_k", "model", "mixtral", false, kGguf_mixtral_256_q6_k, "model/gguf/kv_cache_tiny_mixtral_256_q6_k.h5", "model.kv_cache", {1e-5, 1e-5},
         "k and v are one norm and one projection away from the residual stream, as model.kv_cache", stage_gguf_kv_cache},
        {"generation.greedy.gguf.mixtral-256.q6_k", "generation", "mixtral", false, kGguf_mixtral_256_q6_k, "generation/gguf/greedy_tiny_mixtral_256_q6_k.h5", "generation.greedy", kLogits,
         "16 tokens of transformers' generate(do_sample=False) on the GGUF model: tokens exactly, logits within 1e-4", stage_gguf_greedy},
        // stories260K as llama.cpp's own tools made it (../shared): the F32 conversion's forward against the llama2.c
        // file's fixture (the same weights, the same Meta q/k order); generation (the files say context 128, so not
        // the llama2.c fixture's 256 tokens) and the Q8_0 quantization against transformers' loading
        {"model.forward.gguf.stories260k", "model", "llama", false, kStories260KGguf, "model/forward_stories260k.h5",
         "model.forward", kLogits,
         "llama.cpp's llama-convert-llama2c-to-ggml output against llama2.c's file's reference (llama_ref): the same "
         "F32 weights, the logits tolerance",
         stage_gguf_forward},
        {"generation.greedy.gguf.stories260k", "generation", "llama", false, kStories260KGguf,
         "generation/gguf/greedy_stories260k_f32.h5", "generation.greedy", kLogits,
         "120 greedy tokens from BOS (the file says context 128) against transformers' generate() on the file: tokens "
         "exactly, logits within 1e-4",
         stage_gguf_greedy},
        {"model.forward.gguf.stories260k.q8_0", "model", "llama", false, kStories260KGgufQ8,
         "model/gguf/forward_stories260k_q8_0.h5", "model.forward", kLogits,
         "llama-quantize's Q8_0 file (ffn_down, rows of 172, left F16) against transformers' GGUF loading (pad "
         "0xFFFFFFFF worked around): dequantized weights, the logits tolerance",
         stage_gguf_forward},
        {"generation.greedy.gguf.stories260k.q8_0", "generation", "llama", false, kStories260KGgufQ8,
         "generation/gguf/greedy_stories260k_q8_0.h5", "generation.greedy", kLogits,
         "120 greedy tokens from BOS against transformers' generate() on the Q8_0 file: tokens exactly, logits within 1e-4",
         stage_gguf_greedy},
        // verify --against's numbers (harness/quantization.h) against PyTorch's on the same two files
        {"quant.report.stories260k.q8_0", "generation", "llama", false, kStories260KGgufQ8, "quant/report_stories260k_q8_0.h5",
         "quant.report", kQuantReport,
         "lmlab verify --against's report of llama.cpp's Q8_0 stories260K against its F32 file (per tensor added / "
         "inherited / total, per layer, KL and top-1 per scored position, both perplexities; llama-perplexity's "
         "chunks) against PyTorch computing the same on transformers' GGUF models",
         stage_quant_report},
        {"tokenizer.default", "tokenizer", "", false, kTinyLlama, "tokenizer/default.h5", "tokenizer", kExact,
         "token ids: SentencePiece's exactly (the tiny LLaMA's trained 16384-piece vocabulary)", stage_tokenizer},
        {"tokenizer.llama2", "tokenizer", "", false, "shared:tokenizers/llama2/tokenizer.bin", "tokenizer/llama2.h5", "tokenizer", kExact,
         "token ids: SentencePiece's exactly (Llama 2, 32000 pieces)", stage_tokenizer},
        {"tokenizer.stories260k", "tokenizer", "", false, "shared:models/stories260K/tok512.bin", "tokenizer/stories260k.h5", "tokenizer",
         kExact, "token ids: SentencePiece's exactly (stories260K's 512 pieces)", stage_tokenizer},
        {"tokenizer.gpt2", "tokenizer", "", false, kGpt2Tokenizer, "tokenizer/gpt2.h5", "tokenizer", kExact,
         "token ids: tiktoken's and HF tokenizers' exactly (they agree), from encoder.json + vocab.bpe", stage_tokenizer},
        {"tokenizer.gpt2.json", "tokenizer", "", false, kGpt2TokenizerJson, "tokenizer/gpt2.h5", "tokenizer", kExact,
         "the same ids from the same vocabulary in Hugging Face's tokenizer.json format", stage_tokenizer},
        {"tokenizer.qwen", "tokenizer", "", false, "shared:tokenizers/qwen/tokenizer.json", "tokenizer/qwen.h5", "tokenizer", kExact,
         "token ids: HF tokenizers' exactly (NFC, the Split regex from the file, added tokens recognised)",
         stage_tokenizer},
        {"tokenizer.llama3", "tokenizer", "", false, "shared:tokenizers/llama3/tokenizer.json", "tokenizer/llama3.h5", "tokenizer",
         kExact,
         "token ids: HF tokenizers' exactly (Llama 3.1: digits in runs of three, ignore_merges, special tokens in "
         "the text recognised; without the post-processor's BOS)",
         stage_tokenizer},
        {"tokenizer.gguf.gpt2", "tokenizer", "", false, "models/gguf/gpt2-tokenizer.gguf", "tokenizer/gguf_gpt2.h5", "tokenizer",
         kExact, "tokenizer.gpt2's texts and ids, the vocabulary and merges read from a GGUF file's metadata (pre 'gpt-2', "
         "as llama.cpp's converter writes it)", stage_tokenizer},
        {"tokenizer.gguf.qwen2", "tokenizer", "", false, "models/gguf/qwen2-tokenizer.gguf", "tokenizer/gguf_qwen2.h5", "tokenizer",
         kExact, "tokenizer.qwen's texts and ids from a GGUF file's metadata (pre 'qwen2': the pre-tokenizer's regex by "
         "name, added tokens typed CONTROL)", stage_tokenizer},
    };
    return table;
}

const Stage* find_stage(const std::string& id) {
    for (const Stage& s : stages())
        if (id == s.id) return &s;
    return nullptr;
}

}  // namespace lmlab
