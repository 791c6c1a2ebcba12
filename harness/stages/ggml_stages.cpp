// ggml's tensor types (kernels/ggml_quant.h) as stages, one pair per type:
//   kernel.ggml.dequantize.<type>: the bytes of a row of blocks -> floats, against the gguf package's
//     gguf.quants.dequantize, bit for bit;
//   kernel.ggml.matvec.<type>: the activations' blocks and matvec_fast's outputs against ggml's CPU
//     arithmetic as scripts/lmlab_ref/ggml_quants.py writes it, bit for bit; the plain matvec against
//     the exact dot of the dequantized row; and |fast - plain| within the fixture's per-row bound;
//   and the GGUF model stages' wrappers (the plain path: see below).
// A fixture stores bytes as float32 values 0..255 (every fixture dataset is float32).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fmt/format.h>

#include "harness/quantization.h"
#include "harness/stages/stages.h"
#include "kernels/ggml_quant.h"
#include "model/forward.h"

namespace lmlab {

namespace {

// The case's attribute `type`: a ggml weight type by its name ("Q4_K").
ggml::Type type_of(const Case& c) {
    const std::string& name = c.string("type");
    for (std::uint32_t id = 0; id < 64; ++id) {
        const auto info = ggml::find_type(id);
        if (info && info->is_weight && info->name == name) return info->type;
    }
    throw HarnessError(c.file + ": /" + c.name + " type = '" + name + "' is not a ggml weight type lmlab reads");
}

// An input holding bytes stored as floats.
std::vector<std::uint8_t> bytes_input(const Case& c, const std::string& name, std::size_t want) {
    const auto& a = c.input(name, {want});
    std::vector<std::uint8_t> out(a.data.size());
    for (std::size_t i = 0; i < out.size(); ++i) {
        const float v = a.data[i];
        if (!(v >= 0 && v <= 255) || v != std::floor(v))
            throw HarnessError(c.file + ": /" + c.name + "/inputs/" + name + "[" + std::to_string(i) + "] = " +
                               std::to_string(v) + " is not a byte value in [0, 255]");
        out[i] = static_cast<std::uint8_t>(v);
    }
    return out;
}

std::size_t count_of(const Case& c, const std::string& attr) {
    const double v = c.number(attr);
    if (!(v >= 1 && v <= 1e9) || v != std::floor(v))
        throw HarnessError(c.file + ": /" + c.name + " " + attr + " = " + std::to_string(v) + " is not a positive count");
    return static_cast<std::size_t>(v);
}

std::size_t row_bytes_of(const Case& c, ggml::Type t, std::size_t n) {
    try {
        return ggml::row_bytes(t, n);
    } catch (const std::invalid_argument& e) {
        throw HarnessError(c.file + ": /" + c.name + ": " + e.what());
    }
}

}  // namespace

std::vector<StageOutput> stage_ggml_dequantize(const Fixture&, const Case& c, const StageEnv&) {
    // bytes: [row_bytes(type, n)] -> y: [n]
    const ggml::Type t = type_of(c);
    const std::size_t n = count_of(c, "n");
    const std::vector<std::uint8_t> bytes = bytes_input(c, "bytes", row_bytes_of(c, t, n));
    std::vector<float> y(n);
    ggml::dequantize_row(t, bytes, y);
    return {{"y", "y", y}};
}

std::vector<StageOutput> stage_ggml_matvec(const Fixture&, const Case& c, const StageEnv&) {
    // W: [rows · row_bytes(type, cols)] bytes, x: [cols] -> act (x's blocks of the type's vec_dot type),
    // y_fast, y_plain: [rows]; |y_fast - y_plain| / bound per row must be <= 1
    const ggml::Type t = type_of(c);
    const std::size_t rows = count_of(c, "rows"), cols = count_of(c, "cols");
    const std::vector<std::uint8_t> W = bytes_input(c, "W", rows * row_bytes_of(c, t, cols));
    const auto& x = c.input("x", {cols});
    const auto found = c.outputs.find("bound");
    if (found == c.outputs.end()) throw HarnessError(c.file + ": /" + c.name + " has no outputs/bound");
    const Array<float>& bound = found->second;
    if (bound.data.size() != rows)
        throw HarnessError(c.file + ": /" + c.name + "/outputs/bound has " + std::to_string(bound.data.size()) +
                           " values, expected one per row (" + std::to_string(rows) + ")");

    std::vector<std::uint8_t> act(ggml::matvec_fast_scratch_bytes(t, cols));
    std::vector<float> fast(rows), plain(rows), scratch(ggml::matvec_scratch_floats(cols));
    ggml::matvec_fast(t, W, x.data, act, fast);
    ggml::matvec(t, W, x.data, scratch, plain);

    // the bound of ggml_quants.fast_error_bound: activation rounding seen through the weights, the
    // fast path's float steps, the plain path's final rounding (kernels/ggml_quant_test.cpp derives it)
    // (an invariant: report.md's "Every output" row gives each case's worst ratio as its max abs)
    std::vector<float> ratio(rows), zeros(rows, 0.0f);
    for (std::size_t i = 0; i < rows; ++i) {
        const double err = std::fabs(static_cast<double>(fast[i]) - plain[i]);
        ratio[i] = bound.data[i] > 0 ? static_cast<float>(err / bound.data[i]) : (err == 0 ? 0.0f : INFINITY);
    }
    // the scratch holds the quantized row, then (Q8_0) the same values prepared for the fast kernel
    // (float weights: no activations, an empty scratch)
    const auto blocks = std::span<const std::uint8_t>(act).first(
        act.empty() ? 0 : ggml::row_bytes(ggml::type_info(t).vec_dot_type, cols));
    return {{"act", "act", std::vector<float>(blocks.begin(), blocks.end()), "the activations' blocks, byte for byte", kExact},
            {"y_fast", "y_fast", fast, "ggml's integer dots and float steps in ggml's order: bit for bit", kExact},
            {"y_plain", "y_plain", plain},
            {"|fast - plain| / bound", "bound", ratio,
             "each row's |matvec_fast - matvec| over the fixture's bound (ggml_quants.fast_error_bound): at most 1",
             Tolerance{1.0, 0.0}, {}, false, zeros}};
}


// ---- GGUF models -----------------------------------------------------------------------------------
// A GGUF model's stages against transformers' GGUF loading, which dequantizes every weight to float32
// and runs float activations: so ours runs the plain path here (each weight row dequantized, float
// activations, kernels/ggml_quant.h's matvec), the same computation. The fast path (activations
// quantized, integer dots) is ggml's arithmetic, checked bit for bit by kernel.ggml.matvec.*; against a
// float reference it would differ by the activations' rounding, which is not a bug to find here.
namespace {
struct PlainPath {
    KernelPath saved = kernel_path();
    PlainPath() { set_kernel_path(KernelPath::Plain); }
    ~PlainPath() { set_kernel_path(saved); }
    PlainPath(const PlainPath&) = delete;
    PlainPath& operator=(const PlainPath&) = delete;
};
}  // namespace

std::vector<StageOutput> stage_gguf_forward(const Fixture& f, const Case& c, const StageEnv& env) {
    PlainPath plain;
    return stage_model_forward(f, c, env);
}

std::vector<StageOutput> stage_gguf_kv_cache(const Fixture& f, const Case& c, const StageEnv& env) {
    PlainPath plain;
    return stage_model_kv_cache(f, c, env);
}

std::vector<StageOutput> stage_gguf_greedy(const Fixture& f, const Case& c, const StageEnv& env) {
    PlainPath plain;
    return stage_generation_greedy(f, c, env);
}

// quant.report.*: what `lmlab verify --model Q --against F` reports (compare_quantized), against
// PyTorch computing the same definitions (harness/quantization.h) on transformers' models of the two
// files: per tensor the error added, inherited and total, per layer the output teacher-forced and
// free-running, per scored position KL and top-1 agreement, the two perplexities. Both sides
// dequantize the weights and compute in float: the engine runs its plain path, as the reference
// does, so what is compared is the measuring, not the quantized arithmetic (the stages above).
std::vector<StageOutput> stage_quant_report(const Fixture& fx, const Case& c, const StageEnv& env) {
    const auto against = fx.strings.find("against");
    if (against == fx.strings.end()) throw HarnessError(fx.path + ": root attribute 'against' is missing. " + regenerate_hint(fx.path));
    PlainPath plain;
    const Model& q = stage_model(env);
    const Model& f = cached_model(resolve_model_path(against->second, env.golden_dir, env.shared_dir));
    const std::vector<int> text = token_ids(c, "tokens");
    const QuantReport r = compare_quantized(q, f, text, case_index(c, "ctx"), 0, 1);

    // the tensors in the fixture's order ("token_embd,blk.0.attn_q,...,output")
    const auto names = c.strings.find("tensors");
    if (names == c.strings.end()) throw HarnessError(c.file + ": /" + c.name + " has no attribute 'tensors'");
    std::vector<float> added, inherited, total;
    std::size_t from = 0;
    const std::string& list = names->second;
    while (from <= list.size()) {
        const std::size_t comma = std::min(list.find(',', from), list.size());
        const std::string name = list.substr(from, comma - from);
        const TensorError* te = nullptr;
        for (const TensorError& t : r.tensors) {
            const std::string ours = t.layer == TensorError::kGlobal ? t.kind : fmt::format("blk.{}.{}", t.layer, t.kind);
            if (ours == name) te = &t;
        }
        if (te == nullptr) throw HarnessError(fmt::format("{}: /{}: tensor '{}' is not in lmlab's report", c.file, c.name, name));
        added.push_back(static_cast<float>(te->added));
        inherited.push_back(static_cast<float>(te->inherited));
        total.push_back(static_cast<float>(te->total));
        from = comma + 1;
    }
    std::vector<float> kl(r.kl.begin(), r.kl.end()), top1(r.top1_same.begin(), r.top1_same.end()), layer_added, layer_total;
    for (const LayerError& l : r.layer_out) {
        layer_added.push_back(static_cast<float>(l.added));
        layer_total.push_back(static_cast<float>(l.total));
    }
    return {{"kl", "kl", kl},
            {"top1_same", "top1_same", top1, "", Tolerance{0, 0}},  // 0 or 1: a flip is a top-2 near-tie, news
            {"ppl", "ppl", {static_cast<float>(r.ppl_model), static_cast<float>(r.ppl_against)}},
            {"added", "added", added},
            {"inherited", "inherited", inherited},
            {"total", "total", total},
            {"layer_added", "layer_added", layer_added},
            {"layer_total", "layer_total", layer_total}};
}

}  // namespace lmlab
