// lmlab: the harness binary.
//   lmlab list                       the stages, in level order
//   lmlab check [--stage GLOB] ...   run stages against the golden fixtures, write the report
//   lmlab diff OLD.json NEW.json     compare two reports stage by stage
//   lmlab verify-fixtures            are the fixtures present and current?
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <iostream>

#include "fixture.h"
#include "report.h"
#include "runner.h"
#include "stages.h"

namespace fs = std::filesystem;
using namespace lmlab;

namespace {

constexpr int kExitSkipped = 77;  // every selected stage skipped: ctest's SKIP_RETURN_CODE

std::string default_shared_dir() {
    if (const char* env = std::getenv("LMLAB_SHARED")) return env;
    return (fs::path(LMLAB_SOURCE_DIR) / ".." / "shared").lexically_normal().string();
}

void print_stage_line(const StageResult& r) {
    std::string detail;
    if (r.status == "pass" || r.status == "fail")
        detail = fmt::format("max abs {:<9.3g} max rel {:<9.3g} ours/torch vs f64 {:<6.3g}", r.worst_max_abs,
                             r.worst_max_rel, r.worst_accuracy_ratio);
    fmt::print("{:<8} {:<30} {:<10} {} ({:.2f} s)\n", r.status == "not_run" ? "NOT RUN" : r.status, r.id, r.level,
               detail, r.seconds);
    if (r.status == "fail") {
        const OutputResult& f = r.outputs[*r.first_failure];
        fmt::print("    {}: {}\n", r.fixture, r.reason);
        std::string msg = f.message, indented = "    ";
        for (char c : msg) indented += c == '\n' ? std::string("\n    ") : std::string(1, c);
        fmt::print("{}\n", indented);
    } else if (!r.reason.empty()) {
        fmt::print("    {}\n", r.reason);
    }
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"lmlab: a readable LLM inference engine, checked number by number against PyTorch"};
    app.require_subcommand(1);

    std::string golden_dir = (fs::path(LMLAB_SOURCE_DIR) / "golden").string();
    std::string report_dir = (fs::path(LMLAB_SOURCE_DIR) / "reports").string();
    std::string shared_dir = default_shared_dir();
    const std::string scripts_dir = (fs::path(LMLAB_SOURCE_DIR) / "scripts").string();

    auto* list = app.add_subcommand("list", "List the stages in level order");

    RunOptions opt;
    bool no_report = false;
    auto* check = app.add_subcommand("check", "Run stages against the golden fixtures and write the error report");
    check->add_option("--stage", opt.stage_glob, "Only stages whose id matches this glob (e.g. 'kernel.*')");
    check->add_option("--level", opt.level, "Only this level")->check(CLI::IsMember(levels()));
    check->add_option("--golden", golden_dir, "Fixture folder")->capture_default_str();
    check->add_option("--report", report_dir, "Report folder")->capture_default_str();
    check->add_option("--shared", shared_dir, "Folder with models/ and tokenizers/ (env LMLAB_SHARED)")->capture_default_str();
    check->add_flag("--keep-going", opt.keep_going, "Run higher levels even when a lower level failed");
    check->add_flag("--no-report", no_report, "Do not write report files");

    std::string old_path, new_path;
    auto* diff = app.add_subcommand("diff", "Compare two report.json files stage by stage");
    diff->add_option("old", old_path, "Older report.json")->required();
    diff->add_option("new", new_path, "Newer report.json")->required();

    auto* verify = app.add_subcommand("verify-fixtures", "Check that the fixtures exist and match the exporter");
    verify->add_option("--golden", golden_dir, "Fixture folder")->capture_default_str();

    std::string lmlab_path;
    auto* ctest_script = app.add_subcommand("ctest-script", "Print the CTest code that declares one test per stage (used by the build)");
    ctest_script->group("");  // internal
    ctest_script->add_option("--binary", lmlab_path)->required();
    ctest_script->add_option("--report", report_dir);

    CLI11_PARSE(app, argc, argv);

    try {
        if (*list) {
            for (const Stage& s : stages())
                fmt::print("{:<24} {:<10} {:<28} atol {:<7g} rtol {:<7g} {}\n", s.id, s.level, s.fixture, s.tol.atol,
                           s.tol.rtol, s.tol_why);
            return 0;
        }
        if (*verify) {
            check_manifest(golden_dir, scripts_dir);
            fmt::print("fixtures in {} are present and current (exporter {})\n", golden_dir,
                       exporter_sha256(scripts_dir).substr(0, 12));
            return 0;
        }
        if (*diff) {
            fmt::print("{}", diff_table(load_report(old_path), load_report(new_path)));
            return 0;
        }
        if (*ctest_script) {
            // One test per stage. Gating with CTest fixtures: every stage of level L is a setup test
            // of fixture "level.L", and requires "level.K" for every level K below it, so one failing
            // kernel stage turns every layer/model/generation test into "Not Run".
            for (const Stage& s : stages()) {
                const std::string name = std::string("stage.") + s.id;
                std::string required = "golden";
                for (const std::string& req : level_requires(s.level)) required += ";level." + req;
                fmt::print("add_test([=[{}]=] \"{}\" check --stage [=[{}]=] --report \"{}/ctest/{}\")\n", name, lmlab_path,
                           s.id, report_dir, s.id);
                fmt::print("set_tests_properties([=[{}]=] PROPERTIES LABELS \"{}\" FIXTURES_SETUP \"level.{}\" "
                           "FIXTURES_REQUIRED \"{}\" SKIP_RETURN_CODE {})\n",
                           name, s.level, s.level, required, kExitSkipped);
            }
            return 0;
        }
        if (*check) {
            check_manifest(golden_dir, scripts_dir);  // refuse stale or damaged fixtures up front
            opt.golden_dir = golden_dir;
            opt.shared_dir = shared_dir;
            const auto results = run_stages(opt, print_stage_line);
            if (results.empty()) {
                fmt::print(stderr, "no stage matches --stage '{}'{}; `lmlab list` shows them\n", opt.stage_glob,
                           opt.level.empty() ? "" : " at level " + opt.level);
                return 2;
            }
            int pass = 0, fail = 0, skipped = 0, not_run = 0;
            for (const auto& r : results) {
                if (r.status == "pass") ++pass;
                else if (r.status == "skipped") ++skipped;
                else if (r.status == "not_run") ++not_run;
                else ++fail;
            }
            fmt::print("\n{} stages: {} passed, {} failed, {} skipped, {} not run\n", results.size(), pass, fail, skipped,
                       not_run);
            if (!no_report) {
                const auto report = report_json(results, collect_meta(LMLAB_SOURCE_DIR, golden_dir));
                const auto changes = write_report(report_dir, report);
                fmt::print("report: {}/report.md and report.json\n", report_dir);
                if (!changes.empty()) {
                    fmt::print("changed since the previous report ({}/report.prev.json):\n", report_dir);
                    for (const auto& c : changes) fmt::print("  ! {}\n", c);
                }
            }
            if (fail) return 1;
            return (skipped == static_cast<int>(results.size())) ? kExitSkipped : 0;
        }
    } catch (const std::exception& e) {
        fmt::print(stderr, "lmlab: {}\n", e.what());
        return 2;
    }
    return 0;
}
