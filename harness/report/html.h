// Self-contained HTML pages with plots drawn as inline SVG, written from C++ (report.html,
// diff.html, trace.html). Why not matplotlib: `lmlab check` would need Python and 1-2 s of imports
// for every report (every ctest stage test writes one); these plots are lines, dots, bars and
// rectangles on linear or log axes, a few hundred lines of text output, the same bytes for the same
// numbers, and the browser test can read their numbers back from the DOM.
//
// Every page carries a strict Content-Security-Policy (no network, inline style and script only)
// and a small inline self-check script: on load it writes into <pre id="selfcheck"> a JSON object
// {"errors": [...], "plots": [{"id", "width", "height"}, ...]} with every script error, console.error
// call and blocked request, and the rendered size of every <svg class="plot">
// (scripts/browser/check.py reads it from the DOM Chromium dumps).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace lmlab::html {

std::string escape(std::string_view text);  // & < > " ' as entities (for text and attribute values)

// The opening of one plot: <svg class="{cls}" data-plot="{id}" ...> of width x height px on a white
// background (the browser tests find plots by data-plot). Close with "</svg>".
std::string svg_open(const std::string& cls, const std::string& id, double width, double height);

// <!doctype html> ... with the CSP, the stylesheet and the self-check; body is inserted as is.
std::string page(const std::string& title, const std::string& body);

// Status colours shared by the report's pages: pass, fail, error, skipped, not_run.
std::string status_color(const std::string& status);

// A data value for a log axis: positive finite values as they are; 0 (or below) sits at the axis
// floor; NaN and +inf at the top edge, drawn as a red triangle (an error plot must show a NaN).
struct Axis {
    double lo = 1, hi = 10;      // data range (log: both > 0)
    bool log = false;
    double px_lo = 0, px_hi = 1; // pixels for lo and hi
    double at(double v) const;   // clamped into [lo, hi]; non-finite -> hi
    std::vector<double> ticks() const;
};
// [lo, hi] of a log axis covering the positive finite values (and the extra ones, e.g. a
// tolerance), widened to whole decades; [1e-8, 1] when there are none.
void log_range(const std::vector<double>& values, double& lo, double& hi);
std::string tick_label(double v, bool log);

struct Style {
    std::string color = "#1f77b4";
    bool dashed = false;
    double width = 1.5;
};

// One chart: a plot area with x and y axes, a title, axis labels, a legend below. The marks are
// appended as SVG text; svg() closes it. Categorical x axes: linear over 0 .. n-1 with labels().
class Chart {
public:
    Chart(std::string id, std::string title, double width, double height, Axis x, Axis y, std::string x_label,
          std::string y_label, double bottom_margin = 44);
    const Axis& x() const { return x_; }
    const Axis& y() const { return y_; }

    void line(const std::vector<double>& xs, const std::vector<double>& ys, const Style& s);
    // dots with a hover text each (titles may be empty); non-finite y as a red triangle at the top
    void dots(const std::vector<double>& xs, const std::vector<double>& ys, const Style& s,
              const std::vector<std::string>& titles = {}, double radius = 3);
    void hline(double y, const Style& s, const std::string& label);
    void vline(double x, const Style& s, const std::string& label);
    void band(double x0, double x1, const std::string& color, const std::string& title);  // a highlighted x range
    void bar(double x0, double x1, double y, const Style& s, const std::string& title);  // from the axis floor up to y
    void labels(const std::vector<std::string>& names);  // categorical x labels at 0 .. n-1, rotated
    void legend(const Style& s, const std::string& label);
    std::string svg() const;

private:
    std::string id_, title_, x_label_, y_label_;
    double width_, height_, bottom_;
    Axis x_, y_;
    std::string body_, x_ticks_;
    std::vector<std::pair<Style, std::string>> legend_;
};

// A heatmap: rows x cols cells coloured by value, optionally labelled per row and column (tokens).
// A cell whose value is negative is masked (drawn blank: e.g. attention to future positions); NaN
// is drawn magenta. Colours: linear over [lo, hi] or log10 over it (0 as the lowest colour).
struct HeatmapSpec {
    std::string id, title, row_axis, col_axis;
    std::size_t rows = 0, cols = 0;
    std::vector<double> values;  // [rows, cols]
    std::vector<std::string> row_labels, col_labels;  // empty: index ticks
    bool log = false;
    double lo = 0, hi = 1;
    double cell = 10;    // pixels per cell (width)
    double cell_h = 0;   // pixels per cell (height); 0: square
    std::size_t divider = 0;  // > 0: a line after this many rows and columns (e.g. where the prompt ends)
    std::string legend_unit;  // what the colour bar measures
    std::function<std::string(std::size_t, std::size_t)> tooltip;  // per cell hover text (optional)
};
std::string heatmap(const HeatmapSpec& spec);

}  // namespace lmlab::html
