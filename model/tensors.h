// The tensor tables: for each family, every tensor a Model holds, in one list.
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
    bool per_layer;
    std::vector<std::size_t> (*shape)(const Config&);
    // where it goes (layer ignored when global, expert unless per_expert)
    std::vector<float>& (*field)(Model&, std::size_t layer, std::size_t expert);
    bool (*present)(const Config&) = nullptr;  // nullptr: always; else only when this returns true
    bool hf_conv1d = false;                    // stored [in, out] by Hugging Face GPT-2: transpose on load
    bool per_expert = false;                   // one per expert of every layer (mixture of experts): n_experts copies
};

// LLaMA (and Qwen2, which is LLaMA with q/k/v biases): Meta's names (as in our HDF5 files and
// llama_ref.py) in llama2.c's checkpoint order, and Hugging Face's LlamaForCausalLM / Qwen2ForCausalLM
// names. GPT-2: Hugging Face's names without the "transformer." prefix, in llm.c's checkpoint order.
const std::vector<TensorSlot>& tensor_table(Arch arch);

// "h.{}.attn.c_attn.weight" with layer 3 -> "h.3.attn.c_attn.weight"; a second "{}" becomes the expert
std::string tensor_name(const char* pattern, std::size_t layer, std::size_t expert = 0);

// Every slot that is present for this config, per layer expanded: (name, shape, destination).
struct BoundTensor {
    std::string name;
    std::string hf_name;
    std::vector<std::size_t> shape;
    std::vector<float>* dst;
    bool hf_conv1d;
};
std::vector<BoundTensor> bind_tensors(Model& m);

// The number of floats of a shape.
std::size_t numel(const std::vector<std::size_t>& shape);

// Where the int8 form of a bound tensor goes (model/quantize.cpp): the token embeddings ->
// m.tok_embeddings_q8, the classifier -> m.output_q8, a Linear's weight -> its q8; nullptr for
// what stays float (norms, biases, GPT-2's position table). dst: a BoundTensor's dst.
QuantizedMatrix* q8_slot(Model& m, const std::vector<float>* dst);

}  // namespace lmlab
