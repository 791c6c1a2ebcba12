#include "harness/report/html.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fmt/format.h>

namespace lmlab::html {

std::string escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&#39;"; break;
            default: out += c;
        }
    }
    return out;
}

namespace {

// The page's only script. It runs before anything else on the page, so it sees every error.
constexpr const char* kSelfCheck = R"(<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    errors.push('error: ' + (e.message || (e.target && e.target.tagName) || 'unknown'));
  }, true);
  window.addEventListener('securitypolicyviolation', function (e) {
    errors.push('blocked by the page policy: ' + e.violatedDirective + ' ' + e.blockedURI);
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    consoleError.apply(console, arguments);
  };
  window.addEventListener('load', function () {
    var plots = [];
    document.querySelectorAll('svg.plot').forEach(function (s) {
      var r = s.getBoundingClientRect();
      plots.push({id: s.getAttribute('data-plot'), width: r.width, height: r.height});
    });
    document.getElementById('selfcheck').textContent = JSON.stringify({errors: errors, plots: plots});
  });
})();
</script>
)";

constexpr const char* kStyle = R"(<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: .5em; overflow-x: auto; font-size: 12px; }
figure { margin: 1em 0; } figcaption { font-size: 12px; color: #555; max-width: 900px; }
svg.plot { max-width: 100%; height: auto; display: block; }
.status { font-weight: bold; }
.pass { color: #2e7d32; } .fail { color: #c62828; } .error { color: #6a1b9a; } .skipped { color: #757575; } .not_run { color: #e65100; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; } .pair > div { min-width: 0; }
.note { color: #555; font-size: 13px; }
.tok { font-family: monospace; background: #eef; padding: 0 2px; margin: 0 1px; white-space: pre; }
.bar { display: inline-block; height: 10px; background: #4a78b5; vertical-align: middle; }
#selfcheck { display: none; }
</style>
)";

std::string f1(double v) { return fmt::format("{:.1f}", v); }

// colour ramps: t in [0, 1]
std::string ramp(double t, const std::vector<std::array<int, 3>>& stops) {
    t = std::clamp(t, 0.0, 1.0) * static_cast<double>(stops.size() - 1);
    const std::size_t i = std::min(static_cast<std::size_t>(t), stops.size() - 2);
    const double f = t - static_cast<double>(i);
    int rgb[3];
    for (int k = 0; k < 3; ++k) rgb[k] = static_cast<int>(std::lround(stops[i][k] + f * (stops[i + 1][k] - stops[i][k])));
    return fmt::format("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
}
// errors: viridis-like, dark (small) to yellow (large); attention: white to dark blue
const std::vector<std::array<int, 3>> kErrorRamp = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
const std::vector<std::array<int, 3>> kWeightRamp = {{255, 255, 255}, {158, 202, 225}, {33, 113, 181}, {8, 48, 107}};

}  // namespace

std::string svg_open(const std::string& cls, const std::string& id, double width, double height) {
    return fmt::format("<svg class=\"{}\" data-plot=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
                       "viewBox=\"0 0 {} {}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n",
                       escape(cls), escape(id), f1(width), f1(height), f1(width), f1(height));
}

std::string page(const std::string& title, const std::string& body) {
    return "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           // no network: nothing but what is inline here (data: images), checked by the browser test
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
           "script-src 'unsafe-inline'; img-src data:\">\n"
           "<title>" + escape(title) + "</title>\n" + kSelfCheck + kStyle + "</head>\n<body>\n" + body +
           "<pre id=\"selfcheck\"></pre>\n</body>\n</html>\n";
}

std::string status_color(const std::string& status) {
    if (status == "pass") return "#2e7d32";
    if (status == "fail") return "#c62828";
    if (status == "error") return "#6a1b9a";
    if (status == "not_run") return "#e65100";
    return "#757575";  // skipped
}

// ---- axes -------------------------------------------------------------------------------------------

double Axis::at(double v) const {
    if (std::isnan(v) || v == INFINITY) return px_hi;
    if (v == -INFINITY) return px_lo;
    double t;
    if (log) {
        v = std::clamp(v, lo, hi);
        t = (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    } else {
        v = std::clamp(v, lo, hi);
        t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    }
    return px_lo + t * (px_hi - px_lo);
}

std::vector<double> Axis::ticks() const {
    std::vector<double> out;
    if (log) {
        const int a = static_cast<int>(std::ceil(std::log10(lo) - 1e-9)), b = static_cast<int>(std::floor(std::log10(hi) + 1e-9));
        const int step = std::max(1, (b - a + 7) / 8);  // at most ~8 labelled decades
        for (int e = a; e <= b; e += step) out.push_back(std::pow(10.0, e));
        return out;
    }
    if (!(hi > lo)) return {lo};
    const double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
    const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
    for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step) out.push_back(std::fabs(v) < 1e-12 * step ? 0.0 : v);
    return out;
}

void log_range(const std::vector<double>& values, double& lo, double& hi) {
    lo = INFINITY;
    hi = 0;
    for (double v : values)
        if (std::isfinite(v) && v > 0) {
            lo = std::min(lo, v);
            hi = std::max(hi, v);
        }
    if (!(hi > 0)) {
        lo = 1e-8;
        hi = 1;
        return;
    }
    lo = std::pow(10.0, std::floor(std::log10(lo)) - 1);  // a decade below the smallest: room for the floor (0)
    hi = std::pow(10.0, std::ceil(std::log10(hi) + 1e-12));
    if (hi <= lo * 10) hi = lo * 100;
}

std::string tick_label(double v, bool log) {
    if (log) return fmt::format("{:g}", v);
    return fmt::format("{:g}", std::fabs(v) < 1e-12 ? 0.0 : v);
}

// ---- charts -----------------------------------------------------------------------------------------

namespace {
constexpr double kLeft = 70, kRight = 20, kTop = 30;
std::string dash(const Style& s) { return s.dashed ? " stroke-dasharray=\"5,3\"" : ""; }
}  // namespace

Chart::Chart(std::string id, std::string title, double width, double height, Axis x, Axis y, std::string x_label,
             std::string y_label, double bottom_margin)
    : id_(std::move(id)), title_(std::move(title)), x_label_(std::move(x_label)), y_label_(std::move(y_label)),
      width_(width), height_(height), bottom_(bottom_margin), x_(x), y_(y) {
    x_.px_lo = kLeft;
    x_.px_hi = width_ - kRight;
    y_.px_lo = height_ - bottom_;
    y_.px_hi = kTop;
}

void Chart::line(const std::vector<double>& xs, const std::vector<double>& ys, const Style& s) {
    if (xs.empty()) return;
    std::string pts;
    for (std::size_t i = 0; i < xs.size(); ++i) pts += (i ? " " : "") + f1(x_.at(xs[i])) + "," + f1(y_.at(ys[i]));
    body_ += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"{} points=\"{}\"/>\n", s.color, s.width,
                         dash(s), pts);
}

void Chart::dots(const std::vector<double>& xs, const std::vector<double>& ys, const Style& s,
                 const std::vector<std::string>& titles, double radius) {
    for (std::size_t i = 0; i < xs.size(); ++i) {
        const std::string title = i < titles.size() && !titles[i].empty() ? "<title>" + escape(titles[i]) + "</title>" : "";
        const double px = x_.at(xs[i]), py = y_.at(ys[i]);
        if (std::isnan(ys[i]) || std::isinf(ys[i]))  // NaN / inf: a red triangle at the top edge
            body_ += fmt::format("<path d=\"M{},{} l5,9 l-10,0 z\" fill=\"#d00\">{}</path>\n", f1(px), f1(py - 2), title);
        else
            body_ += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{}\">{}</circle>\n", f1(px), f1(py), radius,
                                 s.color, title);
    }
}

void Chart::hline(double y, const Style& s, const std::string& label) {
    const double py = y_.at(y);
    body_ += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"{}/>\n", f1(x_.px_lo),
                         f1(x_.px_hi), f1(py), f1(py), s.color, s.width, dash(s));
    if (!label.empty())
        body_ += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\" fill=\"{}\">{}</text>\n",
                             f1(x_.px_hi - 2), f1(py - 3), s.color, escape(label));
}

void Chart::vline(double x, const Style& s, const std::string& label) {
    const double px = x_.at(x);
    body_ += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"{}/>\n", f1(px), f1(px),
                         f1(y_.px_lo), f1(y_.px_hi), s.color, s.width, dash(s));
    if (!label.empty())
        body_ += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{}\">{}</text>\n", f1(px + 3), f1(y_.px_hi + 10),
                             s.color, escape(label));
}

void Chart::band(double x0, double x1, const std::string& color, const std::string& title) {
    const double a = x_.at(x0), b = x_.at(x1);
    body_ += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>\n",
                         f1(std::min(a, b)), f1(y_.px_hi), f1(std::max(1.0, std::fabs(b - a))), f1(y_.px_lo - y_.px_hi),
                         color, escape(title));
}

void Chart::bar(double x0, double x1, double y, const Style& s, const std::string& title) {
    const double a = x_.at(x0), b = x_.at(x1), top = y_.at(y);
    body_ += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>\n", f1(a),
                         f1(top), f1(std::max(1.0, b - a)), f1(std::max(0.0, y_.px_lo - top)), s.color, escape(title));
}

void Chart::labels(const std::vector<std::string>& names) {
    x_ticks_.clear();
    for (std::size_t i = 0; i < names.size(); ++i) {
        const double px = x_.at(static_cast<double>(i)), py = y_.px_lo + 8;
        x_ticks_ += fmt::format("<text transform=\"translate({},{}) rotate(-55)\" font-size=\"10\" text-anchor=\"end\">{}</text>\n",
                                f1(px + 3), f1(py), escape(names[i]));
    }
    x_ticks_ += " ";  // non-empty: no numeric ticks on a categorical axis
}

void Chart::legend(const Style& s, const std::string& label) { legend_.emplace_back(s, label); }

std::string Chart::svg() const {
    // two legend columns, or one when a label would not fit in half the width
    std::size_t longest = 0;
    for (const auto& [s, label] : legend_) longest = std::max(longest, label.size());
    const std::size_t columns = 6.0 * static_cast<double>(longest) + 40 > (width_ - kLeft) / 2 ? 1 : 2;
    const double legend_h = legend_.empty() ? 0 : 18.0 * static_cast<double>((legend_.size() + columns - 1) / columns) + 6;
    const double total_h = height_ + legend_h;
    std::string out = svg_open("plot", id_, width_, total_h);
    out += fmt::format("<text x=\"{}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>\n", f1(kLeft), escape(title_));
    // y ticks and grid
    for (double t : y_.ticks()) {
        const double py = y_.at(t);
        out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#e4e4e4\"/>\n", f1(x_.px_lo), f1(x_.px_hi), f1(py), f1(py));
        out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>\n", f1(x_.px_lo - 4),
                           f1(py + 3), tick_label(t, y_.log));
    }
    if (y_.log)  // the floor: zero (and anything below lo) is drawn here
        out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"9\" text-anchor=\"end\" fill=\"#777\">0 or less</text>\n",
                           f1(x_.px_lo - 4), f1(y_.px_lo + 12));
    // x ticks (numeric) or the categorical labels
    if (x_ticks_.empty()) {
        for (double t : x_.ticks()) {
            const double px = x_.at(t);
            out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#e4e4e4\"/>\n", f1(px), f1(px), f1(y_.px_lo),
                               f1(y_.px_hi));
            out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\n", f1(px),
                               f1(y_.px_lo + 13), tick_label(t, x_.log));
        }
    } else {
        out += x_ticks_;
    }
    out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", f1(x_.px_lo),
                       f1(y_.px_hi), f1(x_.px_hi - x_.px_lo), f1(y_.px_lo - y_.px_hi));
    out += body_;
    out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n", f1((x_.px_lo + x_.px_hi) / 2),
                       f1(height_ - 6), escape(x_label_));
    out += fmt::format("<text transform=\"translate(14,{}) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n",
                       f1((y_.px_lo + y_.px_hi) / 2), escape(y_label_));
    for (std::size_t i = 0; i < legend_.size(); ++i) {
        const auto& [s, label] = legend_[i];
        const double lx = kLeft + static_cast<double>(i % columns) * (width_ - kLeft) / 2,
                     ly = height_ + 12 + 18.0 * static_cast<double>(i / columns);
        out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"{}/>\n", f1(lx), f1(lx + 22),
                           f1(ly - 4), f1(ly - 4), s.color, std::max(2.0, s.width), dash(s));
        out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>\n", f1(lx + 28), f1(ly), escape(label));
    }
    return out + "</svg>\n";
}

// ---- heatmaps -------------------------------------------------------------------------------------

std::string heatmap(const HeatmapSpec& h) {
    auto label_width = [](const std::vector<std::string>& labels, double minimum) {
        std::size_t longest = 0;
        for (const auto& l : labels) longest = std::max(longest, l.size());
        return std::clamp(6.5 * static_cast<double>(longest) + 10, minimum, 170.0);
    };
    const double left = h.row_labels.empty() ? 46 : label_width(h.row_labels, 46);
    const double top = 26 + (h.col_labels.empty() ? 16 : label_width(h.col_labels, 16));
    const double ch = h.cell_h > 0 ? h.cell_h : h.cell;
    const double grid_w = h.cell * static_cast<double>(h.cols), grid_h = ch * static_cast<double>(h.rows);
    const double width = std::max(left + grid_w + 20, 560.0), height = top + grid_h + 58;
    const bool log = h.log && h.lo > 0 && h.hi > h.lo;
    auto colour_of = [&](double v) {
        double t;
        if (log) t = v <= h.lo ? 0.0 : (std::log10(std::min(v, h.hi)) - std::log10(h.lo)) / (std::log10(h.hi) - std::log10(h.lo));
        else t = h.hi > h.lo ? (v - h.lo) / (h.hi - h.lo) : 1.0;
        return ramp(t, h.log ? kErrorRamp : kWeightRamp);
    };
    std::string out = svg_open("plot heatmap", h.id, width, height);
    out += fmt::format("<text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>\n", escape(h.title));
    out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#eee\"/>\n", f1(left), f1(top), f1(grid_w), f1(grid_h));
    for (std::size_t r = 0; r < h.rows; ++r)
        for (std::size_t c = 0; c < h.cols; ++c) {
            const double v = h.values[r * h.cols + c];
            if (v < 0) continue;  // masked
            const std::string fill = std::isnan(v) ? "#ff00ff" : log && v == 0 ? "#ffffff" : colour_of(v);
            const std::string tip = h.tooltip ? "<title>" + escape(h.tooltip(r, c)) + "</title>" : "";
            out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\">{}</rect>\n",
                               f1(left + h.cell * static_cast<double>(c)), f1(top + ch * static_cast<double>(r)), f1(h.cell),
                               f1(ch), fill, tip);
        }
    if (h.divider > 0 && h.divider < std::max(h.rows, h.cols)) {
        const double dx = left + h.cell * static_cast<double>(h.divider), dy = top + ch * static_cast<double>(h.divider);
        out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#e65100\" stroke-width=\"1.5\"/>\n", f1(left),
                           f1(left + grid_w), f1(dy), f1(dy));
        out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#e65100\" stroke-width=\"1.5\"/>\n", f1(dx),
                           f1(dx), f1(top), f1(top + grid_h));
    }
    // row and column labels: given ones (tokens), else a few indices
    for (std::size_t r = 0; r < h.rows; ++r) {
        if (h.row_labels.empty() && h.rows > 8 && r % ((h.rows + 7) / 8) != 0) continue;
        const std::string text = h.row_labels.empty() ? std::to_string(r) : h.row_labels[r];
        out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"end\">{}</text>\n", f1(left - 3),
                           f1(top + ch * (static_cast<double>(r) + 0.5) + 3.5), h.row_labels.empty() ? 9 : 10, escape(text));
    }
    for (std::size_t c = 0; c < h.cols; ++c) {
        if (h.col_labels.empty() && h.cols > 8 && c % ((h.cols + 7) / 8) != 0) continue;
        const std::string text = h.col_labels.empty() ? std::to_string(c) : h.col_labels[c];
        const double px = left + h.cell * (static_cast<double>(c) + 0.5) + 3.5, py = top - 3;
        out += fmt::format("<text transform=\"translate({},{}) rotate(-60)\" font-size=\"{}\">{}</text>\n", f1(px), f1(py),
                           h.col_labels.empty() ? 9 : 10, escape(text));
    }
    // axis names and the colour bar
    const double bar_y = top + grid_h + 22;
    out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\">rows: {}; columns: {}</text>\n", f1(4), f1(top + grid_h + 14),
                       escape(h.row_axis), escape(h.col_axis));
    out += fmt::format("<defs><linearGradient id=\"{}-bar\">", escape(h.id));
    for (int i = 0; i <= 8; ++i)
        out += fmt::format("<stop offset=\"{}%\" stop-color=\"{}\"/>", i * 100 / 8, ramp(i / 8.0, h.log ? kErrorRamp : kWeightRamp));
    out += "</linearGradient></defs>\n";
    // [lo] [colour bar] [hi unit]
    out += fmt::format("<text x=\"4\" y=\"{}\" font-size=\"10\">{}{}</text>\n", f1(bar_y + 9), log ? "≤" : "",
                       fmt::format("{:.3g}", h.lo));
    out += fmt::format("<rect x=\"64\" y=\"{}\" width=\"160\" height=\"10\" fill=\"url(#{}-bar)\"/>\n", f1(bar_y), escape(h.id));
    out += fmt::format("<text x=\"228\" y=\"{}\" font-size=\"10\">{} {}{}</text>\n", f1(bar_y + 9), fmt::format("{:.3g}", h.hi),
                       escape(h.legend_unit), log ? " (log colour scale; magenta: NaN)" : "");
    return out + "</svg>\n";
}

}  // namespace lmlab::html
