// Kernel stages: feed a fixture case's inputs to one kernel, return its outputs.
// Shapes are checked by Case::input (HarnessError on mismatch) before any kernel sees the data.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/ggml_quant.h"
#include "kernels/kernels.h"
#include "harness/stages/stages.h"

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

std::vector<StageOutput> stage_matvec_fast(const Fixture&, const Case& c, const StageEnv&) {
    // kernel.matvec's fixture through the fast path: W: [out, in], x: [in] -> y: [out]
    const auto& x = c.input("x", {kAny});
    const auto& W = c.input("W", {kAny, x.shape[0]});
    std::vector<float> y(W.shape[0]);
    matvec_fast(W.data, x.data, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_matmul_xwt(const Fixture&, const Case& c, const StageEnv&) {
    // X: [T, in], W: [out, in] -> y = X · Wᵀ: [T, out] (a prompt of T tokens through one nn.Linear)
    const auto& X = c.input("X", {kAny, kAny});
    const auto& W = c.input("W", {kAny, X.shape[1]});
    const std::size_t T = X.shape[0], in = X.shape[1], out = W.shape[0];
    std::vector<float> y(T * out);
    matmul_xwt(X.data, W.data, y, T, in, out);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_linear(const Fixture&, const Case& c, const StageEnv&) {
    // W: [out, in], b: [out] or [0] (no bias), x: [in] -> y: [out]
    const auto& x = c.input("x", {kAny});
    const auto& W = c.input("W", {kAny, x.shape[0]});
    const auto& b = c.input("b", {kAny});
    if (!b.data.empty() && b.shape[0] != W.shape[0])
        throw HarnessError(c.file + ": /" + c.name + "/inputs/b has shape " + shape_str(b.shape) + ", expected [0] or [" +
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
        throw HarnessError(c.file + ": /" + c.name + " style is '" + style + "', expected 'adjacent' or 'rotate_half'");
    const auto& x = c.input("x", {kAny});
    if (head_dim == 0 || head_dim % 2 || x.shape[0] % head_dim)
        throw HarnessError(c.file + ": /" + c.name + " head_dim " + std::to_string(head_dim) +
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

std::vector<StageOutput> stage_sigmoid(const Fixture&, const Case& c, const StageEnv&) {
    const auto& x = c.input("x", {kAny});
    std::vector<float> y(x.data.size());
    sigmoid(x.data, y);
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

std::vector<StageOutput> stage_attention_tiled(const Fixture&, const Case& c, const StageEnv&) {
    // kernel.attention's fixture through the tiled kernel: q: [head_dim], k, v: [n_pos, head_dim] ->
    // out: [head_dim]. The probabilities are never formed as a vector, so only "out" is compared.
    const auto& q = c.input("q", {kAny});
    const auto& k = c.input("k", {kAny, q.shape[0]});
    const auto& v = c.input("v", {k.shape[0], q.shape[0]});
    std::vector<float> out(q.shape[0]);
    attention_tiled(q.data, k.data, v.data, k.shape[0], q.shape[0], out);
    return {{"out", "out", out}};
}

namespace {
// Sliding-window attention on a case of kernel/attention_window.h5: the positions 0 .. n_pos - 1 of
// k and v stored in order into a ring of `ring` rows (row t % ring: the later overwrite the earlier,
// as in a windowed layer's KV cache; 0: no ring), then the query reads first .. n_pos - 1.
// Outputs: out [head_dim]; the plain kernel's probabilities laid out over all n_pos positions (0
// before the window), as the reference's masked softmax gives them.
std::vector<StageOutput> attention_window_case(const Case& c, bool tiled) {
    const auto& q = c.input("q", {kAny});
    const auto& k = c.input("k", {kAny, q.shape[0]});
    const auto& v = c.input("v", {k.shape[0], q.shape[0]});
    const std::size_t n_pos = k.shape[0], hd = q.shape[0];
    const double first = c.number("first"), ring_attr = c.number("ring");
    if (!(first >= 0 && first < static_cast<double>(n_pos)) || !(ring_attr >= 0) || first != std::floor(first) ||
        ring_attr != std::floor(ring_attr))
        throw HarnessError(c.file + ": /" + c.name + " first/ring must be whole numbers, first < n_pos");
    const KvPositions at{static_cast<std::size_t>(first), static_cast<std::size_t>(ring_attr)};
    const std::size_t rows = at.ring ? std::min(at.ring, n_pos) : n_pos;
    std::vector<float> keys(rows * hd), values(rows * hd);
    for (std::size_t t = 0; t < n_pos; ++t) {  // the ring filled in position order, as the cache is
        const std::size_t r = at.ring ? t % at.ring : t;
        std::copy_n(k.data.begin() + static_cast<std::ptrdiff_t>(t * hd), hd, keys.begin() + static_cast<std::ptrdiff_t>(r * hd));
        std::copy_n(v.data.begin() + static_cast<std::ptrdiff_t>(t * hd), hd, values.begin() + static_cast<std::ptrdiff_t>(r * hd));
    }
    std::vector<float> out(hd);
    if (tiled) {
        attention_tiled(q.data, keys, values, n_pos, hd, out, at);
        return {{"out", "out", out}};
    }
    std::vector<float> scores(n_pos - at.first), probs(n_pos, 0.0f);
    attention(q.data, keys, values, n_pos, hd, scores, out, at);
    std::copy(scores.begin(), scores.end(), probs.begin() + static_cast<std::ptrdiff_t>(at.first));
    return {{"out", "out", out}, {"probs", "probs", probs}};
}
}  // namespace

std::vector<StageOutput> stage_attention_window(const Fixture&, const Case& c, const StageEnv&) {
    return attention_window_case(c, false);
}

std::vector<StageOutput> stage_attention_window_tiled(const Fixture&, const Case& c, const StageEnv&) {
    return attention_window_case(c, true);
}

std::vector<StageOutput> stage_rope_scaling(const Fixture&, const Case& c, const StageEnv&) {
    // attributes: kind, head_dim, theta, context, factor, seq_len (+ the kind's own); positions [n] ->
    // inv_freq [head_dim/2] and attention_factor [1] (rope_frequencies), cos and sin [n, head_dim/2]
    // through the rope kernel itself: a head whose pairs are all (1, 0) turns into (cos, sin)·factor
    const auto& positions = c.input("positions", {kAny});
    const auto whole = [&](const char* attr) {
        const double v = c.number(attr);
        if (!(v >= 1) || v != std::floor(v) || v > 1e9)
            throw HarnessError(c.file + ": /" + c.name + " " + attr + " = " + std::to_string(v) + " is not a positive integer");
        return static_cast<std::size_t>(v);
    };
    const std::size_t hd = whole("head_dim"), seq_len = whole("seq_len");
    if (hd % 2) throw HarnessError(c.file + ": /" + c.name + " head_dim must be even");
    const std::string& kind = c.string("kind");
    RopeScaling s;
    s.factor = c.number("factor");
    s.original_context = whole("context");  // dynamic and yarn: max_position_embeddings
    if (kind == "linear") s.kind = RopeScalingKind::Linear;
    else if (kind == "dynamic") s.kind = RopeScalingKind::Dynamic;
    else if (kind == "yarn") {
        s.kind = RopeScalingKind::Yarn;
        const auto opt = [&](const char* attr, double fallback) { return c.numbers.count(attr) ? c.number(attr) : fallback; };
        s.beta_fast = opt("beta_fast", 32.0);
        s.beta_slow = opt("beta_slow", 1.0);
        s.attention_factor = opt("attention_factor", 0.1 * std::log(s.factor) + 1.0);
    } else if (kind == "llama3") {
        s.kind = RopeScalingKind::Llama3;
        s.low_freq_factor = c.number("low_freq_factor");
        s.high_freq_factor = c.number("high_freq_factor");
        s.original_context = whole("original_max_position_embeddings");
    } else {
        throw HarnessError(c.file + ": /" + c.name + " kind '" + kind + "' is not linear, dynamic, yarn or llama3");
    }
    std::vector<double> inv(hd / 2);
    const double factor = rope_frequencies(hd, c.number("theta"), s, seq_len, inv);
    std::vector<float> cos, sin, head(hd);
    for (float p : positions.data) {
        if (!(p >= 0) || p != std::floor(p)) throw HarnessError(c.file + ": /" + c.name + " positions must be whole numbers");
        std::fill(head.begin(), head.begin() + static_cast<std::ptrdiff_t>(hd / 2), 1.0f);  // pair i = (x[i], x[i + hd/2]) = (1, 0)
        std::fill(head.begin() + static_cast<std::ptrdiff_t>(hd / 2), head.end(), 0.0f);
        rope(head, hd, static_cast<std::size_t>(p), inv, factor, RopeStyle::RotateHalf);
        cos.insert(cos.end(), head.begin(), head.begin() + static_cast<std::ptrdiff_t>(hd / 2));
        sin.insert(sin.end(), head.begin() + static_cast<std::ptrdiff_t>(hd / 2), head.end());
    }
    // inv_freq spans 1 .. 1e-7: relative, with the float32 reference's few ulps of pow and blend
    const Tolerance freq_tol{0.0, 1e-6};
    return {{"inv_freq", "inv_freq", std::vector<float>(inv.begin(), inv.end()), "", freq_tol},
            {"attention_factor", "attention_factor", {static_cast<float>(factor)}, "", freq_tol},
            {"cos", "cos", cos},
            {"sin", "sin", sin}};
}

namespace {
// The case's attribute `group`: a positive whole number.
std::size_t group_of(const Case& c) {
    const double g = c.number("group");
    if (!(g >= 1) || g != std::floor(g))
        throw HarnessError(c.file + ": /" + c.name + " group = " + std::to_string(g) + " is not a positive integer");
    return static_cast<std::size_t>(g);
}
// An input holding int8 values stored as floats (every fixture dataset is float32).
std::vector<std::int8_t> int8_input(const Case& c, const std::string& name, const Array<float>& a) {
    std::vector<std::int8_t> q(a.data.size());
    for (std::size_t i = 0; i < q.size(); ++i) {
        const float v = a.data[i];
        if (!(v >= -127 && v <= 127) || v != std::floor(v))
            throw HarnessError(c.file + ": /" + c.name + "/inputs/" + name + "[" + std::to_string(i) + "] = " +
                               std::to_string(v) + " is not an int8 value in [-127, 127]");
        q[i] = static_cast<std::int8_t>(v);
    }
    return q;
}
}  // namespace

std::vector<StageOutput> stage_quantize_q8_0(const Fixture&, const Case& c, const StageEnv&) {
    // x: [n], attr group -> q [n] (int8 values as floats, compared exactly), scales [n / group]
    const auto& x = c.input("x", {kAny});
    const std::size_t group = group_of(c);
    if (x.data.size() % group)
        throw HarnessError(c.file + ": /" + c.name + " x has " + std::to_string(x.data.size()) +
                           " elements, not a multiple of group " + std::to_string(group));
    std::vector<std::int8_t> q(x.data.size());
    std::vector<float> scales(x.data.size() / group);
    quantize_q8_0(x.data, group, q, scales);
    return {{"q", "q", std::vector<float>(q.begin(), q.end()), "", Tolerance{0.0, 0.0}}, {"scales", "scales", scales}};
}

std::vector<StageOutput> stage_ggml_quantize(const Fixture&, const Case& c, const StageEnv&) {
    // x: [n], attr type (ggml's name: "Q4_K") -> bytes [row_bytes(type, n)] as floats 0..255
    const auto& x = c.input("x", {kAny});
    const std::string& name = c.string("type");
    const std::optional<ggml::TypeInfo> type = ggml::find_type_named(name);
    if (!type || !type->is_weight) throw HarnessError(c.file + ": /" + c.name + " attribute type is '" + name + "', not a ggml weight type");
    std::vector<std::uint8_t> bytes(ggml::row_bytes(type->type, x.data.size()));
    ggml::quantize_row(type->type, x.data, bytes);
    return {{"bytes", "bytes", std::vector<float>(bytes.begin(), bytes.end())}};
}

std::vector<StageOutput> stage_matvec_q8_0(const Fixture&, const Case& c, const StageEnv&) {
    // Wq: [out, in], Ws: [out, in / group], xq: [in], xs: [in / group], attr group -> y: [out]
    const std::size_t group = group_of(c);
    const auto& xq = c.input("xq", {kAny});
    const std::size_t in = xq.shape[0];
    if (in % group)
        throw HarnessError(c.file + ": /" + c.name + " in = " + std::to_string(in) + " is not a multiple of group " +
                           std::to_string(group));
    const auto& Wq = c.input("Wq", {kAny, in});
    const auto& Ws = c.input("Ws", {Wq.shape[0], in / group});
    const auto& xs = c.input("xs", {in / group});
    std::vector<float> y(Wq.shape[0]);
    matvec_q8_0(int8_input(c, "Wq", Wq), Ws.data, int8_input(c, "xq", xq), xs.data, group, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_argmax(const Fixture&, const Case& c, const StageEnv&) {
    const auto& x = c.input("x", {kAny});
    return {{"index", "index", {static_cast<float>(argmax(x.data))}}};
}

}  // namespace lmlab
