// Comparing our output with PyTorch's, element by element, the way torch.testing.assert_close
// does: an element matches when |ours - torch| <= atol + rtol * |torch|. NaN or Inf where
// PyTorch's value is finite never matches.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace lmlab {

struct Tolerance {
    double atol;
    double rtol;
};

// ULP distances binned by powers of two, for report.html's histogram: bin 0 counts elements equal
// to torch's (0 ulp apart), bin b in 1..32 counts distances d with 2^(b-1) <= d < 2^b (bin 1: 1 ulp,
// bin 2: 2-3, bin 3: 4-7, ...; two finite floats are always less than 2^32 apart), and the last
// bin, kUlpNanBin, elements where exactly one of the two is NaN (an infinite distance).
inline constexpr std::size_t kUlpBins = 34;
inline constexpr std::size_t kUlpNanBin = kUlpBins - 1;
inline constexpr double kUlpFloor = 1.0 / 1024;  // 2^-10 of the output's largest magnitude (Metrics::max_ulp)

// Everything we measure about one output of one case.
struct Metrics {
    std::size_t n = 0;             // elements compared
    std::size_t n_mismatch = 0;    // elements outside atol + rtol·|torch|
    std::size_t n_nonfinite = 0;   // of those, NaN or Inf from us where PyTorch's value is finite
    double max_abs = 0;            // max |ours - torch|
    std::size_t max_abs_index = 0; // where (flat index)
    double max_rel = 0;            // max |ours - torch| / |torch| (inf where torch is 0 and ours is not)
    std::size_t max_rel_index = 0;
    double mean_abs = 0;
    double rmse = 0;
    double nmse = 0;      // Σ(ours - torch)² / Σ torch²
    double cosine = 1;    // cos of the angle between ours and torch
    // ULP distances (units in the last place, float32), measured only where they mean something:
    // elements whose |torch| is at least kUlpFloor times the output's largest |torch|. Near zero a
    // float's step is tiny, so an absolute error far inside the tolerance is millions of ULPs (a
    // passing logits tensor has such elements): those are counted in ulp_near_zero instead.
    double max_ulp = 0;
    std::array<std::size_t, kUlpBins> ulp_bins{};  // how many elements at each ULP distance (bins above)
    std::size_t ulp_near_zero = 0;                 // elements left out of max_ulp and ulp_bins
    float ours_at_worst = 0, torch_at_worst = 0;  // the values at max_abs_index
    // Accuracy against the float64 truth (reference64), when the fixture has it.
    bool has_reference64 = false;
    double ours_err64 = 0;   // max |ours - truth|
    double torch_err64 = 0;  // max |torch - truth|
    double accuracy_ratio = 1;  // ours_err64 / torch_err64: < 1 means we are closer to the truth

    bool passed() const { return n_mismatch == 0; }
};

// Compares ours with torch (same length) under tol; truth may be empty.
Metrics compare(std::span<const float> ours, std::span<const float> torch, std::span<const double> truth,
                Tolerance tol);

// Where the error sits inside an output, for report.html (both computed from the same d_i as
// compare(): 0 where ours == torch or both are NaN, else |ours - torch|, NaN if one of them is NaN).
//
// error_by_row: for an output of two or more dimensions, the max error at each index of its
// second-to-last dimension (the positions of a model stage's [positions, features] output and of
// the KV cache's [layers, positions, kv_dim], the steps of generation's [steps, vocab]), the max
// taken over every other dimension. More than kMaxProfile rows are grouped: value i is the max over
// rows [i·rows_per_value, (i+1)·rows_per_value). Empty for a 0- or 1-dimensional output.
inline constexpr std::size_t kMaxProfile = 64;
struct RowProfile {
    std::vector<double> max_abs;    // one per group of rows, NaN wins
    std::size_t rows_per_value = 1;
};
RowProfile error_by_row(std::span<const float> ours, std::span<const float> torch, const std::vector<std::size_t>& shape);

// error_heatmap: |ours - torch| over the tensor laid out as a matrix, at most kMaxHeatmap x
// kMaxHeatmap cells, each the max over a block of block_rows x block_cols elements (NaN wins).
// The matrix is the tensor's own: rows = every dimension but the last flattened, columns = the
// last ([positions, features], [layers·positions, kv_dim]); a 1-D output of n_heads·head_dim
// elements with head_dim > 0 given becomes heads x head_dim (a swapped head or a wrong RoPE pairing
// shows as a pattern), any other 1-D output one row.
inline constexpr std::size_t kMaxHeatmap = 64;
struct Heatmap {
    std::size_t rows = 0, cols = 0;               // the matrix's size before grouping
    std::size_t block_rows = 1, block_cols = 1;   // elements per cell
    std::size_t cell_rows = 0, cell_cols = 0;     // cells: ceil(rows / block_rows) x ceil(cols / block_cols)
    std::vector<double> cells;                    // [cell_rows, cell_cols] row-major
};
Heatmap error_heatmap(std::span<const float> ours, std::span<const float> torch, const std::vector<std::size_t>& shape,
                      std::size_t head_dim = 0);

// Flat index -> "(i, j, k)" for the given shape.
std::string index_str(std::size_t flat, const std::vector<std::size_t>& shape);

// The assert_close-style explanation of a mismatch, e.g.
//   Tensor-likes are not close!  Mismatched elements: 3 / 512 (0.6%)
//   Greatest absolute difference: 0.0123 at index (17,) (up to 1e-05 allowed)
//   Greatest relative difference: ...
std::string mismatch_message(const Metrics& m, const std::vector<std::size_t>& shape, Tolerance tol);

}  // namespace lmlab
