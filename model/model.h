// The model: its configuration and its weights, exactly as loaded from a file.
//
// One engine, several families. A family (Arch) is a hard-coded pipeline in its own file under
// model/families/, described by its row in model/family.h; the Config spells out every choice that
// differs between them (which norm, which activation, how positions enter, which projections carry
// a bias) so that a reader sees them in one place, and validate() refuses a combination the
// family's block does not implement.
//
// Loading parses, it does not just validate: every loader returns a Model whose every tensor has
// the shape its Config demands, or throws ModelError naming the file, the tensor, the expected and
// the actual shape. No later code re-checks shapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/ggml_quant.h"
#include "kernels/kernels.h"

namespace lmlab {

// Every "this input is bad" error of the model layer (files, configs, token ids, the KV cache,
// tokenizers): the message names the file or value, what was expected, and what to do.
struct ModelError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// "[4, 64]"; a dimension of SIZE_MAX (the harness's "any length") prints as "*"
std::string shape_str(std::span<const std::size_t> shape);

// Which family a model is: the key of its row in model/family.h (which says what each one is).
enum class Arch { Llama, Gpt2, Qwen2, Qwen2Moe, Mixtral, Mistral };
enum class NormKind { RMSNorm, LayerNorm };
enum class Activation { SwiGLU, GeluTanh, GeluErf };
enum class Positions { Rope, Learned };

// The family's name ("llama", "gpt2", "qwen2", "qwen2moe", "mixtral", "mistral": its row's name).
const char* arch_name(Arch a);
// The family of that name; throws ModelError naming `source` and the known names.
Arch parse_arch(const std::string& name, const std::string& source);

struct Config {
    Arch arch = Arch::Llama;
    std::size_t dim = 0;          // width of the residual stream
    std::size_t n_layers = 0;
    std::size_t n_heads = 0;      // query heads
    std::size_t n_kv_heads = 0;   // key/value heads (< n_heads: grouped-query attention)
    std::size_t ffn_dim = 0;      // hidden width of the feed-forward (MoE: of each expert)
    std::size_t vocab_size = 0;
    std::size_t max_seq_len = 0;  // context length: the KV cache (and GPT-2's position table) holds this many positions

    NormKind norm = NormKind::RMSNorm;
    float norm_eps = 1e-5f;
    Activation activation = Activation::SwiGLU;
    Positions positions = Positions::Rope;
    float rope_theta = 10000.0f;
    RopeStyle rope_style = RopeStyle::AdjacentPairs;
    // config.json's rope_scaling (kernels.h: how a long-context model stretches RoPE); kind None:
    // plain RoPE. With a scaling, max_seq_len is the stretched context.
    RopeScaling rope_scaling;
    // Sliding-window attention (Mistral; Qwen2 with use_sliding_window): in the layers from
    // window_from_layer on, a query at position p attends to positions p - sliding_window + 1 .. p
    // only, and their KV cache keeps only those (model/kv_cache.h). 0: every position, every layer.
    std::size_t sliding_window = 0;
    std::size_t window_from_layer = 0;  // Qwen2's max_window_layers: the layers below see every position
    bool qkv_bias = false;   // q, k, v projections carry a bias
    bool out_bias = false;   // the attention output projection carries a bias
    bool ffn_bias = false;   // the feed-forward projections carry biases
    bool tied_embeddings = false;  // classifier = token embedding matrix

    // Mixture of experts (Qwen2Moe, Mixtral; all 0 / false otherwise): every layer's feed-forward
    // is n_experts SwiGLU experts of width ffn_dim, of which the router picks top_k per token.
    std::size_t n_experts = 0;       // HF num_experts (Qwen2-MoE) / num_local_experts (Mixtral)
    std::size_t top_k = 0;           // HF num_experts_per_tok
    bool norm_topk_prob = false;     // the k chosen probabilities are rescaled to sum to 1 (Mixtral: always)
    std::size_t shared_ffn_dim = 0;  // Qwen2-MoE's shared expert width (every token, sigmoid-gated); 0 = none
    bool moe() const { return n_experts > 0; }

    // The window of `layer`: sliding_window when it has one, else 0 (every position).
    std::size_t window(std::size_t layer) const { return sliding_window && layer >= window_from_layer ? sliding_window : 0; }
    std::size_t head_dim() const { return dim / n_heads; }
    std::size_t kv_dim() const { return head_dim() * n_kv_heads; }
    // Checks the numbers make a model (positive, n_heads divides dim, n_kv_heads divides n_heads,
    // even head_dim for RoPE) and that the family's block implements every choice made (its row's
    // check: e.g. a GPT-2 with RMSNorm is refused). Throws ModelError naming `source` and the value.
    void validate(const std::string& source) const;
    // The fixed choices of a family (dims left at 0): start from these, then set the numbers.
    static Config of(Arch arch);
};

// A norm's parameters: weight [dim]; bias [dim] for LayerNorm, empty for RMSNorm.
struct Norm {
    std::vector<float> weight, bias;
};

// Int8 weights in Q8_0 (kernels.h, llama2.c's runq.c): a matrix [rows, cols] as int8 values and
// one float scale per group of `group` consecutive elements of a row: w[i] ≈ q[i] · scales[i / group].
// group 0: absent (a float model).
struct QuantizedMatrix {
    std::vector<std::int8_t> q;  // [rows * cols]
    std::vector<float> scales;   // [rows * cols / group]
    std::size_t group = 0;
    bool empty() const { return group == 0; }
};

// A matrix [rows, cols] in one of ggml's block types, as a GGUF file holds it (F16, BF16, Q8_0,
// Q4_K, ...: kernels/ggml_quant.h): each row is row_bytes(type, cols) bytes. rows 0: absent.
struct GgmlMatrix {
    ggml::Type type = ggml::Type::F32;
    std::size_t rows = 0, cols = 0;
    std::vector<std::uint8_t> data;  // [rows * row_bytes(type, cols)]
    bool empty() const { return rows == 0; }
    std::span<const std::uint8_t> row(std::size_t r) const {
        const std::size_t n = data.size() / rows;
        return std::span<const std::uint8_t>(data).subspan(r * n, n);
    }
};

// A linear layer: w [out, in] row-major (nn.Linear's layout), b [out] or empty (no bias).
// Quantized (quantize_model, an int8 llama2.c file): q8 holds the weights and w is empty; from a
// GGUF file in another type than F32: gg holds them (and w is empty). The bias stays float.
struct Linear {
    std::vector<float> w, b;
    QuantizedMatrix q8;
    GgmlMatrix gg;
};

// One SwiGLU feed-forward: w_down · (silu(w_gate x) ⊙ w_up x). An expert of a mixture of experts.
struct Expert {
    Linear w_gate;  // [ffn_dim, dim] (HF gate_proj, Mixtral w1)
    Linear w_up;    // [ffn_dim, dim] (HF up_proj, Mixtral w3)
    Linear w_down;  // [dim, ffn_dim] (HF down_proj, Mixtral w2)
};

// One transformer block's weights. Each family uses the fields its forward file names.
struct LayerWeights {
    Norm attn_norm;      // LLaMA attention_norm, GPT-2 ln_1
    Linear wq, wk, wv;   // LLaMA: [n_heads*head_dim, dim], [kv_dim, dim], [kv_dim, dim]
    Linear wqkv;         // GPT-2 c_attn: q, k and v fused, [3*dim, dim]: one matvec, then three slices
    Linear wo;           // [dim, n_heads*head_dim]: LLaMA wo, GPT-2 attn.c_proj
    Norm ffn_norm;       // LLaMA ffn_norm, GPT-2 ln_2
    Linear w_gate;       // LLaMA w1 [ffn_dim, dim] (SwiGLU's gate; GPT-2 has none)
    Linear w_up;         // LLaMA w3, GPT-2 c_fc: [ffn_dim, dim]
    Linear w_down;       // LLaMA w2, GPT-2 mlp.c_proj: [dim, ffn_dim]
    // Mixture of experts only (Config::moe()): the three above stay empty
    Linear router;                // HF mlp.gate / block_sparse_moe.gate: [n_experts, dim], one score per expert
    std::vector<Expert> experts;  // [n_experts], each of width ffn_dim
    Expert shared_expert;         // Qwen2-MoE: width shared_ffn_dim, run for every token; empty otherwise
    Linear shared_gate;           // Qwen2-MoE shared_expert_gate: [1, dim], sigmoid of it scales the shared expert
};

// The vocabulary stored with a model (pieces with ' ' for SentencePiece's U+2581, and scores).
struct Vocabulary {
    std::vector<std::string> pieces;
    std::vector<float> scores;
};

struct Model {
    Config config;
    std::string source;                  // the file or directory it came from
    std::string format;                  // its file format: "hdf5", "llama2.c", "llama2.c int8", "llm.c", "hf", "gguf"
    std::vector<float> tok_embeddings;   // [vocab_size, dim]
    std::vector<float> pos_embeddings;   // [max_seq_len, dim]: GPT-2's learned positions; empty with RoPE
    std::vector<LayerWeights> layers;    // [n_layers]
    Norm final_norm;                     // [dim]
    std::vector<float> output;           // [vocab_size, dim]; empty when tied
    std::optional<Vocabulary> vocabulary;  // when the file carries one
    std::vector<int> eos_token_ids;        // Hugging Face config.json's eos_token_id (one id or a list): ends a generation
    // Quantized models only (then tok_embeddings and output are empty): the embedding table as int8,
    // a row dequantized on lookup (the floats runq.c's dequantized table holds), and the untied
    // classifier; tied, the classifier is tok_embeddings_q8 (as runq.c's wcls = q_tokens).
    QuantizedMatrix tok_embeddings_q8;  // [vocab_size, dim]
    QuantizedMatrix output_q8;          // [vocab_size, dim]; empty when tied
    // From a GGUF file whose embedding or classifier is not F32 (then tok_embeddings / output are
    // empty): the rows in their ggml type, a row dequantized on lookup; tied, the classifier is
    // tok_embeddings_gg (when that is in a ggml type).
    GgmlMatrix tok_embeddings_gg;       // [vocab_size, dim]
    GgmlMatrix output_gg;               // [vocab_size, dim]; empty when tied or F32

    // The classifier matrix [vocab_size, dim]: output, or tok_embeddings when tied.
    std::span<const float> classifier() const { return config.tied_embeddings ? tok_embeddings : output; }
    bool quantized() const { return !tok_embeddings_q8.empty(); }
    const QuantizedMatrix& classifier_q8() const { return config.tied_embeddings ? tok_embeddings_q8 : output_q8; }
    // The classifier in a ggml type (empty when it is float).
    const GgmlMatrix& classifier_gg() const { return config.tied_embeddings ? tok_embeddings_gg : output_gg; }
};

// ---- Int8 weights (model/quantize.cpp) ----------------------------------------------------------

// Q8_0 of any family, as runq.c: every Linear, the classifier and the token embedding table are
// quantized in groups of `group` along each row (the embedding rows are dequantized on lookup);
// norms, biases and GPT-2's position table stay float. The float weights are freed. Throws
// ModelError naming the tensor when a row length is not a multiple of `group`, or a weight is not
// finite. A model that is already quantized is refused.
Model quantize_model(Model m, std::size_t group = 64);

// A ggml type (GGUF's blocks, kernels/ggml_quant.h) for a whole float model, as llama.cpp's quantizer
// makes it with --pure (every quantizable tensor in `type`, no per-tensor mix like Q4_K_M's, no
// importance matrix): the Linears (experts included), the token embeddings and the classifier, each
// row by ggml's reference quantizer; norms, biases, GPT-2's positions and the MoE router stay
// float (llama.cpp keeps them so). A tensor whose rows are not whole blocks of `type` falls back as
// llama.cpp's quantizer does (gguf_type_for_rows); notes (optional) get one line per fallback.
// The float weights are freed. ModelError for a model that is already quantized (int8, or any
// tensor in a ggml type), a non-weight type or F32, and a non-finite weight (naming tensor, row).
Model quantize_model_gguf(Model m, ggml::Type type, std::vector<std::string>* notes = nullptr);
// What `--quantize` asks for (one spelling for every command and the stage table's "#..." model
// suffix): "q8_0" = llama2.c's runq.c int8 in groups of `group` (quantize_model); "gguf-<type>" =
// one of ggml's weight types ("gguf-q4_k", "gguf-q8_0", case-insensitive; quantize_model_gguf).
struct Quantization {
    enum class Kind { Int8, Ggml } kind = Kind::Int8;
    std::size_t group = 64;              // Int8
    ggml::Type type = ggml::Type::Q8_0;  // Ggml
    std::string name() const;            // "Q8_0 (runq.c, group 64)", "Q4_K"
};
// ModelError naming the spelling and the known ones for anything else.
Quantization parse_quantization(const std::string& spec, std::size_t group = 64);
// quantize_model or quantize_model_gguf, as q says.
Model quantize(Model m, const Quantization& q, std::vector<std::string>* notes = nullptr);

// The type a tensor of `type` with rows of `cols` gets: `type` when the rows are whole blocks, else
// llama.cpp's fallback (Q2_K, Q3_K -> Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0), else F16.
ggml::Type gguf_type_for_rows(ggml::Type type, std::size_t cols);

// Bytes of weights the model holds (float tensors, int8 values and their scales; not the
// vocabulary): what --quantize saves.
std::size_t weight_bytes(const Model& m);

}  // namespace lmlab
