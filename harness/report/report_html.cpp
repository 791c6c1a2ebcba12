// report.html and diff.html: the error report as pictures, drawn from report.json alone (so
// `lmlab diff` can draw any two reports, and the browser test can compare the page with the file).
// Plots are inline SVG (harness/report/html.h); every number shown comes from the JSON.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <map>
#include <set>

#include "harness/report/html.h"
#include "harness/report/report.h"
#include "harness/runner.h"
#include "harness/stages/stages.h"

namespace lmlab {

namespace {

using nlohmann::json;
using html::escape;

constexpr const char* kFree = "free-running";

// "layer0.q [teacher-forced]" -> "layer0.q" and "teacher-forced"; "layer0.q" -> "layer0.q" and kFree
std::string base_name(const std::string& output) {
    const auto at = output.rfind(" [");
    return at != std::string::npos && output.back() == ']' ? output.substr(0, at) : output;
}
std::string group_name(const std::string& output) {
    const auto at = output.rfind(" [");
    return at != std::string::npos && output.back() == ']' ? output.substr(at + 2, output.size() - at - 3) : kFree;
}

const std::vector<std::string> kGroupColors = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"};

std::string str(const json& v) { return v.get<std::string>(); }

std::string status_span(const std::string& status) {
    return fmt::format("<span class=\"status {}\">{}</span>", status, status == "not_run" ? "not run" : status);
}

// a value for a data- attribute: exactly as report.json writes it
std::string data_number(const json& v) { return escape(v.dump()); }

std::string shape_text(const json& shape) {
    std::string s;
    for (const auto& d : shape) s += (s.empty() ? "" : "×") + std::to_string(d.get<std::size_t>());
    return "[" + s + "]";
}

// ---- the summary: every stage's worst error against its tolerance ------------------------------------

// What a stage's worst element was allowed: atol + rtol·|reference| there (its output's own tolerance),
// so that the dot and the tick compare like with like (for an output of large values, such as a
// perplexity of 60, rtol allows far more than atol). Exact stages: 0.
double allowed_at_worst(const json& s) {
    static const json none = json::array();
    const json& outputs = s.contains("outputs") ? s["outputs"] : none;
    const json* worst = nullptr;  // the output with the largest max_abs (reports written by older versions may lack fields)
    for (const json& o : outputs)
        if (o.contains("metrics") && o["metrics"].is_object() &&
            (!worst || as_double(o["metrics"].value("max_abs", json(0))) > as_double((*worst)["metrics"].value("max_abs", json(0)))))
            worst = &o;
    const json& tol = worst && worst->contains("tolerance") ? (*worst)["tolerance"] : s["tolerance"];
    double ref = 0;
    if (worst && (*worst)["metrics"].contains("worst") && (*worst)["metrics"]["worst"].is_object())
        ref = std::fabs(as_double((*worst)["metrics"]["worst"].value("torch", json(0))));
    return tol.value("atol", 0.0) + tol.value("rtol", 0.0) * (std::isfinite(ref) ? ref : 0.0);
}

// One row per stage: a lollipop from the axis floor to the worst |ours - reference| (coloured by
// status), a tick at what that element was allowed, the status on the right (and how many numbers
// the stage measured rather than compared). With `before`: the old value as a hollow dot.
std::string summary_chart(const std::string& id, const std::vector<const json*>& stages,
                          const std::vector<const json*>& before = {}) {
    std::size_t longest = 0;  // the stage ids are right-aligned to the plot: as wide as the longest
    for (const json* s : stages) longest = std::max(longest, (*s)["id"].get<std::string>().size());
    const double left = std::max(250.0, 16 + 6.4 * static_cast<double>(longest)), right = 230, top = 46, row = 17,
                 width = left + 670 + right;
    std::vector<double> values;
    auto measured = [](const json* s) { return s && ((*s)["status"] == "pass" || (*s)["status"] == "fail"); };
    for (std::size_t i = 0; i < stages.size(); ++i) {
        if (measured(stages[i])) values.push_back(as_double((*stages[i])["worst"]["max_abs"]));
        if (i < before.size() && measured(before[i])) values.push_back(as_double((*before[i])["worst"]["max_abs"]));
        values.push_back(allowed_at_worst(*stages[i]));
    }
    html::Axis x;
    x.log = true;
    html::log_range(values, x.lo, x.hi);
    x.px_lo = left;
    x.px_hi = width - right;
    const double height = top + row * static_cast<double>(stages.size()) + (before.empty() ? 46 : 64);
    std::string out = html::svg_open("plot", id, width, height);
    out += fmt::format("<text x=\"{}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">Worst |ours − reference| of every stage "
                       "(log scale), against its atol</text>\n", left);
    const double bottom = top + row * static_cast<double>(stages.size());
    for (double t : x.ticks()) {
        const double px = x.at(t);
        out += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{}\" y2=\"{:.1f}\" stroke=\"#e4e4e4\"/>\n", px, px, top - 4, bottom);
        out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\n", px, top - 8,
                           html::tick_label(t, true));
        out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\n", px, bottom + 12,
                           html::tick_label(t, true));
    }
    out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"9\" fill=\"#777\" text-anchor=\"middle\">0</text>\n", left, bottom + 12);
    for (std::size_t i = 0; i < stages.size(); ++i) {
        const json& s = *stages[i];
        const std::string sid = s["id"], status = s["status"];
        const double cy = top + row * (static_cast<double>(i) + 0.5);
        if (i % 2) out += fmt::format("<rect x=\"0\" y=\"{:.1f}\" width=\"{}\" height=\"{}\" fill=\"#f7f7f7\"/>\n", cy - row / 2, width, row);
        out += fmt::format("<a href=\"#stage-{}\"><text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{}</text></a>\n",
                           escape(sid), left - 8, cy + 4, escape(sid));
        const double atol = s["tolerance"]["atol"].get<double>(), rtol = s["tolerance"]["rtol"].get<double>();
        const double allowed = allowed_at_worst(s);
        const double ax = allowed > 0 ? x.at(allowed) : left;
        out += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#333\" stroke-width=\"2\">"
                           "<title>allowed at the worst element: {:.3g} (atol {:g} + rtol {:g}·|reference|){}</title></line>\n",
                           ax, ax, cy - 6, cy + 6, allowed, atol, rtol, allowed > 0 ? "" : " (exact)");
        if (i < before.size() && measured(before[i])) {
            const double v = as_double((*before[i])["worst"]["max_abs"]);
            out += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4.5\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\">"
                               "<title>before: {} {}</title></circle>\n",
                               x.at(v), cy, html::status_color((*before[i])["status"]), (*before[i])["status"].get<std::string>(),
                               fmt_num((*before[i])["worst"]["max_abs"]));
        }
        if (measured(&s)) {
            const double v = as_double(s["worst"]["max_abs"]);
            const std::string color = html::status_color(status);
            const std::string tip = fmt::format("{}: {}, worst max abs {}, atol {:g}, rtol {:g}", sid, status,
                                                fmt_num(s["worst"]["max_abs"]), atol, rtol);
            out += fmt::format("<line x1=\"{}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-opacity=\"0.35\" "
                               "stroke-width=\"2\"/>\n", left, x.at(v), cy, cy, color);
            if (std::isfinite(v))
                out += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"{}\"><title>{}</title></circle>\n", x.at(v), cy,
                                   color, escape(tip));
            else
                out += fmt::format("<path d=\"M{:.1f},{:.1f} l6,5 l-6,5 z\" fill=\"#d00\"><title>{}</title></path>\n", x.at(v), cy - 5,
                                   escape(tip));
        }
        const std::string shown = i < before.size() && before[i] && (*before[i])["status"] != s["status"]
                                      ? (*before[i])["status"].get<std::string>() + " → " + status
                                      : status;
        const std::size_t n_measured = s.contains("measurements") ? s["measurements"].size() : 0;
        out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" font-weight=\"bold\" fill=\"{}\">{}</text>\n", width - right + 8,
                           cy + 4, html::status_color(status), escape(shown == "not_run" ? "not run" : shown));
        if (n_measured)  // numbers the stage reports without judging them (report.md's Measurements)
            out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"10\" fill=\"#666\">+ {} measured</text>\n",
                               width - right + 70, cy + 4, n_measured);
    }
    const double ly = bottom + 32;
    out += fmt::format("<circle cx=\"{}\" cy=\"{:.1f}\" r=\"4\" fill=\"#2e7d32\"/><text x=\"{}\" y=\"{:.1f}\" font-size=\"11\">worst "
                       "|ours − reference| over the stage's outputs (▶ red: NaN or inf)</text>\n",
                       left, ly - 4, left + 10, ly);
    out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#333\" stroke-width=\"2\"/><text x=\"{}\" "
                       "y=\"{:.1f}\" font-size=\"11\">what that element was allowed: atol + rtol·|reference|</text>\n",
                       left + 420, left + 420, ly - 10, ly + 2, left + 428, ly);
    if (!before.empty())
        out += fmt::format("<circle cx=\"{}\" cy=\"{:.1f}\" r=\"4.5\" fill=\"none\" stroke=\"#555\"/><text x=\"{}\" y=\"{:.1f}\" "
                           "font-size=\"11\">before (filled: after)</text>\n", left, ly + 14, left + 10, ly + 18);
    return out + "</svg>\n";
}

// ---- one stage's plots --------------------------------------------------------------------------------

// Error per intermediate along the pipeline: one series per kind of run (free-running, teacher-
// forced, ...), the first divergence marked.
std::string pipeline_chart(const json& s, const std::string& case_name, const std::string& id) {
    std::vector<std::string> names;  // x categories: the free-running pipeline order, then any others
    std::map<std::string, std::vector<std::pair<std::size_t, const json*>>> groups;
    std::vector<std::string> group_order;
    for (int pass = 0; pass < 2; ++pass)
        for (const json& o : s["outputs"]) {
            if (o["case"] != case_name) continue;
            const std::string out = o["output"], base = base_name(out), group = group_name(out);
            if ((pass == 0) != (group == kFree)) continue;
            if (std::find(names.begin(), names.end(), base) == names.end()) names.push_back(base);
        }
    for (const json& o : s["outputs"]) {
        if (o["case"] != case_name) continue;
        const std::string out = o["output"], group = group_name(out);
        const auto x = static_cast<std::size_t>(std::find(names.begin(), names.end(), base_name(out)) - names.begin());
        if (!groups.count(group)) group_order.push_back(group);
        groups[group].push_back({x, &o});
    }
    std::stable_sort(group_order.begin(), group_order.end(), [](const std::string& a, const std::string& b) {
        return a == kFree && b != kFree;
    });
    std::vector<double> values = {s["tolerance"]["atol"].get<double>()};
    for (const json& o : s["outputs"])
        if (o["case"] == case_name) values.push_back(as_double(o["metrics"]["max_abs"]));
    html::Axis x{-0.5, static_cast<double>(names.size()) - 0.5, false, 0, 1}, y;
    y.log = true;
    html::log_range(values, y.lo, y.hi);
    std::size_t longest = 0;
    for (const auto& n : names) longest = std::max(longest, n.size());
    const double width = std::max(720.0, 110 + 14.0 * static_cast<double>(names.size()));
    html::Chart c(id, fmt::format("{}: max |ours − reference| per intermediate, in pipeline order ({})", s["id"].get<std::string>(),
                                  case_name),
                  width, 330 + 5.5 * static_cast<double>(longest), x, y, "", "max abs error", 30 + 5.5 * static_cast<double>(longest));
    c.labels(names);
    c.hline(s["tolerance"]["atol"].get<double>(), {"#888", true, 1}, fmt::format("atol {:g}", s["tolerance"]["atol"].get<double>()));
    const json& ff = s["first_failure"];
    if (ff.is_object() && ff["case"] == case_name) {
        const std::string first = ff["output"];
        const auto at = std::find(names.begin(), names.end(), base_name(first));
        if (at != names.end())
            c.vline(static_cast<double>(at - names.begin()), {"#c62828", false, 2}, "first divergence: " + first);
    }
    for (std::size_t g = 0; g < group_order.size(); ++g) {
        const html::Style st{kGroupColors[g % kGroupColors.size()], group_order[g] != kFree, 1.5};
        std::vector<double> xs, ys;
        std::vector<std::string> titles;
        for (const auto& [xi, o] : groups[group_order[g]]) {
            xs.push_back(static_cast<double>(xi));
            ys.push_back(as_double((*o)["metrics"]["max_abs"]));
            titles.push_back(fmt::format("{} {}: max abs {}, max ulp {}{}", (*o)["output"].get<std::string>(), shape_text((*o)["shape"]),
                                         fmt_num((*o)["metrics"]["max_abs"]), fmt_num((*o)["metrics"]["max_ulp"]),
                                         (*o)["passed"].get<bool>() ? "" : " (FAILS)"));
        }
        c.line(xs, ys, st);
        c.dots(xs, ys, st, titles);
        c.legend(st, group_order[g] == kFree ? "free-running (our model end to end)"
                     : group_order[g] == "teacher-forced" ? "teacher-forced (each layer fed the reference's input)"
                                                          : group_order[g]);
    }
    return c.svg();
}

// Error against position: one line per free-running intermediate with error_by_row, darker later in
// the pipeline; the last one (the logits) in red.
std::string position_chart(const json& s, const std::string& case_name, const std::string& id) {
    std::vector<const json*> outs;
    for (const json& o : s["outputs"])
        if (o["case"] == case_name && o.contains("error_by_row") && group_name(o["output"]) == kFree) outs.push_back(&o);
    if (outs.empty())
        for (const json& o : s["outputs"])
            if (o["case"] == case_name && o.contains("error_by_row")) outs.push_back(&o);
    if (outs.empty()) return "";
    std::vector<double> values = {s["tolerance"]["atol"].get<double>()};
    double max_x = 1;
    for (const json* o : outs) {
        const json& r = (*o)["error_by_row"];
        for (const auto& v : r["max_abs"]) values.push_back(as_double(v));
        max_x = std::max(max_x, static_cast<double>((r["max_abs"].size() - 1) * r["rows_per_value"].get<std::size_t>()));
    }
    html::Axis x{0, max_x, false, 0, 1}, y;
    y.log = true;
    html::log_range(values, y.lo, y.hi);
    const bool steps = s["level"] == "generation";
    html::Chart c(id, fmt::format("{}: max |ours − reference| at each {} ({})", s["id"].get<std::string>(), steps ? "step" : "position",
                                  case_name),
                  720, 330, x, y, steps ? "step" : "position (the second-to-last dimension)", "max abs error");
    c.hline(s["tolerance"]["atol"].get<double>(), {"#888", true, 1}, fmt::format("atol {:g}", s["tolerance"]["atol"].get<double>()));
    for (std::size_t i = 0; i < outs.size(); ++i) {
        const json& r = (*outs[i])["error_by_row"];
        const auto per = static_cast<double>(r["rows_per_value"].get<std::size_t>());
        std::vector<double> xs, ys;
        for (std::size_t k = 0; k < r["max_abs"].size(); ++k) {
            xs.push_back(static_cast<double>(k) * per);
            ys.push_back(as_double(r["max_abs"][k]));
        }
        const bool last = i + 1 == outs.size();
        // earlier intermediates light, later ones dark: the error's growth through the model reads as shading
        const int shade = outs.size() > 1 ? static_cast<int>(200 - 170 * static_cast<double>(i) / static_cast<double>(outs.size() - 1)) : 60;
        const html::Style st{last ? "#c62828" : fmt::format("#{:02x}{:02x}{:02x}", shade, shade, std::min(255, shade + 55)), false,
                             last ? 2.0 : 1.0};
        c.line(xs, ys, st);
        if (last) {
            c.dots(xs, ys, st, std::vector<std::string>(xs.size(), (*outs[i])["output"].get<std::string>()), 2.5);
            c.legend(st, (*outs[i])["output"].get<std::string>() + " (the last output)");
        }
    }
    if (outs.size() > 1)
        c.legend({"#5a5a91", false, 1}, fmt::format("the other {} intermediates: darker = later in the pipeline", outs.size() - 1));
    return c.svg();
}

// ULP distances of every element, in power-of-two bins, one bar colour per kind of run.
std::string ulp_chart(const json& s, const std::string& id) {
    std::map<std::string, std::vector<double>> counts;
    std::vector<std::string> order;
    std::size_t bins = 5;
    for (const json& o : s["outputs"]) {
        if (!o["metrics"].contains("ulp_histogram")) continue;
        const std::string g = group_name(o["output"]);
        if (!counts.count(g)) order.push_back(g);
        auto& c = counts[g];
        const json& h = o["metrics"]["ulp_histogram"];
        if (c.size() < h.size()) c.resize(h.size(), 0.0);
        for (std::size_t b = 0; b < h.size(); ++b) c[b] += h[b].get<double>();
        bins = std::max(bins, h.size());
    }
    if (order.empty()) return "";
    std::stable_sort(order.begin(), order.end(), [](const std::string& a, const std::string& b) { return a == kFree && b != kFree; });
    std::vector<std::string> names;
    for (std::size_t b = 0; b < bins; ++b)
        names.push_back(b == 0 ? "0 (equal)" : b == 1 ? "1" : b == kUlpNanBin ? "NaN"
                        : b <= 10 ? fmt::format("{}–{}", 1u << (b - 1), (1u << b) - 1)  // [2^(b-1), 2^b)
                                  : fmt::format("2^{}–2^{}", b - 1, b));
    std::vector<double> all;
    for (const auto& [g, c] : counts) all.insert(all.end(), c.begin(), c.end());
    html::Axis x{-0.5, static_cast<double>(bins) - 0.5, false, 0, 1}, y;
    y.log = true;
    html::log_range(all, y.lo, y.hi);
    y.lo = std::max(y.lo, 0.5);  // counts: the floor just under 1
    const std::string title = fmt::format("{}: float32 steps (ULPs) from the reference", s["id"].get<std::string>());
    // wide enough for its bins and its title (11-pt bold, ~6.6 px a character)
    html::Chart c(id, title, std::max({560.0, 100 + 34.0 * static_cast<double>(bins), 120 + 6.6 * static_cast<double>(title.size())}),
                  330, x, y, "", "elements", 88);
    c.labels(names);
    const double w = 0.8 / static_cast<double>(order.size());
    for (std::size_t g = 0; g < order.size(); ++g) {
        const html::Style st{kGroupColors[g % kGroupColors.size()], false, 1};
        const auto& cnt = counts[order[g]];
        for (std::size_t b = 0; b < cnt.size(); ++b)
            if (cnt[b] > 0) {
                const double x0 = static_cast<double>(b) - 0.4 + w * static_cast<double>(g);
                c.bar(x0, x0 + w, cnt[b], st, fmt::format("{}: {} elements at {} ulp", order[g], cnt[b], names[b]));
            }
        c.legend(st, order[g]);
    }
    return c.svg();
}

// Generation: the reference's top-1 minus top-2 logit at each step, ours beside it, near-ties
// (gap under the tolerance) shaded, the first differing token marked.
std::string generation_chart(const json& s, const std::string& id) {
    const json *ref = nullptr, *ours = nullptr, *tie = nullptr;
    for (const json& x : s["series"]) {
        if (x["name"] == kSeriesReferenceGap) ref = &x["values"];
        if (x["name"] == kSeriesOurGap) ours = &x["values"];
        if (x["name"] == kSeriesTieThreshold) tie = &x["values"];
    }
    if (!ref || !tie) return "";
    const std::size_t n = ref->size();
    std::vector<double> xs, r, o, t, all;
    for (std::size_t i = 0; i < n; ++i) {
        xs.push_back(static_cast<double>(i));
        r.push_back(as_double((*ref)[i]));
        t.push_back(as_double((*tie)[i]));
        if (ours && i < ours->size()) o.push_back(as_double((*ours)[i]));
    }
    all.insert(all.end(), r.begin(), r.end());
    all.insert(all.end(), t.begin(), t.end());
    all.insert(all.end(), o.begin(), o.end());
    html::Axis x{-0.5, static_cast<double>(n) - 0.5, false, 0, 1}, y;
    y.log = true;
    html::log_range(all, y.lo, y.hi);
    html::Chart c(id, fmt::format("{}: how sure is each greedy step? top-1 minus top-2 logit", s["id"].get<std::string>()),
                  std::max(720.0, 100 + 6.0 * static_cast<double>(n)), 330, x, y, "generated token (step)", "logit gap");
    std::size_t ties = 0;
    for (std::size_t i = 0; i < n; ++i)
        if (r[i] <= t[i]) {
            ++ties;
            c.band(static_cast<double>(i) - 0.5, static_cast<double>(i) + 0.5, "#ffcc80",
                   fmt::format("step {}: near-tie, gap {:.3g} <= {:.3g}", i, r[i], t[i]));
        }
    for (const json& m : s.value("measurements", json::array()))
        if (m["name"] == kMeasureTokensMatched && as_double(m["value"]) < static_cast<double>(n))
            c.vline(as_double(m["value"]), {"#c62828", false, 2},
                    fmt::format("first differing token: step {}", static_cast<long>(as_double(m["value"]))));
    c.line(xs, t, {"#888", true, 1});
    c.legend({"#888", true, 1}, "near-tie threshold: the logits tolerance");
    std::vector<std::string> titles;
    for (std::size_t i = 0; i < n; ++i) titles.push_back(fmt::format("step {}: reference gap {:.4g}", i, r[i]));
    c.line(xs, r, {"#1f77b4", false, 1.5});
    c.dots(xs, r, {"#1f77b4", false, 1.5}, titles, 2.5);
    c.legend({"#1f77b4", false, 1.5}, "reference: top-1 − top-2 logit");
    if (!o.empty()) {
        c.line(xs, o, {"#ff7f0e", true, 1.5});
        c.legend({"#ff7f0e", true, 1.5}, "ours, at the same two ids (teacher-forced)");
    }
    c.legend({"#ffcc80", false, 8}, fmt::format("near-tie steps ({}): float rounding may flip them", ties));
    return c.svg();
}

// |ours - reference| over a failing output, downsampled (report.json's heatmap).
std::string error_heatmap_svg(const json& s, const json& o, const std::string& id) {
    const json& h = o["heatmap"];
    html::HeatmapSpec spec;
    spec.id = id;
    spec.title = fmt::format("{} {} {} {}: |ours − reference|", s["id"].get<std::string>(), o["case"].get<std::string>(),
                             o["output"].get<std::string>(), shape_text(o["shape"]));
    spec.rows = h["cell_rows"];
    spec.cols = h["cell_cols"];
    const std::size_t br = h["block_rows"], bc = h["block_cols"];
    spec.row_axis = h["row_axis"].get<std::string>() + (br > 1 ? fmt::format(" ({} per cell)", br) : "");
    spec.col_axis = h["col_axis"].get<std::string>() + (bc > 1 ? fmt::format(" ({} per cell)", bc) : "");
    std::vector<double> finite;
    for (const auto& v : h["max_abs"]) {
        spec.values.push_back(as_double(v));
        if (std::isfinite(spec.values.back()) && spec.values.back() > 0) finite.push_back(spec.values.back());
    }
    spec.log = true;
    spec.hi = finite.empty() ? 1 : *std::max_element(finite.begin(), finite.end());
    spec.lo = finite.empty() ? 0.1 : std::min(*std::min_element(finite.begin(), finite.end()), spec.hi / 10);
    spec.cell = std::clamp(640.0 / static_cast<double>(spec.cols), 6.0, 16.0);
    spec.cell_h = std::clamp(160.0 / static_cast<double>(spec.rows), spec.cell, 24.0);  // a few heads: taller rows
    spec.legend_unit = "max |ours − reference| in the cell (white: 0)";
    spec.tooltip = [&, br, bc](std::size_t r, std::size_t c) {
        return fmt::format("rows {}..{}, columns {}..{}: {}", r * br, r * br + br - 1, c * bc, c * bc + bc - 1,
                           fmt_num(h["max_abs"][r * spec.cols + c]));
    };
    return html::heatmap(spec);
}

bool has_pictures(const json& s) {
    if (s.contains("series")) return true;
    for (const json& o : s["outputs"])
        if (o.contains("heatmap") || (s["level"] == "model" && o["metrics"].contains("ulp_histogram"))) return true;
    return false;
}

// Every plot of one stage (ids prefixed, so that two reports' plots can share a page).
std::string stage_figures(const json& s, const std::string& prefix) {
    const std::string sid = s["id"];
    const std::string status = s["status"];
    std::string out;
    if (status != "pass" && status != "fail") return "<p class=\"note\">" + status_span(status) + ": " + escape(str(s["reason"])) + "</p>\n";
    if (!has_pictures(s)) return "<p class=\"note\">no plots: a report of schema 1, or a stage without per-output plot data</p>\n";
    auto figure = [&](const std::string& svg, const std::string& caption) {
        if (!svg.empty()) out += "<figure>\n" + svg + "<figcaption>" + caption + "</figcaption>\n</figure>\n";
    };
    if (s["level"] == "model") {
        std::vector<std::string> cases;
        for (const json& o : s["outputs"])
            if (std::find(cases.begin(), cases.end(), o["case"].get<std::string>()) == cases.end()) cases.push_back(o["case"]);
        for (std::size_t i = 0; i < cases.size() && i < 4; ++i) {
            figure(pipeline_chart(s, cases[i], prefix + sid + ".pipeline." + cases[i]),
                   "Each point is one output's largest |ours − reference|. Free-running errors include everything "
                   "upstream; a teacher-forced point is what that piece adds on its own (fed the reference's input). "
                   "Where the free-running line rises while the teacher-forced one stays low, the error is inherited; "
                   "where both rise, that piece adds it.");
            figure(position_chart(s, cases[i], prefix + sid + ".positions." + cases[i]),
                   "Error at each position of the prompt: rounding error usually grows with the number of positions "
                   "attention reads; a jump at one position points at a position-dependent step (RoPE, the causal "
                   "mask, the KV cache).");
        }
        std::size_t near_zero = 0;
        for (const json& o : s["outputs"]) near_zero += o["metrics"].value("ulp_near_zero", std::size_t{0});
        figure(ulp_chart(s, prefix + sid + ".ulp"),
               fmt::format("How many float32 steps apart ours and the reference are, element by element, where that "
                           "means something: elements whose |reference| is at least 2^-10 of their output's largest "
                           "({} near-zero element{} left out: there a float's step is so small that an absolute error "
                           "far inside the tolerance is millions of ULPs). Most elements within a few ULPs is ordinary "
                           "rounding; a tail far to the right is a real difference.",
                           near_zero, near_zero == 1 ? "" : "s"));
    }
    if (s.contains("series")) {
        std::string verdict;
        for (const json& o : s["outputs"])
            if (o["output"] == "tokens" && !o["message"].get<std::string>().empty()) verdict = o["message"];
        for (const json& m : s.value("measurements", json::array()))
            if (m["name"] == kMeasureTokensMatched && verdict.empty())
                verdict = fmt::format("{} greedy tokens equal to the reference's ({}).", fmt_num(m["value"]), m["about"].get<std::string>());
        figure(generation_chart(s, prefix + sid + ".gaps"),
               "A small gap means the model hardly prefers its choice: if it is below the logits tolerance (a "
               "near-tie, shaded), float rounding alone can pick the other token, and generation may differ there "
               "without a bug." + (verdict.empty() ? std::string() : "<pre>" + escape(verdict) + "</pre>"));
    }
    bool first_heatmap = true;
    for (const json& o : s["outputs"]) {
        if (!o.contains("heatmap")) continue;
        if (first_heatmap)
            out += fmt::format("<p class=\"note\">Where the error sits in the failing outputs (the first {} of the stage, in "
                               "pipeline order): each cell is the largest |ours − reference| in its block. A pattern along the "
                               "columns of every head (a RoPE pairing), one head wrong alone (a swapped or misread head), or "
                               "errors growing down the positions show what a single number cannot.</p>\n",
                               kMaxHeatmapsPerStage);
        first_heatmap = false;
        figure(error_heatmap_svg(s, o, prefix + sid + ".heatmap." + o["case"].get<std::string>() + "." + o["output"].get<std::string>()),
                   fmt::format("{} ({}): {} of {} elements out of tolerance, max abs {}.",
                               escape(o["case"].get<std::string>()), escape(o["description"].get<std::string>()),
                               o["metrics"]["mismatched"].get<std::size_t>(), o["metrics"]["elements"].get<std::size_t>(),
                               fmt_num(o["metrics"]["max_abs"])));
    }
    return out;
}

std::string meta_line(const json& meta) {
    return fmt::format("commit <code>{}</code>{}, {} <code>{}</code> ({}), {}; fixtures <code>{}</code> (manifest sha256 <code>{}</code>)",
                       escape(meta.value("git_commit", "").substr(0, 12)), meta.value("git_dirty", false) ? " (dirty)" : "",
                       escape(meta.value("compiler", "")), escape(meta.value("cxx_flags", "")), escape(meta.value("build_type", "")),
                       escape(meta.value("date_utc", "")), escape(meta.value("golden_dir", "")),
                       escape(meta.value("manifest_sha256", "").substr(0, 12)));
}

}  // namespace

std::string report_html(const json& report) {
    const json& sum = report["summary"];
    std::string b = "<h1>lmlab error report</h1>\n<p class=\"note\">" + meta_line(report["meta"]) + "</p>\n";
    b += fmt::format("<p id=\"summary\"><b><span class=\"count\" data-key=\"stages\">{}</span> stages</b>:", sum["stages"].get<int>());
    for (const char* k : kStageStatuses)
        b += fmt::format(" <span class=\"count {}\" data-key=\"{}\">{}</span> {}{}", k, k, sum[k].get<int>(),
                         std::string(k) == "not_run" ? "not run" : k, std::string(k) == "not_run" ? "" : ",");
    b += "</p>\n";
    b += "<p class=\"note\">Every stage compares our output with the reference's (PyTorch, transformers, the reference "
         "tokenizers) element by element; an element passes within atol + rtol·|reference|. A stage that is "
         "<i>not run</i> was blocked by a failed stage it depends on: fix the lowest failing level first. "
         "report.md has the same results as tables; report.json holds every number shown here.</p>\n";

    std::vector<const json*> stages;
    for (const json& s : report["stages"]) stages.push_back(&s);
    b += "<h2>Summary</h2>\n<figure>\n" + summary_chart("summary", stages) + "</figure>\n";

    // Each stage has one anchor, #stage-<id> (the summary chart links there): its section under
    // "Stages in pictures" when it has plots, else its entry under Problems, else its table row.
    auto drawn = [](const json& s) {
        return (s["level"] == "model" || s["level"] == "generation" || s["status"] == "fail") &&
               (s["status"] == "pass" || s["status"] == "fail") && has_pictures(s);
    };

    b += "<table id=\"stages\">\n<tr><th>stage</th><th>level</th><th>status</th><th>worst max abs</th><th>atol</th><th>rtol</th>"
         "<th>ours/torch vs f64</th><th>mismatched / elements</th></tr>\n";
    for (const json* s : stages) {
        const json& w = (*s)["worst"];
        const std::string sid = escape(str((*s)["id"]));
        const bool anchor_here = !drawn(*s) && (*s)["status"] == "pass";
        b += fmt::format("<tr{} data-stage=\"{}\" data-status=\"{}\" data-max-abs=\"{}\"><td>{}</td><td>{}</td>"
                         "<td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:g}</td><td class=\"num\">{:g}</td><td class=\"num\">{}</td>"
                         "<td class=\"num\">{} / {}</td></tr>\n",
                         anchor_here ? " id=\"stage-" + sid + "\"" : "", sid, escape(str((*s)["status"])), data_number(w["max_abs"]),
                         anchor_here ? sid : "<a href=\"#stage-" + sid + "\">" + sid + "</a>",
                         escape(str((*s)["level"])), status_span((*s)["status"]), fmt_num(w["max_abs"]),
                         (*s)["tolerance"]["atol"].get<double>(), (*s)["tolerance"]["rtol"].get<double>(),
                         fmt_num(w.value("accuracy_ratio", json(nullptr))), (*s)["mismatched"].get<std::size_t>(),
                         (*s)["elements"].get<std::size_t>());
    }
    b += "</table>\n";

    // Problems: every stage that did not pass, failures first (with their first mismatch), then the
    // blocked and skipped ones as lists
    std::string problems, blocked, skipped;
    std::size_t n_blocked = 0, n_skipped = 0;
    for (const json* s : stages) {
        const std::string sid = (*s)["id"], status = (*s)["status"];
        if (status == "fail" || status == "error") {
            problems += fmt::format("<div class=\"problem\"{} data-stage=\"{}\" data-status=\"{}\"><h3>{} — {}</h3>\n<p>{}: {}</p>\n",
                                    drawn(*s) ? "" : " id=\"stage-" + escape(sid) + "\"", escape(sid), status,
                                    drawn(*s) ? "<a href=\"#stage-" + escape(sid) + "\">" + escape(sid) + "</a> (plots below)" : escape(sid),
                                    status_span(status), escape(str((*s)["fixture"])), escape(str((*s)["reason"])));
            if ((*s)["first_failure"].is_object())
                problems += "<pre>" + escape((*s)["first_failure"]["message"].get<std::string>()) + "</pre>\n";
            problems += "</div>\n";
        } else if (status == "not_run") {
            ++n_blocked;
            blocked += fmt::format("<li id=\"stage-{}\" data-stage=\"{}\" data-status=\"not_run\"><code>{}</code>: {}</li>\n", escape(sid), escape(sid), escape(sid),
                                   escape(str((*s)["reason"])));
        } else if (status == "skipped") {
            ++n_skipped;
            skipped += fmt::format("<li id=\"stage-{}\" data-stage=\"{}\" data-status=\"skipped\"><code>{}</code>: {}</li>\n", escape(sid), escape(sid), escape(sid),
                                   escape(str((*s)["reason"])));
        }
    }
    if (!problems.empty() || n_blocked || n_skipped) {
        b += "<h2 id=\"problems\">Problems</h2>\n" + problems;
        if (n_blocked)
            b += fmt::format("<h3>{} not run (blocked: they say nothing about their own code)</h3>\n<ul id=\"not-run\">\n{}</ul>\n",
                             n_blocked, blocked);
        if (n_skipped) b += fmt::format("<h3>{} skipped</h3>\n<ul id=\"skipped\">\n{}</ul>\n", n_skipped, skipped);
    }

    // Cases a stage did not run (ONNX conformance cases whose attributes our kernels do not take) and
    // outputs it did not compare, each with its reason
    std::string not_run_cases;
    for (const json* s : stages) {
        if (!s->contains("skipped_cases")) continue;
        for (const json& k : (*s)["skipped_cases"]) {
            const std::string out = k["output"];
            not_run_cases += fmt::format("<tr data-stage=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                                         escape(str((*s)["id"])), escape(str((*s)["id"])), escape(str(k["case"])),
                                         out.empty() ? "(whole case)" : escape(out), escape(str(k["reason"])));
        }
    }
    if (!not_run_cases.empty())
        b += "<h2 id=\"cases-not-run\">Cases not run</h2>\n<p class=\"note\">Cases (or outputs of a case) a stage did not "
             "compare, each with the attribute or output that stopped it; the stage's other cases ran.</p>\n"
             "<table id=\"skipped-cases\">\n<tr><th>stage</th><th>case</th><th>output</th><th>why not</th></tr>\n" +
             not_run_cases + "</table>\n";

    // The stages in pictures, in run order: model stages, generation stages, and every failing stage
    b += "<h2>Stages in pictures</h2>\n<p class=\"note\">Model stages: error per intermediate, per position and in ULPs; "
         "generation: the logit gap at each step; failing outputs: where in the tensor the error sits. "
         "Hover a point or a cell for its numbers.</p>\n";
    for (const json* s : stages) {
        if (!drawn(*s)) continue;
        b += fmt::format("<section class=\"stage\" id=\"stage-{}\" data-stage=\"{}\"><h3>{} — {}</h3>\n", escape(str((*s)["id"])),
                         escape(str((*s)["id"])), escape(str((*s)["id"])), status_span((*s)["status"]));
        b += stage_figures(*s, "");
        b += "</section>\n";
    }
    return html::page("lmlab error report", b);
}

std::string diff_html(const json& old_report, const json& new_report, const std::string& old_name, const std::string& new_name) {
    const auto rows = stage_changes(old_report, new_report);
    const auto flagged = compare_reports(old_report, new_report);
    std::set<std::string> flagged_ids;
    for (const auto& line : flagged) flagged_ids.insert(line.substr(0, line.find(':')));

    std::string b = "<h1>lmlab diff</h1>\n";
    b += fmt::format("<p>before: <code>{}</code><br><span class=\"note\">{}</span></p>\n", escape(old_name), meta_line(old_report["meta"]));
    b += fmt::format("<p>after: <code>{}</code><br><span class=\"note\">{}</span></p>\n", escape(new_name), meta_line(new_report["meta"]));
    std::vector<const json*> after, before;
    for (const auto& r : rows) {
        after.push_back(r.new_stage);
        before.push_back(r.old_stage);
    }
    b += "<h2>Every stage, before and after</h2>\n<figure>\n" + summary_chart("diff", after, before) + "</figure>\n";
    b += "<table id=\"diff\">\n<tr><th>stage</th><th>before</th><th>after</th><th>before max abs</th><th>after max abs</th>"
         "<th>after / before</th></tr>\n";
    for (const auto& r : rows) {
        const json old_abs = r.old_stage ? (*r.old_stage)["worst"]["max_abs"] : json(nullptr);
        const std::string old_status = r.old_stage ? (*r.old_stage)["status"].get<std::string>() : "-";
        // the summary chart's link #stage-<id>: a flagged stage's plots below, else this row
        b += fmt::format("<tr{} data-stage=\"{}\" data-old-status=\"{}\" data-new-status=\"{}\" data-old-max-abs=\"{}\" data-new-max-abs=\"{}\">"
                         "<td>{}{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
                         flagged_ids.count(r.id) ? "" : " id=\"stage-" + escape(r.id) + "\"", escape(r.id), escape(old_status), escape(str((*r.new_stage)["status"])), data_number(old_abs),
                         data_number((*r.new_stage)["worst"]["max_abs"]), flagged_ids.count(r.id) ? "⚑ " : "", escape(r.id),
                         r.old_stage ? status_span(old_status) : "-", status_span((*r.new_stage)["status"]), fmt_num(old_abs),
                         fmt_num((*r.new_stage)["worst"]["max_abs"]), escape(r.ratio));
    }
    b += "</table>\n<h2>Flagged</h2>\n";
    if (flagged.empty()) b += "<p>no stage changed status or grew its worst error more than 2x</p>\n";
    else {
        b += "<ul id=\"flagged\">\n";
        for (const auto& l : flagged) b += "<li>" + escape(l) + "</li>\n";
        b += "</ul>\n";
    }
    // each flagged stage's plots, before | after
    for (const auto& r : rows) {
        if (!flagged_ids.count(r.id)) continue;
        b += fmt::format("<section class=\"stage\" id=\"stage-{}\"><h3>{}: {} → {}</h3>\n<div class=\"pair\">\n<div><b>before</b>\n{}</div>\n"
                         "<div><b>after</b>\n{}</div>\n</div>\n</section>\n",
                         escape(r.id), escape(r.id), r.old_stage ? status_span((*r.old_stage)["status"]) : "-",
                         status_span((*r.new_stage)["status"]), r.old_stage ? stage_figures(*r.old_stage, "before.") : "",
                         stage_figures(*r.new_stage, "after."));
    }
    return html::page("lmlab diff", b);
}

}  // namespace lmlab
