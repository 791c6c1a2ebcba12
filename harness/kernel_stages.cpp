// Kernel stages: feed a fixture case's inputs to one kernel, return its outputs.
// Shapes are checked by Case::input (FixtureError on mismatch) before any kernel sees the data.
#include <cmath>

#include "kernels/kernels.h"
#include "stages.h"

namespace lmlab {

namespace {
constexpr std::size_t kAny = Case::kAnyDim;
}

std::vector<StageOutput> stage_matvec(const Fixture&, const Case& c, const StageEnv&) {
    // W: [out, in], x: [in] -> y: [out]
    const auto& x = c.input("x", {kAny});
    const auto& W = c.input("W", {kAny, x.shape[0]});
    std::vector<float> y(W.shape[0]);
    matvec(W.data, x.data, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_linear(const Fixture&, const Case& c, const StageEnv&) {
    // W: [out, in], b: [out] or [0] (no bias), x: [in] -> y: [out]
    const auto& x = c.input("x", {kAny});
    const auto& W = c.input("W", {kAny, x.shape[0]});
    const auto& b = c.input("b", {kAny});
    if (!b.data.empty() && b.shape[0] != W.shape[0])
        throw FixtureError(c.file + ": /" + c.name + "/inputs/b has shape " + shape_str(b.shape) + ", expected [0] or [" +
                           std::to_string(W.shape[0]) + "]");
    std::vector<float> y(W.shape[0]);
    linear(W.data, b.data, x.data, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_add(const Fixture&, const Case& c, const StageEnv&) {
    const auto& a = c.input("a", {kAny});
    const auto& b = c.input("b", {a.shape[0]});
    std::vector<float> y(a.data.size());
    add(a.data, b.data, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_layernorm(const Fixture&, const Case& c, const StageEnv&) {
    const auto& x = c.input("x", {kAny});
    const auto& w = c.input("weight", {x.shape[0]});
    const auto& b = c.input("bias", {x.shape[0]});
    std::vector<float> y(x.data.size());
    layernorm(x.data, w.data, b.data, static_cast<float>(c.number("eps")), y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_gelu_tanh(const Fixture&, const Case& c, const StageEnv&) {
    const auto& x = c.input("x", {kAny});
    std::vector<float> y(x.data.size());
    gelu_tanh(x.data, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_gelu_erf(const Fixture&, const Case& c, const StageEnv&) {
    const auto& x = c.input("x", {kAny});
    std::vector<float> y(x.data.size());
    gelu_erf(x.data, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_softmax(const Fixture&, const Case& c, const StageEnv&) {
    const auto& x = c.input("x", {kAny});
    std::vector<float> y(x.data.size());
    softmax(x.data, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_rmsnorm(const Fixture&, const Case& c, const StageEnv&) {
    const auto& x = c.input("x", {kAny});
    const auto& w = c.input("weight", {x.shape[0]});
    std::vector<float> y(x.data.size());
    rmsnorm(x.data, w.data, static_cast<float>(c.number("eps")), y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_rope(const Fixture&, const Case& c, const StageEnv&) {
    const auto head_dim = static_cast<std::size_t>(c.number("head_dim"));
    const std::string& style = c.string("style");
    if (style != "adjacent" && style != "rotate_half")
        throw FixtureError(c.file + ": /" + c.name + " style is '" + style + "', expected 'adjacent' or 'rotate_half'");
    const auto& x = c.input("x", {kAny});
    if (head_dim == 0 || head_dim % 2 || x.shape[0] % head_dim)
        throw FixtureError(c.file + ": /" + c.name + " head_dim " + std::to_string(head_dim) +
                           " must be even and divide the length of x (" + std::to_string(x.shape[0]) + ")");
    std::vector<float> y = x.data;
    rope(y, head_dim, static_cast<std::size_t>(c.number("pos")), static_cast<float>(c.number("theta")),
         style == "adjacent" ? RopeStyle::AdjacentPairs : RopeStyle::RotateHalf);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_silu(const Fixture&, const Case& c, const StageEnv&) {
    const auto& x = c.input("x", {kAny});
    std::vector<float> y(x.data.size());
    silu(x.data, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_swiglu(const Fixture&, const Case& c, const StageEnv&) {
    const auto& a = c.input("a", {kAny});
    const auto& b = c.input("b", {a.shape[0]});
    std::vector<float> y(a.data.size());
    swiglu(a.data, b.data, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_attention(const Fixture&, const Case& c, const StageEnv&) {
    // q: [head_dim], k, v: [n_pos, head_dim] -> out: [head_dim], probs: [n_pos]
    const auto& q = c.input("q", {kAny});
    const auto& k = c.input("k", {kAny, q.shape[0]});
    const auto& v = c.input("v", {k.shape[0], q.shape[0]});
    const std::size_t n_pos = k.shape[0], head_dim = q.shape[0];
    std::vector<float> scores(n_pos), out(head_dim);
    attention(q.data, k.data, v.data, n_pos, head_dim, scores, out);
    return {{"out", "out", out}, {"probs", "probs", scores}};
}

std::vector<StageOutput> stage_argmax(const Fixture&, const Case& c, const StageEnv&) {
    const auto& x = c.input("x", {kAny});
    return {{"index", "index", {static_cast<float>(argmax(x.data))}}};
}

}  // namespace lmlab
