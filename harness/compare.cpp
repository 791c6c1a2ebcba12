#include "harness/compare.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <fmt/format.h>
#include <limits>

namespace lmlab {

namespace {

// Distance between two floats in units in the last place: how many representable floats lie
// between them. Maps the float bit patterns onto a monotone integer line first.
double ulp_distance(float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::infinity();
    auto ordered = [](float f) {
        const std::int64_t bits = std::bit_cast<std::int32_t>(f);
        return bits < 0 ? std::int64_t{INT32_MIN} - bits : bits;
    };
    return static_cast<double>(std::llabs(ordered(a) - ordered(b)));
}

// the histogram bin of a ULP distance d (0 for equal values; infinite: one side NaN)
std::size_t ulp_bin(double d) {
    if (std::isinf(d)) return kUlpNanBin;
    return static_cast<std::size_t>(std::bit_width(static_cast<std::uint64_t>(d)));  // d in [2^(b-1), 2^b) -> b
}

// d_i of compare(): 0 where equal (or both NaN), else |a - b| (NaN when one is NaN)
double element_error(float a, float b) {
    if (a == b || (std::isnan(a) && std::isnan(b))) return 0.0;
    return std::fabs(static_cast<double>(a) - static_cast<double>(b));
}

// max that lets NaN win (an error plot must not hide a NaN behind finite values)
double nan_max(double a, double b) { return (std::isnan(a) || std::isnan(b)) ? NAN : std::max(a, b); }

bool element_matches(float ours, float torch, Tolerance tol) {
    if (!std::isfinite(torch)) return ours == torch || (std::isnan(ours) && std::isnan(torch));
    if (!std::isfinite(ours)) return false;
    return std::fabs(static_cast<double>(ours) - torch) <= tol.atol + tol.rtol * std::fabs(torch);
}

}  // namespace

Metrics compare(std::span<const float> ours, std::span<const float> torch, std::span<const double> truth,
                Tolerance tol) {
    Metrics m;
    m.n = ours.size();
    double sum_abs = 0, sum_sq = 0, sum_ref_sq = 0, dot = 0, norm_ours = 0;
    std::size_t n_finite = 0;  // elements where PyTorch's value is finite: the averages are over these
    double largest = 0;        // max |torch| over finite elements: the scale ULPs are measured against
    for (float t : torch)
        if (std::isfinite(t)) largest = std::max(largest, static_cast<double>(std::fabs(t)));
    for (std::size_t i = 0; i < ours.size(); ++i) {
        const double a = ours[i], b = torch[i];
        if (!element_matches(ours[i], torch[i], tol)) {
            ++m.n_mismatch;
            if (std::isfinite(torch[i]) && !std::isfinite(ours[i])) ++m.n_nonfinite;
        }
        // a non-finite pair that matches (both -inf, or both NaN where PyTorch has NaN) adds no error
        const double diff = element_error(ours[i], torch[i]);
        const double rel = diff == 0.0 ? 0.0 : (b == 0.0 ? std::numeric_limits<double>::infinity() : diff / std::fabs(b));
        if (diff > m.max_abs || (std::isnan(diff) && !std::isnan(m.max_abs))) {
            m.max_abs = diff;
            m.max_abs_index = i;
        }
        if (rel > m.max_rel || (std::isnan(rel) && !std::isnan(m.max_rel))) {
            m.max_rel = rel;
            m.max_rel_index = i;
        }
        if (std::isfinite(b) && diff != 0.0 && std::fabs(b) < kUlpFloor * largest) {
            ++m.ulp_near_zero;  // near zero: ULPs measure the float's tiny step there, not the error
        } else {
            const double ulp = diff == 0.0 ? 0.0 : ulp_distance(ours[i], torch[i]);
            m.max_ulp = std::max(m.max_ulp, ulp);
            ++m.ulp_bins[ulp_bin(ulp)];
        }
        if (std::isfinite(b)) {
            ++n_finite;
            sum_abs += diff;
            sum_sq += diff * diff;
            sum_ref_sq += b * b;
            dot += a * b;
            norm_ours += a * a;
        }
    }
    if (n_finite) {
        m.mean_abs = sum_abs / static_cast<double>(n_finite);
        m.rmse = std::sqrt(sum_sq / static_cast<double>(n_finite));
        m.nmse = sum_ref_sq > 0 ? sum_sq / sum_ref_sq : (sum_sq > 0 ? std::numeric_limits<double>::infinity() : 0.0);
        if (norm_ours > 0 && sum_ref_sq > 0) m.cosine = dot / std::sqrt(norm_ours * sum_ref_sq);
        else m.cosine = (norm_ours == 0 && sum_ref_sq == 0) ? 1.0 : 0.0;
        m.ours_at_worst = ours[m.max_abs_index];
        m.torch_at_worst = torch[m.max_abs_index];
    }
    if (!truth.empty()) {
        m.has_reference64 = true;
        for (std::size_t i = 0; i < ours.size(); ++i) {
            if (!std::isfinite(truth[i])) continue;
            // NaN/Inf from us where the truth is finite is an infinite error, not a skipped element
            const double ours_err = std::isfinite(ours[i]) ? std::fabs(ours[i] - truth[i]) : INFINITY;
            m.ours_err64 = std::max(m.ours_err64, ours_err);
            m.torch_err64 = std::max(m.torch_err64, std::fabs(torch[i] - truth[i]));
        }
        // both exact: equally good (ratio 1); torch exact but we are not: infinitely worse
        if (std::isinf(m.torch_err64)) m.accuracy_ratio = std::isinf(m.ours_err64) ? 1.0 : 0.0;  // both overflowed: equal
        else if (m.torch_err64 > 0) m.accuracy_ratio = m.ours_err64 / m.torch_err64;
        else m.accuracy_ratio = m.ours_err64 > 0 ? std::numeric_limits<double>::infinity() : 1.0;
    }
    return m;
}

RowProfile error_by_row(std::span<const float> ours, std::span<const float> torch, const std::vector<std::size_t>& shape) {
    RowProfile p;
    if (shape.size() < 2 || ours.empty()) return p;
    const std::size_t rows = shape[shape.size() - 2], cols = shape.back();  // rows: the second-to-last dimension
    if (rows == 0 || cols == 0) return p;
    p.rows_per_value = (rows + kMaxProfile - 1) / kMaxProfile;
    p.max_abs.assign((rows + p.rows_per_value - 1) / p.rows_per_value, 0.0);
    // element i sits at row (i / cols) % rows of its [rows, cols] matrix (leading dimensions repeat it)
    for (std::size_t i = 0; i < ours.size(); ++i) {
        double& v = p.max_abs[(i / cols) % rows / p.rows_per_value];
        v = nan_max(v, element_error(ours[i], torch[i]));
    }
    return p;
}

Heatmap error_heatmap(std::span<const float> ours, std::span<const float> torch, const std::vector<std::size_t>& shape,
                      std::size_t head_dim) {
    Heatmap h;
    const std::size_t n = ours.size();
    if (n == 0) return h;
    if (shape.size() >= 2) {
        h.cols = shape.back();
        h.rows = h.cols ? n / h.cols : 0;
    } else if (head_dim > 0 && n % head_dim == 0) {
        h.rows = n / head_dim;  // heads x head_dim
        h.cols = head_dim;
    } else {
        h.rows = 1;
        h.cols = n;
    }
    if (h.rows == 0 || h.cols == 0) return h;
    h.block_rows = (h.rows + kMaxHeatmap - 1) / kMaxHeatmap;
    h.block_cols = (h.cols + kMaxHeatmap - 1) / kMaxHeatmap;
    h.cell_rows = (h.rows + h.block_rows - 1) / h.block_rows;
    h.cell_cols = (h.cols + h.block_cols - 1) / h.block_cols;
    h.cells.assign(h.cell_rows * h.cell_cols, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t r = i / h.cols, c = i % h.cols;
        double& v = h.cells[(r / h.block_rows) * h.cell_cols + c / h.block_cols];
        v = nan_max(v, element_error(ours[i], torch[i]));
    }
    return h;
}

std::string index_str(std::size_t flat, const std::vector<std::size_t>& shape) {
    if (shape.empty()) return "()";
    std::vector<std::size_t> idx(shape.size());
    for (std::size_t d = shape.size(); d-- > 0;) {
        idx[d] = shape[d] ? flat % shape[d] : 0;
        flat = shape[d] ? flat / shape[d] : 0;
    }
    std::string s = "(";
    for (std::size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
    return s + (idx.size() == 1 ? ",)" : ")");
}

std::string mismatch_message(const Metrics& m, const std::vector<std::size_t>& shape, Tolerance tol) {
    const std::string nonfinite =
        m.n_nonfinite ? fmt::format("\n{} of them NaN or Inf in ours where torch is finite (overflow? 0/0?)", m.n_nonfinite) : "";
    return fmt::format(
        "Tensor-likes are not close!\n"
        "Mismatched elements: {} / {} ({:.1f}%)\n"
        "Greatest absolute difference: {:.6g} at index {} (up to {:g} allowed): ours {:.9g}, torch {:.9g}\n"
        "Greatest relative difference: {:.6g} at index {} (up to {:g} allowed){}",
        m.n_mismatch, m.n, 100.0 * static_cast<double>(m.n_mismatch) / static_cast<double>(m.n ? m.n : 1), m.max_abs,
        index_str(m.max_abs_index, shape), tol.atol, m.ours_at_worst, m.torch_at_worst, m.max_rel,
        index_str(m.max_rel_index, shape), tol.rtol, nonfinite);
}

}  // namespace lmlab
