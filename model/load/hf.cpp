// Loading a Hugging Face model directory: config.json (the hyperparameters, transformers' format)
// + model.safetensors or shards (the weights; see safetensors.h).
//
// One model_type is one HfFamily: a function mapping config.json's fields to our Config (refusing
// every field whose value our forward does not implement), the optional name prefix, and the
// buffers to skip; the tensors' names are the hf column of the family's table (model/tensors.h).
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

#include "model/load/json_depth.h"
#include "model/model.h"
#include "model/load/safetensors.h"
#include "model/tensors.h"

namespace lmlab {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// config.json with typed, named accessors: every wrong or missing field is a ModelError naming the
// file, the field and the value found.
class ConfigJson {
public:
    ConfigJson(json j, std::string path) : j_(std::move(j)), path_(std::move(path)) {}
    const std::string& path() const { return path_; }
    bool has(const char* field) const { return j_.contains(field) && !j_[field].is_null(); }
    std::string dump(const char* field) const { return has(field) ? j_[field].dump() : "null"; }  // for messages
    const json& raw(const char* field) const { return j_[field]; }  // (after has())

    // A required positive integer. (We do not fall back on transformers' defaults for dimensions:
    // every config.json transformers writes has them, and a guessed n_head would load silently.)
    std::size_t size(const char* field) const {
        if (!has(field)) throw ModelError(fmt::format("{}: field '{}' is missing (expected a positive integer)", path_, field));
        const json& v = j_[field];
        if (!v.is_number_unsigned() || v.get<std::uint64_t>() == 0)
            throw ModelError(fmt::format("{}: field '{}' is {}, expected a positive integer", path_, field, v.dump()));
        return static_cast<std::size_t>(v.get<std::uint64_t>());
    }
    double number(const char* field, double fallback) const {
        if (!has(field)) return fallback;
        const json& v = j_[field];
        if (!v.is_number()) throw ModelError(fmt::format("{}: field '{}' is {}, expected a number", path_, field, v.dump()));
        return v.get<double>();
    }
    bool boolean(const char* field, bool fallback) const {
        if (!has(field)) return fallback;
        const json& v = j_[field];
        if (!v.is_boolean()) throw ModelError(fmt::format("{}: field '{}' is {}, expected true or false", path_, field, v.dump()));
        return v.get<bool>();
    }
    std::string text(const char* field, const char* fallback) const {
        if (!has(field)) {
            if (fallback) return fallback;
            throw ModelError(fmt::format("{}: field '{}' is missing", path_, field));
        }
        const json& v = j_[field];
        if (!v.is_string()) throw ModelError(fmt::format("{}: field '{}' is {}, expected a string", path_, field, v.dump()));
        return v.get<std::string>();
    }
    // Token ids: absent or null -> none; one id or a list of ids (Llama 3 lists several).
    std::vector<int> token_ids(const char* field) const {
        std::vector<int> ids;
        if (!has(field)) return ids;
        const json& v = j_[field];
        for (const json& id : v.is_array() ? v : json::array({v})) {
            if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() > INT32_MAX)
                throw ModelError(fmt::format("{}: field '{}' is {}, expected a token id or a list of them", path_, field, v.dump()));
            ids.push_back(static_cast<int>(id.get<std::int64_t>()));
        }
        return ids;
    }
    // A boolean field that must keep the value our forward implements.
    void require(const char* field, bool fallback, bool wanted, const char* why) const {
        const bool v = boolean(field, fallback);
        if (v != wanted)
            throw ModelError(fmt::format("{}: {} is {}: {}; this engine implements only {} = {}", path_, field, v, why, field,
                                         wanted));
    }

private:
    json j_;
    std::string path_;
};

// ---- GPT-2 (transformers' GPT2Config, src/transformers/models/gpt2/configuration_gpt2.py) ----------

Config gpt2_config(const ConfigJson& j) {
    Config c = Config::gpt2();
    c.dim = j.size("n_embd");
    c.n_layers = j.size("n_layer");
    c.n_heads = j.size("n_head");
    c.n_kv_heads = c.n_heads;  // GPT-2 is plain multi-head attention
    c.ffn_dim = j.has("n_inner") ? j.size("n_inner") : 4 * c.dim;  // n_inner null: 4 * n_embd
    c.vocab_size = j.size("vocab_size");
    c.max_seq_len = j.size("n_positions");  // the wpe table's rows: no position beyond it has an embedding
    c.norm_eps = static_cast<float>(j.number("layer_norm_epsilon", 1e-5));
    // transformers' ACT2FN: gelu_new (OpenAI's formula) and gelu_pytorch_tanh are the tanh
    // approximation; gelu is the exact erf form. Others (relu, gelu_fast, quick_gelu, ...) change the model.
    const std::string act = j.text("activation_function", "gelu_new");
    if (act == "gelu_new" || act == "gelu_pytorch_tanh")
        c.activation = Activation::GeluTanh;
    else if (act == "gelu")
        c.activation = Activation::GeluErf;
    else
        throw ModelError(fmt::format("{}: activation_function '{}' is not supported (supported: gelu_new, "
                                     "gelu_pytorch_tanh (tanh approximation), gelu (erf))",
                                     j.path(), act));
    c.tied_embeddings = j.boolean("tie_word_embeddings", true);  // PretrainedConfig's default
    // Switches of GPT2Attention that our forward does not implement: refused, never ignored.
    j.require("add_cross_attention", false, false, "cross-attention layers (an encoder-decoder GPT-2) are not supported");
    j.require("scale_attn_weights", true, true,
              "attention scores without the 1/sqrt(head_dim) scale are an unsupported numerical variant");
    j.require("scale_attn_by_inverse_layer_idx", false, false,
              "scaling attention by 1/(layer+1) is an unsupported numerical variant");
    j.require("reorder_and_upcast_attn", false, false,
              "reordered, upcast attention (Mistral's GPT-2 training trick) is an unsupported numerical variant");
    return c;
}

// "h.3.attn.bias" / "h.3.attn.masked_bias": GPT2Attention's causal-mask buffers (older transformers
// saved them). Masks, not weights: our attention is causal by construction.
bool gpt2_ignored(const std::string& name) {
    if (name.rfind("h.", 0) != 0) return false;
    std::size_t i = 2;
    while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
    if (i == 2) return false;
    const std::string rest = name.substr(i);
    return rest == ".attn.bias" || rest == ".attn.masked_bias";
}

// ---- LLaMA and Qwen2 (transformers' LlamaConfig, Qwen2Config) ----------------------------------------

// The fields LlamaConfig and Qwen2Config share; `c` brings the family's fixed choices.
Config llama_like_config(const ConfigJson& j, Config c) {
    c.dim = j.size("hidden_size");
    c.n_layers = j.size("num_hidden_layers");
    c.n_heads = j.size("num_attention_heads");
    c.n_kv_heads = j.has("num_key_value_heads") ? j.size("num_key_value_heads") : c.n_heads;  // null: no GQA
    c.ffn_dim = j.size("intermediate_size");
    c.vocab_size = j.size("vocab_size");
    c.max_seq_len = j.size("max_position_embeddings");
    c.norm_eps = static_cast<float>(j.number("rms_norm_eps", c.norm_eps));
    c.rope_theta = static_cast<float>(j.number("rope_theta", c.rope_theta));
    // Hugging Face's checkpoints pair RoPE dimensions as (i, i + head_dim/2): the conversion from
    // Meta's weights permuted the rows of wq and wk so that this gives the same model (README).
    c.rope_style = RopeStyle::RotateHalf;
    // Features our forward does not implement: refused by name, never ignored.
    const std::string act = j.text("hidden_act", "silu");
    if (act != "silu")
        throw ModelError(fmt::format("{}: hidden_act '{}' is not supported (the SwiGLU feed-forward uses silu)", j.path(), act));
    if (j.has("rope_scaling"))
        throw ModelError(fmt::format("{}: rope_scaling is {}: scaled RoPE (linear, dynamic, yarn, llama3) is not "
                                     "implemented; this engine would compute a different model",
                                     j.path(), j.dump("rope_scaling")));
    if (j.has("head_dim") && j.size("head_dim") != c.dim / c.n_heads)
        throw ModelError(fmt::format("{}: head_dim {} differs from hidden_size / num_attention_heads = {}; this engine "
                                     "derives head_dim",
                                     j.path(), j.size("head_dim"), c.dim / c.n_heads));
    c.tied_embeddings = j.boolean("tie_word_embeddings", false);  // LlamaConfig's and Qwen2Config's default
    return c;
}

Config llama_config(const ConfigJson& j) {
    Config c = llama_like_config(j, Config::llama());
    j.require("attention_bias", false, false, "biases on the attention projections are not implemented for llama");
    j.require("mlp_bias", false, false, "biases on the MLP projections are not implemented for llama");
    return c;
}

Config qwen2_config(const ConfigJson& j) {
    Config c = llama_like_config(j, Config::qwen2());
    // Qwen2.5 configs carry sliding_window but switch it off; a model that uses it attends differently.
    j.require("use_sliding_window", false, false, "sliding-window attention is not implemented");
    return c;
}

// ---- Mixtures of experts (transformers' Qwen2MoeConfig, MixtralConfig) -------------------------------

// The numbers every MoE config has: n_experts from `experts_field`, top-k, and the refusals of what
// our moe_ffn does not implement (every layer sparse, no sliding window).
void moe_common(const ConfigJson& j, Config& c, const char* experts_field) {
    c.n_experts = j.size(experts_field);
    c.top_k = j.size("num_experts_per_tok");
    if (c.top_k > c.n_experts)
        throw ModelError(fmt::format("{}: num_experts_per_tok is {} but {} is {}: a token cannot pick more experts than "
                                     "there are; fix config.json",
                                     j.path(), c.top_k, experts_field, c.n_experts));
    // (Mixtral's router_jitter_noise is applied only in training mode: inference ignores it, as we do.)
}

// A sliding window that is in use changes which positions attention sees: refused.
void refuse_sliding_window(const ConfigJson& j, std::size_t max_seq_len) {
    if (j.has("sliding_window") && j.size("sliding_window") < max_seq_len)
        throw ModelError(fmt::format("{}: sliding_window is {} (< max_position_embeddings {}): sliding-window attention "
                                     "is not implemented; set it to null to run the model with full attention",
                                     j.path(), j.dump("sliding_window"), max_seq_len));
}

Config qwen2_moe_config(const ConfigJson& j) {
    Config c = llama_like_config(j, Config::qwen2_moe());
    j.require("use_sliding_window", false, false, "sliding-window attention is not implemented");
    moe_common(j, c, "num_experts");
    c.ffn_dim = j.size("moe_intermediate_size");  // each expert's width (intermediate_size: the dense MLP, unused)
    c.shared_ffn_dim = j.size("shared_expert_intermediate_size");
    c.norm_topk_prob = j.boolean("norm_topk_prob", false);  // Qwen2MoeConfig's default
    // Qwen2MoeDecoderLayer has a sparse block at layer i only when (i + 1) % decoder_sparse_step == 0 and
    // i is not in mlp_only_layers; the others have a dense MLP, which this engine does not mix in.
    const double step = j.number("decoder_sparse_step", 1);
    if (step != 1)
        throw ModelError(fmt::format("{}: decoder_sparse_step is {}: only every layer sparse (1) is implemented; layers "
                                     "with a dense MLP between sparse ones are not",
                                     j.path(), j.dump("decoder_sparse_step")));
    if (j.has("mlp_only_layers") && !(j.raw("mlp_only_layers").is_array() && j.raw("mlp_only_layers").empty()))
        throw ModelError(fmt::format("{}: mlp_only_layers is {}: layers with a dense MLP instead of experts are not "
                                     "implemented; only [] (every layer sparse) is",
                                     j.path(), j.dump("mlp_only_layers")));
    return c;
}

Config mixtral_config(const ConfigJson& j) {
    Config c = llama_like_config(j, Config::mixtral());
    refuse_sliding_window(j, c.max_seq_len);
    moe_common(j, c, "num_local_experts");  // c.ffn_dim = intermediate_size: each expert's width
    return c;
}

// "layers.3.self_attn.rotary_emb.inv_freq": RoPE's frequency table, saved by older transformers.
// Not a weight: we compute RoPE from rope_theta.
bool llama_ignored(const std::string& name) {
    constexpr std::string_view suffix = ".self_attn.rotary_emb.inv_freq";
    return name.size() > suffix.size() && std::string_view(name).substr(name.size() - suffix.size()) == suffix;
}

// ---- the families -------------------------------------------------------------------------------

struct HfFamily {
    const char* model_type;
    Config (*config)(const ConfigJson&);  // config.json -> our Config (validated by the caller)
    // A prefix the files may put before every name of the table (GPT2LMHeadModel saves
    // "transformer.h.0...", GPT2Model saves "h.0..."): accepted with or without, not mixed.
    const char* optional_prefix;
    const char* lm_head;  // the untied classifier's name (never prefixed): [vocab, dim] -> Model::output
    bool (*ignored)(const std::string& name);  // non-weight buffers to skip (names without the prefix)
};

// (Each tensor's Hugging Face name is the hf column of the family's table, model/tensors.h.)
const HfFamily kFamilies[] = {
    {"gpt2", gpt2_config, "transformer.", "lm_head.weight", gpt2_ignored},
    {"llama", llama_config, "model.", "lm_head.weight", llama_ignored},
    {"qwen2", qwen2_config, "model.", "lm_head.weight", llama_ignored},
    {"qwen2_moe", qwen2_moe_config, "model.", "lm_head.weight", llama_ignored},
    {"mixtral", mixtral_config, "model.", "lm_head.weight", llama_ignored},
};

const HfFamily& family_of(const std::string& model_type, const std::string& path) {
    for (const HfFamily& f : kFamilies)
        if (model_type == f.model_type) return f;
    std::vector<std::string> known;
    for (const HfFamily& f : kFamilies) known.push_back(f.model_type);
    throw ModelError(fmt::format("{}: model_type '{}' is not supported (supported: {})", path, model_type,
                                 fmt::join(known, ", ")));
}

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
    const HfFamily& fam = family_of(cj.text("model_type", nullptr), config_path);

    Model m;
    m.source = dir;
    m.config = fam.config(cj);
    m.config.validate(config_path);
    m.eos_token_ids = cj.token_ids("eos_token_id");
    const Config& c = m.config;

    SafetensorsCheckpoint ck = SafetensorsCheckpoint::open_dir(dir);

    // The tensors we need: the family's table (with the untied classifier when the config says so).
    std::vector<BoundTensor> want = bind_tensors(m);

    // With or without the prefix: decided by the files, and the same for every name.
    const std::vector<std::string> names = ck.names();
    const std::string prefix = fam.optional_prefix;
    std::vector<std::string> with, without;
    for (const std::string& n : names) {
        if (n == fam.lm_head) continue;
        (n.rfind(prefix, 0) == 0 ? with : without).push_back(n);
    }
    if (!with.empty() && !without.empty())
        throw ModelError(fmt::format("{}: some tensor names have the '{}' prefix ({}) and some do not ({}); expected "
                                     "one convention for the whole model",
                                     ck.source(), prefix, list_some(with, 2), list_some(without, 2)));
    const std::string used = with.empty() ? "" : prefix;
    auto file_name = [&](const std::string& hf_name) { return hf_name == fam.lm_head ? hf_name : used + hf_name; };

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
    const bool tied_head_in_file = c.tied_embeddings && ck.has(fam.lm_head);
    for (const std::string& n : names) {
        if (explained.count(n)) continue;
        if (n.rfind(used, 0) == 0 && fam.ignored(n.substr(used.size()))) continue;
        if (tied_head_in_file && n == fam.lm_head) continue;  // checked below: must equal the embeddings
        unknown.push_back(n);
    }
    if (!unknown.empty())
        throw ModelError(fmt::format("{}: the file has tensors this engine would ignore: {} — a different architecture? "
                                     "({} model_type '{}')",
                                     ck.source(), list_some(unknown), config_path, fam.model_type));

    for (const BoundTensor& b : want) {
        std::vector<float> v = ck.read_f32(file_name(b.hf_name));
        *b.dst = b.hf_conv1d ? transpose(v, b.shape[1], b.shape[0]) : std::move(v);
    }
    // A tied model whose file still carries the classifier: it must be the embedding matrix
    // (transformers saves it that way); a different one means the config lies about tying.
    if (tied_head_in_file) {
        const auto emb = std::find_if(want.begin(), want.end(), [&](const BoundTensor& b) { return b.dst == &m.tok_embeddings; });
        const std::string wte = file_name(emb->hf_name);
        if (ck.shape(fam.lm_head) != ck.shape(wte))
            throw ModelError(fmt::format("{}: tie_word_embeddings is true but {} has shape {}, not {}'s {}", config_path,
                                         fam.lm_head, shape_str(ck.shape(fam.lm_head)), wte, shape_str(ck.shape(wte))));
        const std::vector<float> head = ck.read_f32(fam.lm_head);
        for (std::size_t i = 0; i < head.size(); ++i)
            if (std::bit_cast<std::uint32_t>(head[i]) != std::bit_cast<std::uint32_t>(m.tok_embeddings[i]))
                throw ModelError(fmt::format("{}: tie_word_embeddings is true but {} differs from {} at element {} "
                                             "({} vs {}): set \"tie_word_embeddings\": false to use it",
                                             config_path, fam.lm_head, wte, i, head[i], m.tok_embeddings[i]));
    }
    return m;
}

}  // namespace lmlab
