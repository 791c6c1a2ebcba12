// Running stages: read each stage's fixture, run every case, compare every output.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "harness/compare.h"
#include "harness/stages/stages.h"

namespace lmlab {

// One output of one case, measured.
struct OutputResult {
    std::string case_name;         // "case_003"
    std::string case_description;  // from the fixture
    std::string case_params;       // "; layer 1; pos 510": the case's numeric attributes
    std::string output;            // StageOutput::name
    std::string golden;            // StageOutput::golden
    std::vector<std::size_t> shape;
    Tolerance tol{};               // the tolerance this output was held to
    Metrics metrics;
    std::string message;           // assert_close-style text when it mismatched, else empty
    std::string compared_with;     // "" (PyTorch's float32 output), "reference64" (the case asks for the truth)
                                   // or "invariant" (StageOutput::expected: our own two runs; not in worst_*)
    // For report.html: where the error sits (compare.h). by_row for outputs of 2+ dimensions; the
    // heatmap for the first kMaxHeatmapsPerStage failing outputs of a stage only.
    RowProfile by_row;
    std::optional<Heatmap> heatmap;
    std::string heatmap_rows, heatmap_cols;  // what the heatmap's rows and columns are ("position", "feature")
};

inline constexpr std::size_t kMaxHeatmapsPerStage = 8;

// A series a stage reports (StageOutput::series): one value per step, e.g. the generation stages'
// logit gaps.
struct Series {
    std::string name;
    std::vector<double> values;
    std::string about;
};

// A number a stage measured rather than compared (StageOutput with an empty golden): e.g. the
// cost of int8 weights. Reported in report.json and report.md's "Measurements"; only a
// non-finite value fails the stage.
struct Measurement {
    std::string name;   // the row label in report.md, unit included ("weights int8 (MB)")
    double value = 0;
    std::string about;  // one line: what it is
};

// A case, or one output of a case, that a stage did not compare, and why (SkipCase, StageOutput::skip).
struct SkippedCase {
    std::string case_name;         // "case_test_attention_4d_scaled"
    std::string case_description;
    std::string output;            // "" = the whole case; else the golden output left uncompared
    std::string reason;            // names the attribute (or output) and why our kernel does not take it
};

struct StageResult {
    std::string id, level, fixture;
    std::string status;  // "pass", "fail", "error" (could not run: bad fixture...), "skipped", "not_run"
    std::string reason;  // error / skip / not-run explanation; for "fail" the first failing output
    Tolerance tol{};
    std::string tol_why;
    double seconds = 0;
    std::vector<OutputResult> outputs;
    // Worst over all outputs compared with the reference (for summaries and regressions).
    double worst_max_abs = 0;
    double worst_max_rel = 0;
    double worst_accuracy_ratio = 0;  // max ours/torch error ratio vs float64 truth
    bool has_reference64 = false;     // false: no output had a float64 truth (worst_accuracy_ratio meaningless)
    std::size_t n_mismatch = 0, n_elements = 0;
    std::optional<std::size_t> first_failure;  // index into outputs, in pipeline order
    std::vector<Measurement> measurements;     // in the order the stage returned them
    std::vector<Series> series;                // likewise
    std::size_t cases_run = 0;                 // cases the stage function ran (not skipped whole)
    std::vector<SkippedCase> skipped;          // in case order
};

struct RunOptions {
    std::string golden_dir;
    std::string shared_dir;
    std::string stage_glob = "*";  // fnmatch-style on the stage id
    std::vector<std::string> except_globs;  // and matching none of these
    std::string level;             // empty = all levels
    bool keep_going = false;       // run levels above a failing level anyway
    std::string exporter_sha256;   // when set, every fixture must have been written by this exporter
};

// The stages opt selects (--stage glob, --except globs, --level), in level order: the order
// run_stages runs them.
std::vector<const Stage*> selected_stages(const RunOptions& opt);

// The files under the golden dir the selected stages read: their fixtures and, for a model given as
// a path under the golden dir, that path (without its "#q8_0"-style suffix). What `lmlab check`
// hashes against the manifest (its .h5 files). Not included: a second model a fixture names
// (model.forward.q8_0.ak42's float model, models/tiny-llama.h5, which that stage loads and
// compares with its int8 file, and which every other tiny LLaMA stage lists as its model); ctest's
// golden.current, which every stage test requires, hashes every file.
std::set<std::string> golden_files_read(const std::vector<const Stage*>& stages);

// Runs the selected stages in level order. Unless keep_going, a failure (or error) at one level
// marks every selected stage of the higher levels "not_run", as ctest's gating does.
// on_done is called after each stage (for the one-line progress print).
std::vector<StageResult> run_stages(const RunOptions& opt, void (*on_done)(const StageResult&));

// Runs one stage (all its cases).
StageResult run_stage(const Stage& stage, const StageEnv& env);

}  // namespace lmlab
