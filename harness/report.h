// The error report: reports/report.json (machine-readable, schema in reports/README.md) and
// reports/report.md (for people), plus comparison with the previous run.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner.h"

namespace lmlab {

inline constexpr int kReportSchemaVersion = 1;

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

// {"stages": n, "pass": .., "fail": .., "error": .., "skipped": .., "not_run": ..} of a stages array:
// the one place statuses are counted.
nlohmann::json status_summary(const nlohmann::json& stages);

nlohmann::json report_json(const std::vector<StageResult>& results, const RunMeta& meta);
std::string report_markdown(const nlohmann::json& report);

// Per-stage comparison of two reports: status changes, worst error growing more than 2x, stages
// that appeared or disappeared. Returns one line per flagged stage (empty: nothing changed).
std::vector<std::string> compare_reports(const nlohmann::json& old_report, const nlohmann::json& new_report);
// The full per-stage table for `lmlab diff`.
std::string diff_table(const nlohmann::json& old_report, const nlohmann::json& new_report);

nlohmann::json load_report(const std::string& path);  // throws std::runtime_error naming the file

// Writes dir/report.json and dir/report.md; an existing report.json is kept as
// dir/report.prev.json first. Returns the comparison with that previous report (empty if none).
std::vector<std::string> write_report(const std::string& dir, const nlohmann::json& report);

// One stage's line on stdout as it finishes (status, worst errors, matched elements, time), with
// the first mismatch's assert_close-style message or the reason it did not pass, and its measurements.
void print_stage_line(const StageResult& r);

}  // namespace lmlab
