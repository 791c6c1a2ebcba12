// Layer, model and generation stages: run the C++ model on a fixture's inputs and return every
// intermediate the PyTorch reference recorded, in pipeline order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "model/load/load.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/session.h"
#include "model/serve/speculative.h"
#include "model/record.h"
#include "harness/stages/stages.h"
#include "model/families/families.h"
#include "model/family.h"

namespace lmlab {

namespace {

constexpr std::size_t kAny = Case::kAnyDim;
constexpr const char* kTeacherForced = " [teacher-forced]";

}  // namespace

const Model& cached_model(const std::string& model) {
    static std::map<std::string, std::unique_ptr<Model>> loaded;
    auto& slot = loaded[model];
    if (!slot) {
        const ModelSpec spec = parse_model_spec(model);
        Model m = load_model(spec.path);
        slot = std::make_unique<Model>(spec.q8_group ? quantize_model(std::move(m), spec.q8_group) : std::move(m));
    }
    return *slot;
}

// The running stage's model (its table row names it; the runner resolved the path).
const Model& stage_model(const StageEnv& env) {
    if (env.model.empty()) throw HarnessError("this stage has no model in the stage table (harness/stages/stages.cpp)");
    return cached_model(env.model);
}

std::size_t case_index(const Case& c, const std::string& attr) {
    const double v = c.number(attr);
    if (!(v >= 0) || v != std::floor(v))
        throw HarnessError(c.file + ": /" + c.name + " attribute " + attr + " = " + std::to_string(v) + " is not an index");
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
        throw HarnessError(c.file + ": dataset /" + c.name + "/outputs/" + name + " is missing (expected shape " +
                           shape_str(shape) + "). " + regenerate_hint(c.file));
    bool same = it->second.shape.size() == shape.size();
    for (std::size_t i = 0; same && i < shape.size(); ++i) same = shape[i] == kAny || shape[i] == it->second.shape[i];
    if (!same)
        throw HarnessError(c.file + ": dataset /" + c.name + "/outputs/" + name + " has shape " +
                           shape_str(it->second.shape) + ", expected " + shape_str(shape) + ". " + regenerate_hint(c.file));
    return it->second;
}

namespace {

// Row r of a [rows, cols] array whose shape was checked.
std::span<const float> array_row(const Array<float>& a, std::size_t r) {
    const std::size_t cols = a.shape.at(1);
    return std::span<const float>(a.data).subspan(r * cols, cols);
}

// A KV cache for the n positions a stage runs, not the model's whole context: Qwen2.5's 32768
// positions would cost 0.8 GB to allocate and zero on every run. Every position in its own row (a
// windowed layer's ring as long as the sequence): the stages compare the whole cache with the
// reference's, which keeps every position; the windows still apply to attention. prompt: the
// length dynamic RoPE rotates the rows for (the fixture's tokens are one prompt).
KVCache cache_for(const Config& c, std::size_t n, std::size_t prompt = 0) {
    KVCache cache(c, std::min(n, c.max_seq_len), n);
    cache.set_prompt_length(prompt);
    return cache;
}

// A KV cache whose layer `layer` holds the first n rows of k and v ([*, kv_dim] each), with room for one more.
KVCache prefilled_cache(const Config& c, std::size_t layer, const Array<float>& k, const Array<float>& v, std::size_t n,
                        std::size_t prompt = 0) {
    KVCache cache = cache_for(c, n + 1, prompt);
    for (std::size_t p = 0; p < n; ++p) cache.append(layer, p, array_row(k, p), array_row(v, p));
    return cache;
}

std::size_t checked_layer(const Case& c, const Config& cfg) {
    const std::size_t layer = case_index(c, "layer");
    if (layer >= cfg.n_layers)
        throw HarnessError(c.file + ": /" + c.name + " layer " + std::to_string(layer) + " but the model has " +
                           std::to_string(cfg.n_layers) + " layers");
    return layer;
}

// The stage's model must be of the family its row names (a wrong path in the table would otherwise
// compare one family's model with another's fixture).
void check_family(const Model& m, const StageEnv& env) {
    if (env.family.empty() || env.family == "*") return;
    if (env.family != arch_name(m.config.arch))
        throw HarnessError(fmt::format("{} is a {} model, but the stage's row says family '{}' (harness/stages/stages.cpp)",
                                       env.model, arch_name(m.config.arch), env.family));
}

// One row's intermediates after a block, in the family's pipeline order (without "in": the input).
std::vector<StageOutput> layer_outputs(const Model& m, const LayerRecord& rec, const std::string& prefix) {
    std::vector<StageOutput> outs;
    for (const std::string& name : family(m.config.arch).intermediates)
        if (name != "in") outs.push_back({prefix + name, prefix + name, rec.at(name)});
    return outs;
}

// One position of one layer on the reference's input and the reference's keys and values of the
// positions before it (its cache): what the layer adds on its own. MoE: when its routing differs
// from the reference's at a near-tie (within the stage's tolerance), the feed-forward is run again
// on the reference's experts (their weights our probabilities of them), so that what follows stays
// comparable; `note` says so.
LayerRecord teacher_forced(const Model& m, std::size_t l, std::size_t p, std::span<const float> in, const Array<float>& k,
                           const Array<float>& v, const Case& c, const StageEnv& env, std::string& note) {
    const Config& cfg = m.config;
    KVCache cache = prefilled_cache(cfg, l, k, v, p, k.shape[0]);  // the fixture's tokens are one prompt
    RunState s(cfg);
    std::copy(in.begin(), in.end(), s.x.begin());
    ContiguousRows rows(cache, p, cfg.head_dim());
    block(m, l, 1, rows, s);
    if (cfg.moe()) {
        const std::string L = fmt::format("layer{}.", l);
        const std::size_t n = k.shape[0];
        const auto ref_ids = array_row(golden(c, L + "experts", {n, cfg.top_k}), p);
        const std::vector<float> ours = intermediate_buffer("experts").row(s, cfg, 0);
        const auto d = compare_routing(ours, ref_ids, array_row(golden(c, L + "router_logits", {n, cfg.n_experts}), p), cfg.top_k,
                                       cfg.n_experts, env.tol);
        if (!d.empty()) note += fmt::format("\nposition {}: {}", p, d[0].describe());
        if (!d.empty() && d[0].near_tie()) {  // the block's feed-forward again, on the reference's experts
            force_experts(cfg, m.layers[l], 0, ref_ids, s);
            add(row(s.h, 0, cfg.dim), row(s.ffn_out, 0, cfg.dim), row(s.out, 0, cfg.dim));  // the block's second residual
            note += " (teacher-forced: its feed-forward re-run on the reference's experts)";
        }
    }
    return record_layer(m, s, 1);
}

}  // namespace

std::vector<StageOutput> stage_layer_attention(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    const std::size_t layer = checked_layer(c, cfg), pos = case_index(c, "pos");
    const auto& x = c.input("x", {cfg.dim});
    const auto& ck = c.input("cache_k", {pos, cfg.kv_dim()});
    KVCache cache = prefilled_cache(cfg, layer, ck, c.input("cache_v", {pos, cfg.kv_dim()}), pos);
    RunState s(cfg);
    std::copy(x.data.begin(), x.data.end(), s.attn_norm.begin());  // the attention's (normalised) input
    ContiguousRows rows(cache, pos, cfg.head_dim());
    llama_attention(cfg, m.layers[layer], layer, 1, rows, s);
    return {{"q", "q", s.q}, {"k", "k", s.k}, {"v", "v", s.v}, {"out", "out", s.attn_out}};
}

std::vector<StageOutput> stage_layer_ffn(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const std::size_t layer = checked_layer(c, m.config);
    const auto& x = c.input("x", {m.config.dim});
    RunState s(m.config);
    std::copy(x.data.begin(), x.data.end(), s.ffn_norm.begin());  // the feed-forward's (normalised) input
    llama_ffn(m.config, m.layers[layer], 1, s);
    return {{"out", "out", s.ffn_out}};
}

// One block of any family on a given input with a pre-filled cache: every intermediate.
std::vector<StageOutput> stage_layer_block(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    check_family(m, env);
    const Config& cfg = m.config;
    const std::size_t layer = checked_layer(c, cfg), pos = case_index(c, "pos");
    const auto& x = c.input("x", {cfg.dim});
    KVCache cache = prefilled_cache(cfg, layer, c.input("cache_k", {pos, cfg.kv_dim()}), c.input("cache_v", {pos, cfg.kv_dim()}), pos);
    RunState s(cfg);
    std::copy(x.data.begin(), x.data.end(), s.x.begin());
    ContiguousRows rows(cache, pos, cfg.head_dim());
    block(m, layer, 1, rows, s);
    return layer_outputs(m, record_layer(m, s, 1), "");
}

std::vector<StageOutput> stage_model_forward(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    check_family(m, env);
    const Config& cfg = m.config;
    const std::vector<int> tokens = token_ids(c, "tokens");
    const std::size_t n = tokens.size();
    const auto& fields = family(cfg.arch).intermediates;
    // Mixture of experts: the expert ids are compared exactly, and a routing near-tie (the reference's
    // scores of two experts within the tolerance, harness/stages/moe_stages.cpp) is reported, not failed.
    auto field_tol = [&](const std::string& name) { return name == "experts" ? std::optional(kExact) : std::nullopt; };
    auto routing = [&](std::size_t l, std::span<const float> ours_ids) {
        const std::string L = fmt::format("layer{}.", l);
        return compare_routing(ours_ids, golden(c, L + "experts", {n, cfg.top_k}).data,
                               golden(c, L + "router_logits", {n, cfg.n_experts}).data, cfg.top_k, cfg.n_experts, env.tol);
    };
    std::map<std::string, std::string> notes;  // "layer0.experts" -> the routing per token and its differences

    // 1. Free-running: our own model end to end, one token at a time (decode, T = 1), every
    //    intermediate stacked over positions, in pipeline order (layer by layer, role by role). After a
    //    routing near-tie our model runs another expert than the reference from there on: only the
    //    positions before it are compared.
    std::vector<StageOutput> outs;
    {
        const Trace tr = traced_decode(m, tokens);
        // The first routing difference in pipeline order (position by position, layer by layer): a
        // near-tie there cuts the comparison before its position (everything after it follows from a
        // different expert); a real mismatch there is compared everywhere and fails.
        std::vector<std::vector<RoutingDifference>> diffs(cfg.n_layers);
        std::optional<std::pair<std::size_t, std::size_t>> first;  // (position, layer)
        for (std::size_t l = 0; cfg.moe() && l < cfg.n_layers; ++l) {
            diffs[l] = routing(l, tr.layers[l].at("experts"));
            if (!diffs[l].empty() && (!first || diffs[l][0].token < first->first)) first = {diffs[l][0].token, l};
        }
        const bool tie_first = first && diffs[first->second][0].near_tie();
        const std::size_t cut = tie_first ? first->first : n;  // positions compared free-running
        std::vector<StageOutput> ties;
        for (std::size_t l = 0; cfg.moe() && l < cfg.n_layers; ++l) {
            std::string note = "experts chosen (ours, by rank): " + routing_choices(tr.layers[l].at("experts"), cfg.top_k);
            std::size_t n_ties = 0;
            for (const RoutingDifference& d : diffs[l]) {
                if (d.token > cut || (d.token == cut && !d.near_tie())) continue;  // downstream of the near-tie
                note += "\n" + d.describe();
                n_ties += d.near_tie();
            }
            notes[fmt::format("layer{}.experts", l)] = note;
            ties.push_back({fmt::format("layer{}: routing near-ties (free-running)", l), "", {static_cast<float>(n_ties)}, note});
        }
        const auto rows = cut < n ? std::optional(std::make_pair(std::size_t{0}, cut)) : std::nullopt;
        auto part = [&](const std::vector<float>& all) {
            return cut < n ? std::vector<float>(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(all.size() / n * cut)) : all;
        };
        const std::string cut_note =
            cut < n ? fmt::format("\n(free-running outputs compared at positions 0..{} only: a routing near-tie at position {} "
                                  "sends the token to another expert; the teacher-forced outputs cover every position)",
                                  cut - 1, cut)
                    : "";
        if (cut > 0) {
            for (std::size_t l = 0; l < cfg.n_layers; ++l)
                for (const std::string& f : fields) {
                    const std::string name = fmt::format("layer{}.{}", l, f);
                    outs.push_back({name, name, part(tr.layers[l].at(f)), notes.count(name) ? notes[name] + cut_note : "",
                                    field_tol(f), rows});
                }
            outs.push_back({"final_norm", "final_norm", part(tr.final_norm), "", std::nullopt, rows});
            outs.push_back({"logits", "logits", part(tr.logits), "", std::nullopt, rows});
        }
        for (StageOutput& t : ties) outs.push_back(std::move(t));
    }

    // 2. Teacher-forced: each layer alone, fed the reference's input of that layer at every position
    //    and the reference's keys/values for earlier positions. Its error is the error the layer adds;
    //    the free-running error minus this is what it inherits from the layers before it.
    for (std::size_t l = 0; l < cfg.n_layers; ++l) {
        const std::string L = fmt::format("layer{}.", l);
        const auto& in = golden(c, L + "in", {n, cfg.dim});
        const auto& gk = golden(c, L + "k", {n, cfg.kv_dim()});
        const auto& gv = golden(c, L + "v", {n, cfg.kv_dim()});
        LayerRecord stacked;
        std::string forced_note;
        for (std::size_t p = 0; p < n; ++p)
            for (auto& [name, v] : teacher_forced(m, l, p, array_row(in, p), gk, gv, c, env, forced_note))
                stacked[name].insert(stacked[name].end(), v.begin(), v.end());
        for (const std::string& f : fields)
            if (f != "in")
                outs.push_back({L + f + kTeacherForced, L + f, std::move(stacked[f]),
                                forced_note.empty() ? "" : "routing differences:" + forced_note, field_tol(f)});
    }
    // final norm and classifier on the reference's last block output
    {
        const auto& last = golden(c, fmt::format("layer{}.out", cfg.n_layers - 1), {n, cfg.dim});
        RunState s(cfg, n);
        std::copy(last.data.begin(), last.data.end(), s.x.begin());
        std::vector<std::size_t> every(n);
        for (std::size_t p = 0; p < n; ++p) every[p] = p;
        std::vector<float> logits(n * cfg.vocab_size);
        head(m, every, s, logits);
        outs.push_back({std::string("final_norm") + kTeacherForced, "final_norm",
                        std::vector<float>(s.final_norm.begin(), s.final_norm.begin() + static_cast<std::ptrdiff_t>(n * cfg.dim))});
        outs.push_back({std::string("logits") + kTeacherForced, "logits", std::move(logits)});
    }
    return outs;
}

// The same model from another file layout (a Hugging Face directory of the tiny LLaMA, whose q/k
// rows were permuted for rotate-half RoPE): q and k differ inside each head by that permutation, so
// only what the permutation leaves unchanged is compared: the final norm and the logits.
std::vector<StageOutput> stage_model_logits(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    check_family(m, env);
    const Trace tr = traced_decode(m, token_ids(c, "tokens"));
    return {{"final_norm", "final_norm", tr.final_norm}, {"logits", "logits", tr.logits}};
}

// The whole prompt in one call (prefill: T rows at once), every position's logits.
std::vector<StageOutput> stage_model_prefill(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    check_family(m, env);
    const Config& cfg = m.config;
    const std::vector<int> tokens = token_ids(c, "tokens");
    KVCache cache = cache_for(cfg, tokens.size(), tokens.size());
    RunState s(cfg, tokens.size());
    std::vector<float> logits;
    prefill(m, tokens, cache, s, &logits);
    if (cache.length() != tokens.size())
        throw HarnessError(fmt::format("prefill left {} positions in the KV cache after a {}-token prompt",
                                             cache.length(), tokens.size()));
    return {{"logits", "logits", logits}};
}

std::vector<StageOutput> stage_model_kv_cache(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    check_family(m, env);
    const Config& cfg = m.config;
    const std::vector<int> tokens = token_ids(c, "tokens");
    KVCache cache = cache_for(cfg, tokens.size(), tokens.size());
    RunState s(cfg);
    for (std::size_t p = 0; p < tokens.size(); ++p) forward(m, tokens[p], p, cache, s);
    // invariants before values: every layer holds exactly the prompt
    for (std::size_t l = 0; l < cfg.n_layers; ++l)
        if (cache.length(l) != tokens.size())
            throw HarnessError(fmt::format("KV cache layer {} holds {} positions after a {}-token prompt", l,
                                                 cache.length(l), tokens.size()));
    std::vector<float> k, v;
    for (std::size_t l = 0; l < cfg.n_layers; ++l) {
        k.insert(k.end(), cache.keys(l).begin(), cache.keys(l).end());
        v.insert(v.end(), cache.values(l).begin(), cache.values(l).end());
    }
    return {{"cache_k", "cache_k", k}, {"cache_v", "cache_v", v}};
}

std::pair<std::size_t, std::string> first_difference(std::span<const int> ours, std::span<const float> ref_tokens,
                                                     std::span<const float> topk_ids, std::span<const float> topk_logits,
                                                     std::size_t k, const Tolerance& tol) {
    const std::size_t n = ref_tokens.size();
    std::size_t matched = 0;
    while (matched < n && matched < ours.size() && ours[matched] == static_cast<int>(ref_tokens[matched])) ++matched;
    if (matched == n) return {matched, ""};
    if (matched == ours.size())
        return {matched, fmt::format("Tokens matched: {} / {}, then ours stopped (a stop token or the context)", matched, n)};
    const float top1 = topk_logits[matched * k], top2 = topk_logits[matched * k + 1];  // sorted, largest first (torch.topk)
    const int id1 = static_cast<int>(topk_ids[matched * k]), id2 = static_cast<int>(topk_ids[matched * k + 1]);
    const double gap = top1 - top2;
    const double allowed = tol.atol + tol.rtol * std::fabs(top1);  // the stage's logits tolerance
    return {matched,
            fmt::format("Tokens matched: {} / {}. First difference at step {}: ours {}, reference {}. Reference's top-1 "
                        "logit {:.6f} (id {}), top-2 {:.6f} (id {}), gap {:.3g}: {}",
                        matched, n, matched, ours[matched], static_cast<int>(ref_tokens[matched]), top1, id1, top2, id2, gap,
                        gap <= allowed ? "a NEAR-TIE (gap within the logits tolerance): float rounding can flip it"
                                       : "a REAL DIVERGENCE (gap larger than the logits tolerance)")};
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
    if (k < 2)
        throw HarnessError(fmt::format("{}: /{}/outputs/topk_ids keeps {} ids per step; the near-tie verdict needs "
                                       "at least the top 2. {}", c.file, c.name, k, regenerate_hint(c.file)));
    const auto& ref_top = golden(c, "topk_logits", {n_new, k}).data;  // sorted, largest first (torch.topk)
    golden(c, "logits", {full_steps.size(), cfg.vocab_size});
    for (int step : full_steps)
        if (step < 0 || static_cast<std::size_t>(step) >= n_new)
            throw HarnessError(fmt::format("{}: /{}/inputs/full_steps has step {} outside [0, {})", c.file, c.name, step, n_new));
    for (float id : topk_ids.data)
        if (!(id >= 0 && id < static_cast<float>(cfg.vocab_size)))
            throw HarnessError(fmt::format("{}: /{}/outputs/topk_ids has id {} outside the vocabulary", c.file, c.name, id));

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
        std::span<const float> logits = s.start(prompt, n_new);  // the prompt as generate() runs it
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
        throw HarnessError("nondeterministic: two runs over the same tokens gave different logits bits");

    // Tie-aware verdict at the first differing token: the reference's top-1 and top-2 logits there.
    const auto [matched, note] = first_difference(tokens, golden_tokens.data, topk_ids.data, ref_top, k, env.tol);
    std::vector<float> token_values(n_new, -1.0f);  // -1: not generated (stopped early)
    for (std::size_t i = 0; i < tokens.size(); ++i) token_values[i] = static_cast<float>(tokens[i]);
    std::vector<StageOutput> outs = {{"tokens", "tokens", token_values, note, kExact},
                                     {"logits", "logits", full},
                                     {"topk_logits", "topk_logits", top}};

    // The same verdict at every step, as series for report.html's plot: how close the reference's
    // two best tokens are (a gap under the threshold is a near-tie), and our gap between those two ids.
    std::vector<float> ref_gap(n_new), our_gap(n_new), threshold(n_new);
    for (std::size_t i = 0; i < n_new; ++i) {
        ref_gap[i] = ref_top[i * k] - ref_top[i * k + 1];
        our_gap[i] = top[i * k] - top[i * k + 1];
        threshold[i] = static_cast<float>(env.tol.atol + env.tol.rtol * std::fabs(ref_top[i * k]));
    }
    auto series = [](const char* name, std::vector<float> values, const char* about) {
        return StageOutput{name, "", std::move(values), about, std::nullopt, std::nullopt, true};
    };
    outs.push_back(series(kSeriesReferenceGap, std::move(ref_gap),
                          "per step: the reference's largest logit minus its second largest (topk_logits)"));
    outs.push_back(series(kSeriesOurGap, std::move(our_gap),
                          "per step: our logits at those two ids, teacher-forced on the reference's tokens"));
    outs.push_back(series(kSeriesTieThreshold, std::move(threshold),
                          "per step: the stage's logits tolerance at the top-1 logit; a smaller gap is a near-tie"));
    outs.push_back({kMeasureTokensMatched, "", {static_cast<float>(matched)},
                    fmt::format("of {}: our greedy tokens equal the reference's up to here", n_new)});
    return outs;
}

// ---- int8 (Q8_0) ------------------------------------------------------------------------------------
// The int8 LLaMA against ref_q8.py (runq.c's arithmetic in torch), in two parts.
//
// 1. Every int8 matvec fed the reference's own input (its attn_norm, heads, ffn_norm, ffn_act and
//    final_norm): the activation is quantized from the same floats, so the integers and every float
//    step are the same, and the outputs must be bit-identical (q and k within RoPE's rounding).
//    This is the check that the int8 path is runq.c's.
// 2. Free-running, our model on its own: the float steps around the matvecs (RMSNorm, RoPE,
//    attention, SwiGLU) round a little differently from torch's (~1e-7 relative, as in the float
//    stages), and where an activation's x/scale lies that close to a half, the two round it to
//    different integers: one step of that activation's scale, which then spreads. So the
//    intermediates are compared up to the first such rounding tie, and at the tie the activation
//    itself must agree within float rounding (it was not a bug upstream that moved it).

namespace {
// every position's logits of a token sequence, fed from position 0 one token at a time
std::vector<float> all_logits(const Model& m, const std::vector<int>& tokens) {
    KVCache cache = cache_for(m.config, tokens.size());
    RunState s(m.config);
    std::vector<float> out;
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        const auto l = forward(m, tokens[p], p, cache, s);
        out.insert(out.end(), l.begin(), l.end());
    }
    return out;
}

// row t of an intermediate of a layer record ([T, width])
std::vector<float> record_row(const LayerRecord& rec, const std::string& name, std::size_t t, std::size_t T) {
    const std::vector<float>& all = rec.at(name);
    const std::size_t w = all.size() / T;
    return {all.begin() + static_cast<std::ptrdiff_t>(t * w), all.begin() + static_cast<std::ptrdiff_t>((t + 1) * w)};
}

// -log softmax(logits)[target], in double
double nll(std::span<const float> logits, int target) {
    double mx = -INFINITY;
    for (float v : logits) mx = std::max(mx, static_cast<double>(v));
    double sum = 0;
    for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
    return -(static_cast<double>(logits[static_cast<std::size_t>(target)]) - mx - std::log(sum));
}

StageOutput measured(const std::string& name, double value, const std::string& about) {
    return {name, "", {static_cast<float>(value)}, about};
}

constexpr Tolerance kRopeTol{1e-5, 1e-5}, kTieTol{1e-5, 1e-5};
constexpr const char* kRefInput = " [reference input]";

// The activations a LLaMA block quantizes (each feeds int8 matvecs), in pipeline order.
constexpr const char* kQuantPoints[] = {"attn_norm", "heads", "ffn_norm", "ffn_act"};

// Every int8 matvec of layer l fed the reference's inputs: ref(role, t) is the reference's `role`
// at row t (position pos0 + t, for RoPE), t < n. Returns q, k (after RoPE), v, attn_out, ffn_gate,
// ffn_up and ffn_out stacked over the rows, compared with the reference's <prefix><role>.
std::vector<StageOutput> projections_on_reference(const Model& m, std::size_t l, std::size_t n, std::size_t pos0,
                                                  const std::function<std::span<const float>(const char*, std::size_t)>& ref,
                                                  const std::string& prefix) {
    const Config& cfg = m.config;
    const LayerWeights& w = m.layers[l];
    RunState s(cfg);
    std::vector<float> q, k, v, ao, gate, up, fo;
    auto project_into = [&](const Linear& lin, std::span<const float> x, std::vector<float>& buf, std::vector<float>& all) {
        project_rows(lin, x, buf, 1, s);  // (one row: the buffers of a 1-row RunState)
        all.insert(all.end(), buf.begin(), buf.end());
    };
    for (std::size_t t = 0; t < n; ++t) {
        project_rows(w.wq, ref("attn_norm", t), s.q, 1, s);
        rope(s.q, cfg.head_dim(), pos0 + t, cfg.rope_theta, cfg.rope_style);
        q.insert(q.end(), s.q.begin(), s.q.end());
        project_rows(w.wk, ref("attn_norm", t), s.k, 1, s);
        rope(s.k, cfg.head_dim(), pos0 + t, cfg.rope_theta, cfg.rope_style);
        k.insert(k.end(), s.k.begin(), s.k.end());
        project_into(w.wv, ref("attn_norm", t), s.v, v);
        project_into(w.wo, ref("heads", t), s.attn_out, ao);
        project_into(w.w_gate, ref("ffn_norm", t), s.gate, gate);
        project_into(w.w_up, ref("ffn_norm", t), s.up, up);
        project_into(w.w_down, ref("ffn_act", t), s.ffn_out, fo);
    }
    return {{prefix + "q" + kRefInput, prefix + "q", q, "", kRopeTol},
            {prefix + "k" + kRefInput, prefix + "k", k, "", kRopeTol},
            {prefix + "v" + kRefInput, prefix + "v", v, "", kExact},
            {prefix + "attn_out" + kRefInput, prefix + "attn_out", ao, "", kExact},
            {prefix + "ffn_gate" + kRefInput, prefix + "ffn_gate", gate, "", kExact},
            {prefix + "ffn_up" + kRefInput, prefix + "ffn_up", up, "", kExact},
            {prefix + "ffn_out" + kRefInput, prefix + "ffn_out", fo, "", kExact}};
}

// Where our activation and the reference's quantize to different integers.
struct IntTie {
    std::string role;  // "layer1.heads", "final_norm"
    std::size_t row = 0, index = 0;
    int ours = 0, ref = 0;
    float quotient = 0;  // the reference's x / scale there
    const std::vector<float>* activation = nullptr;  // ours
};

// Counts the integers that differ between quantize(ours) and quantize(ref); records the first.
class IntComparer {
public:
    explicit IntComparer(std::size_t group) : group_(group) {}
    void compare(const std::string& role, std::size_t row, const std::vector<float>& ours, std::span<const float> ref) {
        qa_.resize(ours.size()), qb_.resize(ours.size()), sa_.resize(ours.size() / group_), sb_.resize(ours.size() / group_);
        quantize_q8_0(ours, group_, qa_, sa_);
        quantize_q8_0(ref, group_, qb_, sb_);
        total += qa_.size();
        for (std::size_t i = 0; i < qa_.size(); ++i) {
            if (qa_[i] == qb_[i]) continue;
            ++differing;
            if (!first) first = IntTie{role, row, i, qa_[i], qb_[i], ref[i] / sb_[i / group_], &ours};
        }
    }
    std::size_t total = 0, differing = 0;
    std::optional<IntTie> first;

private:
    std::size_t group_;
    std::vector<std::int8_t> qa_, qb_;
    std::vector<float> sa_, sb_;
};

double distance_to_half(float quotient) {
    const double a = std::fabs(static_cast<double>(quotient));
    return std::fabs(a - std::floor(a) - 0.5);
}

// The activation at the first tie, which must agree with the reference's within float rounding,
// and a measurement of how close to a half it was.
void report_tie(const IntTie& tie, std::optional<std::pair<std::size_t, std::size_t>> rows, const std::string& where,
                std::vector<StageOutput>& outs) {
    outs.push_back({fmt::format("{} [{}: the first int8 rounding tie]", tie.role, where), tie.role, *tie.activation,
                    fmt::format("element {}: the reference's x/scale is {:.9g} ({:.3g} from a half), rounded to {} by "
                                "the reference and to {} by us",
                                tie.index, tie.quotient, distance_to_half(tie.quotient), tie.ref, tie.ours),
                    kTieTol, rows});
    outs.push_back(measured("first int8 rounding tie: |x/scale - nearest half|", distance_to_half(tie.quotient),
                            fmt::format("{} at {}, element {}: the float32 rounding of the steps before it decides which "
                                        "way it rounds",
                                        tie.role, where, tie.index)));
}
}  // namespace

// One int8 LLaMA block on the fixture's input and cache (layer/block_q8_0.h5, as layer.block).
std::vector<StageOutput> stage_layer_block_q8(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    check_family(m, env);
    if (!m.quantized()) throw HarnessError(env.model + ": this stage runs an int8 model (\"#q8_0\" or an int8 file)");
    const std::size_t layer = checked_layer(c, cfg), pos = case_index(c, "pos");
    auto ref = [&](const char* role, std::size_t) { return std::span<const float>(golden(c, role, {kAny}).data); };
    std::vector<StageOutput> outs = projections_on_reference(m, layer, 1, pos, ref, "");

    const auto& x = c.input("x", {cfg.dim});
    KVCache cache = prefilled_cache(cfg, layer, c.input("cache_k", {pos, cfg.kv_dim()}), c.input("cache_v", {pos, cfg.kv_dim()}), pos);
    RunState s(cfg);
    std::copy(x.data.begin(), x.data.end(), s.x.begin());
    ContiguousRows rows(cache, pos, cfg.head_dim());
    block(m, layer, 1, rows, s);
    const LayerRecord rec = record_layer(m, s, 1);
    IntComparer ints(m.tok_embeddings_q8.group);
    for (const char* role : kQuantPoints) {
        ints.compare(role, 0, rec.at(role), ref(role, 0));
        if (ints.first) break;
    }
    // every intermediate up to the first tie (all of them without one), in pipeline order
    for (const std::string& f : family(cfg.arch).intermediates) {
        if (f == "in") continue;
        if (ints.first && ints.first->role == f) {
            report_tie(*ints.first, std::nullopt, fmt::format("position {}", pos), outs);
            break;
        }
        outs.push_back({f, f, rec.at(f)});
    }
    return outs;
}

// The whole int8 model on a prompt (model/forward_q8_0.h5, as model.forward).
std::vector<StageOutput> stage_model_forward_q8(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    check_family(m, env);
    if (!m.quantized()) throw HarnessError(env.model + ": this stage runs an int8 model (\"#q8_0\" or an int8 file)");
    const std::vector<int> tokens = token_ids(c, "tokens");
    const std::size_t n = tokens.size(), dim = cfg.dim;
    const std::size_t group = m.tok_embeddings_q8.group;
    std::vector<StageOutput> outs;

    // 1. each int8 matvec on the reference's input, every layer and position, and the classifier
    for (std::size_t l = 0; l < cfg.n_layers; ++l) {
        const std::string L = fmt::format("layer{}.", l);
        auto ref = [&](const char* role, std::size_t p) { return array_row(golden(c, L + role, {n, kAny}), p); };
        for (StageOutput& o : projections_on_reference(m, l, n, 0, ref, L)) outs.push_back(std::move(o));
    }
    {
        const QuantizedMatrix& cls = m.classifier_q8();
        const auto& fnorm = golden(c, "final_norm", {n, dim});
        std::vector<std::int8_t> xq(dim);
        std::vector<float> xs(dim / group), logits(cfg.vocab_size), all;
        for (std::size_t p = 0; p < n; ++p) {
            quantize_q8_0(array_row(fnorm, p), group, xq, xs);
            matvec_q8_0(cls.q, cls.scales, xq, xs, group, logits);
            all.insert(all.end(), logits.begin(), logits.end());
        }
        outs.push_back({std::string("logits") + kRefInput, "logits", all, "", kExact});
    }

    // 2. free-running, compared at the positions before the first rounding tie
    const Trace tr = traced_decode(m, tokens);
    // (ints keeps a pointer to the activation of its first tie: the rows live until the end)
    std::vector<std::vector<float>> activations;
    activations.reserve(n * (cfg.n_layers * std::size(kQuantPoints) + 1));
    IntComparer ints(group);
    for (std::size_t p = 0; p < n; ++p) {
        for (std::size_t l = 0; l < cfg.n_layers; ++l)
            for (const char* role : kQuantPoints) {
                const std::string name = fmt::format("layer{}.{}", l, role);
                activations.push_back(record_row(tr.layers[l], role, p, n));
                ints.compare(name, p, activations.back(), array_row(golden(c, name, {n, kAny}), p));
            }
        activations.push_back(std::vector<float>(tr.final_norm.begin() + static_cast<std::ptrdiff_t>(p * dim),
                                                 tr.final_norm.begin() + static_cast<std::ptrdiff_t>((p + 1) * dim)));
        ints.compare("final_norm", p, activations.back(), array_row(golden(c, "final_norm", {n, dim}), p));
    }
    const std::size_t cut = ints.first ? ints.first->row : n;  // positions compared in full
    if (cut > 0) {
        const auto rows = std::make_pair(std::size_t{0}, cut);
        auto part = [&](const std::vector<float>& all) {
            return std::vector<float>(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(all.size() / n * cut));
        };
        for (std::size_t l = 0; l < cfg.n_layers; ++l)
            for (const std::string& f : family(cfg.arch).intermediates) {
                const std::string name = fmt::format("layer{}.{}", l, f);
                outs.push_back({name, name, part(tr.layers[l].at(f)), "", std::nullopt, rows});
            }
        outs.push_back({"final_norm", "final_norm", part(tr.final_norm), "", std::nullopt, rows});
        outs.push_back({"logits", "logits", part(tr.logits), "", std::nullopt, rows});
    }
    if (ints.first)
        report_tie(*ints.first, std::make_pair(ints.first->row, ints.first->row + 1),
                   fmt::format("position {}", ints.first->row), outs);
    double logits_err = 0;
    const auto& ref_logits = golden(c, "logits", {n, cfg.vocab_size});
    for (std::size_t p = 0; p < n; ++p)
        for (std::size_t i = 0; i < cfg.vocab_size; ++i)
            logits_err = std::max(logits_err, std::fabs(static_cast<double>(tr.logits[p * cfg.vocab_size + i]) -
                                                        ref_logits.data[p * cfg.vocab_size + i]));
    outs.push_back(measured("positions compared free-running", static_cast<double>(cut),
                            fmt::format("of {}: those before the first int8 rounding tie (every intermediate within the "
                                        "stage's tolerance)", n)));
    outs.push_back(measured("activation ints differing free-running", static_cast<double>(ints.differing),
                            fmt::format("of {} quantized activations (the first tie's effect spreading)", ints.total)));
    outs.push_back(measured("free-running logits max |ours - reference|", logits_err, "over all positions, ties included"));
    return outs;
}

// llama2.c's own int8 file (export.py version2_export) of the tiny LLaMA: every intermediate against
// the reference (as model.forward), then the file against quantize_model of the float file it came
// from. export.py rounds weights with torch.round (halves to even), quantize_model with C's round()
// (runq.c's rule, halves away from zero): the two must differ at exactly the weights the exporter
// found on an exact half (round_half_differences), by one step each, and nowhere else.
std::vector<StageOutput> stage_model_q8_file(const Fixture& fx, const Case& c, const StageEnv& env) {
    std::vector<StageOutput> outs = stage_model_forward_q8(fx, c, env);
    const Model& file = stage_model(env);
    if (!file.quantized()) throw HarnessError(env.model + " is not an int8 model");
    const std::size_t halves = case_index(c, "round_half_differences");
    const std::string float_model = resolve_model_path(c.string("float_model"), env.golden_dir, env.shared_dir);
    const std::size_t group = file.tok_embeddings_q8.group;
    const Model& ours = cached_model(float_model + "#q8_0,group=" + std::to_string(group));
    std::size_t differing = 0, far = 0, scales = 0;
    auto compare_q = [&](const QuantizedMatrix& a, const QuantizedMatrix& b) {
        if (a.q.size() != b.q.size() || a.scales.size() != b.scales.size() || a.group != b.group)
            throw HarnessError(env.model + " and " + float_model + " have matrices of different shapes");
        for (std::size_t i = 0; i < a.q.size(); ++i) {
            differing += a.q[i] != b.q[i];
            far += std::abs(a.q[i] - b.q[i]) > 1;
        }
        for (std::size_t i = 0; i < a.scales.size(); ++i) scales += std::memcmp(&a.scales[i], &b.scales[i], sizeof(float)) != 0;
    };
    compare_q(file.tok_embeddings_q8, ours.tok_embeddings_q8);
    compare_q(file.classifier_q8(), ours.classifier_q8());
    for (std::size_t l = 0; l < file.layers.size(); ++l) {
        const LayerWeights &a = file.layers[l], &b = ours.layers[l];
        for (auto lin : {&LayerWeights::wq, &LayerWeights::wk, &LayerWeights::wv, &LayerWeights::wo,
                         &LayerWeights::w_gate, &LayerWeights::w_up, &LayerWeights::w_down})
            compare_q((a.*lin).q8, (b.*lin).q8);
    }
    if (differing != halves || far || scales)
        throw HarnessError(fmt::format(
            "{}: {} int8 weights differ from quantize_model({}, group {}) ({} by more than one step) and {} scales "
            "differ, but the exporter found {} weights on an exact half (where export.py's torch.round and C's round() "
            "disagree): the file is not the model quantize_model makes (or one of the two changed since the export: "
            "`lmlab verify-fixtures` checks every file against manifest.json)",
            env.model, differing, float_model, group, far, scales, halves));
    const std::vector<int> tokens = token_ids(c, "tokens");
    const auto la = all_logits(file, tokens), lb = all_logits(ours, tokens);
    double worst = 0;
    for (std::size_t i = 0; i < la.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(la[i]) - lb[i]));
    if (differing == 0 && std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)) != 0)
        throw HarnessError(env.model + ": the same int8 weights as quantize_model, but different logits bits");
    outs.push_back(measured("int8 weights that differ from quantize_model's", static_cast<double>(differing),
                            "export.py rounds halves to even (torch.round), runq.c's quantize() away from zero: they "
                            "differ exactly at the weights on an exact half, by one step"));
    outs.push_back(measured("max |logits - quantize_model's logits|", worst,
                            "the same tokens through the file and through quantize_model of the float file "
                            "(0: bit-identical)"));
    return outs;
}

// The cost of int8: the int8 model (the stage's row) against the float model it came from (the same
// file without "#q8_0"), on the exporter's held-out text and in greedy generation. Reported, not
// judged; the float model's perplexity is also compared with PyTorch's (a check of the measuring).
std::vector<StageOutput> stage_quant_cost(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& q = stage_model(env);
    const Model& f = cached_model(parse_model_spec(env.model).path);
    if (!q.quantized() || f.quantized())
        throw HarnessError(env.model + ": the cost stage needs an int8 model ('#q8_0') and its float file");
    const std::size_t vocab = f.config.vocab_size;
    const std::vector<int> text = token_ids(c, "tokens"), prompt = token_ids(c, "prompt");
    const std::size_t n_new = case_index(c, "max_new_tokens");
    if (text.size() < 2 || text.size() > f.config.max_seq_len)
        throw HarnessError(fmt::format("{}: /{}/inputs/tokens has {} ids; expected 2 .. {} (the context)", c.file, c.name,
                                       text.size(), f.config.max_seq_len));
    for (int id : text)
        if (id < 0 || static_cast<std::size_t>(id) >= vocab)
            throw HarnessError(fmt::format("{}: /{}/inputs/tokens has id {} outside the vocabulary", c.file, c.name, id));

    // 1. teacher-forced on the held-out text: both models read the same tokens
    const auto lf = all_logits(f, text), lq = all_logits(q, text);
    double max_err = 0, sum_err = 0, nll_f = 0, nll_q = 0;
    std::size_t top1_same = 0;
    for (std::size_t p = 0; p < text.size(); ++p) {
        const auto rf = std::span<const float>(lf).subspan(p * vocab, vocab), rq = std::span<const float>(lq).subspan(p * vocab, vocab);
        for (std::size_t i = 0; i < vocab; ++i) {
            const double e = std::fabs(static_cast<double>(rq[i]) - rf[i]);
            max_err = std::max(max_err, e);
            sum_err += e;
        }
        top1_same += argmax(rf) == argmax(rq);
        if (p + 1 < text.size()) {  // position p predicts token p + 1
            nll_f += nll(rf, text[p + 1]);
            nll_q += nll(rq, text[p + 1]);
        }
    }
    const double n_pred = static_cast<double>(text.size() - 1);
    const double ppl_f = std::exp(nll_f / n_pred), ppl_q = std::exp(nll_q / n_pred);

    // 2. greedy generation from the prompt, each model on its own tokens (no stop token)
    auto greedy = [&](const Model& m) {
        Session session(m);
        Sampler argmax_sampler({.temperature = 0.0f}, vocab);
        return session.generate(prompt, n_new, argmax_sampler).tokens;
    };
    const std::vector<int> gf = greedy(f), gq = greedy(q);
    std::size_t prefix = 0, same = 0;
    while (prefix < n_new && gf[prefix] == gq[prefix]) ++prefix;
    for (std::size_t i = 0; i < n_new; ++i) same += gf[i] == gq[i];

    const double mb = 1e6, bf = static_cast<double>(weight_bytes(f)), bq = static_cast<double>(weight_bytes(q));
    return {
        {"ppl_float", "ppl_float", {static_cast<float>(ppl_f)}},  // checked against PyTorch's
        measured("Q8_0 group", static_cast<double>(q.tok_embeddings_q8.group), "elements per scale"),
        measured("weights float32 (MB)", bf / mb, "weight_bytes() of the float model"),
        measured("weights int8 (MB)", bq / mb, "weight_bytes() of the int8 model: int8 values + float scales + float norms"),
        measured("int8 / float32 weight bytes", bq / bf, "1/4 would be int8 alone; scales add 4/group bytes per weight"),
        measured("held-out tokens", static_cast<double>(text.size()), "the exporter's held-out text, fed to both models"),
        measured("logits max |int8 - float|", max_err, "over every logit at every held-out position"),
        measured("logits mean |int8 - float|", sum_err / static_cast<double>(lf.size()), "the same, averaged"),
        measured("top-1 agreement on the held-out text (%)", 100.0 * static_cast<double>(top1_same) / static_cast<double>(text.size()),
                 "positions where both models' most likely next token is the same"),
        measured("perplexity float32", ppl_f, "exp(mean -log p(next token)) over the held-out text"),
        measured("perplexity int8", ppl_q, "the same for the int8 model"),
        measured("greedy tokens generated", static_cast<double>(n_new), "from the exporter's prompt, no stop token"),
        measured("greedy: tokens equal before the first difference", static_cast<double>(prefix),
                 "the int8 model's greedy tokens equal the float model's up to here"),
        measured("greedy: tokens equal at the same step", static_cast<double>(same), "all steps where both chose the same token"),
    };
}

// ---- Speculative decoding ------------------------------------------------------------------------
// The target (the stage's model) with a draft, greedy: the tokens must be the reference's greedy
// tokens exactly (the greedy fixture's, PyTorch's), for every draft setting and k in {1, 2, 4, 8}.
// The acceptance rate of each is reported (a measurement: it says how fast, never whether right).

namespace {

// k = 1, 2, 4, 8. On the plain kernels (`check --plain`, the ctest plain.check) only k = 2: the
// rollback bookkeeping is path-independent (checked on the fast path for every k), and the plain
// kernels' k+1 rows cost k+1 plain matvecs each, so every k would take seconds.
std::vector<std::size_t> speculative_ks() {
    if (kernel_path() == KernelPath::Plain) return {2};
    return {1, 2, 4, 8};
}

// One SpeculativeSession run per k against the fixture's tokens: a "tokens" output and the
// measurements per k. `setting` names the draft in the output names ("early exit 1 layer").
void speculative_runs(const Model& target, const Model& draft, const std::string& setting, const Case& c,
                      std::vector<StageOutput>& outs) {
    const std::vector<int> prompt = token_ids(c, "prompt");
    const std::size_t n_new = case_index(c, "max_new_tokens");
    const auto& expected = golden(c, "tokens", {n_new});
    for (std::size_t k : speculative_ks()) {
        SpeculativeSession spec(target, draft, k);
        const SpeculativeResult r = spec.generate(prompt, n_new);  // no stop token: as the greedy fixture
        std::size_t matched = 0;
        while (matched < r.tokens.size() && r.tokens[matched] == static_cast<int>(expected.data[matched])) ++matched;
        std::vector<float> values(n_new, -1.0f);  // -1: not generated
        for (std::size_t i = 0; i < r.tokens.size(); ++i) values[i] = static_cast<float>(r.tokens[i]);
        const std::string name = fmt::format("{}, k={}", setting, k);
        outs.push_back({"tokens (" + name + ")", "tokens", std::move(values),
                        fmt::format("speculative greedy tokens equal the reference's up to step {} of {}; they must all "
                                    "be equal: the target's batched verification logits are bit-identical to its "
                                    "one-at-a-time logits, so the draft can only change the speed",
                                    matched, n_new),
                        kExact});
        outs.push_back(measured("acceptance rate (" + name + ")", r.stats.acceptance_rate(),
                                fmt::format("{} of {} draft tokens accepted in {} rounds", r.stats.accepted,
                                            r.stats.proposed, r.stats.rounds)));
        outs.push_back(measured("tokens per target call (" + name + ")",
                                static_cast<double>(n_new) / static_cast<double>(r.stats.target_calls),
                                "new tokens / batched target forwards (plain greedy: 1)"));
    }
}

}  // namespace

// Early exit: the target's first n layers and its head as the draft, for the shallowest (n = 1) and
// the deepest (n = layers - 1) draft: the extremes of cost and acceptance (every depth would double
// stories260K's time; the unit tests run them all).
std::vector<StageOutput> stage_generation_speculative_early_exit(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& target = stage_model(env);
    std::vector<StageOutput> outs;
    std::vector<std::size_t> depths = {1};
    if (target.config.n_layers > 2) depths.push_back(target.config.n_layers - 1);
    for (std::size_t n : depths) {
        const Model draft = early_exit_draft(target, n);
        speculative_runs(target, draft, fmt::format("early exit {} of {} layers", n, target.config.n_layers), c, outs);
    }
    return outs;
}

// int8: a Q8_0 copy of the target (the largest group <= 64 that fits it) as the draft.
std::vector<StageOutput> stage_generation_speculative_int8(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& target = stage_model(env);
    const std::size_t group = largest_q8_group(target.config);
    const Model& draft = cached_model(env.model + "#q8_0,group=" + std::to_string(group));
    std::vector<StageOutput> outs;
    speculative_runs(target, draft, fmt::format("int8 group {}", group), c, outs);
    return outs;
}

}  // namespace lmlab
