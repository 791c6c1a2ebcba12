#include <filesystem>
#include <fstream>

#include "model/load/load.h"

namespace lmlab {

namespace {
// The first 4 bytes of a file as a little-endian int32 (0 when shorter).
std::int32_t first_int32(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::int32_t v = 0;
    if (!in.read(reinterpret_cast<char*>(&v), sizeof v)) return 0;
    return v;
}
}  // namespace

Model load_model(const std::string& path) {
    namespace fs = std::filesystem;
    if (fs::is_directory(path)) {
        if (!fs::exists(fs::path(path) / "config.json"))
            throw ModelError(path + ": a directory without config.json; expected a Hugging Face model directory "
                             "(config.json + model.safetensors)");
        return load_model_hf(path);
    }
    if (!fs::exists(path)) throw ModelError(path + ": no such file or directory");
    const std::string ext = fs::path(path).extension().string();
    if (ext == ".h5" || ext == ".hdf5") return load_model_hdf5(path);
    if (ext == ".safetensors" || ext == ".json")
        throw ModelError(path + ": pass the Hugging Face model directory (" + fs::path(path).parent_path().string() +
                         "), not one of its files: the weights need config.json beside them");
    if (first_int32(path) == 20240326) return load_model_llmc(path);  // llm.c's magic number
    if (first_int32(path) == 0x616b3432) return load_model_llama2c_q8(path);  // llama2.c's "ak42": int8 (version 2)
    if (first_int32(path) == 0x46554747 || ext == ".gguf") return load_model_gguf(path);  // "GGUF"
    return load_model_llama2c(path);
}

}  // namespace lmlab
