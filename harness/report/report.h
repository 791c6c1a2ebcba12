// The error report: reports/report.json (machine-readable, schema in reports/README.md) and
// reports/report.md (for people), plus comparison with the previous run.
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/runner.h"

namespace lmlab {

// 2 added the plot data of report.html (ulp_histogram, error_by_row, heatmap, series); reports of
// version 1 are still read (lmlab diff, the comparison with the previous run).
inline constexpr int kReportSchemaVersion = 2;

// Where and how this run was made.
struct RunMeta {
    std::string git_commit;  // "unknown" outside a checkout
    bool git_dirty = false;
    std::string compiler, cxx_flags, build_type;
    std::string date_utc;           // ISO 8601
    std::string manifest_sha256;    // of golden/manifest.json, "" when absent
    std::string golden_dir;
    std::string selection = "*";    // which stages ran (--stage glob, --level)
};

RunMeta collect_meta(const std::string& source_dir, const std::string& golden_dir);

// The statuses a stage ends with, in the order summaries print them: the one list of them.
inline constexpr std::array<const char*, 5> kStageStatuses = {"pass", "fail", "error", "skipped", "not_run"};

// {"stages": n, "pass": .., "fail": .., "error": .., "skipped": .., "not_run": ..} of a stages array:
// the one place statuses are counted.
nlohmann::json status_summary(const nlohmann::json& stages);

nlohmann::json report_json(const std::vector<StageResult>& results, const RunMeta& meta);
std::string report_markdown(const nlohmann::json& report);

// Per-stage comparison of two reports: status changes, worst error growing more than 2x, stages
// that appeared or disappeared. Returns one line per flagged stage (empty: nothing changed).
std::vector<std::string> compare_reports(const nlohmann::json& old_report, const nlohmann::json& new_report);
// One row of `lmlab diff`: a stage of NEW, the same stage in OLD (nullptr when OLD lacks it) and
// new worst max_abs / old as text ("2.00x", "=", "from 0", "new", "nan", "inf").
struct StageChange {
    std::string id;
    const nlohmann::json* old_stage;
    const nlohmann::json* new_stage;
    std::string ratio;
};
std::vector<StageChange> stage_changes(const nlohmann::json& old_report, const nlohmann::json& new_report);
// The full per-stage table for `lmlab diff`.
std::string diff_table(const nlohmann::json& old_report, const nlohmann::json& new_report);

// The report as pictures (harness/report/report_html.cpp), drawn from report.json alone: the summary
// chart, the stage table, the problems, and per stage its plots (model stages: error per
// intermediate, per position, ULP histogram; generation: logit gaps per step; failing outputs:
// heatmaps of |ours - reference|). Reports of schema 1 give the summary without the stage plots.
std::string report_html(const nlohmann::json& report);
// `lmlab diff`'s page: every stage's worst error before and after, and each flagged stage's plots
// side by side. old_name/new_name: how the page names the two reports (their paths).
std::string diff_html(const nlohmann::json& old_report, const nlohmann::json& new_report, const std::string& old_name,
                      const std::string& new_name);

// A number of report.json: "inf", "-inf" and "nan" (JSON has none) back to doubles; null -> 0.
double as_double(const nlohmann::json& v);
// 3 significant digits ("1.2e-05"), the strings "nan"/"inf" as they are, null as "-".
std::string fmt_num(const nlohmann::json& v);

nlohmann::json load_report(const std::string& path);  // throws HarnessError naming the file

// Writes dir/report.json, dir/report.md and dir/report.html; an existing report.json is kept as
// dir/report.prev.json first. Returns the comparison with that previous report (empty if none).
// A restricted run (--stage, --level) is merged into the previous report; stages_written (optional)
// gets how many stages the written report holds, so the caller can say so.
std::vector<std::string> write_report(const std::string& dir, const nlohmann::json& report,
                                      std::size_t* stages_written = nullptr);

// One stage's line on stdout as it finishes (status, worst errors, matched elements, time), with
// the first mismatch's assert_close-style message or the reason it did not pass, and its measurements.
void print_stage_line(const StageResult& r);

}  // namespace lmlab
