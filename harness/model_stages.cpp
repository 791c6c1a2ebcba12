// Layer, model and generation stages: run the C++ model on a fixture's inputs and return every
// intermediate the PyTorch reference recorded, in pipeline order.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <map>
#include <memory>

#include "model/forward.h"
#include "model/model.h"
#include "model/session.h"
#include "stages.h"

namespace lmlab {

namespace {

constexpr std::size_t kAny = Case::kAnyDim;
constexpr const char* kTeacherForced = " [teacher-forced]";

// The running stage's model (its table row names it; the runner resolved the path). Loaded once.
const Model& stage_model(const StageEnv& env) {
    static std::map<std::string, std::unique_ptr<Model>> loaded;
    if (env.model.empty()) throw FixtureError("this stage has no model in the stage table (harness/stages.cpp)");
    auto& slot = loaded[env.model];
    if (!slot) slot = std::make_unique<Model>(load_model(env.model));
    return *slot;
}

std::size_t case_index(const Case& c, const std::string& attr) {
    const double v = c.number(attr);
    if (!(v >= 0) || v != std::floor(v))
        throw FixtureError(c.file + ": /" + c.name + " attribute " + attr + " = " + std::to_string(v) + " is not an index");
    return static_cast<std::size_t>(v);
}

std::vector<int> token_ids(const Case& c, const std::string& name) {
    const auto& t = c.input(name, {kAny});
    std::vector<int> ids;
    for (float f : t.data) ids.push_back(static_cast<int>(f));
    return ids;
}

// The golden output `name` of a case, which must have `shape`: the teacher-forced runs read
// PyTorch's outputs as their inputs, so they are checked like inputs.
const Array<float>& golden(const Case& c, const std::string& name, const std::vector<std::size_t>& shape) {
    const auto it = c.outputs.find(name);
    if (it == c.outputs.end())
        throw FixtureError(c.file + ": dataset /" + c.name + "/outputs/" + name + " is missing (expected shape " +
                           shape_str(shape) + "). " + regenerate_hint());
    bool same = it->second.shape.size() == shape.size();
    for (std::size_t i = 0; same && i < shape.size(); ++i) same = shape[i] == kAny || shape[i] == it->second.shape[i];
    if (!same)
        throw FixtureError(c.file + ": dataset /" + c.name + "/outputs/" + name + " has shape " +
                           shape_str(it->second.shape) + ", expected " + shape_str(shape) + ". " + regenerate_hint());
    return it->second;
}

// Row r of a [rows, cols] array whose shape was checked.
std::span<const float> row(const Array<float>& a, std::size_t r) {
    const std::size_t cols = a.shape.at(1);
    return std::span<const float>(a.data).subspan(r * cols, cols);
}

// A KV cache whose layer `layer` holds the given rows ([n, kv_dim] each).
KVCache prefilled_cache(const Config& c, std::size_t layer, const Array<float>& k, const Array<float>& v) {
    KVCache cache(c.n_layers, c.max_seq_len, c.kv_dim());
    for (std::size_t p = 0; p < k.shape[0]; ++p) cache.append(layer, p, row(k, p), row(v, p));
    return cache;
}

std::size_t checked_layer(const Case& c, const Config& cfg) {
    const std::size_t layer = case_index(c, "layer");
    if (layer >= cfg.n_layers)
        throw FixtureError(c.file + ": /" + c.name + " layer " + std::to_string(layer) + " but the model has " +
                           std::to_string(cfg.n_layers) + " layers");
    return layer;
}

}  // namespace

std::vector<StageOutput> stage_layer_attention(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    const std::size_t layer = checked_layer(c, cfg), pos = case_index(c, "pos");
    const auto& x = c.input("x", {cfg.dim});
    KVCache cache = prefilled_cache(cfg, layer, c.input("cache_k", {pos, cfg.kv_dim()}), c.input("cache_v", {pos, cfg.kv_dim()}));
    RunState s(cfg);
    std::vector<float> out(cfg.dim);
    llama_attention(cfg, m.layers[layer], layer, pos, x.data, cache, s, out);
    return {{"q", "q", s.q}, {"k", "k", s.k}, {"v", "v", s.v}, {"out", "out", out}};
}

std::vector<StageOutput> stage_layer_ffn(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const std::size_t layer = checked_layer(c, m.config);
    const auto& x = c.input("x", {m.config.dim});
    RunState s(m.config);
    std::vector<float> out(m.config.dim);
    llama_ffn(m.config, m.layers[layer], x.data, s, out);
    return {{"out", "out", out}};
}

// One block of any family on a given input with a pre-filled cache: every intermediate.
std::vector<StageOutput> stage_layer_block(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    const std::size_t layer = checked_layer(c, cfg), pos = case_index(c, "pos");
    std::vector<float> x = c.input("x", {cfg.dim}).data;
    KVCache cache = prefilled_cache(cfg, layer, c.input("cache_k", {pos, cfg.kv_dim()}), c.input("cache_v", {pos, cfg.kv_dim()}));
    RunState s(cfg);
    LayerTrace t;
    block(m, layer, pos, x, cache, s, &t);
    std::vector<StageOutput> outs;
    for (const TraceField& f : layer_trace_fields(cfg.arch))
        if (std::string(f.name) != "in") outs.push_back({f.name, f.name, t.*f.field});
    return outs;
}

std::vector<StageOutput> stage_model_forward(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    const std::vector<int> tokens = token_ids(c, "tokens");
    const std::size_t n = tokens.size();
    const auto& fields = layer_trace_fields(cfg.arch);

    // 1. Free-running: our own model end to end, every intermediate stacked over positions, in
    //    pipeline order (layer by layer, role by role).
    std::vector<StageOutput> outs;
    {
        KVCache cache(cfg.n_layers, cfg.max_seq_len, cfg.kv_dim());
        RunState s(cfg);
        std::vector<Trace> traces(n);
        for (std::size_t p = 0; p < n; ++p) forward(m, tokens[p], p, cache, s, &traces[p]);
        auto stacked = [&](auto&& get) {
            std::vector<float> all;
            for (std::size_t p = 0; p < n; ++p) {
                const std::vector<float>& v = get(traces[p]);
                all.insert(all.end(), v.begin(), v.end());
            }
            return all;
        };
        for (std::size_t l = 0; l < cfg.n_layers; ++l)
            for (const TraceField& f : fields) {
                const std::string name = fmt::format("layer{}.{}", l, f.name);
                outs.push_back({name, name, stacked([&](const Trace& t) -> const auto& { return t.layers[l].*f.field; })});
            }
        outs.push_back({"final_norm", "final_norm", stacked([](const Trace& t) -> const auto& { return t.final_norm; })});
        outs.push_back({"logits", "logits", stacked([](const Trace& t) -> const auto& { return t.logits; })});
    }

    // 2. Teacher-forced: each layer alone, fed the reference's input of that layer at every position
    //    and the reference's keys/values for earlier positions. Its error is the error the layer adds;
    //    the free-running error minus this is what it inherits from the layers before it.
    for (std::size_t l = 0; l < cfg.n_layers; ++l) {
        const std::string L = fmt::format("layer{}.", l);
        const auto& in = golden(c, L + "in", {n, cfg.dim});
        const auto& gk = golden(c, L + "k", {n, cfg.kv_dim()});
        const auto& gv = golden(c, L + "v", {n, cfg.kv_dim()});
        KVCache cache(cfg.n_layers, cfg.max_seq_len, cfg.kv_dim());
        RunState s(cfg);
        std::vector<std::vector<float>> stacked(fields.size());
        for (std::size_t p = 0; p < n; ++p) {
            std::vector<float> x(row(in, p).begin(), row(in, p).end());
            LayerTrace t;
            block(m, l, p, x, cache, s, &t);
            cache.overwrite(l, p, row(gk, p), row(gv, p));  // later positions see the reference's cache
            for (std::size_t f = 0; f < fields.size(); ++f)
                stacked[f].insert(stacked[f].end(), (t.*fields[f].field).begin(), (t.*fields[f].field).end());
        }
        for (std::size_t f = 0; f < fields.size(); ++f)
            if (std::string(fields[f].name) != "in")
                outs.push_back({L + fields[f].name + kTeacherForced, L + fields[f].name, std::move(stacked[f])});
    }
    // final norm and classifier on the reference's last block output
    {
        const auto& last = golden(c, fmt::format("layer{}.out", cfg.n_layers - 1), {n, cfg.dim});
        RunState s(cfg);
        std::vector<float> all_norm, all_logits;
        for (std::size_t p = 0; p < n; ++p) {
            head(m, row(last, p), s);
            all_norm.insert(all_norm.end(), s.xn.begin(), s.xn.end());
            all_logits.insert(all_logits.end(), s.logits.begin(), s.logits.end());
        }
        outs.push_back({std::string("final_norm") + kTeacherForced, "final_norm", std::move(all_norm)});
        outs.push_back({std::string("logits") + kTeacherForced, "logits", std::move(all_logits)});
    }
    return outs;
}

// The same model from another file layout (a Hugging Face directory of the tiny LLaMA, whose q/k
// rows were permuted for rotate-half RoPE): q and k differ inside each head by that permutation, so
// only what the permutation leaves unchanged is compared: the final norm and the logits.
std::vector<StageOutput> stage_model_logits(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    const std::vector<int> tokens = token_ids(c, "tokens");
    KVCache cache(cfg.n_layers, cfg.max_seq_len, cfg.kv_dim());
    RunState s(cfg);
    std::vector<float> norm, logits;
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        forward(m, tokens[p], p, cache, s);
        norm.insert(norm.end(), s.xn.begin(), s.xn.end());
        logits.insert(logits.end(), s.logits.begin(), s.logits.end());
    }
    return {{"final_norm", "final_norm", norm}, {"logits", "logits", logits}};
}

std::vector<StageOutput> stage_model_kv_cache(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    const std::vector<int> tokens = token_ids(c, "tokens");
    KVCache cache(cfg.n_layers, cfg.max_seq_len, cfg.kv_dim());
    RunState s(cfg);
    for (std::size_t p = 0; p < tokens.size(); ++p) forward(m, tokens[p], p, cache, s);
    // invariants before values: every layer holds exactly the prompt
    for (std::size_t l = 0; l < cfg.n_layers; ++l)
        if (cache.length(l) != tokens.size())
            throw std::runtime_error(fmt::format("KV cache layer {} holds {} positions after a {}-token prompt", l,
                                                 cache.length(l), tokens.size()));
    std::vector<float> k, v;
    for (std::size_t l = 0; l < cfg.n_layers; ++l) {
        k.insert(k.end(), cache.keys(l).begin(), cache.keys(l).end());
        v.insert(v.end(), cache.values(l).begin(), cache.values(l).end());
    }
    return {{"cache_k", "cache_k", k}, {"cache_v", "cache_v", v}};
}

std::vector<StageOutput> stage_generation_greedy(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    const std::vector<int> prompt = token_ids(c, "prompt");
    const std::size_t n_new = case_index(c, "max_new_tokens");
    const auto& golden_tokens = golden(c, "tokens", {n_new});
    // The fixture keeps the reference's logits in full at a few steps and its top-k ids and values
    // at every step (a 151936-token vocabulary would otherwise take megabytes per step).
    const std::vector<int> full_steps = token_ids(c, "full_steps");
    const auto& topk_ids = golden(c, "topk_ids", {n_new, kAny});
    const std::size_t k = topk_ids.shape[1];
    golden(c, "topk_logits", {n_new, k});
    golden(c, "logits", {full_steps.size(), cfg.vocab_size});
    for (int step : full_steps)
        if (step < 0 || static_cast<std::size_t>(step) >= n_new)
            throw FixtureError(fmt::format("{}: /{}/inputs/full_steps has step {} outside [0, {})", c.file, c.name, step, n_new));
    for (float id : topk_ids.data)
        if (!(id >= 0 && id < static_cast<float>(cfg.vocab_size)))
            throw FixtureError(fmt::format("{}: /{}/outputs/topk_ids has id {} outside the vocabulary", c.file, c.name, id));

    // Free-running greedy generation: the tokens must equal the reference's exactly.
    Session session(m);
    Sampler greedy({.temperature = 0.0f}, cfg.vocab_size);
    const std::vector<int> tokens = session.generate(prompt, n_new, greedy).tokens;

    // Logits at every step, teacher-forced on the reference's tokens so that they stay comparable even
    // after a divergence: in full at full_steps, and at the reference's top-k ids at every step.
    // Computed twice to check determinism (bit-identical).
    auto step_logits = [&]() {
        Session s(m);
        std::vector<float> full, top;
        std::span<const float> logits;
        for (int t : prompt) logits = s.feed(t);
        for (std::size_t i = 0; i < n_new; ++i) {
            if (std::find(full_steps.begin(), full_steps.end(), static_cast<int>(i)) != full_steps.end())
                full.insert(full.end(), logits.begin(), logits.end());
            for (std::size_t j = 0; j < k; ++j) top.push_back(logits[static_cast<std::size_t>(topk_ids.data[i * k + j])]);
            if (i + 1 < n_new) logits = s.feed(static_cast<int>(golden_tokens.data[i]));
        }
        return std::pair{full, top};
    };
    const auto [full, top] = step_logits();
    const auto [full2, top2] = step_logits();
    if (full != full2 || top != top2)
        throw std::runtime_error("nondeterministic: two runs over the same tokens gave different logits bits");

    // Tie-aware verdict at the first differing token: the reference's top-1 and top-2 logits there.
    std::string note;
    std::size_t matched = 0;
    while (matched < n_new && tokens[matched] == static_cast<int>(golden_tokens.data[matched])) ++matched;
    if (matched < n_new) {
        const auto& ref_top = c.outputs.at("topk_logits").data;  // sorted, largest first (torch.topk)
        const float top1 = ref_top[matched * k], top2 = k > 1 ? ref_top[matched * k + 1] : top1;
        const int id1 = static_cast<int>(topk_ids.data[matched * k]), id2 = k > 1 ? static_cast<int>(topk_ids.data[matched * k + 1]) : id1;
        const double gap = top1 - top2;
        const double allowed = env.tol.atol + env.tol.rtol * std::fabs(top1);  // this stage's logits tolerance
        note = fmt::format(
            "Tokens matched: {} / {}. First difference at step {}: ours {}, reference {}. Reference's top-1 logit {:.6f} "
            "(id {}), top-2 {:.6f} (id {}), gap {:.3g}: {}",
            matched, n_new, matched, tokens[matched], static_cast<int>(golden_tokens.data[matched]), top1, id1, top2, id2,
            gap,
            gap <= allowed ? "a NEAR-TIE (gap within the logits tolerance): float rounding can flip it"
                           : "a REAL DIVERGENCE (gap larger than the logits tolerance)");
    }
    std::vector<float> token_values(n_new, -1.0f);  // -1: not generated (stopped early)
    for (std::size_t i = 0; i < tokens.size(); ++i) token_values[i] = static_cast<float>(tokens[i]);
    return {{"tokens", "tokens", token_values, note, Tolerance{0.0, 0.0}},
            {"logits", "logits", full},
            {"topk_logits", "topk_logits", top}};
}

}  // namespace lmlab
