// The sparse mixture-of-experts feed-forward of Qwen2-MoE and Mixtral (Shazeer et al. 2017; Jiang
// et al. 2024), as transformers 4.46.3's Qwen2MoeSparseMoeBlock / MixtralSparseMoeBlock compute it:
//
//   xn ─► router (a Linear [n_experts, dim]) ─► softmax ─► top-k ─► (renormalise) ─► ids, weights
//   xn ─► expert e = SwiGLU_e(xn) for each chosen e ─► Σ weight_e · expert_e(xn) ─► (+ shared) ─► out
//
// Analogy: the router is a load balancer that sends each request (token) to 2 of 8 workers
// (experts) and blends their answers by its confidence in each; the other 6 never see the token.
// Every expert is the LLaMA SwiGLU feed-forward with its own weights.
//
// Matching transformers' arithmetic, step by step:
//  - the softmax runs in float32 (F.softmax(..., dtype=torch.float));
//  - torch.topk returns the k largest probabilities, largest first. At EXACTLY equal values its
//    order is unspecified (a partial sort: in torch 1.13 on CPU, top-2 of [0, 2, 2, 2] gives ids 2, 3
//    and of six equal values ids 6, 5); we take the lower id first. Either way such a token is a
//    routing near-tie (gap 0), which the harness reports and teacher-forces instead of failing;
//  - norm_topk_prob: weights /= their float32 sum (Mixtral always does this);
//  - the sum: transformers loops over experts 0..n-1 and index_add_s weight · expert(x) into a zero
//    row, so the terms are added in EXPERT-ID order, not rank order: we do the same (float addition
//    is not associative; the other order would differ in the last bit);
//  - Qwen2-MoE adds sigmoid(shared_expert_gate(x)) · shared_expert(x) after the routed sum.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/forward.h"

namespace lmlab {

namespace {

// One SwiGLU expert of width `width`: out = w_down · (silu(w_gate xn) ⊙ (w_up xn)).  xn: [dim] -> out: [dim]
void expert_ffn(const Expert& e, std::size_t width, std::span<const float> xn, RunState& s, std::span<float> out) {
    const auto gate = std::span<float>(s.gate).first(width), up = std::span<float>(s.up).first(width),
               act = std::span<float>(s.act).first(width);
    project(e.w_gate, xn, gate, s);
    project(e.w_up, xn, up, s);
    swiglu(gate, up, act);
    project(e.w_down, act, out, s);
}

}  // namespace

void moe_ffn(const Config& c, const LayerWeights& w, std::span<const float> xn, RunState& s, std::span<float> out,
             MoeTrace* trace, std::span<const int> forced_experts) {
    const std::size_t k = c.top_k;
    // 1. routing: xn [dim] -> logits [n_experts] -> probabilities [n_experts]
    project(w.router, xn, s.router_logits, s);
    softmax(s.router_logits, s.router_probs);
    if (!forced_experts.empty()) {
        std::copy(forced_experts.begin(), forced_experts.end(), s.expert_ids.begin());
    } else {
        // top-k: the k most probable experts, largest first (equal probabilities: the lower id first)
        std::vector<int>& order = s.expert_order;
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(), [&](int a, int b) {
            const float pa = s.router_probs[static_cast<std::size_t>(a)], pb = s.router_probs[static_cast<std::size_t>(b)];
            return pa > pb || (pa == pb && a < b);
        });
        std::copy(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), s.expert_ids.begin());
    }
    float sum = 0.0f;  // float32, in rank order, as routing_weights.sum(dim=-1)
    for (std::size_t r = 0; r < k; ++r) {
        s.expert_weights[r] = s.router_probs[static_cast<std::size_t>(s.expert_ids[r])];
        sum += s.expert_weights[r];
    }
    if (c.norm_topk_prob)
        for (float& wt : s.expert_weights) wt /= sum;

    // 2. the weighted sum of the chosen experts, in expert-id order (transformers' loop over experts)
    std::fill(out.begin(), out.end(), 0.0f);
    for (std::size_t e = 0; e < c.n_experts; ++e) {
        const auto rank = std::find(s.expert_ids.begin(), s.expert_ids.end(), static_cast<int>(e));
        if (rank == s.expert_ids.end()) continue;  // not chosen for this token: never computed
        const float weight = s.expert_weights[static_cast<std::size_t>(rank - s.expert_ids.begin())];
        expert_ffn(w.experts[e], c.ffn_dim, xn, s, s.expert_out);
        for (std::size_t i = 0; i < out.size(); ++i) out[i] += s.expert_out[i] * weight;  // (y · w), then add
    }

    // 3. Qwen2-MoE's shared expert: every token, scaled by a learned sigmoid gate in (0, 1)
    if (c.shared_ffn_dim) {
        float g = 0.0f;  // shared_gate: [1, dim] · xn -> one logit
        project(w.shared_gate, xn, std::span<float>(&g, 1), s);
        const float gate = 1.0f / (1.0f + std::exp(-g));
        expert_ffn(w.shared_expert, c.shared_ffn_dim, xn, s, s.shared_out);
        for (float& v : s.shared_out) v *= gate;
        for (std::size_t i = 0; i < out.size(); ++i) out[i] += s.shared_out[i];
    }

    if (trace) {
        trace->router_logits = s.router_logits;
        trace->experts.assign(s.expert_ids.begin(), s.expert_ids.end());
        trace->expert_weights = s.expert_weights;
        if (c.shared_ffn_dim) trace->shared_out = s.shared_out;
        else trace->shared_out.clear();
    }
}

}  // namespace lmlab
