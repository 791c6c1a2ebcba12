// Conformance stages: ONNX's operator test cases through our kernels (fixtures conformance/<op>.h5,
// written by scripts/lmlab_ref/conformance.py from onnx 1.18.0's shipped node tests; format in
// golden/README.md). A case is one ONNX node: its attributes (axis, epsilon, interleaved, is_causal,
// ...) as case attributes, its inputs and ONNX's expected outputs under the operator's formal names.
//
// Each stage function reads the attributes it understands, and refuses the case (SkipCase, naming
// every attribute or input that stops it, and why) when one asks for something our kernel does not
// do; the runner lists it among the stage's skipped cases. The harness only lays the data out for the
// kernel (an axis moved last, heads gathered): the arithmetic is the kernel's. Every output is
// compared twice with ONNX's expected one: under ONNX's tolerance (its backend runner's, kept in the
// case as onnx_rtol / onnx_atol) and under ours (the stage row's).
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <string_view>

#include "harness/stages/stages.h"
#include "kernels/kernels.h"

namespace lmlab {

namespace {

// ---- What every conformance stage shares ---------------------------------------------------------

// The ONNX attributes the case's node sets, from onnx_attributes ("axis=1,keepdims=0" as the fixture
// reader joins the list): names and their values as text.
std::vector<std::pair<std::string, std::string>> onnx_attributes(const Case& c) {
    std::vector<std::pair<std::string, std::string>> out;
    const std::string& all = c.string("onnx_attributes");
    for (std::size_t start = 0; start < all.size();) {
        const std::size_t end = std::min(all.find(',', start), all.size());
        const std::string item = all.substr(start, end - start);
        const std::size_t eq = item.find('=');
        if (eq == std::string::npos || eq == 0)
            throw HarnessError(c.file + ": /" + c.name + " onnx_attributes item '" + item + "' is not name=value. " +
                               regenerate_hint(c.file));
        out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
        start = end + 1;
    }
    return out;
}

// The reasons a case cannot run: one per attribute the stage does not know (an operator version
// newer than ours may add one; never silently ignored)...
std::vector<std::string> unknown_attributes(const Case& c, std::initializer_list<std::string_view> known) {
    std::vector<std::string> why;
    for (const auto& [name, value] : onnx_attributes(c))
        if (std::find(known.begin(), known.end(), name) == known.end())
            why.push_back(fmt::format("attribute {}={}: not one this stage reads", name, value));
    return why;
}

// ... and then the SkipCase naming all of them.
void skip_if_any(const std::vector<std::string>& why) {
    if (why.empty()) return;
    std::string all;
    for (const std::string& w : why) all += (all.empty() ? "" : "; ") + w;
    throw SkipCase(all);
}

// The operator version this stage implements: an older opset may define the operator differently.
void need_opset(const Case& c, int since, const char* what, std::vector<std::string>& why) {
    const double opset = c.number("opset");
    if (opset < since) why.push_back(fmt::format("opset {:g}: {} is defined as from opset {}", opset, what, since));
}

// An input or output by its ONNX formal name, or nullptr when the case leaves an optional one out.
const Array<float>* onnx_tensor(const std::map<std::string, Array<float>>& where, const std::string& name) {
    const auto it = where.find(name);
    return it == where.end() ? nullptr : &it->second;
}
const Array<float>& onnx_input(const Case& c, const std::string& name) {
    const Array<float>* t = onnx_tensor(c.inputs, name);
    if (!t)
        throw HarnessError(c.file + ": dataset /" + c.name + "/inputs/" + name + " is missing (ONNX " +
                           c.string("onnx_op") + "'s input " + name + "). " + regenerate_hint(c.file));
    return *t;
}

// ONNX's element type of a tensor ("float32", "int64", "bool"); the fixture stores every tensor as
// float32, exactly. Our kernels are float32: any other type for a float tensor is a reason to skip.
void need_dtype(const Case& c, const std::string& tensor, const char* dtype, std::vector<std::string>& why) {
    const std::string& got = c.string(tensor + ".dtype");
    if (got != dtype) why.push_back(fmt::format("{} is {} (our kernels take {})", tensor, got, dtype));
}

// An integer attribute (ONNX ints), def when the case does not set it.
long long int_attr(const Case& c, const std::string& name, long long def) {
    const auto it = c.numbers.find(name);
    if (it == c.numbers.end()) return def;
    if (it->second != std::floor(it->second))
        throw HarnessError(c.file + ": /" + c.name + " attribute " + name + " = " + fmt::format("{:g}", it->second) +
                           " is not an integer. " + regenerate_hint(c.file));
    return static_cast<long long>(it->second);
}

// An ONNX axis in [-rank, rank) of `shape` as a dimension index; the dimension must not be empty.
std::size_t onnx_axis(const Case& c, long long axis, const std::vector<std::size_t>& shape) {
    const long long r = static_cast<long long>(shape.size());
    if (axis < -r || axis >= r || shape[static_cast<std::size_t>(axis < 0 ? axis + r : axis)] == 0)
        throw HarnessError(fmt::format("{}: /{} axis {} is outside [-{}, {}) or empty for an input of shape {}. {}", c.file,
                                       c.name, axis, r, r, shape_str(shape), regenerate_hint(c.file)));
    return static_cast<std::size_t>(axis < 0 ? axis + r : axis);
}

// The elements of a tensor `shape` along `axis`, one row per index of the other dimensions, rows in
// row-major order of those dimensions (np.moveaxis(x, axis, -1)): at[r·n + k] is the flat index of
// element k of row r, n = shape[axis].
std::vector<std::size_t> rows_along(const std::vector<std::size_t>& shape, std::size_t axis) {
    std::size_t outer = 1, inner = 1;
    for (std::size_t d = 0; d < axis; ++d) outer *= shape[d];
    for (std::size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
    const std::size_t n = shape[axis];
    std::vector<std::size_t> at;
    at.reserve(outer * n * inner);
    for (std::size_t o = 0; o < outer; ++o)
        for (std::size_t i = 0; i < inner; ++i)
            for (std::size_t k = 0; k < n; ++k) at.push_back((o * n + k) * inner + i);
    return at;
}

// Our output compared with ONNX's expected `golden` twice: under ONNX's tolerance (its backend
// runner's, from the case) and under ours (the stage row's). `label` names ours when it is not plainly
// the golden output (a second kernel, another convention).
void both_tolerances(std::vector<StageOutput>& outs, const Case& c, const std::string& golden, std::vector<float> data,
                     const std::string& label = "") {
    const Tolerance onnx{c.number("onnx_atol"), c.number("onnx_rtol")};
    const std::string name = label.empty() ? golden : label;
    outs.push_back({name + " [ONNX's tolerance]", golden, data, "", onnx});
    outs.push_back({name, golden, std::move(data)});
}

// An optional ONNX output that we do not produce: listed among the skipped, never silently dropped.
void not_compared(std::vector<StageOutput>& outs, const Case& c, const std::string& golden, const std::string& why) {
    if (onnx_tensor(c.outputs, golden)) outs.push_back({golden, golden, {}, "", {}, {}, false, {}, why});
}

}  // namespace

// ---- Softmax-13: y = softmax(x) along `axis` (default -1) ---------------------------------------------
std::vector<StageOutput> stage_conformance_softmax(const Fixture&, const Case& c, const StageEnv&) {
    std::vector<std::string> why = unknown_attributes(c, {"axis"});
    need_opset(c, 13, "Softmax along one axis (before 13: over the input flattened to 2-D from axis on)", why);
    need_dtype(c, "input", "float32", why);
    skip_if_any(why);
    const auto& x = onnx_input(c, "input");
    const std::size_t axis = onnx_axis(c, int_attr(c, "axis", -1), x.shape);
    const std::size_t n = x.shape[axis];
    const auto at = rows_along(x.shape, axis);
    std::vector<float> row(n), y(x.data.size());
    for (std::size_t r = 0; r * n < at.size(); ++r) {  // each row along the axis through the kernel
        for (std::size_t k = 0; k < n; ++k) row[k] = x.data[at[r * n + k]];
        softmax(row, row);
        for (std::size_t k = 0; k < n; ++k) y[at[r * n + k]] = row[k];
    }
    std::vector<StageOutput> outs;
    both_tolerances(outs, c, "output", std::move(y));
    return outs;
}

namespace {
// LayerNormalization-17 and RMSNormalization-23 normalise over every dimension from `axis` (default
// -1) on: X [d0, ..., dk] is rows of n = d_axis · ... · dk elements, and Scale (and B) hold one row.
// ONNX lets them broadcast to that row; our kernels take a full row of weights.
struct NormRows {
    std::size_t n = 0, rows = 0;
};
NormRows norm_rows(const Case& c, const Array<float>& x, const std::vector<const char*>& weights,
                   std::vector<std::string>& why) {
    const std::size_t axis = onnx_axis(c, int_attr(c, "axis", -1), x.shape);
    NormRows nr{1, 1};
    for (std::size_t d = 0; d < x.shape.size(); ++d) (d < axis ? nr.rows : nr.n) *= x.shape[d];
    for (const char* w : weights) {
        const Array<float>* t = onnx_tensor(c.inputs, w);
        if (t && t->data.size() != nr.n)
            why.push_back(fmt::format("{} of shape {} broadcast over the normalised shape (our kernel takes all {} "
                                      "weights of a row)", w, shape_str(t->shape), nr.n));
    }
    return nr;
}
// stash_type: the precision of the mean and variance (1 = float32, ONNX's default). Our kernels
// accumulate in double, at least as precise: only another type is a reason to skip.
void need_stash_float(const Case& c, std::vector<std::string>& why) {
    const long long stash = int_attr(c, "stash_type", 1);
    if (stash != 1) why.push_back(fmt::format("stash_type={}: statistics in a type other than float32", stash));
}
}  // namespace

// ---- LayerNormalization-17: Y = (X - mean) / sqrt(var + epsilon) · Scale + B over dims axis.. ----------
std::vector<StageOutput> stage_conformance_layer_normalization(const Fixture&, const Case& c, const StageEnv&) {
    std::vector<std::string> why = unknown_attributes(c, {"axis", "epsilon", "stash_type"});
    need_opset(c, 17, "LayerNormalization", why);
    for (const char* t : {"X", "Scale", "B"})
        if (onnx_tensor(c.inputs, t)) need_dtype(c, t, "float32", why);
    need_stash_float(c, why);
    const auto& x = onnx_input(c, "X");
    const auto& scale = onnx_input(c, "Scale");
    const NormRows nr = norm_rows(c, x, {"Scale", "B"}, why);
    skip_if_any(why);
    const Array<float>* b = onnx_tensor(c.inputs, "B");
    const std::vector<float> zeros(nr.n, 0.0f);  // B is optional: no bias
    const float eps = static_cast<float>(c.numbers.count("epsilon") ? c.number("epsilon") : 1e-5);
    std::vector<float> y(x.data.size());
    for (std::size_t r = 0; r < nr.rows; ++r)
        layernorm(std::span<const float>(x.data).subspan(r * nr.n, nr.n), scale.data, b ? b->data : zeros, eps,
                  std::span<float>(y).subspan(r * nr.n, nr.n));
    std::vector<StageOutput> outs;
    both_tolerances(outs, c, "Y", std::move(y));
    for (const char* o : {"Mean", "InvStdDev"})
        not_compared(outs, c, o, "optional output: our layernorm returns Y only (the statistics stay inside it)");
    return outs;
}

// ---- RMSNormalization-23: Y = X / sqrt(mean(X²) + epsilon) · scale over dims axis.. ------------------
std::vector<StageOutput> stage_conformance_rms_normalization(const Fixture&, const Case& c, const StageEnv&) {
    std::vector<std::string> why = unknown_attributes(c, {"axis", "epsilon", "stash_type"});
    need_opset(c, 23, "RMSNormalization", why);
    for (const char* t : {"X", "scale"}) need_dtype(c, t, "float32", why);
    need_stash_float(c, why);
    const auto& x = onnx_input(c, "X");
    const auto& scale = onnx_input(c, "scale");
    const NormRows nr = norm_rows(c, x, {"scale"}, why);
    skip_if_any(why);
    const float eps = static_cast<float>(c.numbers.count("epsilon") ? c.number("epsilon") : 1e-5);
    std::vector<float> y(x.data.size());
    for (std::size_t r = 0; r < nr.rows; ++r)
        rmsnorm(std::span<const float>(x.data).subspan(r * nr.n, nr.n), scale.data, eps,
                std::span<float>(y).subspan(r * nr.n, nr.n));
    std::vector<StageOutput> outs;
    both_tolerances(outs, c, "Y", std::move(y));
    return outs;
}

// ---- Gelu-20: approximate "none" (default) = x·Φ(x), the erf form; "tanh" = GPT-2's gelu_new -----------
std::vector<StageOutput> stage_conformance_gelu(const Fixture&, const Case& c, const StageEnv&) {
    std::vector<std::string> why = unknown_attributes(c, {"approximate"});
    need_opset(c, 20, "Gelu", why);
    need_dtype(c, "X", "float32", why);
    const auto found = c.strings.find("approximate");
    const std::string approximate = found == c.strings.end() ? "none" : found->second;
    if (approximate != "none" && approximate != "tanh")
        why.push_back("approximate=" + approximate + ": neither 'none' (erf) nor 'tanh'");
    skip_if_any(why);
    const auto& x = onnx_input(c, "X");
    std::vector<float> y(x.data.size());
    if (approximate == "tanh") gelu_tanh(x.data, y);
    else gelu_erf(x.data, y);
    std::vector<StageOutput> outs;
    both_tolerances(outs, c, "Y", std::move(y), approximate == "tanh" ? "Y (gelu_tanh)" : "Y (gelu_erf)");
    return outs;
}

// ---- Sigmoid-13 ---------------------------------------------------------------------------------------
std::vector<StageOutput> stage_conformance_sigmoid(const Fixture&, const Case& c, const StageEnv&) {
    std::vector<std::string> why = unknown_attributes(c, {});
    need_opset(c, 13, "Sigmoid", why);
    need_dtype(c, "X", "float32", why);
    skip_if_any(why);
    const auto& x = onnx_input(c, "X");
    std::vector<float> y(x.data.size());
    sigmoid(x.data, y);
    std::vector<StageOutput> outs;
    both_tolerances(outs, c, "Y", std::move(y));
    return outs;
}

// ---- MatMul-13: Y = A · B as numpy.matmul, A [..., M, K], B [..., K, N] ------------------------------------
// Our kernels take the weight as nn.Linear stores it, [out, in]: B's [K, N] is transposed to W [N, K]
// (layout only), then each row of A goes through matvec (the plain kernel) and the whole [M, K] block
// through matmul_xwt (the batched fast path).
std::vector<StageOutput> stage_conformance_matmul(const Fixture&, const Case& c, const StageEnv&) {
    std::vector<std::string> why = unknown_attributes(c, {});
    need_opset(c, 13, "MatMul", why);
    for (const char* t : {"A", "B"}) need_dtype(c, t, "float32", why);
    const auto& a = onnx_input(c, "A");
    const auto& b = onnx_input(c, "B");
    const std::size_t rank = a.shape.size();
    if (rank < 2 || b.shape.size() != rank)
        why.push_back(fmt::format("A {} and B {}: numpy's 1-D promotion or broadcasting over ranks (we take equal "
                                  "ranks >= 2)", shape_str(a.shape), shape_str(b.shape)));
    else if (!std::equal(a.shape.begin(), a.shape.end() - 2, b.shape.begin()) || a.shape[rank - 1] != b.shape[rank - 2])
        why.push_back(fmt::format("A {} and B {}: batch dimensions broadcast (we take equal batch dimensions)",
                                  shape_str(a.shape), shape_str(b.shape)));
    skip_if_any(why);
    const std::size_t M = a.shape[rank - 2], K = a.shape[rank - 1], N = b.shape[rank - 1];
    const std::size_t batches = a.data.size() / (M * K);
    std::vector<float> plain(batches * M * N), fast(batches * M * N), W(N * K);
    for (std::size_t bt = 0; bt < batches; ++bt) {
        const float* B = b.data.data() + bt * K * N;
        for (std::size_t k = 0; k < K; ++k)
            for (std::size_t n = 0; n < N; ++n) W[n * K + k] = B[k * N + n];  // W = Bᵀ: [N, K]
        const auto A = std::span<const float>(a.data).subspan(bt * M * K, M * K);
        for (std::size_t m = 0; m < M; ++m)
            matvec(W, A.subspan(m * K, K), std::span<float>(plain).subspan((bt * M + m) * N, N));
        matmul_xwt(A, W, std::span<float>(fast).subspan(bt * M * N, M * N), M, K, N);
    }
    std::vector<StageOutput> outs;
    both_tolerances(outs, c, "Y", std::move(plain), "Y (matvec)");
    both_tolerances(outs, c, "Y", std::move(fast), "Y (matmul_xwt)");
    return outs;
}

// ---- ArgMax-13: the index of the largest element along `axis` (default 0) ------------------------------
// keepdims (default 1) only shapes the output: its elements, in order, are the rows along the axis.
// select_last_index=1 asks for the last maximum on a tie; our argmax returns the first (as
// torch.argmax and greedy sampling): such a case runs when no row has a tie (the attribute then
// changes nothing), and is skipped, naming the row, when one does.
std::vector<StageOutput> stage_conformance_argmax(const Fixture&, const Case& c, const StageEnv&) {
    std::vector<std::string> why = unknown_attributes(c, {"axis", "keepdims", "select_last_index"});
    need_opset(c, 12, "ArgMax with select_last_index", why);
    need_dtype(c, "data", "float32", why);
    const auto& x = onnx_input(c, "data");
    const std::size_t axis = onnx_axis(c, int_attr(c, "axis", 0), x.shape);
    const std::size_t n = x.shape[axis];
    const auto at = rows_along(x.shape, axis);
    const bool last = int_attr(c, "select_last_index", 0) != 0;
    std::vector<float> index, row(n);
    for (std::size_t r = 0; r * n < at.size(); ++r) {
        for (std::size_t k = 0; k < n; ++k) row[k] = x.data[at[r * n + k]];
        const std::size_t i = argmax(row);
        std::size_t ties = 0, nans = 0;
        for (float v : row) {
            ties += v == row[i];
            nans += std::isnan(v);
        }
        if (last && ties > 1)
            why.push_back(fmt::format("select_last_index=1 with a tie in row {} (our argmax returns the first maximum)", r));
        if (nans) why.push_back(fmt::format("a NaN in row {} (numpy's argmax returns it; ours never picks NaN)", r));
        index.push_back(static_cast<float>(i));
    }
    skip_if_any(why);
    std::vector<StageOutput> outs;
    both_tolerances(outs, c, "reduced", std::move(index));
    return outs;
}

// ---- RotaryEmbedding-23 ---------------------------------------------------------------------------------
// X: [B, H, S, D] (4-D) or [B, S, H·D] (3-D, num_heads = H); cos_cache, sin_cache: [max_pos, rot/2]
// indexed by position_ids [B, S], or [B, S, rot/2] without position_ids. interleaved=1 pairs
// (x[2i], x[2i+1]) (our AdjacentPairs: Meta's LLaMA), 0 (default) pairs (x[i], x[i + rot/2]) (our
// RotateHalf: Hugging Face); rotary_embedding_dim = rot (0: D) rotates only the first rot elements of
// each head. For each token (b, s) its H heads are gathered into one vector [H·D] and rotated by
// rope_cos_sin with the first rot/2 entries of that token's cos/sin row.
std::vector<StageOutput> stage_conformance_rotary_embedding(const Fixture&, const Case& c, const StageEnv&) {
    std::vector<std::string> why = unknown_attributes(c, {"interleaved", "rotary_embedding_dim", "num_heads"});
    need_opset(c, 23, "RotaryEmbedding", why);
    for (const char* t : {"X", "cos_cache", "sin_cache"}) need_dtype(c, t, "float32", why);
    const Array<float>* ids = onnx_tensor(c.inputs, "position_ids");
    if (ids) need_dtype(c, "position_ids", "int64", why);
    const auto& x = onnx_input(c, "X");
    const auto& cos_cache = onnx_input(c, "cos_cache");
    const auto& sin_cache = onnx_input(c, "sin_cache");
    const bool three_d = x.shape.size() == 3;
    if (x.shape.size() != 3 && x.shape.size() != 4)
        throw HarnessError(c.file + ": /" + c.name + " X has shape " + shape_str(x.shape) + ", expected 3-D or 4-D");
    const std::size_t B = x.shape[0];
    const std::size_t H = three_d ? static_cast<std::size_t>(int_attr(c, "num_heads", 0)) : x.shape[1];
    const std::size_t S = three_d ? x.shape[1] : x.shape[2];
    if (H == 0 || (three_d && x.shape[2] % H))
        throw HarnessError(c.file + ": /" + c.name + " a 3-D X needs num_heads dividing its last dimension");
    const std::size_t D = three_d ? x.shape[2] / H : x.shape[3];
    const auto rot_attr = static_cast<std::size_t>(int_attr(c, "rotary_embedding_dim", 0));
    const std::size_t rot = rot_attr ? rot_attr : D;
    const std::size_t half = rot / 2, row_len = cos_cache.shape.back();
    if (rot % 2 || rot > D || half > row_len || sin_cache.shape != cos_cache.shape)
        throw HarnessError(fmt::format("{}: /{} rotary_embedding_dim {} with head size {} and caches {}, {}", c.file,
                                       c.name, rot, D, shape_str(cos_cache.shape), shape_str(sin_cache.shape)));
    skip_if_any(why);
    const RopeStyle style = int_attr(c, "interleaved", 0) ? RopeStyle::AdjacentPairs : RopeStyle::RotateHalf;
    // element d of head h of token (b, s), in X's layout
    auto at = [&](std::size_t b, std::size_t h, std::size_t s, std::size_t d) {
        return three_d ? (b * S + s) * H * D + h * D + d : ((b * H + h) * S + s) * D + d;
    };
    std::vector<float> y(x.data.size()), token(H * D);
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t s = 0; s < S; ++s) {
            std::size_t row = b * S + s;  // without position ids the caches are per token: [B, S, rot/2]
            if (ids) {
                const float p = ids->data.at(b * S + s);
                if (!(p >= 0) || p != std::floor(p) || p >= static_cast<float>(cos_cache.data.size() / row_len))
                    throw HarnessError(fmt::format("{}: /{} position_ids[{}, {}] = {:g} is not a row of the caches {}",
                                                   c.file, c.name, b, s, p, shape_str(cos_cache.shape)));
                row = static_cast<std::size_t>(p);
            }
            const auto cs = std::span<const float>(cos_cache.data).subspan(row * row_len, half);
            const auto sn = std::span<const float>(sin_cache.data).subspan(row * row_len, half);
            for (std::size_t h = 0; h < H; ++h)
                for (std::size_t d = 0; d < D; ++d) token[h * D + d] = x.data[at(b, h, s, d)];
            rope_cos_sin(token, D, cs, sn, style);
            for (std::size_t h = 0; h < H; ++h)
                for (std::size_t d = 0; d < D; ++d) y[at(b, h, s, d)] = token[h * D + d];
        }
    std::vector<StageOutput> outs;
    both_tolerances(outs, c, "Y", std::move(y),
                    fmt::format("Y ({}, rot {} of {})", style == RopeStyle::AdjacentPairs ? "adjacent pairs" : "rotate-half",
                                rot, D));
    return outs;
}

// ---- Attention-23 ----------------------------------------------------------------------------------------
namespace {
// How a case's Q/K/V are read: the spec's way (4-D [B, H, S, D]; 3-D [B, S, H·D]; grouped-query heads
// as LLaMA and Qwen2: query head h reads kv head h / (Hq / Hkv)), or as onnx 1.18's reference reads
// them (its two bugs: 3-D reshaped to [B, H, S, D] without the transpose, kv head h % Hkv).
enum class Conventions { Spec, Onnx118 };

// Y of one Attention case through our attention kernel, one (batch, query head, query position) at a
// time: the keys that query may see (all; 0..i with is_causal, upper-left as ONNX defines it; where
// a bool attn_mask is true) are gathered into one contiguous block with their values, so that
// attention() runs on exactly the visible positions (a masked key's probability is 0: leaving it out
// is the same softmax).
std::vector<float> attention_cases_y(const Case& c, Conventions conv) {
    const auto& q = onnx_input(c, "Q");
    const auto& k = onnx_input(c, "K");
    const auto& v = onnx_input(c, "V");
    const Array<float>* mask = onnx_tensor(c.inputs, "attn_mask");
    const bool three_d = q.shape.size() == 3;
    const std::size_t B = q.shape[0];
    const std::size_t Hq = three_d ? static_cast<std::size_t>(int_attr(c, "q_num_heads", 0)) : q.shape[1];
    const std::size_t Hkv = three_d ? static_cast<std::size_t>(int_attr(c, "kv_num_heads", 0)) : k.shape[1];
    const std::size_t L = three_d ? q.shape[1] : q.shape[2];  // query positions
    const std::size_t S = three_d ? k.shape[1] : k.shape[2];  // key positions
    const std::size_t D = three_d ? q.shape[2] / Hq : q.shape[3];
    const bool causal = int_attr(c, "is_causal", 0) != 0;
    // element d of head h at position s of a [B, H, S, D] or [B, S, H·D] tensor (n_pos positions)
    const bool heads_first = !three_d || conv == Conventions::Onnx118;
    auto at = [&](std::size_t H, std::size_t n_pos, std::size_t b, std::size_t h, std::size_t s, std::size_t d) {
        return heads_first ? ((b * H + h) * n_pos + s) * D + d : (b * n_pos + s) * H * D + h * D + d;
    };
    std::vector<float> y(B * Hq * L * D), qv(D), keys(S * D), values(S * D), scores(S), out(D);
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t h = 0; h < Hq; ++h) {
            const std::size_t kvh = conv == Conventions::Spec ? h / (Hq / Hkv) : h % Hkv;
            for (std::size_t i = 0; i < L; ++i) {
                std::size_t n = 0;  // visible keys, gathered
                for (std::size_t t = 0; t < S; ++t) {
                    if (causal && t > i) continue;
                    if (mask && mask->data[i * S + t] == 0.0f) continue;
                    for (std::size_t d = 0; d < D; ++d) {
                        keys[n * D + d] = k.data[at(Hkv, S, b, kvh, t, d)];
                        values[n * D + d] = v.data[at(Hkv, S, b, kvh, t, d)];
                    }
                    ++n;
                }
                for (std::size_t d = 0; d < D; ++d) qv[d] = q.data[at(Hq, L, b, h, i, d)];
                attention(qv, keys, values, n, D, scores, out);
                // Y: [B, Hq, L, D] for 4-D inputs, [B, L, Hq·D] for 3-D ones (both conventions)
                for (std::size_t d = 0; d < D; ++d)
                    y[three_d ? (b * L + i) * Hq * D + h * D + d : ((b * Hq + h) * L + i) * D + d] = out[d];
            }
        }
    return y;
}
}  // namespace

// Q: [B, Hq, L, D] or [B, L, Hq·D] (3-D: q_num_heads, kv_num_heads), K, V: likewise with Hkv heads and
// S positions; optional attn_mask [L, S], past_key/past_value; attributes is_causal, scale, softcap,
// qk_matmul_output_mode (any other, e.g. softmax_precision, is a reason to skip). Our attention() is
// softmax(q·K / sqrt(D))·V over the positions it is given: what no family here needs (a scale other
// than 1/sqrt(D), soft-capping, an additive float mask, V heads of another size, a past cache to
// concatenate) is skipped by name.
// onnx 1.18's reference has two known bugs (scripts/lmlab_ref/conformance.py): a case they touch has
// reference_bug; ours is then held to torch's answer by the spec (outputs/Y_torch), and, as the
// evidence, run once more with 1.18's conventions against ONNX's expected Y; the gap between ONNX's Y
// and the spec's is reported as a measurement.
std::vector<StageOutput> stage_conformance_attention(const Fixture&, const Case& c, const StageEnv&) {
    std::vector<std::string> why = unknown_attributes(
        c, {"is_causal", "q_num_heads", "kv_num_heads", "scale", "softcap", "qk_matmul_output_mode"});
    need_opset(c, 23, "Attention", why);
    for (const char* t : {"Q", "K", "V"}) need_dtype(c, t, "float32", why);
    const auto& q = onnx_input(c, "Q");
    const auto& k = onnx_input(c, "K");
    const auto& v = onnx_input(c, "V");
    const bool three_d = q.shape.size() == 3;
    if ((q.shape.size() != 3 && q.shape.size() != 4) || k.shape.size() != q.shape.size() || v.shape.size() != q.shape.size())
        throw HarnessError(c.file + ": /" + c.name + " Q, K, V must all be 3-D or all 4-D");
    const std::size_t Hq = three_d ? static_cast<std::size_t>(int_attr(c, "q_num_heads", 0)) : q.shape[1];
    const std::size_t Hkv = three_d ? static_cast<std::size_t>(int_attr(c, "kv_num_heads", 0)) : k.shape[1];
    if (Hq == 0 || Hkv == 0 || Hq % Hkv || (three_d && (q.shape[2] % Hq || k.shape[2] % Hkv || v.shape[2] % Hkv)))
        throw HarnessError(c.file + ": /" + c.name + " the head counts must divide: query heads a multiple of kv heads");
    const std::size_t D = three_d ? q.shape[2] / Hq : q.shape[3];
    const std::size_t Dk = three_d ? k.shape[2] / Hkv : k.shape[3];
    const std::size_t Dv = three_d ? v.shape[2] / Hkv : v.shape[3];
    const std::size_t L = three_d ? q.shape[1] : q.shape[2];
    const std::size_t S = three_d ? k.shape[1] : k.shape[2];
    if (Dk != D) throw HarnessError(c.file + ": /" + c.name + " Q and K head sizes differ");
    if (Dv != D)
        why.push_back(fmt::format("V head size {} != Q/K head size {}: our attention() reads values with the keys' "
                                  "head_dim",
                                  Dv, D));
    if (c.numbers.count("scale") && static_cast<float>(c.number("scale")) != static_cast<float>(1.0 / std::sqrt(D)))
        why.push_back(fmt::format("scale={:g}: our attention() scales by 1/sqrt(head_dim) = {:g}", c.number("scale"),
                                  1.0 / std::sqrt(D)));
    if (c.numbers.count("softcap") && c.number("softcap") > 0)
        why.push_back(fmt::format("softcap={:g}: no soft-capping of scores in our attention() (no family here caps)",
                                  c.number("softcap")));
    if (onnx_tensor(c.inputs, "past_key") || onnx_tensor(c.inputs, "past_value"))
        why.push_back("past_key/past_value: the cache concatenation is our KV cache's (model/), not a kernel's");
    if (const Array<float>* mask = onnx_tensor(c.inputs, "attn_mask")) {
        const std::string& dtype = c.string("attn_mask.dtype");
        if (dtype != "bool")
            why.push_back("attn_mask of " + dtype + " (added to the scores): our attention() has no additive bias");
        else if (mask->shape != std::vector<std::size_t>{L, S})
            why.push_back("bool attn_mask of shape " + shape_str(mask->shape) + " (we take [q_len, kv_len])");
        else
            for (std::size_t i = 0; i < L; ++i) {
                std::size_t seen = 0;
                for (std::size_t t = 0; t < S; ++t)
                    seen += mask->data[i * S + t] != 0.0f && !(int_attr(c, "is_causal", 0) && t > i);
                if (!seen) why.push_back(fmt::format("query {} sees no key (ONNX's softmax gives NaN)", i));
            }
    }
    skip_if_any(why);
    std::vector<StageOutput> outs;
    const bool bug = c.strings.count("reference_bug") > 0;
    if (!bug) {
        both_tolerances(outs, c, "Y", attention_cases_y(c, Conventions::Spec));
    } else {
        // the spec's answer (torch's, from the exporter) and ONNX's expected one, each with its conventions
        both_tolerances(outs, c, "Y_torch", attention_cases_y(c, Conventions::Spec), "Y (spec) vs torch");
        both_tolerances(outs, c, "Y", attention_cases_y(c, Conventions::Onnx118),
                        "Y (onnx 1.18's conventions, the reference bug) vs ONNX");
        outs.push_back({c.name + ": max |ONNX's Y - the spec's Y| (reference bug)", "",
                        {static_cast<float>(c.number("reference_bug_max_abs"))}, c.string("reference_bug")});
    }
    not_compared(outs, c, "qk_matmul_output", "optional output: our attention() keeps only the probabilities, not "
                                               "the scores of qk_matmul_output_mode");
    for (const char* o : {"present_key", "present_value"})
        not_compared(outs, c, o, "the concatenated cache: our KV cache's job (model/), not a kernel's");
    return outs;
}

}  // namespace lmlab
