// Loading a model from an HDF5 file written by scripts/export_golden.py: the config from root
// attributes, every tensor by its PyTorch name, each checked against the shape the config demands.
#include <H5Cpp.h>

#include "model.h"

namespace lmlab {

namespace {

std::string shape_text(const std::vector<hsize_t>& dims) {
    std::string s = "[";
    for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
}

class Reader {
public:
    explicit Reader(const std::string& path) : path_(path) {
        H5::Exception::dontPrint();
        try {
            if (!H5::H5File::isHdf5(path)) throw ModelError(path + ": not an HDF5 file (truncated or overwritten?)");
            file_ = H5::H5File(path, H5F_ACC_RDONLY);
        } catch (const H5::Exception& e) {
            throw ModelError(path + ": cannot open model file (" + e.getDetailMsg() +
                             "): the file is truncated or damaged. For golden/models/*.h5 re-export: "
                             "/usr/bin/python3 scripts/export_golden.py");
        }
    }

    // A root attribute of the expected kind (numeric or string); every HDF5 failure, including
    // a damaged file, becomes a ModelError naming the attribute.
    H5::Attribute attribute(const std::string& name, bool want_string) const {
        try {
            if (!file_.attrExists(name)) throw ModelError(path_ + ": root attribute '" + name + "' is missing");
            H5::Attribute a = file_.openAttribute(name);
            const H5T_class_t cls = a.getTypeClass();
            const bool ok = want_string ? cls == H5T_STRING : (cls == H5T_INTEGER || cls == H5T_FLOAT);
            if (!ok || a.getSpace().getSimpleExtentNpoints() != 1)
                throw ModelError(path_ + ": root attribute '" + name + "' should be a single " +
                                 (want_string ? "string" : "number"));
            return a;
        } catch (const H5::Exception& e) {
            throw ModelError(path_ + ": cannot read root attribute '" + name + "' (" + e.getDetailMsg() + ")");
        }
    }

    double number(const std::string& name) const {
        H5::Attribute a = attribute(name, false);
        double v = 0;
        try {
            a.read(H5::PredType::NATIVE_DOUBLE, &v);
        } catch (const H5::Exception& e) {
            throw ModelError(path_ + ": cannot read root attribute '" + name + "' (" + e.getDetailMsg() + ")");
        }
        return v;
    }

    std::string text(const std::string& name) const {
        H5::Attribute a = attribute(name, true);
        std::string v;
        try {
            a.read(a.getStrType(), v);
        } catch (const H5::Exception& e) {
            throw ModelError(path_ + ": cannot read root attribute '" + name + "' (" + e.getDetailMsg() + ")");
        }
        return v;
    }

    std::size_t size(const std::string& name) const {
        const double v = number(name);
        if (!(v >= 0 && v < 9007199254740992.0) || v != static_cast<double>(static_cast<std::size_t>(v)))
            throw ModelError(path_ + ": root attribute '" + name + "' = " + std::to_string(v) + " is not a count");
        return static_cast<std::size_t>(v);
    }

    // Reads dataset `name`, which must have exactly `shape`.
    std::vector<float> tensor(const std::string& name, const std::vector<hsize_t>& shape) const {
        try {
            if (!file_.nameExists(name))
                throw ModelError(path_ + ": tensor '" + name + "' is missing (expected shape " + shape_text(shape) + ")");
            H5::DataSet ds = file_.openDataSet(name);
            H5::DataSpace space = ds.getSpace();
            std::vector<hsize_t> dims(static_cast<std::size_t>(space.getSimpleExtentNdims()));
            space.getSimpleExtentDims(dims.data());
            if (dims != shape)
                throw ModelError(path_ + ": tensor '" + name + "' has shape " + shape_text(dims) + ", expected " +
                                 shape_text(shape));
            std::size_t n = 1;
            for (hsize_t d : dims) n *= d;
            std::vector<float> data(n);
            ds.read(data.data(), H5::PredType::NATIVE_FLOAT);
            return data;
        } catch (const H5::Exception& e) {
            throw ModelError(path_ + ": cannot read tensor '" + name + "' (" + e.getDetailMsg() + "): truncated or damaged file");
        }
    }

    // vocab_size 0: take the size from the file
    std::optional<Vocabulary> vocabulary(std::size_t vocab_size) const {
        try {
            if (!file_.nameExists("tokenizer")) return std::nullopt;
            Vocabulary v;
            H5::DataSet pieces = file_.openDataSet("tokenizer/pieces");
            const auto n = static_cast<std::size_t>(pieces.getSpace().getSimpleExtentNpoints());
            if (vocab_size == 0) vocab_size = n;
            if (n != vocab_size)
                throw ModelError(path_ + ": tokenizer/pieces has " + std::to_string(n) + " entries, expected vocab_size " +
                                 std::to_string(vocab_size));
            std::vector<char*> raw(n);
            H5::StrType type = pieces.getStrType();
            pieces.read(raw.data(), type);
            for (char* p : raw) v.pieces.emplace_back(p);
            H5Dvlen_reclaim(type.getId(), pieces.getSpace().getId(), H5P_DEFAULT, raw.data());
            v.scores = tensor("tokenizer/scores", {vocab_size});
            return v;
        } catch (const H5::Exception& e) {
            throw ModelError(path_ + ": cannot read the vocabulary under tokenizer/ (" + e.getDetailMsg() + ")");
        }
    }

private:
    std::string path_;
    H5::H5File file_;
};

}  // namespace

Vocabulary load_vocabulary_hdf5(const std::string& path) {
    auto v = Reader(path).vocabulary(0);
    if (!v) throw ModelError(path + ": has no vocabulary (group tokenizer/ with pieces and scores)");
    return *v;
}

Model load_model_hdf5(const std::string& path) {
    Reader r(path);
    Model m;
    m.source = path;
    Config& c = m.config;
    c.arch = r.text("arch");
    if (c.arch != "llama") throw ModelError(path + ": arch '" + c.arch + "' is not supported (this engine runs 'llama')");
    c.dim = r.size("dim");
    c.n_layers = r.size("n_layers");
    c.n_heads = r.size("n_heads");
    c.n_kv_heads = r.size("n_kv_heads");
    c.ffn_dim = r.size("ffn_dim");
    c.vocab_size = r.size("vocab_size");
    c.max_seq_len = r.size("max_seq_len");
    c.rope_theta = static_cast<float>(r.number("rope_theta"));
    const std::string style = r.text("rope_style");
    if (style == "adjacent") c.rope_style = RopeStyle::AdjacentPairs;
    else if (style == "rotate_half") c.rope_style = RopeStyle::RotateHalf;
    else throw ModelError(path + ": rope_style '" + style + "', expected 'adjacent' or 'rotate_half'");
    c.norm_eps = static_cast<float>(r.number("norm_eps"));
    c.tied_embeddings = r.number("tied_embeddings") != 0;
    c.validate(path);

    const hsize_t dim = c.dim, q_dim = c.n_heads * c.head_dim(), kv = c.kv_dim(), ffn = c.ffn_dim, vocab = c.vocab_size;
    m.tok_embeddings = r.tensor("tok_embeddings.weight", {vocab, dim});
    for (std::size_t i = 0; i < c.n_layers; ++i) {
        const std::string p = "layers." + std::to_string(i) + ".";
        LayerWeights l;
        l.attention_norm = r.tensor(p + "attention_norm.weight", {dim});
        l.wq = r.tensor(p + "attention.wq.weight", {q_dim, dim});
        l.wk = r.tensor(p + "attention.wk.weight", {kv, dim});
        l.wv = r.tensor(p + "attention.wv.weight", {kv, dim});
        l.wo = r.tensor(p + "attention.wo.weight", {dim, q_dim});
        l.ffn_norm = r.tensor(p + "ffn_norm.weight", {dim});
        l.w1 = r.tensor(p + "feed_forward.w1.weight", {ffn, dim});
        l.w2 = r.tensor(p + "feed_forward.w2.weight", {dim, ffn});
        l.w3 = r.tensor(p + "feed_forward.w3.weight", {ffn, dim});
        m.layers.push_back(std::move(l));
    }
    m.norm = r.tensor("norm.weight", {dim});
    if (!c.tied_embeddings) m.output = r.tensor("output.weight", {vocab, dim});
    m.vocabulary = r.vocabulary(c.vocab_size);
    return m;
}

}  // namespace lmlab
