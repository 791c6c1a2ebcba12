// The pieces of the family files (model/families/*.cpp) that other files call: each family's row
// (model/family.h lists them), the halves of a block that the layer stages run on their own, and
// what the LLaMA-like families share (Qwen2, Qwen2-MoE and Mixtral are the LLaMA block with other
// fields or another feed-forward).
#pragma once

#include <span>
#include <string>

#include "model/family.h"
#include "model/forward.h"

namespace lmlab {

// ---- The rows (one per family) ----------------------------------------------------------------------
const Family& llama_family();     // llama.cpp
const Family& qwen2_family();     // llama.cpp
const Family& gpt2_family();      // gpt2.cpp
const Family& qwen2moe_family();  // moe.cpp
const Family& mixtral_family();   // moe.cpp
const Family& mistral_family();   // mistral.cpp

// ---- LLaMA's block in halves (llama.cpp), rows [0, T) --------------------------------------------
// Attention: s.attn_norm -> q = RoPE(wq·), k = RoPE(wk·), v = wv· (appended to the cache), attend,
// s.attn_out = wo · heads.
void llama_attention(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t T, RowCache& cache,
                     RunState& s);
// SwiGLU feed-forward: s.ffn_norm -> s.ffn_out = w2 · (silu(w1·) ⊙ w3·).
void llama_ffn(const Config& c, const LayerWeights& w, std::size_t T, RunState& s);
// The LLaMA block with a given feed-forward (llama_ffn, or the mixture of experts).
void llama_block_with(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, RunState& s,
                      void (*ffn)(const Config&, const LayerWeights&, std::size_t T, RunState&));

// The LLaMA block over rows [0, T) with its SwiGLU feed-forward: the llama, qwen2 and mistral rows' block.
void llama_block(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, RunState& s);

// config.json fields LlamaConfig, Qwen2Config, Qwen2MoeConfig, MixtralConfig and MistralConfig share;
// `c` brings the family's fixed choices. Refuses what the block does not implement (other
// activations, partial rotation, a RoPE scaling kind other than linear, dynamic, yarn, llama3).
Config llama_like_config(const ConfigJson& j, Config c);
// config.json's rope_scaling (transformers 4.46.3's keys per kind) into c.rope_scaling; with linear,
// dynamic or yarn, c.max_seq_len (max_position_embeddings on entry) becomes factor times it.
void rope_scaling_from_hf(const ConfigJson& j, Config& c);
// The GGUF keys the LLaMA-like architectures share (<arch>.block_count, .embedding_length,
// .attention.head_count[_kv], .feed_forward_length, .context_length, .rope.freq_base,
// .attention.layer_norm_rms_epsilon), with the refusals of what the block does not implement
// (scaled RoPE, partial rotation, a sliding window). `c` brings the family's fixed choices.
Config llama_like_gguf(const GgufFile& f, const std::string& arch, Config c);
// "layers.3.self_attn.rotary_emb.inv_freq": a RoPE table older transformers saved; not a weight.
bool llama_ignored(const std::string& name);
// The kernel stages the LLaMA block's forward calls (with a SwiGLU feed-forward, dense or experts).
const std::vector<std::string>& llama_block_kernels();
// What every LLaMA-block family's config must be ("" when it is), plus whether q/k/v carry biases.
std::string llama_like_check(const Config& c, bool qkv_bias);
// The same for the dense (SwiGLU, no experts) LLaMA-block families: llama, qwen2, mistral.
std::string llama_dense_check(const Config& c, bool qkv_bias);
// What the dense LLaMA-block rows share: LLaMA's fixed choices (RMSNorm 1e-5, SwiGLU, RoPE theta 1e4,
// adjacent pairs, no biases), the block's intermediates in pipeline order, the tensor table (Meta's,
// Hugging Face's and GGUF's names).
Config llama_defaults();
const std::vector<std::string>& llama_intermediates();
const std::vector<TensorSlot>& llama_tensors();

// ---- The mixture of experts in halves (moe.cpp), one row t ----------------------------------------
// Routing: s.router_logits, s.router_probs, then the top-k ids (s.expert_ids) and their weights
// (moe_weights) of row t of s.ffn_norm.
void moe_route(const Config& c, const LayerWeights& w, std::size_t t, RunState& s);
// The weights of row t's chosen experts (s.expert_ids): their probabilities (s.router_probs),
// renormalised to sum to 1 when the config says so, into s.expert_weights.
void moe_weights(const Config& c, std::size_t t, RunState& s);
// The chosen experts of row t (s.expert_ids, s.expert_weights) on row t of s.ffn_norm, summed in
// expert-id order, plus Qwen2-MoE's gated shared expert: row t of s.ffn_out (and of s.shared_out).
// The harness re-runs this half alone with the reference's experts at a routing near-tie.
void moe_mix(const Config& c, const LayerWeights& w, std::size_t t, RunState& s);
// Both halves for rows [0, T): the feed-forward llama_block_with runs for Qwen2-MoE and Mixtral.
void moe_ffn(const Config& c, const LayerWeights& w, std::size_t T, RunState& s);

}  // namespace lmlab
