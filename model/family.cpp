#include "model/family.h"

#include <algorithm>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "model/load/gguf.h"

#include "model/families/families.h"

namespace lmlab {

const std::vector<const Family*>& families() {
    // one row per family: adding one is a file under model/families/ and a line here
    static const std::vector<const Family*> rows = {&llama_family(), &gpt2_family(), &qwen2_family(), &qwen2moe_family(),
                                                    &mixtral_family(), &mistral_family()};
    return rows;
}

const Family& family(Arch arch) {
    for (const Family* f : families())
        if (f->arch == arch) return *f;
    throw ModelError(fmt::format("no family row for arch {} (model/family.cpp)", static_cast<int>(arch)));
}

const Family* find_family(const std::string& name) {
    for (const Family* f : families())
        if (name == f->name) return f;
    return nullptr;
}

const Family* find_family_hf(const std::string& model_type) {
    for (const Family* f : families())
        for (const std::string& t : f->hf_model_types)
            if (model_type == t) return f;
    return nullptr;
}

const Family& find_family_gguf(const GgufFile& f) {
    const std::string arch = f.text("general.architecture");
    // llama.cpp writes Mixtral as `llama` with experts: the one name two of our families share
    if (arch == "llama" && f.uint_or("llama.expert_count", 0) > 0) return family(Arch::Mixtral);
    std::vector<std::string> known;
    for (const Family* fam : families()) {
        if (fam->gguf_arch && arch == fam->gguf_arch) return *fam;
        if (fam->gguf_arch && std::find(known.begin(), known.end(), fam->gguf_arch) == known.end()) known.push_back(fam->gguf_arch);
    }
    throw ModelError(fmt::format("{}: general.architecture is '{}', which this engine does not run (it runs: {})", f.path(),
                                 arch, fmt::join(known, ", ")));
}

const std::vector<std::string>& int8_kernels() {
    static const std::vector<std::string> kernels = {"kernel.quantize_q8_0", "kernel.matvec_q8_0"};
    return kernels;
}

}  // namespace lmlab
