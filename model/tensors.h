// The tensor tables: for each family, every tensor a Model holds, in one list (the family's
// `tensors` in its file under model/families/; this header is the machinery they share).
//
// This is the only place tensor names live. Every loader walks its family's table: the HDF5 and
// safetensors loaders look each tensor up by name, the llama2.c and llm.c loaders read them in
// table order (which is why each table is written in its checkpoint format's order), and the test
// models fill them from it. Shapes are ours ([out, in] for matrices); `hf_conv1d` marks tensors
// that Hugging Face's GPT-2 stores transposed ([in, out], its Conv1D layout).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "model/model.h"

namespace lmlab {

struct TensorSlot {
    const char* name;   // in the family's own file format; "{}" stands for the layer index (a second "{}": the expert)
    const char* hf;     // in Hugging Face's safetensors (without the optional "model."/"transformer." prefix)
    const char* gguf;   // in GGUF files (llama.cpp's names: "blk.{}.attn_q.weight"); a per-expert slot names the
                        // tensor that holds every expert of the layer ([n_experts, rows, cols]: "blk.{}.ffn_up_exps.weight")
    bool per_layer;
    std::vector<std::size_t> (*shape)(const Config&);
    // where it goes (layer ignored when global, expert unless per_expert)
    std::vector<float>& (*field)(Model&, std::size_t layer, std::size_t expert);
    bool (*present)(const Config&) = nullptr;  // nullptr: always; else only when this returns true
    bool hf_conv1d = false;                    // stored [in, out] by Hugging Face GPT-2: transpose on load
    bool per_expert = false;                   // one per expert of every layer (mixture of experts): n_experts copies
};

// The table of a config's family (model/family.h).
const std::vector<TensorSlot>& tensor_table(const Config& c);

// "h.{}.attn.c_attn.weight" with layer 3 -> "h.3.attn.c_attn.weight"; a second "{}" becomes the expert
std::string tensor_name(const char* pattern, std::size_t layer, std::size_t expert = 0);

// Every slot that is present for this config, per layer expanded: (name, shape, destination).
struct BoundTensor {
    std::string name;
    std::string hf_name;
    std::string gguf_name;    // "" when the family has no GGUF name for it
    std::size_t expert = 0;   // per-expert slots: which expert (its slice of the GGUF tensor)
    bool per_expert = false;
    std::vector<std::size_t> shape;
    std::vector<float>* dst;
    bool hf_conv1d;
};
std::vector<BoundTensor> bind_tensors(Model& m);

// The number of floats of a shape.
std::size_t numel(const std::vector<std::size_t>& shape);

// ---- What the family tables are written with ------------------------------------------------------
namespace slots {
using Shape = std::vector<std::size_t>;
inline Shape dim(const Config& c) { return {c.dim}; }
inline Shape embeddings(const Config& c) { return {c.vocab_size, c.dim}; }
inline Shape positions(const Config& c) { return {c.max_seq_len, c.dim}; }
inline Shape q_proj(const Config& c) { return {c.n_heads * c.head_dim(), c.dim}; }
inline Shape kv_proj(const Config& c) { return {c.kv_dim(), c.dim}; }
inline Shape o_proj(const Config& c) { return {c.dim, c.n_heads * c.head_dim()}; }
inline Shape q_out(const Config& c) { return {c.n_heads * c.head_dim()}; }
inline Shape kv_out(const Config& c) { return {c.kv_dim()}; }
inline Shape ffn_in(const Config& c) { return {c.ffn_dim, c.dim}; }
inline Shape ffn_out(const Config& c) { return {c.dim, c.ffn_dim}; }
inline Shape ffn_bias(const Config& c) { return {c.ffn_dim}; }
inline bool untied(const Config& c) { return !c.tied_embeddings; }
inline bool has_qkv_bias(const Config& c) { return c.qkv_bias; }
}  // namespace slots

// Field accessors: captureless lambdas, so a table stays plain data.
#define LMLAB_LAYER(member) [](Model& m, std::size_t l, std::size_t) -> std::vector<float>& { return m.layers[l].member; }
#define LMLAB_GLOBAL(member) [](Model& m, std::size_t, std::size_t) -> std::vector<float>& { return m.member; }
#define LMLAB_EXPERT(member) \
    [](Model& m, std::size_t l, std::size_t e) -> std::vector<float>& { return m.layers[l].experts[e].member; }

// Where the int8 form of a bound tensor goes (model/quantize.cpp): the token embeddings ->
// m.tok_embeddings_q8, the classifier -> m.output_q8, a Linear's weight -> its q8; nullptr for
// what stays float (norms, biases, GPT-2's position table). dst: a BoundTensor's dst.
QuantizedMatrix* q8_slot(Model& m, const std::vector<float>* dst);
// Where the ggml-typed form of a bound tensor goes (a GGUF file's tensors that stay in their type,
// quantize_model_gguf): the Linears' weights (experts', the router's too), the embedding table and
// the classifier, the matrices read through a matvec or a row lookup; nullptr for what is always
// float (norms, biases, GPT-2's positions, Qwen2-MoE's one-row shared-expert gate).
GgmlMatrix* gg_slot(Model& m, const std::vector<float>* dst);

}  // namespace lmlab
