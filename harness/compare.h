// Comparing our output with PyTorch's, element by element, the way torch.testing.assert_close
// does: an element matches when |ours - torch| <= atol + rtol * |torch|. NaN or Inf where
// PyTorch's value is finite never matches.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace lmlab {

struct Tolerance {
    double atol;
    double rtol;
};

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
    double max_ulp = 0;   // max distance in units in the last place (float32)
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

// Flat index -> "(i, j, k)" for the given shape.
std::string index_str(std::size_t flat, const std::vector<std::size_t>& shape);

// The assert_close-style explanation of a mismatch, e.g.
//   Tensor-likes are not close!  Mismatched elements: 3 / 512 (0.6%)
//   Greatest absolute difference: 0.0123 at index (17,) (up to 1e-05 allowed)
//   Greatest relative difference: ...
std::string mismatch_message(const Metrics& m, const std::vector<std::size_t>& shape, Tolerance tol);

}  // namespace lmlab
