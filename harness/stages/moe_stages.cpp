// Mixture-of-experts stages: the routing verdict (exact expert ids, except at routing near-ties)
// and the MoE layer stage. The model stage is stage_model_forward (model_stages.cpp), which calls
// the same verdict for the MoE families.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "model/families/families.h"
#include "model/forward.h"
#include "harness/stages/stages.h"

namespace lmlab {

std::string RoutingDifference::describe() const {
    return fmt::format("{} at token {}: experts {}/{} (reference/ours) at rank {}, reference router logits {:.9g} vs "
                       "{:.9g} (gap {:.3g} {} {:.3g})",
                       near_tie() ? "routing near-tie" : "ROUTING MISMATCH", token, ref, ours, rank, ref_score_ref,
                       ref_score_ours, gap, near_tie() ? "<=" : ">", allowed);
}

std::vector<RoutingDifference> compare_routing(std::span<const float> ours_ids, std::span<const float> ref_ids,
                                               std::span<const float> ref_logits, std::size_t k,
                                               std::size_t n_experts, Tolerance tol) {
    if (k == 0 || ours_ids.size() != ref_ids.size() || ref_ids.size() % k != 0 ||
        ref_logits.size() != ref_ids.size() / k * n_experts)
        throw HarnessError(fmt::format("compare_routing: {} and {} ids, k {}, {} router logits for {} experts",
                                             ours_ids.size(), ref_ids.size(), k, ref_logits.size(), n_experts));
    auto expert = [&](float id) {
        if (!(id >= 0 && id < static_cast<float>(n_experts) && id == std::floor(id)))
            throw HarnessError(fmt::format("compare_routing: expert id {} is not one of {} experts", id, n_experts));
        return static_cast<int>(id);
    };
    std::vector<RoutingDifference> out;
    for (std::size_t t = 0; t < ref_ids.size() / k; ++t) {
        for (std::size_t r = 0; r < k; ++r) {
            const int ours = expert(ours_ids[t * k + r]), ref = expert(ref_ids[t * k + r]);
            if (ours == ref) continue;
            const auto logits = ref_logits.subspan(t * n_experts, n_experts);
            RoutingDifference d{t, r, ours, ref, logits[static_cast<std::size_t>(ref)], logits[static_cast<std::size_t>(ours)]};
            d.gap = static_cast<double>(d.ref_score_ref) - d.ref_score_ours;
            d.allowed = tol.atol + tol.rtol * std::fabs(static_cast<double>(d.ref_score_ref));
            out.push_back(d);
            break;  // the first differing rank decides
        }
    }
    return out;
}

std::string routing_choices(std::span<const float> ids, std::size_t k) {
    std::string s;
    for (std::size_t t = 0; k && t < ids.size() / k; ++t) {
        s += fmt::format("{}t{}:", t ? " | " : "", t);
        for (std::size_t r = 0; r < k; ++r) s += fmt::format(" {}", static_cast<int>(ids[t * k + r]));
    }
    return s;
}

void force_experts(const Config& c, const LayerWeights& w, std::size_t t, std::span<const float> ids, RunState& s) {
    for (std::size_t r = 0; r < c.top_k; ++r) s.expert_ids[t * c.top_k + r] = static_cast<int>(ids[r]);
    moe_weights(c, t, s);
    moe_mix(c, w, t, s);
}

// One MoE feed-forward (layer/moe_<family>.h5): the router, the chosen experts and their weights,
// the shared expert (Qwen2-MoE) and the output, for T tokens' normalised inputs x [T, dim] captured
// from transformers' model. Tokens at a routing near-tie are re-run on the reference's experts
// (teacher-forced routing) so that their weights and outputs stay comparable.
std::vector<StageOutput> stage_layer_moe(const Fixture&, const Case& c, const StageEnv& env) {
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    if (!cfg.moe()) throw HarnessError(env.model + ": not a mixture-of-experts model (the stage's row names it)");
    const double layer_attr = c.number("layer");
    if (!(layer_attr >= 0 && layer_attr < static_cast<double>(cfg.n_layers) && layer_attr == std::floor(layer_attr)))
        throw HarnessError(fmt::format("{}: /{} layer {} is not a layer of the {}-layer model", c.file, c.name, layer_attr,
                                       cfg.n_layers));
    const LayerWeights& w = m.layers[static_cast<std::size_t>(layer_attr)];
    const auto& x = c.input("x", {Case::kAnyDim, cfg.dim});
    const std::size_t T = x.shape[0], k = cfg.top_k, E = cfg.n_experts;
    const auto& ref_ids = golden(c, "experts", {T, k});
    const auto& ref_logits = golden(c, "router_logits", {T, E});
    RunState s(cfg, T);
    std::copy(x.data.begin(), x.data.end(), s.ffn_norm.begin());  // the feed-forward's (normalised) inputs
    moe_ffn(cfg, w, T, s);
    auto all = [&](const char* name) {
        std::vector<float> v;
        for (std::size_t t = 0; t < T; ++t) {
            const std::vector<float> r = intermediate_buffer(name).row(s, cfg, t);
            v.insert(v.end(), r.begin(), r.end());
        }
        return v;
    };
    const std::vector<float> logits = all("router_logits"), ids = all("experts");
    const std::string choices = routing_choices(ids, k);
    // the verdict: exact ids, near-ties teacher-forced on the reference's experts, real mismatches left to fail
    const auto diffs = compare_routing(ids, ref_ids.data, ref_logits.data, k, E, env.tol);
    std::string note = "experts chosen (ours, by rank): " + choices, forced_tokens;
    std::size_t n_ties = 0;
    for (const RoutingDifference& d : diffs) {
        note += "\n" + d.describe();
        if (!d.near_tie()) continue;
        ++n_ties;
        force_experts(cfg, w, d.token, std::span<const float>(ref_ids.data).subspan(d.token * k, k), s);
        forced_tokens += fmt::format("{}{}", forced_tokens.empty() ? "" : ",", d.token);
    }
    const std::string tf = forced_tokens.empty() ? "" : " [teacher-forced routing at tokens " + forced_tokens + "]";
    if (!forced_tokens.empty())
        note += "\nat those near-ties our expert choice is replaced by the reference's (weights: our probabilities of "
                "them), so the weights and outputs below stay comparable";
    std::vector<StageOutput> result = {
        {"router_logits", "router_logits", logits},
        {"experts" + tf, "experts", all("experts"), note, kExact},
        {"expert_weights" + tf, "expert_weights", all("expert_weights"), note},
    };
    if (cfg.shared_ffn_dim) result.push_back({"shared_out", "shared_out", all("shared_out")});
    result.push_back({"out" + tf, "out", all("ffn_out"), note});
    result.push_back({fmt::format("layer{}: routing near-ties", static_cast<std::size_t>(layer_attr)), "", {static_cast<float>(n_ties)},
                      fmt::format("{} of {} tokens (top-{} of {} experts); {}", n_ties, T, k, E, note)});
    return result;
}

}  // namespace lmlab
