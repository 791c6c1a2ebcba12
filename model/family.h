// The families: one row per architecture (llama.cpp's llama-arch), the one place that says what a
// family is made of.
//
//   row            what it holds                                    who reads it
//   name           "llama", "gpt2", "qwen2", "qwen2moe", "mixtral"   the stage table, lmlab list, the Python references
//   hf_model_types config.json's model_type values it loads         model/load/hf.cpp
//   defaults       the fixed choices (norm, activation, RoPE, biases) every loader, the tests
//   from_hf        config.json -> Config, refusing what it cannot run model/load/hf.cpp
//   gguf_arch      general.architecture of its GGUF files            model/load/gguf_model.cpp
//   from_gguf      GGUF metadata -> Config, refusing likewise       model/load/gguf_model.cpp
//   check          the family's rules for a Config                   Config::validate
//   block          one transformer block over T rows                 forward() (model/forward.h)
//   intermediates  what the block leaves in RunState, pipeline order the harness, the exporter (via lmlab list --json)
//   kernels        the kernel stages its pipeline calls              stage gating (harness/stages/stages.cpp)
//   tensors        every weight: names per file format, shapes       every loader, quantize, the test models
//
// Each family's row, block, tensor table and config.json mapping live in one file under
// model/families/ (Qwen2 shares the LLaMA block and file; Qwen2-MoE and Mixtral share moe.cpp).
// Adding a family: a file there, its row in families() (model/family.cpp) and its Arch value.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "model/model.h"

namespace lmlab {

class ConfigJson;  // model/load/config_json.h
class GgufFile;    // model/load/gguf.h
class RowCache;    // model/forward.h
struct RunState;   // model/forward.h
struct TensorSlot; // model/tensors.h

// One transformer block over T rows: reads rows [0, T) of s.x, leaves every intermediate in s and the
// block's output in s.out; each row's key and value go to the cache (RowCache: which sequence and
// position each row is).
using BlockFn = void (*)(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, RunState& s);

struct Family {
    Arch arch;
    const char* name;   // as the stage table, lmlab list --json and the exporter spell it
    const char* about;  // one line for `lmlab list --families`
    std::vector<std::string> hf_model_types;  // config.json "model_type" values this family loads
    Config (*defaults)();                      // the family's fixed choices; the dimensions left at 0
    Config (*from_hf)(const ConfigJson& j);    // config.json -> Config (refuses every field it cannot run)
    const char* hf_prefix;                     // the optional prefix of its safetensors names ("model.", "transformer.")
    bool (*hf_ignored)(const std::string& name);  // non-weight buffers a Hugging Face file may hold
    const char* gguf_arch;                     // general.architecture of its GGUF files (llama.cpp's converter)
    Config (*from_gguf)(const GgufFile& f);    // GGUF metadata -> Config (refuses every key it cannot run)
    std::string (*check)(const Config& c);     // "" when the family's block runs this config, else what is wrong
    BlockFn block;
    std::vector<std::string> intermediates;  // names of RunState's buffers the block fills (model/forward.h), in order
    std::vector<std::string> kernels;        // kernel stage ids ("kernel.rmsnorm") of every kernel its forward calls
    const std::vector<TensorSlot>& (*tensors)();
};

// Every family, in a fixed order.
const std::vector<const Family*>& families();
const Family& family(Arch arch);
// By name ("qwen2moe") or by a config.json model_type ("qwen2_moe"); nullptr when none.
const Family* find_family(const std::string& name);
const Family* find_family_hf(const std::string& model_type);
// The family of a GGUF file: by general.architecture; llama.cpp names Mixtral "llama" too, so a
// "llama" file with experts (llama.expert_count > 0) is Mixtral. ModelError naming the architecture
// when no family runs it.
const Family& find_family_gguf(const GgufFile& f);
// The kernel stages int8 weights add to any family (model/quantize.cpp, kernels.h's Q8_0 part).
const std::vector<std::string>& int8_kernels();

}  // namespace lmlab
