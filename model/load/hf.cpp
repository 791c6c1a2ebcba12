// Loading a Hugging Face model directory: config.json (the hyperparameters, transformers' format)
// + model.safetensors or shards (the weights; see safetensors.h).
//
// One model_type is one family (model/family.h): its row maps config.json's fields to our Config
// (refusing every field whose value the block does not implement) and names the optional prefix
// and the buffers to skip; the tensors' names are the hf column of the family's table.
//
// Order of work: config -> headers of every file -> every tensor's presence, dtype and shape, and
// nothing unexplained in the files -> only then the reads (so a wrong file fails in milliseconds,
// before gigabytes are allocated).
#include <algorithm>
#include <bit>
#include <cctype>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "model/family.h"
#include "model/load/config_json.h"
#include "model/load/json_depth.h"
#include "model/load/load.h"
#include "model/model.h"
#include "model/load/safetensors.h"
#include "model/tensors.h"

namespace lmlab {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The family of a config.json's model_type (its row, model/family.h, maps config.json to a Config).
const Family& family_of(const std::string& model_type, const std::string& path) {
    if (const Family* f = find_family_hf(model_type); f && f->from_hf) return *f;
    std::vector<std::string> known;
    for (const Family* f : families())
        if (f->from_hf) known.insert(known.end(), f->hf_model_types.begin(), f->hf_model_types.end());
    throw ModelError(fmt::format("{}: model_type '{}' is not supported (supported: {})", path, model_type,
                                 fmt::join(known, ", ")));
}

// The untied classifier's name in every Hugging Face family (never prefixed): [vocab, dim] -> Model::output
constexpr const char* kLmHead = "lm_head.weight";

std::string list_some(const std::vector<std::string>& names, std::size_t most = 5) {
    std::vector<std::string> some(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(std::min(most, names.size())));
    std::string s = fmt::format("{}", fmt::join(some, ", "));
    if (names.size() > most) s += fmt::format(" (and {} more)", names.size() - most);
    return s;
}

// [out, in] <- [in, out]: Hugging Face GPT-2's Conv1D stores x @ W with W [in, out]; we compute W x.
std::vector<float> transpose(const std::vector<float>& src, std::size_t in, std::size_t out) {
    std::vector<float> dst(src.size());
    for (std::size_t i = 0; i < in; ++i)
        for (std::size_t o = 0; o < out; ++o) dst[o * in + i] = src[i * out + o];
    return dst;
}

}  // namespace

Model load_model_hf(const std::string& dir) {
    const std::string config_path = (fs::path(dir) / "config.json").string();
    json raw;
    {
        std::ifstream in(config_path);
        if (!in) throw ModelError(fmt::format("{}: cannot open (a Hugging Face model directory has config.json)", config_path));
        try {
            raw = json::parse(in, json_depth_limit(config_path));
        } catch (const json::exception& e) {
            throw ModelError(fmt::format("{}: not valid JSON ({})", config_path, e.what()));
        }
    }
    if (!raw.is_object()) throw ModelError(fmt::format("{}: expected a JSON object", config_path));
    const ConfigJson cj(std::move(raw), config_path);
    const Family& fam = family_of(cj.text("model_type", nullptr), config_path);

    Model m;
    m.source = dir;
    m.format = "hf";
    m.config = fam.from_hf(cj);
    m.config.validate(config_path);
    m.eos_token_ids = cj.token_ids("eos_token_id");
    const Config& c = m.config;

    SafetensorsCheckpoint ck = SafetensorsCheckpoint::open_dir(dir);

    // The tensors we need: the family's table (with the untied classifier when the config says so).
    std::vector<BoundTensor> want = bind_tensors(m);

    // With or without the prefix: decided by the files, and the same for every name.
    const std::vector<std::string> names = ck.names();
    // A prefix the files may put before every name of the table (GPT2LMHeadModel saves
    // "transformer.h.0...", GPT2Model saves "h.0..."): accepted with or without, not mixed.
    const std::string prefix = fam.hf_prefix;
    std::vector<std::string> with, without;
    for (const std::string& n : names) {
        if (n == kLmHead) continue;
        (n.rfind(prefix, 0) == 0 ? with : without).push_back(n);
    }
    if (!with.empty() && !without.empty())
        throw ModelError(fmt::format("{}: some tensor names have the '{}' prefix ({}) and some do not ({}); expected "
                                     "one convention for the whole model",
                                     ck.source(), prefix, list_some(with, 2), list_some(without, 2)));
    const std::string used = with.empty() ? "" : prefix;
    auto file_name = [&](const std::string& hf_name) { return hf_name == kLmHead ? hf_name : used + hf_name; };

    // Every tensor present, a float dtype, the right shape: checked for all before reading any.
    std::set<std::string> explained;
    for (const BoundTensor& b : want) {
        const std::string name = file_name(b.hf_name);
        explained.insert(name);
        const std::vector<std::size_t> stored =
            b.hf_conv1d ? std::vector<std::size_t>(b.shape.rbegin(), b.shape.rend()) : b.shape;
        const std::string layout =
            b.hf_conv1d ? fmt::format(" (Conv1D layout [in, out], the transpose of our {})", shape_str(b.shape)) : "";
        if (!ck.has(name))
            throw ModelError(fmt::format("{}: tensor '{}' is missing (expected shape {}{}, for {} {} layers dim {} vocab {})",
                                         ck.source(), name, shape_str(stored), layout, arch_name(c.arch), c.n_layers,
                                         c.dim, c.vocab_size));
        if (ck.shape(name) != stored)
            throw ModelError(fmt::format("{}: tensor '{}' has shape {}, expected {}{} from {}", ck.file_of(name), name,
                                         shape_str(ck.shape(name)), shape_str(stored), layout, config_path));
        if (!safetensors_dtype_is_float(ck.dtype(name)))
            throw ModelError(fmt::format("{}: tensor '{}' has dtype {}; this engine reads F32, F16 and BF16 weights",
                                         ck.file_of(name), name, ck.dtype(name)));
    }
    // Anything left in the files is a weight we would silently drop: refuse.
    std::vector<std::string> unknown;
    const bool tied_head_in_file = c.tied_embeddings && ck.has(kLmHead);
    for (const std::string& n : names) {
        if (explained.count(n)) continue;
        if (n.rfind(used, 0) == 0 && fam.hf_ignored(n.substr(used.size()))) continue;
        if (tied_head_in_file && n == kLmHead) continue;  // checked below: must equal the embeddings
        unknown.push_back(n);
    }
    if (!unknown.empty())
        throw ModelError(fmt::format("{}: the file has tensors this engine would ignore: {} — a different architecture? "
                                     "({} model_type '{}')",
                                     ck.source(), list_some(unknown), config_path, cj.text("model_type", nullptr)));

    for (const BoundTensor& b : want) {
        std::vector<float> v = ck.read_f32(file_name(b.hf_name));
        *b.dst = b.hf_conv1d ? transpose(v, b.shape[1], b.shape[0]) : std::move(v);
    }
    // A tied model whose file still carries the classifier: it must be the embedding matrix
    // (transformers saves it that way); a different one means the config lies about tying.
    if (tied_head_in_file) {
        const auto emb = std::find_if(want.begin(), want.end(), [&](const BoundTensor& b) { return b.dst == &m.tok_embeddings; });
        const std::string wte = file_name(emb->hf_name);
        if (ck.shape(kLmHead) != ck.shape(wte))
            throw ModelError(fmt::format("{}: tie_word_embeddings is true but {} has shape {}, not {}'s {}", config_path,
                                         kLmHead, shape_str(ck.shape(kLmHead)), wte, shape_str(ck.shape(wte))));
        const std::vector<float> head = ck.read_f32(kLmHead);
        for (std::size_t i = 0; i < head.size(); ++i)
            if (std::bit_cast<std::uint32_t>(head[i]) != std::bit_cast<std::uint32_t>(m.tok_embeddings[i]))
                throw ModelError(fmt::format("{}: tie_word_embeddings is true but {} differs from {} at element {} "
                                             "({} vs {}): set \"tie_word_embeddings\": false to use it",
                                             config_path, kLmHead, wte, i, head[i], m.tok_embeddings[i]));
    }
    return m;
}

}  // namespace lmlab
