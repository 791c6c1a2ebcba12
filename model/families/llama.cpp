// LLaMA (Touvron et al. 2023; llama2.c's run.c computes the same thing) and Qwen2 (Alibaba: the
// same block with biases on the q, k, v projections), over T rows at once (decode: T = 1):
//
//   x ─► RMSNorm ─► q = RoPE(wq·), k = RoPE(wk·), v = wv· ─► attend over the cache ─► wo ─► + x ─► h
//   h ─► RMSNorm ─► w2 · (silu(w1·) ⊙ w3·)                                          ─► + h ─► out
//
// Shapes per row: x [dim]; q [n_heads·head_dim]; k, v [kv_dim]; heads [n_heads·head_dim];
// gate/up [ffn_dim]. Every buffer is RunState's, [T, width]: row t is token t.
//
// Qwen2-MoE and Mixtral are this block with the SwiGLU replaced by a mixture of experts (moe.cpp).
// This file also holds the two families' tensor tables and their config.json mapping.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <optional>
#include <string_view>

#include "model/families/families.h"
#include "model/load/config_json.h"
#include "model/load/gguf.h"
#include "model/tensors.h"

namespace lmlab {

// ---- The block -----------------------------------------------------------------------------------

void llama_attention(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t T, RowCache& cache,
                     RunState& s) {
    const std::size_t hd = c.head_dim(), qd = c.n_heads * hd, kv = c.kv_dim();
    // projections: attn_norm [T, dim] -> q [T, n_heads*head_dim], k, v [T, kv_dim]
    project_rows(w.wq, rows(s.attn_norm, T, c.dim), rows(s.q, T, qd), T, s);
    project_rows(w.wk, rows(s.attn_norm, T, c.dim), rows(s.k, T, kv), T, s);
    project_rows(w.wv, rows(s.attn_norm, T, c.dim), rows(s.v, T, kv), T, s);
    for (std::size_t t = 0; t < T; ++t) {
        // position enters only here: q and k are rotated by angles proportional to the row's position,
        // at the frequencies of the model's RoPE (scaled: kernels.h; dynamic: for the row's sequence length)
        const double attention_factor = rope_frequencies(hd, c.rope_theta, c.rope_scaling, cache.seq_len(t), s.inv_freq);
        rope(row(s.q, t, qd), hd, cache.pos(t), s.inv_freq, attention_factor, c.rope_style);
        rope(row(s.k, t, kv), hd, cache.pos(t), s.inv_freq, attention_factor, c.rope_style);
        cache.append(layer, t, row(s.k, t, kv), row(s.v, t, kv));
    }
    attend_rows(c, layer, T, cache, s);           // -> s.heads
    project_rows(w.wo, rows(s.heads, T, qd), rows(s.attn_out, T, c.dim), T, s);  // mix the heads back into the residual width
}

void llama_ffn(const Config& c, const LayerWeights& w, std::size_t T, RunState& s) {
    const std::size_t f = c.ffn_dim;
    project_rows(w.w_gate, rows(s.ffn_norm, T, c.dim), rows(s.gate, T, f), T, s);  // [T, ffn_dim]
    project_rows(w.w_up, rows(s.ffn_norm, T, c.dim), rows(s.up, T, f), T, s);      // [T, ffn_dim]
    // silu(gate) * up: the gate decides how much of each "up" feature passes
    swiglu(rows(s.gate, T, f), rows(s.up, T, f), rows(s.act, T, f));
    project_rows(w.w_down, rows(s.act, T, f), rows(s.ffn_out, T, c.dim), T, s);  // [T, ffn_dim] -> [T, dim]
}

void llama_block_with(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, RunState& s,
                      void (*ffn)(const Config&, const LayerWeights&, std::size_t, RunState&)) {
    const Config& c = m.config;
    const LayerWeights& w = m.layers[layer];
    const std::size_t dim = c.dim;
    for (std::size_t t = 0; t < T; ++t) rmsnorm(row(s.x, t, dim), w.attn_norm.weight, c.norm_eps, row(s.attn_norm, t, dim));
    llama_attention(c, w, layer, T, cache, s);
    add(rows(s.x, T, dim), rows(s.attn_out, T, dim), rows(s.h, T, dim));  // first residual: h = x + attention

    for (std::size_t t = 0; t < T; ++t) rmsnorm(row(s.h, t, dim), w.ffn_norm.weight, c.norm_eps, row(s.ffn_norm, t, dim));
    ffn(c, w, T, s);
    add(rows(s.h, T, dim), rows(s.ffn_out, T, dim), rows(s.out, T, dim));  // second residual: the block's output
}

void llama_block(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, RunState& s) {
    llama_block_with(m, layer, T, cache, s, llama_ffn);
}

// ---- What the LLaMA-block families share ---------------------------------------------------------

std::string llama_like_check(const Config& c, bool qkv_bias) {
    if (c.norm != NormKind::RMSNorm) return "the llama block uses RMSNorm";
    if (c.positions != Positions::Rope) return "the llama block uses RoPE positions";
    if (c.out_bias || c.ffn_bias) return "the llama block has no bias on the output or feed-forward projections";
    if (c.qkv_bias != qkv_bias)
        return qkv_bias ? "this family always has q/k/v biases" : "this family has no q/k/v biases";
    if (c.head_dim() % 2 != 0) return "head_dim must be even for RoPE";
    if (!(c.rope_theta > 0)) return "rope_theta must be positive";
    return "";
}

void rope_scaling_from_hf(const ConfigJson& j, Config& c) {
    if (!j.has("rope_scaling")) return;  // absent or null: plain RoPE
    const nlohmann::json& r = j.raw("rope_scaling");
    const auto bad = [&](const std::string& what) {
        return ModelError(fmt::format("{}: rope_scaling is {}: {}", j.path(), r.dump(), what));
    };
    if (!r.is_object()) throw bad("expected an object such as {\"rope_type\": \"llama3\", \"factor\": 8.0, ...}");
    // transformers reads rope_type, or the older name type
    const nlohmann::json& type = r.contains("rope_type") ? r["rope_type"] : r.contains("type") ? r["type"] : nlohmann::json();
    if (!type.is_string()) throw bad("rope_scaling.rope_type (or type) must name the kind");
    const std::string kind = type.get<std::string>();
    const auto number = [&](const char* key, std::optional<double> fallback) {
        if (!r.contains(key) || r[key].is_null()) {
            if (fallback) return *fallback;
            throw bad(fmt::format("rope_scaling.{} is missing (the {} kind needs it)", key, kind));
        }
        if (!r[key].is_number()) throw bad(fmt::format("rope_scaling.{} is {}, expected a number", key, r[key].dump()));
        return r[key].get<double>();
    };
    // the keys each kind reads in transformers 4.46.3; any other key is refused: 4.46.3 ignores it,
    // another implementation may not (Qwen2.5's yarn configs carry original_max_position_embeddings,
    // which 4.46.3 ignores and later versions read: accepted when it equals max_position_embeddings)
    const auto only = [&](std::initializer_list<const char*> keys) {
        for (const auto& [key, value] : r.items()) {
            if (key == "rope_type" || key == "type") continue;
            const std::string& name = key;  // a structured binding cannot be captured by a lambda before C++20
            if (std::find_if(keys.begin(), keys.end(), [&](const char* k) { return name == k; }) != keys.end()) continue;
            if (key == "original_max_position_embeddings" && (kind == "yarn" || kind == "dynamic") && value.is_number_unsigned() &&
                value.get<std::uint64_t>() == c.max_seq_len)
                continue;
            throw bad(fmt::format("rope_scaling.{} is not read by transformers 4.46.3's {} RoPE (an engine that reads it "
                                  "would compute another model); remove it or make it equal max_position_embeddings",
                                  key, kind));
        }
    };
    RopeScaling& s = c.rope_scaling;
    const std::size_t context = c.max_seq_len;  // max_position_embeddings
    if (kind == "default") return;
    if (kind == "linear") {
        only({"factor"});
        s.kind = RopeScalingKind::Linear;
    } else if (kind == "dynamic") {
        only({"factor"});
        s.kind = RopeScalingKind::Dynamic;
    } else if (kind == "yarn") {
        only({"factor", "attention_factor", "beta_fast", "beta_slow"});
        s.kind = RopeScalingKind::Yarn;
        // transformers: `get("beta_fast") or 32`, so 0 means the default too
        s.beta_fast = number("beta_fast", 32.0);
        s.beta_slow = number("beta_slow", 1.0);
        if (s.beta_fast == 0) s.beta_fast = 32.0;
        if (s.beta_slow == 0) s.beta_slow = 1.0;
    } else if (kind == "llama3") {
        only({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"});
        s.kind = RopeScalingKind::Llama3;
        s.low_freq_factor = number("low_freq_factor", std::nullopt);
        s.high_freq_factor = number("high_freq_factor", std::nullopt);
        const double original = number("original_max_position_embeddings", std::nullopt);
        if (!(original >= 1) || original != std::floor(original) || original > 1e9)
            throw bad("rope_scaling.original_max_position_embeddings must be a positive integer");
        s.original_context = static_cast<std::size_t>(original);
    } else {
        throw bad(fmt::format("RoPE scaling of type '{}' is not implemented (this engine implements linear, dynamic, "
                              "yarn and llama3, as transformers 4.46.3 computes them); it would compute a different model",
                              kind));
    }
    s.factor = number("factor", std::nullopt);
    if (!(s.factor >= 1.0) || !std::isfinite(s.factor) || s.factor > 1e6)
        throw bad(fmt::format("rope_scaling.factor {} must be at least 1", s.factor));
    if (s.kind == RopeScalingKind::Yarn) s.attention_factor = number("attention_factor", 0.1 * std::log(s.factor) + 1.0);
    if (s.kind != RopeScalingKind::Llama3) {
        // transformers 4.46.3's linear, dynamic and yarn take max_position_embeddings as the context the
        // model was trained on; the stretched context is factor times it (vLLM's reading as well)
        s.original_context = context;
        c.max_seq_len = static_cast<std::size_t>(static_cast<double>(context) * s.factor);
    }
}

Config llama_like_config(const ConfigJson& j, Config c) {
    c.dim = j.size("hidden_size");
    c.n_layers = j.size("num_hidden_layers");
    c.n_heads = j.size("num_attention_heads");
    c.n_kv_heads = j.has("num_key_value_heads") ? j.size("num_key_value_heads") : c.n_heads;  // null: no GQA
    c.ffn_dim = j.size("intermediate_size");
    c.vocab_size = j.size("vocab_size");
    c.max_seq_len = j.size("max_position_embeddings");
    c.norm_eps = static_cast<float>(j.number("rms_norm_eps", c.norm_eps));
    c.rope_theta = static_cast<float>(j.number("rope_theta", c.rope_theta));
    // Hugging Face's checkpoints pair RoPE dimensions as (i, i + head_dim/2): the conversion from
    // Meta's weights permuted the rows of wq and wk so that this gives the same model (docs/models.md).
    c.rope_style = RopeStyle::RotateHalf;
    // Features our forward does not implement: refused by name, never ignored.
    const std::string act = j.text("hidden_act", "silu");
    if (act != "silu")
        throw ModelError(fmt::format("{}: hidden_act '{}' is not supported (the SwiGLU feed-forward uses silu)", j.path(), act));
    rope_scaling_from_hf(j, c);
    if (j.has("partial_rotary_factor") && j.number("partial_rotary_factor", 1.0) != 1.0)
        throw ModelError(fmt::format("{}: partial_rotary_factor is {}: rotating part of each head is not implemented",
                                     j.path(), j.dump("partial_rotary_factor")));
    if (j.has("head_dim") && j.size("head_dim") != c.dim / c.n_heads)
        throw ModelError(fmt::format("{}: head_dim {} differs from hidden_size / num_attention_heads = {}; this engine "
                                     "derives head_dim",
                                     j.path(), j.size("head_dim"), c.dim / c.n_heads));
    c.tied_embeddings = j.boolean("tie_word_embeddings", false);  // LlamaConfig's and Qwen2Config's default
    return c;
}

const std::vector<std::string>& llama_block_kernels() {
    // the plain and the fast path's kernels, and argmax (greedy sampling)
    static const std::vector<std::string> kernels = {
        "kernel.matvec",  "kernel.matvec.fast", "kernel.matmul_xwt", "kernel.linear",    "kernel.add",
        "kernel.softmax", "kernel.rmsnorm",     "kernel.rope",       "kernel.silu",      "kernel.swiglu",
        "kernel.attention", "kernel.attention.tiled", "kernel.attention.window", "kernel.attention.window.tiled",
        "kernel.rope.scaling", "kernel.argmax"};
    return kernels;
}

Config llama_like_gguf(const GgufFile& f, const std::string& arch, Config c) {
    const auto key = [&](const char* k) { return arch + "." + k; };
    c.dim = f.uint(key("embedding_length"));
    c.n_layers = f.uint(key("block_count"));
    c.n_heads = f.uint(key("attention.head_count"));
    c.n_kv_heads = f.uint_or(key("attention.head_count_kv"), c.n_heads);
    c.ffn_dim = f.uint(key("feed_forward_length"));
    c.max_seq_len = f.uint(key("context_length"));
    c.norm_eps = static_cast<float>(f.number_or(key("attention.layer_norm_rms_epsilon"), c.norm_eps));
    c.rope_theta = static_cast<float>(f.number_or(key("rope.freq_base"), c.rope_theta));
    // Features the block does not implement: refused by name, never ignored.
    if (f.has(key("rope.scaling.type")) && f.text(key("rope.scaling.type")) != "none")
        throw ModelError(fmt::format("{}: {} is '{}': scaled RoPE is not implemented; this engine would compute a different "
                                     "model",
                                     f.path(), key("rope.scaling.type"), f.text(key("rope.scaling.type"))));
    if (f.has(key("attention.sliding_window")))
        throw ModelError(fmt::format("{}: {} is {}: sliding-window attention is not implemented", f.path(),
                                     key("attention.sliding_window"), f.uint(key("attention.sliding_window"))));
    if (c.n_heads && f.has(key("rope.dimension_count")) && f.uint(key("rope.dimension_count")) != c.dim / c.n_heads)
        throw ModelError(fmt::format("{}: {} is {} but head_dim is {}: rotating part of each head (partial RoPE) is not "
                                     "implemented",
                                     f.path(), key("rope.dimension_count"), f.uint(key("rope.dimension_count")),
                                     c.dim / c.n_heads));
    return c;
}

bool llama_ignored(const std::string& name) {
    constexpr std::string_view suffix = ".self_attn.rotary_emb.inv_freq";
    return name.size() > suffix.size() && std::string_view(name).substr(name.size() - suffix.size()) == suffix;
}

// ---- Tensors: Meta's names (our HDF5 files, llama_ref.py) in llama2.c's checkpoint order, and
// Hugging Face's LlamaForCausalLM / Qwen2ForCausalLM names ------------------------------------------

const std::vector<TensorSlot>& llama_tensors() {
    using namespace slots;
    static const std::vector<TensorSlot> table = {
        {"tok_embeddings.weight", "embed_tokens.weight", "token_embd.weight", false, embeddings, LMLAB_GLOBAL(tok_embeddings)},
        {"layers.{}.attention_norm.weight", "layers.{}.input_layernorm.weight", "blk.{}.attn_norm.weight", true, dim, LMLAB_LAYER(attn_norm.weight)},
        {"layers.{}.attention.wq.weight", "layers.{}.self_attn.q_proj.weight", "blk.{}.attn_q.weight", true, q_proj, LMLAB_LAYER(wq.w)},
        {"layers.{}.attention.wk.weight", "layers.{}.self_attn.k_proj.weight", "blk.{}.attn_k.weight", true, kv_proj, LMLAB_LAYER(wk.w)},
        {"layers.{}.attention.wv.weight", "layers.{}.self_attn.v_proj.weight", "blk.{}.attn_v.weight", true, kv_proj, LMLAB_LAYER(wv.w)},
        {"layers.{}.attention.wq.bias", "layers.{}.self_attn.q_proj.bias", "blk.{}.attn_q.bias", true, q_out, LMLAB_LAYER(wq.b), has_qkv_bias},
        {"layers.{}.attention.wk.bias", "layers.{}.self_attn.k_proj.bias", "blk.{}.attn_k.bias", true, kv_out, LMLAB_LAYER(wk.b), has_qkv_bias},
        {"layers.{}.attention.wv.bias", "layers.{}.self_attn.v_proj.bias", "blk.{}.attn_v.bias", true, kv_out, LMLAB_LAYER(wv.b), has_qkv_bias},
        {"layers.{}.attention.wo.weight", "layers.{}.self_attn.o_proj.weight", "blk.{}.attn_output.weight", true, o_proj, LMLAB_LAYER(wo.w)},
        {"layers.{}.ffn_norm.weight", "layers.{}.post_attention_layernorm.weight", "blk.{}.ffn_norm.weight", true, dim, LMLAB_LAYER(ffn_norm.weight)},
        {"layers.{}.feed_forward.w1.weight", "layers.{}.mlp.gate_proj.weight", "blk.{}.ffn_gate.weight", true, ffn_in, LMLAB_LAYER(w_gate.w)},
        {"layers.{}.feed_forward.w2.weight", "layers.{}.mlp.down_proj.weight", "blk.{}.ffn_down.weight", true, ffn_out, LMLAB_LAYER(w_down.w)},
        {"layers.{}.feed_forward.w3.weight", "layers.{}.mlp.up_proj.weight", "blk.{}.ffn_up.weight", true, ffn_in, LMLAB_LAYER(w_up.w)},
        {"norm.weight", "norm.weight", "output_norm.weight", false, dim, LMLAB_GLOBAL(final_norm.weight)},
        {"output.weight", "lm_head.weight", "output.weight", false, embeddings, LMLAB_GLOBAL(output), untied},
    };
    return table;
}

const std::vector<std::string>& llama_intermediates() {
    static const std::vector<std::string> names = {"in", "attn_norm", "q", "k", "v", "heads", "attn_out", "h",
        "ffn_norm", "ffn_gate", "ffn_up", "ffn_act", "ffn_out", "out"};
    return names;
}

Config llama_defaults() {
    Config c;
    c.arch = Arch::Llama;
    c.norm = NormKind::RMSNorm;
    c.norm_eps = 1e-5f;
    c.activation = Activation::SwiGLU;
    c.positions = Positions::Rope;
    c.rope_theta = 10000.0f;
    c.rope_style = RopeStyle::AdjacentPairs;  // Meta's and llama2.c's; Hugging Face files say RotateHalf
    return c;
}

namespace {

Config qwen2_defaults() {
    Config c = llama_defaults();
    c.arch = Arch::Qwen2;
    c.norm_eps = 1e-6f;
    c.rope_theta = 1e6f;
    c.rope_style = RopeStyle::RotateHalf;  // Hugging Face's layout
    c.qkv_bias = true;
    return c;
}

// transformers' LlamaConfig
Config llama_from_hf(const ConfigJson& j) {
    Config c = llama_like_config(j, llama_defaults());
    j.require("attention_bias", false, false, "biases on the attention projections are not implemented for llama");
    j.require("mlp_bias", false, false, "biases on the MLP projections are not implemented for llama");
    return c;
}

// llama.cpp's converter writes the `llama` architecture's q and k rows permuted back to Meta's order
// (it undoes Hugging Face's permutation), so its RoPE pairs are adjacent, as llama2.c's
Config llama_from_gguf(const GgufFile& f) {
    Config c = llama_like_gguf(f, "llama", llama_defaults());
    c.rope_style = RopeStyle::AdjacentPairs;
    return c;
}

// qwen2 is written as Hugging Face holds it: rotate-half RoPE, biases on q, k, v
Config qwen2_from_gguf(const GgufFile& f) { return llama_like_gguf(f, "qwen2", qwen2_defaults()); }

// transformers' Qwen2Config
Config qwen2_from_hf(const ConfigJson& j) {
    Config c = llama_like_config(j, qwen2_defaults());
    // Qwen2.5 configs carry sliding_window but switch it off (use_sliding_window false): then it means nothing.
    if (j.boolean("use_sliding_window", false)) {
        if (!j.has("sliding_window"))
            throw ModelError(fmt::format("{}: use_sliding_window is true but sliding_window is {}; expected the window "
                                         "(a positive number of positions)",
                                         j.path(), j.dump("sliding_window")));
        c.sliding_window = j.size("sliding_window");
        // The layers from max_window_layers on are windowed (Qwen2Config's default 28): transformers'
        // flash-attention path and its later versions (layer_types); 4.46.3's eager and sdpa attention
        // window every layer, a known bug (docs/models.md, the reference works around it visibly).
        const double from = j.number("max_window_layers", 28);
        if (!(from >= 0) || from != std::floor(from) || from > 1e6)
            throw ModelError(fmt::format("{}: max_window_layers is {}, expected a whole number >= 0", j.path(),
                                         j.dump("max_window_layers")));
        c.window_from_layer = static_cast<std::size_t>(from);
    }
    return c;
}

}  // namespace

std::string llama_dense_check(const Config& c, bool qkv_bias) {
    if (c.activation != Activation::SwiGLU) return "the llama block uses a SwiGLU feed-forward";
    if (c.n_experts || c.top_k || c.shared_ffn_dim || c.norm_topk_prob)
        return "experts (n_experts, top_k, shared_ffn_dim, norm_topk_prob) belong to the qwen2moe and mixtral families only";
    return llama_like_check(c, qkv_bias);
}

// ---- The rows ------------------------------------------------------------------------------------

const Family& llama_family() {
    static const Family f{
        Arch::Llama, "llama", "Meta's LLaMA, llama2.c checkpoints: RMSNorm, RoPE, SwiGLU, no biases",
        {"llama"}, llama_defaults, llama_from_hf, "model.", llama_ignored, "llama", llama_from_gguf,
        [](const Config& c) { return c.sliding_window ? "LLaMA has no sliding window" : llama_dense_check(c, false); },
        llama_block, llama_intermediates(), llama_block_kernels(), llama_tensors};
    return f;
}

const Family& qwen2_family() {
    static const Family f{
        Arch::Qwen2, "qwen2", "Alibaba's Qwen2: LLaMA's block with biases on q, k, v (rotate-half RoPE, theta 1e6)",
        {"qwen2"}, qwen2_defaults, qwen2_from_hf, "model.", llama_ignored, "qwen2", qwen2_from_gguf,
        [](const Config& c) { return llama_dense_check(c, true); },
        llama_block, llama_intermediates(), llama_block_kernels(), llama_tensors};
    return f;
}

}  // namespace lmlab
