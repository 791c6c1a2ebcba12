// Mistral (Jiang et al. 2023, Mistral 7B): the LLaMA block (llama.cpp) with grouped-query attention
// and a sliding window. Every layer's queries attend to the last sliding_window positions only:
//
//   position p reads keys and values of p - W + 1 .. p        (transformers' eager mask: W positions)
//
// so a layer's KV cache never needs more than W positions (a ring buffer, model/kv_cache.h), and
// information from further back still arrives, one window per layer, through the residual stream:
// after L layers a token can depend on ~L·W positions. Analogy: a team passing notes along a line,
// each person only talking to the W people nearest them.
//
// Only the config differs from LLaMA, so this file is its config.json mapping and its row; the
// block, the tensor table (Hugging Face's names are LLaMA's) and the intermediates are LLaMA's.
// Mistral-7B-v0.1 has sliding_window 4096; v0.2 and later set it to null (full attention).
#include <fmt/format.h>

#include "model/families/families.h"
#include "model/load/config_json.h"

namespace lmlab {

namespace {

Config mistral_defaults() {
    Config c = llama_defaults();
    c.arch = Arch::Mistral;
    c.norm_eps = 1e-6f;                    // MistralConfig's rms_norm_eps
    c.rope_style = RopeStyle::RotateHalf;  // Hugging Face's layout
    return c;
}

// transformers' MistralConfig
Config mistral_from_hf(const ConfigJson& j) {
    // transformers 4.46.3's MistralRotaryEmbedding ignores rope_scaling: the reference would compute
    // plain RoPE, an engine that reads it another model
    if (j.has("rope_scaling"))
        throw ModelError(fmt::format("{}: rope_scaling is {}: transformers 4.46.3's Mistral ignores it; refused rather "
                                     "than guessed (remove it to run plain RoPE, as transformers does)",
                                     j.path(), j.dump("rope_scaling")));
    Config c = llama_like_config(j, mistral_defaults());
    // MistralConfig's default window is 4096; null switches it off. A window as large as the context
    // never hides a position, so it is no window at all.
    if (j.has("sliding_window") || !j.present("sliding_window")) {
        const std::size_t window = j.present("sliding_window") ? j.size("sliding_window") : 4096;
        if (window < c.max_seq_len) c.sliding_window = window;
    }
    return c;
}

}  // namespace

const Family& mistral_family() {
    static const Family f{
        Arch::Mistral, "mistral", "Mistral: LLaMA's block with grouped-query attention over a sliding window",
        {"mistral"}, mistral_defaults, mistral_from_hf, "model.", llama_ignored,
        nullptr, nullptr,  // llama.cpp converts Mistral as `llama` (window dropped): no GGUF architecture of its own
        [](const Config& c) { return llama_dense_check(c, false); },
        llama_block, llama_intermediates(), llama_block_kernels(), llama_tensors};
    return f;
}

}  // namespace lmlab
