// GGUF files (model/load/gguf.cpp: header, metadata, tensor infos, data section; gguf_model.cpp: the
// Model from them; text_tokenizer.cpp: the tokenizer from their metadata). The input is the file; it
// is opened as a model and as a tokenizer, each of which may refuse it with a ModelError only.
// Seeds: tiny GGUF files of every family (scripts/make_fuzz_corpus.py); regressions: one file per
// rule of the format (scripts/lmlab_ref/gguf_hostile.py).
#include "fuzz/fuzz.h"
#include "model/load/gguf.h"
#include "model/load/load.h"
#include "model/model.h"
#include "model/tokenizer/text_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string path = lmlab::fuzz::write_file("model.gguf", {reinterpret_cast<const char*>(data), size});
    try {
        (void)lmlab::load_model_gguf(path);
    } catch (const lmlab::ModelError&) {
    }
    try {
        (void)lmlab::load_tokenizer_gguf(path);
    } catch (const lmlab::ModelError&) {
    }
    return 0;
}
