// The stages and their reports: lmlab list, check, diff, verify-fixtures, ctest-script.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fnmatch.h>
#include <fmt/format.h>

#include "harness/cli/commands.h"
#include "harness/fixture.h"
#include "harness/report/report.h"
#include "harness/stages/stages.h"
#include "model/family.h"
#include <fmt/ranges.h>
#include "model/testing/shared_dir.h"

namespace fs = std::filesystem;

namespace lmlab {

Paths default_paths() {
    const fs::path src(LMLAB_SOURCE_DIR);
    return {(src / "golden").string(), (src / "reports").string(),
            default_shared_dir(), (src / "scripts").string()};
}

int cmd_list(bool json, bool families) {
    if (families && !json) {  // the family rows (model/family.h), as a table
        for (const Family* f : lmlab::families()) {
            fmt::print("{:<10} {}\n           config.json model_type: {}; intermediates: {}\n           kernels: {}\n", f->name,
                       f->about, fmt::join(f->hf_model_types, ", "), fmt::join(f->intermediates, " "), fmt::join(f->kernels, " "));
        }
        finish_stdout();
        return kExitOk;
    }
    if (json) {
        // what the exporter reads (scripts/lmlab_ref): the stage table and the family rows, one source
        fmt::print("{}\n", stage_table_json().dump(1));
    } else {
        std::size_t id_width = 0;  // the longest id sets the first column
        for (const Stage& s : stages()) id_width = std::max(id_width, std::string(s.id).size());
        for (const Stage& s : stages())
            fmt::print("{:<{}} {:<10} {:<14} {:<32} atol {:<7g} rtol {:<7g} {}\n", s.id, id_width, s.level,
                       stage_family_label(s), s.fixture, s.tol.atol, s.tol.rtol, s.tol_why);
    }
    finish_stdout();
    return kExitOk;
}

// lmlab check: run the stages, print a line each, write the report.
int cmd_check(RunOptions opt, const Paths& paths, bool no_report) {
    // --shared is checked as an option; the environment's folder is said here, or a typo in it would
    // only show as skipped stages
    std::error_code ec;
    if (const std::string env = shared_dir_or("");  // $LMLAB_SHARED by the one rule, "" when unset
        !env.empty() && paths.shared == env && !fs::is_directory(env, ec))
        fmt::print(stderr, "warning: LMLAB_SHARED={} is not a folder: the stages that need models/ or tokenizers/ "
                           "from it are skipped\n", env);
    for (const std::string& g : opt.except_globs)  // a mistyped --except would otherwise leave in what it meant to drop
        if (std::none_of(stages().begin(), stages().end(),
                         [&](const Stage& s) { return fnmatch(g.c_str(), s.id, 0) == 0; }))
            fmt::print(stderr, "warning: --except '{}' matches no stage id (`lmlab list` shows them)\n", g);
    // refuse stale or damaged fixtures up front: the exporter's hash, and the files these stages read;
    // before the report folder is made, so that a refused check leaves no empty folder behind
    const std::set<std::string> files = golden_files_read(selected_stages(opt));
    check_manifest(paths.golden, paths.scripts, /*model_files=*/false, &files);
    if (!no_report) prepare_output_dir(paths.reports, "--report");  // a wrong folder fails now, not after every stage
    opt.golden_dir = paths.golden;
    opt.shared_dir = paths.shared;
    opt.exporter_sha256 = exporter_sha256(paths.scripts);
    const auto results = run_stages(opt, print_stage_line);
    if (results.empty()) {
        std::string excepts;  // the --except globs took part: say them, or '*' looks like it matched nothing
        for (const std::string& g : opt.except_globs) excepts += " --except '" + g + "'";
        throw UsageError(fmt::format("no stage is left by --stage '{}'{}{}; `lmlab list` shows them", opt.stage_glob,
                                     opt.level.empty() ? "" : " --level " + opt.level, excepts));
    }
    auto meta = collect_meta(LMLAB_SOURCE_DIR, paths.golden);
    meta.selection = opt.stage_glob + (opt.level.empty() ? "" : " level " + opt.level);
    for (const std::string& g : opt.except_globs) meta.selection += " except " + g;
    const auto report = report_json(results, meta);
    const auto& sum = report["summary"];
    const int n = sum["stages"].get<int>(), fail = sum["fail"].get<int>(), error = sum["error"].get<int>(),
              skipped = sum["skipped"].get<int>();
    fmt::print("\n{} stage{}: {} passed, {} failed, {} errors, {} skipped, {} not run\n", n, n == 1 ? "" : "s",
               sum["pass"].get<int>(), fail, error, skipped, sum["not_run"].get<int>());
    if (!no_report) {
        const auto t0 = std::chrono::steady_clock::now();
        std::size_t in_report = 0;
        const auto changes = write_report(paths.reports, report, &in_report);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::error_code ec;
        const auto html_bytes = fs::file_size(fs::path(paths.reports) / "report.html", ec);
        // a restricted run updates its stages inside the previous report: say so, or "1 stage" above
        // and a report of 220 look like a contradiction
        const std::string merged =
            in_report > static_cast<std::size_t>(n)
                ? fmt::format("; the {} stage{} run now, updated in the previous report, which holds {}", n,
                              n == 1 ? "" : "s", in_report)
                : "";
        fmt::print("report: {}/report.html (plots, {:.0f} KB; also report.md, report.json; written in {:.2f} s{})\n",
                   paths.reports, ec ? 0.0 : static_cast<double>(html_bytes) / 1024.0, seconds, merged);
        if (!changes.empty()) {
            fmt::print("changed since the previous report ({}/report.prev.json):\n", paths.reports);
            for (const auto& c : changes) fmt::print("  ! {}\n", c);
        }
    }
    finish_stdout();
    if (fail || error) return kExitFailed;
    return (skipped == n) ? kExitSkipped : kExitOk;
}

int cmd_diff(const std::string& old_path, const std::string& new_path, const std::string& page_path) {
    const auto old_report = load_report(old_path), new_report = load_report(new_path);
    const std::string page = page_path.empty() ? (fs::path(new_path).parent_path() / "diff.html").string() : page_path;
    OutputFile out(page, "--html");
    fmt::print("{}", diff_table(old_report, new_report));
    out.write(diff_html(old_report, new_report, old_path, new_path));
    out.close();
    fmt::print("diff page: {}\n", page);
    finish_stdout();
    return kExitOk;
}

int cmd_verify_fixtures(const Paths& paths) {
    check_manifest(paths.golden, paths.scripts, /*model_files=*/true);
    fmt::print("fixtures in {} are present and current (exporter {})\n", paths.golden,
               exporter_sha256(paths.scripts).substr(0, 12));
    finish_stdout();
    return kExitOk;
}

int cmd_ctest_script(const std::string& lmlab_path, const std::string& report_dir) {
    // One test per stage. Gating with CTest fixtures, per family: every stage sets up the gates it
    // provides ("kernel.gpt2", "gpt2.layer", ...) and requires the gates below it of its own family
    // (stage_requires), so one failing kernel turns every test of the families that use it into
    // "Not Run", and nothing else.
    for (const Stage& s : stages()) {
        const std::string name = std::string("stage.") + s.id;
        std::string provides, required = "golden";
        for (const std::string& g : stage_provides(s)) provides += (provides.empty() ? "" : ";") + g;
        for (const std::string& g : stage_requires(s)) required += ";" + g;
        fmt::print("add_test([=[{}]=] \"{}\" check --stage [=[{}]=] --report \"{}/ctest/{}\")\n", name, lmlab_path, s.id,
                   report_dir, s.id);
        fmt::print("set_tests_properties([=[{}]=] PROPERTIES LABELS \"{}\" FIXTURES_SETUP \"{}\" "
                   "FIXTURES_REQUIRED \"{}\" SKIP_RETURN_CODE {})\n",
                   name, s.level, provides, required, kExitSkipped);
    }
    finish_stdout();
    return kExitOk;
}

}  // namespace lmlab
