// lmlab's HDF5 model files (model/load/hdf5.cpp): the config as root attributes, every tensor by its
// PyTorch name with the shape the config implies, and the vocabulary (piece_bytes + piece_offsets +
// scores). The file is written from the fuzzer's bytes (h5_writer.h), then loaded.
#include "model/load/load.h"
#include "fuzz/fuzz.h"
#include "fuzz/h5_writer.h"
#include "model/model.h"

namespace {

// The names load_model_hdf5 looks for in a one- or two-layer model, and their shapes for the
// config the bytes chose (when it is small enough to write).
const char* const kTensors[] = {"tok_embeddings.weight", "norm.weight", "output.weight",
                                "layers.0.attention_norm.weight", "layers.0.attention.wq.weight",
                                "layers.0.attention.wk.weight", "layers.0.attention.wv.weight",
                                "layers.0.attention.wo.weight", "layers.0.ffn_norm.weight",
                                "layers.0.feed_forward.w1.weight", "layers.0.feed_forward.w2.weight",
                                "layers.0.feed_forward.w3.weight", "layers.1.attention.wq.weight"};
const char* const kAttributes[] = {"arch", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size",
                                   "max_seq_len", "rope_theta", "rope_style", "norm_eps", "tied_embeddings"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const std::string path = (lmlab::fuzz::scratch_dir() / "model.h5").string();
    try {
        H5::H5File f(path, H5F_ACC_TRUNC);
        lmlab::fuzz::H5Writer w(in);
        for (const char* a : kAttributes)
            if (in.ConsumeIntegralInRange(0, 7) != 0) w.attribute(f, a);  // mostly present
        for (const char* t : kTensors)
            if (in.ConsumeBool()) w.dataset(f, t, {in.ConsumeIntegralInRange<hsize_t>(1, 8), in.ConsumeIntegralInRange<hsize_t>(1, 8)});
        if (in.ConsumeBool()) {
            H5::Group g = f.createGroup("tokenizer");
            for (const char* d : {"piece_bytes", "piece_offsets", "scores"})
                if (in.ConsumeIntegralInRange(0, 5) != 0) w.dataset(g, d, {in.ConsumeIntegralInRange<hsize_t>(0, 9)});
        }
    } catch (const H5::Exception&) {
        return 0;  // the bytes asked for a file HDF5 will not write: not a finding
    }
    try {
        (void)lmlab::load_model_hdf5(path);
    } catch (const lmlab::ModelError&) {
    }
    try {
        (void)lmlab::load_vocabulary_hdf5(path);
    } catch (const lmlab::ModelError&) {
    }
    return 0;
}
