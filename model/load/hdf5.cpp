// Loading a model from an HDF5 file written by scripts/export_golden.py: the config from root
// attributes, every tensor by its PyTorch name, each checked against the shape the config demands.
#include <H5Cpp.h>

#include <cstdint>

#include "model/load/load.h"
#include "model/load/hdf5_checks.h"
#include "model/model.h"
#include "model/tensors.h"

namespace lmlab {

namespace {

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
                             ".venv/bin/python scripts/export_golden.py");
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
    std::vector<float> tensor(const std::string& name, const std::vector<std::size_t>& shape) const {
        try {
            if (!file_.nameExists(name))
                throw ModelError(path_ + ": tensor '" + name + "' is missing (expected shape " + shape_str(shape) + ")");
            if (file_.childObjType(name) != H5O_TYPE_DATASET)
                throw ModelError(path_ + ": '" + name + "' should be a dataset (a tensor of shape " + shape_str(shape) + ")");
            H5::DataSet ds = file_.openDataSet(name);
            if (ds.getTypeClass() != H5T_FLOAT)
                throw ModelError(path_ + ": tensor '" + name + "' is not stored as floating point");
            std::string why;
            const auto dims = checked_dims(ds, why);  // before allocating: the header may claim anything
            if (!dims) throw ModelError(path_ + ": tensor '" + name + "': " + why);
            if (*dims != shape)
                throw ModelError(path_ + ": tensor '" + name + "' has shape " + shape_str(*dims) + ", expected " +
                                 shape_str(shape));
            std::vector<float> data(numel(*dims));
            ds.read(data.data(), H5::PredType::NATIVE_FLOAT);
            return data;
        } catch (const H5::Exception& e) {
            throw ModelError(path_ + ": cannot read tensor '" + name + "' (" + e.getDetailMsg() + "): truncated or damaged file");
        }
    }

    // A 1-D dataset of `type` with at most `max_n` elements (checked before anything is allocated).
    template <typename T>
    std::vector<T> vector(const std::string& name, const H5::PredType& type, std::size_t max_n) const {
        if (!file_.nameExists(name) || file_.childObjType(name) != H5O_TYPE_DATASET)
            throw ModelError(path_ + ": " + name + " is missing or not a dataset");
        H5::DataSet ds = file_.openDataSet(name);
        if (ds.getTypeClass() != H5T_INTEGER)
            throw ModelError(path_ + ": " + name + " should hold integers");
        std::string why;
        const auto dims = checked_dims(ds, why);
        if (!dims) throw ModelError(path_ + ": " + name + ": " + why);
        if (dims->size() != 1) throw ModelError(path_ + ": " + name + " should be one-dimensional");
        const std::size_t n = (*dims)[0];
        if (n > max_n)
            throw ModelError(path_ + ": " + name + " has " + std::to_string(n) + " elements, more than the " +
                             std::to_string(max_n) + " it can have here");
        std::vector<T> data(n);
        if (n) ds.read(data.data(), type);
        return data;
    }

    // vocab_size 0: take the size from the file. The pieces are one byte buffer (piece_bytes, uint8)
    // cut by offsets (piece_offsets, int64, vocab_size + 1 of them: piece i is bytes [off[i], off[i+1])),
    // never variable-length strings, whose damage libhdf5 does not survive.
    std::optional<Vocabulary> vocabulary(std::size_t vocab_size) const {
        try {
            if (!file_.nameExists("tokenizer")) return std::nullopt;
            constexpr std::size_t kMaxVocab = std::size_t{1} << 24;  // 16M ids: far beyond any real vocabulary
            constexpr std::size_t kMaxBytes = std::size_t{1} << 30;
            const auto offsets = vector<std::int64_t>("tokenizer/piece_offsets", H5::PredType::NATIVE_INT64,
                                                      vocab_size ? vocab_size + 1 : kMaxVocab + 1);
            if (offsets.empty())
                throw ModelError(path_ + ": tokenizer/piece_offsets is empty (expected vocab_size + 1 offsets)");
            const std::size_t n = offsets.size() - 1;
            if (vocab_size == 0) vocab_size = n;
            if (n != vocab_size)
                throw ModelError(path_ + ": tokenizer/piece_offsets has " + std::to_string(n + 1) + " entries, expected " +
                                 "vocab_size + 1 = " + std::to_string(vocab_size + 1));
            const auto bytes = vector<std::uint8_t>("tokenizer/piece_bytes", H5::PredType::NATIVE_UINT8, kMaxBytes);
            if (offsets[0] != 0 || static_cast<std::uint64_t>(offsets[n]) != bytes.size())
                throw ModelError(path_ + ": tokenizer/piece_offsets should run from 0 to the size of piece_bytes (" +
                                 std::to_string(bytes.size()) + "), not from " + std::to_string(offsets[0]) + " to " +
                                 std::to_string(offsets[n]));
            // never decreasing, from 0 to the buffer's size: then every piece lies inside the buffer
            for (std::size_t i = 0; i < n; ++i)
                if (offsets[i + 1] < offsets[i])
                    throw ModelError(path_ + ": tokenizer/piece_offsets decreases at entry " + std::to_string(i + 1));
            Vocabulary v;
            for (std::size_t i = 0; i < n; ++i)  // (iterators: with every piece empty, data() is null)
                v.pieces.emplace_back(bytes.begin() + offsets[i], bytes.begin() + offsets[i + 1]);
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
    if (!v) throw ModelError(path + ": has no vocabulary (group tokenizer/ with piece_bytes, piece_offsets and scores)");
    return *v;
}

Model load_model_hdf5(const std::string& path) {
    Reader r(path);
    Model m;
    m.source = path;
    m.format = "hdf5";
    const Arch arch = parse_arch(r.text("arch"), path);
    if (arch != Arch::Llama)
        throw ModelError(path + ": arch '" + arch_name(arch) + "': lmlab's HDF5 model files hold llama models; "
                         "load other families from their own formats (a Hugging Face directory, an llm.c file)");
    Config& c = m.config = Config::of(Arch::Llama);
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
    for (const BoundTensor& t : bind_tensors(m)) *t.dst = r.tensor(t.name, t.shape);
    m.vocabulary = r.vocabulary(c.vocab_size);
    return m;
}

}  // namespace lmlab
