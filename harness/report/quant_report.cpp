// The quantization report (harness/quantization.h): report.json, report.md and report.html of
// `lmlab verify --against` / `--quantize`, and its one-line verdict.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <map>
#include <tuple>

#include "harness/quantization.h"
#include "harness/report/html.h"

namespace lmlab {

namespace {

std::string tensor_name(const TensorError& t) {
    return t.layer == TensorError::kGlobal ? t.kind : fmt::format("blk.{}.{}", t.layer, t.kind);
}

std::string pct(double v) { return fmt::format("{:.3g}%", 100 * v); }

// The tensor that adds the most error (relative RMS at its output)
const TensorError* worst_added(const QuantReport& r) {
    const TensorError* w = nullptr;
    for (const TensorError& t : r.tensors)
        if (!w || t.added > w->added) w = &t;
    return w;
}

double ppl_change(const QuantReport& r) { return r.ppl_model / r.ppl_against - 1; }

// the cells of one metric as a [layers + 1, kinds] grid: row 0 the global tensors (token_embd in the
// first column, output in the last), then one row per layer; -1 where a layer has no such kind
struct Grid {
    std::vector<std::string> cols;
    std::vector<double> values;
    std::size_t rows = 0;
};
Grid grid(const QuantReport& r, double TensorError::*metric) {
    Grid g;
    g.cols.push_back("token_embd");
    for (const std::string& k : r.kinds) g.cols.push_back(k);
    g.cols.push_back("output");
    g.rows = r.layers + 1;
    g.values.assign(g.rows * g.cols.size(), -1.0);  // negative: masked (drawn blank)
    for (const TensorError& t : r.tensors) {
        const std::size_t row = t.layer == TensorError::kGlobal ? 0 : t.layer + 1;
        const auto col = static_cast<std::size_t>(std::find(g.cols.begin(), g.cols.end(), t.kind) - g.cols.begin());
        g.values[row * g.cols.size() + col] = t.*metric;
    }
    return g;
}

// The colour range of both heatmaps (added and total share it, so that one colour is one error)
std::pair<double, double> colour_range(const QuantReport& r) {
    std::vector<double> pos;
    for (const TensorError& t : r.tensors)
        for (double v : {t.added, t.total})
            if (v > 0 && std::isfinite(v)) pos.push_back(v);
    if (pos.empty()) return {0.1, 1};
    const double hi = *std::max_element(pos.begin(), pos.end());
    return {std::min(*std::min_element(pos.begin(), pos.end()), hi / 10), hi};
}

std::string heatmap_of(const QuantReport& r, double TensorError::*metric, const std::string& id, const std::string& title,
                       const std::string& unit) {
    const Grid g = grid(r, metric);
    html::HeatmapSpec spec;
    spec.id = id;
    spec.title = title;
    spec.row_axis = "layer (top row: the embedding and the classifier)";
    spec.col_axis = "tensor kind";
    spec.rows = g.rows;
    spec.cols = g.cols.size();
    spec.values = g.values;
    spec.col_labels = g.cols;
    spec.row_labels.push_back("global");
    for (std::size_t l = 0; l < r.layers; ++l) spec.row_labels.push_back(std::to_string(l));
    spec.log = true;
    std::tie(spec.lo, spec.hi) = colour_range(r);
    spec.cell = std::clamp(720.0 / static_cast<double>(spec.cols), 24.0, 56.0);
    spec.cell_h = std::clamp(360.0 / static_cast<double>(spec.rows), 12.0, 28.0);
    spec.legend_unit = unit;
    spec.tooltip = [&r, g, metric](std::size_t row, std::size_t col) {
        for (const TensorError& t : r.tensors)
            if ((t.layer == TensorError::kGlobal ? 0 : t.layer + 1) == row && t.kind == g.cols[col])
                return fmt::format("{} ({}): added {}, inherited {}, total {}", tensor_name(t), t.type, pct(t.added),
                                   pct(t.inherited), pct(t.total));
        (void)metric;
        return std::string("no such tensor in this layer");
    };
    return html::heatmap(spec);
}

std::string kl_chart(const QuantReport& r) {
    std::vector<double> xs, ys, all;
    std::vector<std::string> titles;
    for (std::size_t i = 0; i < r.kl.size(); ++i) {
        xs.push_back(static_cast<double>(r.positions[i]));
        ys.push_back(r.kl[i]);
        all.push_back(r.kl[i]);
        titles.push_back(fmt::format("position {}: KL {:.3g} nats, top-1 {}", r.positions[i], r.kl[i],
                                     r.top1_same[i] ? "same" : "DIFFERENT"));
    }
    html::Axis x{0, std::max(1.0, xs.empty() ? 1.0 : xs.back()), false, 0, 1}, y;
    y.log = true;
    all.push_back(r.kl_p99);
    html::log_range(all, y.lo, y.hi);
    html::Chart c("kl", "KL(P_against ‖ P_model) of the next-token distribution at each scored position", 760, 320, x, y,
                  "position in the held-out text", "KL divergence (nats)");
    c.line(xs, ys, {"#1f77b4", false, 1});
    c.dots(xs, ys, {"#1f77b4", false, 1}, titles, 2);
    std::vector<double> dx, dy;
    std::vector<std::string> dt;
    for (std::size_t i = 0; i < r.kl.size(); ++i)
        if (!r.top1_same[i]) {
            dx.push_back(xs[i]);
            dy.push_back(ys[i]);
            dt.push_back(titles[i]);
        }
    if (!dx.empty()) c.dots(dx, dy, {"#c62828", false, 1}, dt, 4);
    c.hline(r.kl_mean, {"#555", true, 1}, fmt::format("mean {:.3g}", r.kl_mean));
    c.hline(r.kl_p99, {"#999", true, 1}, fmt::format("p99 {:.3g}", r.kl_p99));
    c.legend({"#1f77b4", false, 1}, "KL at each position");
    if (!dx.empty()) c.legend({"#c62828", false, 1}, "the two models' most likely next token differs");
    return c.svg();
}

}  // namespace

nlohmann::json quant_report_json(const QuantReport& r) {
    using nlohmann::json;
    json tensors = json::array();
    for (const TensorError& t : r.tensors)
        tensors.push_back({{"tensor", tensor_name(t)},
                           {"layer", t.layer == TensorError::kGlobal ? json(nullptr) : json(t.layer)},
                           {"kind", t.kind},
                           {"type", t.type},
                           {"against_type", t.against_type},
                           {"added", t.added},
                           {"inherited", t.inherited},
                           {"total", t.total},
                           {"weights", t.weights},
                           {"bytes", t.bytes}});
    json layers = json::array();
    for (std::size_t l = 0; l < r.layer_out.size(); ++l)
        layers.push_back({{"layer", l}, {"added", r.layer_out[l].added}, {"total", r.layer_out[l].total}});
    json types = json::array();
    for (const TypeSummary& s : r.types)
        types.push_back({{"type", s.type},
                         {"tensors", s.tensors},
                         {"weights", s.weights},
                         {"bytes", s.bytes},
                         {"bits_per_weight", s.bits_per_weight()},
                         {"worst_added", s.worst_added},
                         {"worst", s.worst}});
    return {{"kind", "quantization"},
            {"model", r.model},
            {"against", r.against},
            {"model_label", r.model_label},
            {"against_label", r.against_label},
            {"metrics_about",
             "added/inherited/total: relative RMS error at the tensor's output y = W·x against the float model's "
             "(added: the quantized W on the float model's x; inherited: the float W on the quantized model's x; "
             "total: the quantized model as it runs); KL in nats, KL(P_against || P_model)"},
            {"text", {{"tokens", r.text_tokens}, {"ctx", r.ctx}, {"chunks", r.chunks}, {"scored", r.kl.size()},
                      {"analysed_rows", r.analysed_rows}}},
            {"kl", {{"mean", r.kl_mean}, {"median", r.kl_median}, {"p99", r.kl_p99}, {"max", r.kl_max},
                    {"per_position", r.kl}, {"positions", r.positions}}},
            {"top1_agreement", r.top1_agreement},
            {"perplexity", {{"model", r.ppl_model}, {"against", r.ppl_against}, {"change", ppl_change(r)}}},
            {"logits_rel_rms", r.logits_rel_rms},
            {"weight_bytes", {{"model", r.bytes_model}, {"against", r.bytes_against}}},
            {"types", types},
            {"layers", layers},
            {"tensors", tensors}};
}

std::string quant_report_line(const QuantReport& r) {
    const TensorError* w = worst_added(r);
    const std::string most = w && w->added > 0
                                 ? fmt::format("most error added by {} ({}, {} relative)", tensor_name(*w), w->type, pct(w->added))
                                 : std::string("no tensor adds error (every tensor's added error is 0)");
    // the usual mix-up: the float model given as --model (the tensor named would then be a float one)
    const std::string swapped =
        r.bytes_model > r.bytes_against
            ? "\nverify: note: --model holds more bytes of weights than --against: the model to judge (the quantized one) "
              "goes in --model, the float one it was made from in --against"
            : "";
    return fmt::format("verify: {} vs {}: KL mean {:.4g} (p99 {:.4g}, max {:.4g}) nats, top-1 agreement {:.1f}%, perplexity "
                       "{:.4g} vs {:.4g} ({:+.2f}%); weights {:.2f} MB vs {:.2f} MB; {}{}",
                       r.model_label, r.against_label, r.kl_mean, r.kl_p99, r.kl_max, 100 * r.top1_agreement, r.ppl_model,
                       r.ppl_against, 100 * ppl_change(r), static_cast<double>(r.bytes_model) / 1e6,
                       static_cast<double>(r.bytes_against) / 1e6, most, swapped);
}

std::string quant_report_markdown(const QuantReport& r) {
    std::string md = fmt::format("# Quantization report: {} against {}\n\n", r.model_label, r.against_label);
    md += fmt::format("- model: `{}`\n- against: `{}`\n", r.model, r.against);
    md += fmt::format("- held-out text: {} tokens, context {}, {} chunk{}, {} positions scored; per-tensor errors over "
                      "the first {} positions\n\n",
                      r.text_tokens, r.ctx, r.chunks, r.chunks == 1 ? "" : "s", r.kl.size(), r.analysed_rows);
    md += "## The model's output (llama-perplexity's numbers)\n\n| measure | value |\n|---|---|\n";
    md += fmt::format("| KL divergence mean / median / p99 / max (nats) | {:.4g} / {:.4g} / {:.4g} / {:.4g} |\n", r.kl_mean,
                      r.kl_median, r.kl_p99, r.kl_max);
    md += fmt::format("| top-1 agreement | {:.2f}% |\n", 100 * r.top1_agreement);
    md += fmt::format("| perplexity model / against | {:.4g} / {:.4g} ({:+.2f}%) |\n", r.ppl_model, r.ppl_against,
                      100 * ppl_change(r));
    md += fmt::format("| logits, relative RMS error | {} |\n", pct(r.logits_rel_rms));
    md += fmt::format("| weight bytes model / against | {:.2f} MB / {:.2f} MB ({:.1f}%) |\n\n",
                      static_cast<double>(r.bytes_model) / 1e6, static_cast<double>(r.bytes_against) / 1e6,
                      100.0 * static_cast<double>(r.bytes_model) / static_cast<double>(r.bytes_against));
    md += "## By tensor type of the model\n\n| type | tensors | weights | MB | bits/weight | most error added |\n|---|---|---|---|---|---|\n";
    for (const TypeSummary& s : r.types)
        md += fmt::format("| {} | {} | {} | {:.2f} | {:.2f} | {} ({}) |\n", s.type, s.tensors, s.weights,
                          static_cast<double>(s.bytes) / 1e6, s.bits_per_weight(), s.worst, pct(s.worst_added));
    md += "\n## Each layer's output: added by the layer (teacher-forced) / total\n\n| layer | added | total |\n|---|---|---|\n";
    for (std::size_t l = 0; l < r.layer_out.size(); ++l)
        md += fmt::format("| {} | {} | {} |\n", l, pct(r.layer_out[l].added), pct(r.layer_out[l].total));
    md += "\n## Every tensor: relative RMS error at its output\n\n"
          "added: its own rounding (the quantized tensor on the float model's input); inherited: from upstream (the float "
          "tensor on the quantized model's input); total: both, as the quantized model runs.\n\n"
          "| tensor | type | against | added | inherited | total |\n|---|---|---|---|---|---|\n";
    for (const TensorError& t : r.tensors)
        md += fmt::format("| {} | {} | {} | {} | {} | {} |\n", tensor_name(t), t.type, t.against_type, pct(t.added),
                          pct(t.inherited), pct(t.total));
    return md;
}

std::string quant_report_html(const QuantReport& r) {
    std::string b = fmt::format("<h1>Quantization: {} against {}</h1>\n", html::escape(r.model_label), html::escape(r.against_label));
    b += fmt::format("<p>model <code>{}</code><br>against <code>{}</code><br>held-out text: {} tokens, context {}, {} "
                     "chunk{}, {} positions scored; per-tensor errors over the first {} positions.</p>\n",
                     html::escape(r.model), html::escape(r.against), r.text_tokens, r.ctx, r.chunks, r.chunks == 1 ? "" : "s",
                     r.kl.size(), r.analysed_rows);
    const TensorError* w = worst_added(r);
    b += "<table><tr><th>measure</th><th>value</th></tr>\n";
    b += fmt::format("<tr><td>KL divergence mean / median / p99 / max (nats)</td><td>{:.4g} / {:.4g} / {:.4g} / {:.4g}</td></tr>\n",
                     r.kl_mean, r.kl_median, r.kl_p99, r.kl_max);
    b += fmt::format("<tr><td>top-1 agreement</td><td>{:.2f}%</td></tr>\n", 100 * r.top1_agreement);
    b += fmt::format("<tr><td>perplexity model / against</td><td>{:.4g} / {:.4g} ({:+.2f}%)</td></tr>\n", r.ppl_model,
                     r.ppl_against, 100 * ppl_change(r));
    b += fmt::format("<tr><td>weight bytes model / against</td><td>{:.2f} MB / {:.2f} MB</td></tr>\n",
                     static_cast<double>(r.bytes_model) / 1e6, static_cast<double>(r.bytes_against) / 1e6);
    if (w)
        b += fmt::format("<tr><td>the tensor that adds the most error</td><td>{} ({}): {} relative at its output</td></tr>\n",
                         html::escape(tensor_name(*w)), html::escape(w->type), pct(w->added));
    b += "</table>\n";
    b += "<h2>Where the error is added</h2>\n<p>Each cell: the relative RMS error at one tensor's output when that tensor "
         "alone is quantized and fed the float model's input (its own rounding); yellow is the most, and both maps share "
         "one colour scale. Hover a cell for the error it inherits from upstream and the total. Grey: no such tensor.</p>\n";
    b += heatmap_of(r, &TensorError::added, "added", "error added by each tensor (relative RMS at its output)",
                    "relative RMS error");
    b += "<h2>What the quantized model carries</h2>\n<p>The same cells as the model runs quantized end to end: what each "
         "tensor adds plus what it inherits.</p>\n";
    b += heatmap_of(r, &TensorError::total, "total", "total error at each tensor's output (relative RMS)",
                    "relative RMS error");
    b += "<h2>The next-token distributions</h2>\n";
    b += kl_chart(r);
    b += "<h2>By tensor type</h2>\n<table><tr><th>type</th><th>tensors</th><th>MB</th><th>bits/weight</th><th>most error "
         "added</th></tr>\n";
    for (const TypeSummary& s : r.types)
        b += fmt::format("<tr><td>{}</td><td>{}</td><td>{:.2f}</td><td>{:.2f}</td><td>{} ({})</td></tr>\n", html::escape(s.type),
                         s.tensors, static_cast<double>(s.bytes) / 1e6, s.bits_per_weight(), html::escape(s.worst),
                         pct(s.worst_added));
    b += "</table>\n<h2>Each layer's output</h2>\n<table><tr><th>layer</th><th>added by the layer (teacher-forced)</th>"
         "<th>total</th></tr>\n";
    for (std::size_t l = 0; l < r.layer_out.size(); ++l)
        b += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n", l, pct(r.layer_out[l].added), pct(r.layer_out[l].total));
    b += "</table>\n";
    return html::page("lmlab quantization report", b);
}

}  // namespace lmlab
