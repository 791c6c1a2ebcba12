// A Hugging Face model directory (model/load/hf.cpp, model/load/safetensors.cpp): config.json, an
// optional model.safetensors.index.json, and the safetensors file (header: u64 length + JSON table,
// then the data). Input = Parts: [config.json] [index.json, empty = none] [safetensors bytes].
#include "model/load/load.h"
#include "fuzz/fuzz.h"
#include "model/model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace fs = std::filesystem;
    lmlab::fuzz::Parts parts(data, size);
    const std::string_view config = parts.next(), index = parts.next(), weights = parts.rest();
    const fs::path dir = lmlab::fuzz::scratch_dir() / "hf";
    std::error_code ec;
    fs::remove_all(dir, ec);
    lmlab::fuzz::write_file("hf/config.json", config);
    if (index.empty()) {
        lmlab::fuzz::write_file("hf/model.safetensors", weights);
    } else {
        lmlab::fuzz::write_file("hf/model.safetensors.index.json", index);
        lmlab::fuzz::write_file("hf/model-00001-of-00001.safetensors", weights);
    }
    try {
        (void)lmlab::load_model_hf(dir.string());
    } catch (const lmlab::ModelError&) {
    }
    return 0;
}
