#include "harness/report/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <map>
#include <stdexcept>

#include "harness/fixture.h"
#include "harness/stages/stages.h"

namespace lmlab {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string run_command(const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return out;
    char buf[256];
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out;
}

// JSON has no inf/NaN: store them as strings so nothing is silently lost.
json num(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    return v;
}

json numbers(const std::vector<double>& values) {
    json a = json::array();
    for (double v : values) a.push_back(num(v));
    return a;
}

json metrics_json(const Metrics& m) {
    json j = {{"elements", m.n},
              {"mismatched", m.n_mismatch},
              {"nonfinite", m.n_nonfinite},
              {"mismatched_share", m.n ? static_cast<double>(m.n_mismatch) / static_cast<double>(m.n) : 0.0},
              {"max_abs", num(m.max_abs)},
              {"max_abs_index", m.max_abs_index},
              {"max_rel", num(m.max_rel)},
              {"max_rel_index", m.max_rel_index},
              {"mean_abs", num(m.mean_abs)},
              {"rmse", num(m.rmse)},
              {"nmse", num(m.nmse)},
              {"cosine", num(m.cosine)},
              {"max_ulp", num(m.max_ulp)},
              {"ulp_near_zero", m.ulp_near_zero},
              {"worst", {{"ours", num(m.ours_at_worst)}, {"torch", num(m.torch_at_worst)}}}};
    // the histogram up to its last non-empty bin (most outputs are within a few ulps)
    std::size_t used = kUlpBins;
    while (used > 1 && m.ulp_bins[used - 1] == 0) --used;
    j["ulp_histogram"] = std::vector<std::size_t>(m.ulp_bins.begin(), m.ulp_bins.begin() + static_cast<std::ptrdiff_t>(used));
    if (m.has_reference64)
        j["vs_float64"] = {{"ours_max_abs", num(m.ours_err64)},
                           {"torch_max_abs", num(m.torch_err64)},
                           {"ratio", num(m.accuracy_ratio)}};
    return j;
}

}  // namespace

double as_double(const json& v) {
    if (v.is_number()) return v.get<double>();
    if (v.is_string()) {
        const auto s = v.get<std::string>();
        if (s == "inf") return INFINITY;
        if (s == "-inf") return -INFINITY;
        return NAN;
    }
    return 0;
}

std::string fmt_num(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_null()) return "-";
    return fmt::format("{:.3g}", v.get<double>());
}

RunMeta collect_meta(const std::string& source_dir, const std::string& golden_dir) {
    RunMeta m;
    m.git_commit = run_command("git -C '" + source_dir + "' rev-parse HEAD 2>/dev/null");
    if (m.git_commit.empty()) m.git_commit = "unknown";
    m.git_dirty = !run_command("git -C '" + source_dir + "' status --porcelain 2>/dev/null").empty();
#ifdef LMLAB_COMPILER
    m.compiler = LMLAB_COMPILER;
#endif
#ifdef LMLAB_CXX_FLAGS
    m.cxx_flags = LMLAB_CXX_FLAGS;
    m.cxx_flags.erase(0, m.cxx_flags.find_first_not_of(' '));
#endif
#ifdef LMLAB_BUILD_TYPE
    m.build_type = LMLAB_BUILD_TYPE;
#endif
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    m.date_utc = date;
    const fs::path manifest = fs::path(golden_dir) / "manifest.json";
    m.manifest_sha256 = fs::exists(manifest) ? sha256_file(manifest.string()) : "";
    m.golden_dir = golden_dir;
    return m;
}

json report_json(const std::vector<StageResult>& results, const RunMeta& meta) {
    json report;
    report["schema_version"] = kReportSchemaVersion;
    report["meta"] = {{"git_commit", meta.git_commit}, {"git_dirty", meta.git_dirty},
                      {"compiler", meta.compiler},     {"cxx_flags", meta.cxx_flags},
                      {"build_type", meta.build_type}, {"date_utc", meta.date_utc},
                      {"manifest_sha256", meta.manifest_sha256}, {"golden_dir", meta.golden_dir},
                      {"selection", meta.selection}};
    json stages_json = json::array();
    for (const StageResult& r : results) {
        const Stage* st = find_stage(r.id);
        json s = {{"id", r.id},
                  {"level", r.level},
                  {"family", st ? st->family : ""},
                  {"fixture", r.fixture},
                  {"status", r.status},
                  {"reason", r.reason},
                  {"seconds", r.seconds},
                  {"tolerance", {{"atol", r.tol.atol}, {"rtol", r.tol.rtol}, {"why", r.tol_why}}},
                  {"worst", {{"max_abs", num(r.worst_max_abs)}, {"max_rel", num(r.worst_max_rel)},
                             {"accuracy_ratio", r.has_reference64 ? num(r.worst_accuracy_ratio) : json(nullptr)}}},
                  {"mismatched", r.n_mismatch},
                  {"elements", r.n_elements},
                  {"first_failure", nullptr}};
        if (r.first_failure) {
            const OutputResult& f = r.outputs[*r.first_failure];
            s["first_failure"] = {{"case", f.case_name}, {"output", f.output}, {"message", f.message}};
        }
        json outs = json::array();
        for (const OutputResult& o : r.outputs) {
            json out = {{"case", o.case_name},
                        {"description", o.case_description},
                        {"output", o.output},
                        {"golden", o.golden},
                        {"shape", o.shape},
                        {"passed", o.metrics.passed()},
                        {"compared_with", o.compared_with.empty() ? "outputs" : o.compared_with},
                        {"tolerance", {{"atol", o.tol.atol}, {"rtol", o.tol.rtol}}},
                        {"metrics", metrics_json(o.metrics)},
                        {"message", o.message}};
            if (!o.by_row.max_abs.empty())
                out["error_by_row"] = {{"max_abs", numbers(o.by_row.max_abs)}, {"rows_per_value", o.by_row.rows_per_value}};
            if (o.heatmap) {
                const Heatmap& h = *o.heatmap;
                out["heatmap"] = {{"rows", h.rows}, {"cols", h.cols}, {"block_rows", h.block_rows}, {"block_cols", h.block_cols},
                                  {"cell_rows", h.cell_rows}, {"cell_cols", h.cell_cols}, {"row_axis", o.heatmap_rows},
                                  {"col_axis", o.heatmap_cols}, {"max_abs", numbers(h.cells)}};
            }
            outs.push_back(std::move(out));
        }
        s["outputs"] = outs;
        s["cases_run"] = r.cases_run;
        if (!r.skipped.empty()) {
            json sk = json::array();
            for (const SkippedCase& k : r.skipped)
                sk.push_back({{"case", k.case_name}, {"description", k.case_description}, {"output", k.output},
                              {"reason", k.reason}});
            s["skipped_cases"] = sk;
        }
        if (!r.series.empty()) {
            json ser = json::array();
            for (const Series& x : r.series) ser.push_back({{"name", x.name}, {"values", numbers(x.values)}, {"about", x.about}});
            s["series"] = ser;
        }
        if (!r.measurements.empty()) {
            json ms = json::array();
            for (const Measurement& m : r.measurements)
                ms.push_back({{"name", m.name}, {"value", num(m.value)}, {"about", m.about}});
            s["measurements"] = ms;
        }
        stages_json.push_back(s);
    }
    report["summary"] = status_summary(stages_json);
    report["stages"] = stages_json;
    return report;
}

std::string report_markdown(const json& report) {
    const json& meta = report["meta"];
    const json& sum = report["summary"];
    std::string md = "# lmlab error report\n\n";
    md += fmt::format("- commit `{}`{}, {} {} ({}), {}\n- fixtures: `{}` (manifest sha256 `{}`)\n\n",
                      meta["git_commit"].get<std::string>().substr(0, 12), meta["git_dirty"].get<bool>() ? " (dirty)" : "",
                      meta["compiler"].get<std::string>(), meta["cxx_flags"].get<std::string>(),
                      meta["build_type"].get<std::string>(), meta["date_utc"].get<std::string>(),
                      meta["golden_dir"].get<std::string>(), meta["manifest_sha256"].get<std::string>().substr(0, 12));
    md += fmt::format("**{} stages: {} pass, {} fail, {} error, {} skipped, {} not run**\n\n", sum["stages"].get<int>(),
                      sum["pass"].get<int>(), sum["fail"].get<int>(), sum["error"].get<int>(),
                      sum["skipped"].get<int>(), sum["not_run"].get<int>());
    md += "How to read it: `max abs`/`max rel` are the greatest differences from PyTorch float32 over all cases;\n"
          "`ours/torch vs f64` is our greatest error against the float64 truth divided by PyTorch's own\n"
          "(below 1: we are closer to the truth than PyTorch float32 is). Tolerance: |ours - torch| <= atol + rtol·|torch|.\n"
          "`max rel` is `inf` where PyTorch's value is exactly 0 and ours is not (GELU far below 0 gives 0 in one and\n"
          "a tiny number in the other): such a stage still passes when atol covers the difference, as `max abs` shows.\n\n";
    md += "| stage | level | status | cases | max abs | max rel | ours/torch vs f64 | atol | rtol | mismatched | time |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const json& s : report["stages"]) {
        // cases run (and skipped whole: see "Cases not run"); "-" in a report from before the count
        std::size_t skipped = 0;
        if (s.contains("skipped_cases"))
            for (const json& k : s["skipped_cases"]) skipped += k["output"].get<std::string>().empty();
        const std::string cases = !s.contains("cases_run") ? "-"
                                  : skipped ? fmt::format("{} (+{} skipped)", s["cases_run"].get<std::size_t>(), skipped)
                                            : std::to_string(s["cases_run"].get<std::size_t>());
        md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {:g} | {:g} | {} / {} | {:.3f} s |\n", s["id"].get<std::string>(),
                          s["level"].get<std::string>(), s["status"].get<std::string>(), cases, fmt_num(s["worst"]["max_abs"]),
                          fmt_num(s["worst"]["max_rel"]), fmt_num(s["worst"]["accuracy_ratio"]),
                          s["tolerance"]["atol"].get<double>(), s["tolerance"]["rtol"].get<double>(),
                          s["mismatched"].get<std::size_t>(), s["elements"].get<std::size_t>(), s["seconds"].get<double>());
    }
    bool any_problem = false;
    for (const json& s : report["stages"]) {
        const std::string status = s["status"];
        if (status == "pass") continue;
        if (!any_problem) md += "\n## Problems\n";
        any_problem = true;
        md += fmt::format("\n### {} — {}\n\n{}\n", s["id"].get<std::string>(), status, s["reason"].get<std::string>());
        if (!s["first_failure"].is_null())
            md += "\n```\n" + s["first_failure"]["message"].get<std::string>() + "\n```\n";
    }
    // Error added vs inherited: stages that also ran pieces teacher-forced (fed PyTorch's inputs)
    for (const json& s : report["stages"]) {
        std::string rows;
        for (const json& o : s["outputs"]) {
            const std::string name = o["output"];
            const std::string suffix = " [teacher-forced]";
            if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
            const std::string base = name.substr(0, name.size() - suffix.size());
            for (const json& f : s["outputs"])
                if (f["case"] == o["case"] && f["output"] == base)
                    rows += fmt::format("| {} | {} | {} | {} |\n", base, fmt_num(f["metrics"]["max_abs"]),
                                        fmt_num(o["metrics"]["max_abs"]),
                                        o["passed"].get<bool>() ? (f["passed"].get<bool>() ? "ok" : "inherited")
                                                                : "added here");
        }
        if (rows.empty()) continue;
        md += fmt::format("\n## {}: error added by each piece vs inherited\n\n"
                          "Free-running: our whole model end to end. Teacher-forced: the same piece fed PyTorch's input "
                          "(and PyTorch's cached keys/values), so its error is only what the piece itself adds.\n\n"
                          "| intermediate | free-running max abs | teacher-forced max abs | verdict |\n|---|---|---|---|\n{}",
                          s["id"].get<std::string>(), rows);
    }

    // Measurements (stages that report numbers rather than compare them, e.g. the cost of int8):
    // one table per set of measurement names, a row per measurement and a column per stage.
    std::vector<std::pair<std::vector<std::string>, std::vector<const json*>>> tables;
    for (const json& s : report["stages"]) {
        if (!s.contains("measurements")) continue;
        std::vector<std::string> names;
        for (const json& m : s["measurements"]) names.push_back(m["name"]);
        auto it = std::find_if(tables.begin(), tables.end(), [&](const auto& t) { return t.first == names; });
        if (it == tables.end()) tables.push_back({names, {&s}});
        else it->second.push_back(&s);
    }
    if (!tables.empty())
        md += "\n## Measurements\n\nNumbers some stages report rather than compare (not pass/fail: such a stage fails only "
              "when one is not finite).\n";
    auto cell = [](std::string text) {  // a '|' inside a table cell must be escaped
        for (std::size_t at = text.find('|'); at != std::string::npos; at = text.find('|', at + 2)) text.insert(at, "\\");
        return text;
    };
    auto value = [](const json& v) {
        if (!v.is_number()) return fmt_num(v);
        const double d = v.get<double>();
        return d == std::floor(d) && std::fabs(d) < 1e15 ? fmt::format("{:.0f}", d) : fmt::format("{:.4g}", d);
    };
    for (const auto& [names, group] : tables) {
        md += "\n| measurement |";
        for (const json* s : group) md += " " + (*s)["id"].get<std::string>() + " |";
        md += " what it is |\n|---|";
        for (std::size_t i = 0; i < group.size(); ++i) md += "---|";
        md += "---|\n";
        for (std::size_t i = 0; i < names.size(); ++i) {
            md += "| " + cell(names[i]) + " |";
            for (const json* s : group) md += " " + value((*s)["measurements"][i]["value"]) + " |";
            md += " " + cell((*group.front())["measurements"][i]["about"].get<std::string>()) + " |\n";
        }
    }

    // Cases a stage did not run (the ONNX conformance cases whose attributes our kernels do not take)
    // and outputs it did not compare: every one with its reason, never only a count.
    bool any_skipped = false;
    for (const json& s : report["stages"]) {
        if (!s.contains("skipped_cases")) continue;
        if (!any_skipped)
            md += "\n## Cases not run\n\nCases (or outputs of a case) a stage did not compare, each with the attribute or "
                  "output that stopped it; the other cases of the stage ran.\n";
        any_skipped = true;
        std::size_t whole = 0;
        for (const json& k : s["skipped_cases"]) whole += k["output"].get<std::string>().empty();
        md += fmt::format("\n### {}: {} cases run, {} skipped\n\n| case | description | output | why not |\n|---|---|---|---|\n",
                          s["id"].get<std::string>(), s.value("cases_run", 0), whole);
        for (const json& k : s["skipped_cases"]) {
            const std::string out = k["output"];
            md += fmt::format("| {} | {} | {} | {} |\n", k["case"].get<std::string>(), cell(k["description"].get<std::string>()),
                              out.empty() ? "(whole case)" : out, cell(k["reason"].get<std::string>()));
        }
    }

    // Every output, failing ones first; long stages (tokenizer cases) are cut, report.json has all.
    constexpr std::size_t kRowsPerStage = 24;
    md += "\n## Every output\n\n| stage | case | output | shape | max abs | max rel | max ulp | cosine | ours/torch vs f64 | ok |\n"
          "|---|---|---|---|---|---|---|---|---|---|\n";
    for (const json& s : report["stages"]) {
        std::vector<const json*> outs;
        for (const json& o : s["outputs"]) if (!o["passed"].get<bool>()) outs.push_back(&o);
        for (const json& o : s["outputs"]) if (o["passed"].get<bool>()) outs.push_back(&o);
        std::size_t n_failing = 0;
        for (const json* o : outs) n_failing += !(*o)["passed"].get<bool>();
        const std::size_t shown = std::min(outs.size(), std::max(n_failing, kRowsPerStage));  // every failure is shown
        for (std::size_t i = 0; i < shown; ++i) {
            const json& o = *outs[i];
            std::string shape;
            for (const auto& d : o["shape"]) shape += (shape.empty() ? "" : "×") + std::to_string(d.get<std::size_t>());
            const json& m = o["metrics"];
            md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", s["id"].get<std::string>(),
                              o["case"].get<std::string>(), o["output"].get<std::string>(), shape, fmt_num(m["max_abs"]),
                              fmt_num(m["max_rel"]), fmt_num(m["max_ulp"]), fmt_num(m["cosine"]),
                              m.contains("vs_float64") ? fmt_num(m["vs_float64"]["ratio"]) : "-",
                              o["passed"].get<bool>() ? "✓" : "✗");
        }
        if (outs.size() > shown)
            md += fmt::format("| {} | … | {} more passing outputs in report.json | | | | | | | |\n",
                              s["id"].get<std::string>(), outs.size() - shown);
    }
    return md;
}

std::vector<std::string> compare_reports(const json& old_report, const json& new_report) {
    std::map<std::string, const json*> old_stages;
    for (const json& s : old_report["stages"]) old_stages[s["id"].get<std::string>()] = &s;
    std::vector<std::string> lines;
    for (const json& s : new_report["stages"]) {
        const std::string id = s["id"];
        const auto it = old_stages.find(id);
        if (it == old_stages.end()) {
            // after a restricted run (--stage, --level) the missing stages are not new
            if (old_report["meta"].value("selection", "*") == "*")
                lines.push_back(fmt::format("{}: new stage ({})", id, s["status"].get<std::string>()));
            continue;
        }
        const json& o = *it->second;
        if (o["status"] != s["status"])
            lines.push_back(fmt::format("{}: status {} -> {}", id, o["status"].get<std::string>(), s["status"].get<std::string>()));
        // errors are comparable only between two runs that measured something (pass or fail)
        auto measured = [](const json& st) { return st["status"] == "pass" || st["status"] == "fail"; };
        const double before = as_double(o["worst"]["max_abs"]), after = as_double(s["worst"]["max_abs"]);
        if (measured(o) && measured(s) && (after > 2 * before || (std::isnan(after) && !std::isnan(before))) && after != 0)
            lines.push_back(fmt::format("{}: worst abs error grew {} -> {} ({})", id, fmt_num(o["worst"]["max_abs"]),
                                        fmt_num(s["worst"]["max_abs"]),
                                        std::isnan(after) || std::isinf(after) ? std::string("now non-finite")
                                        : std::isnan(before)                 ? std::string("was nan")
                                        : before > 0                         ? fmt::format("{:.1f}x", after / before)
                                                                             : std::string("from 0")));
        old_stages.erase(it);
    }
    // a run of selected stages (--stage, --level) leaves the others out on purpose
    if (new_report["meta"].value("selection", "*") == "*")
        for (const auto& [id, _] : old_stages) lines.push_back(id + ": stage disappeared");
    return lines;
}

std::vector<StageChange> stage_changes(const json& old_report, const json& new_report) {
    std::map<std::string, const json*> old_stages;
    for (const json& s : old_report["stages"]) old_stages[s["id"].get<std::string>()] = &s;
    std::vector<StageChange> rows;
    for (const json& s : new_report["stages"]) {
        const auto it = old_stages.find(s["id"].get<std::string>());
        const json* o = it == old_stages.end() ? nullptr : it->second;
        const double a = o ? as_double((*o)["worst"]["max_abs"]) : 0, b = as_double(s["worst"]["max_abs"]);
        rows.push_back({s["id"], o, &s,
                        !o                                 ? "new"
                        : std::isnan(a) || std::isnan(b)   ? (std::isnan(a) && std::isnan(b) ? "=" : "nan")
                        : std::isinf(a) || std::isinf(b)   ? (a == b ? "=" : "inf")
                        : a > 0                            ? fmt::format("{:.2f}x", b / a)
                        : b > 0                            ? "from 0"
                                                           : "="});
    }
    return rows;
}

std::string diff_table(const json& old_report, const json& new_report) {
    std::string out = fmt::format("{:<32} {:>9} {:>9} {:>11} {:>11} {:>8}\n", "stage", "old", "new", "old max abs",
                                  "new max abs", "ratio");
    for (const StageChange& c : stage_changes(old_report, new_report))
        out += fmt::format("{:<32} {:>9} {:>9} {:>11} {:>11} {:>8}\n", c.id,
                           c.old_stage ? (*c.old_stage)["status"].get<std::string>() : "-",
                           (*c.new_stage)["status"].get<std::string>(),
                           fmt_num(c.old_stage ? (*c.old_stage)["worst"]["max_abs"] : json(nullptr)),
                           fmt_num((*c.new_stage)["worst"]["max_abs"]), c.ratio);
    const auto flagged = compare_reports(old_report, new_report);
    out += flagged.empty() ? "no stage changed status or grew its worst error more than 2x\n" : "flagged:\n";
    for (const auto& l : flagged) out += "  " + l + "\n";
    return out;
}

json load_report(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
        throw HarnessError(path + ": a folder, not a report: give the report.json in it (" +
                           (std::filesystem::path(path) / "report.json").string() + ")");
    std::ifstream in(path);
    if (!in) throw HarnessError(path + ": cannot open report");
    try {
        json j = json::parse(in);
        const std::string what = "not an lmlab report (`lmlab check` writes report.json)";
        if (!j.is_object() || !j.contains("schema_version")) throw HarnessError(what + ": no schema_version");
        // version 1 lacks only the plot data (a report from before report.html): still comparable
        if (!j["schema_version"].is_number_integer() || j["schema_version"].get<long long>() < 1 ||
            j["schema_version"].get<long long>() > kReportSchemaVersion)
            throw HarnessError("schema_version " + j["schema_version"].dump() + ": this lmlab reads 1 to " +
                               std::to_string(kReportSchemaVersion));
        if (!j.contains("stages") || !j["stages"].is_array()) throw HarnessError(what + ": no \"stages\" list");
        // every stage as the comparison reads it: a wrong field is named here, not as a JSON type error later
        for (std::size_t i = 0; i < j["stages"].size(); ++i) {
            const json& st = j["stages"][i];
            const std::string at = "stages[" + std::to_string(i) + "]";
            if (!st.is_object() || !st.contains("id") || !st["id"].is_string())
                throw HarnessError(at + " has no string \"id\"");
            if (!st.contains("status") || !st["status"].is_string() ||
                std::find(kStageStatuses.begin(), kStageStatuses.end(), st["status"].get<std::string>()) ==
                    kStageStatuses.end())
                throw HarnessError(at + " (" + st["id"].get<std::string>() + "): \"status\" is " +
                                   (st.contains("status") ? st["status"].dump() : std::string("missing")) +
                                   fmt::format(", expected one of {}", fmt::join(kStageStatuses, ", ")));
        }
        return j;
    } catch (const json::exception& e) {
        throw HarnessError(path + ": not a valid report (" + e.what() + ")");
    } catch (const std::runtime_error& e) {
        throw HarnessError(path + ": " + e.what());
    }
}

json status_summary(const json& stages) {
    json summary = {{"stages", stages.size()}};
    for (const char* k : kStageStatuses) summary[k] = 0;
    for (const json& s : stages) summary[s["status"].get<std::string>()] = summary[s["status"].get<std::string>()].get<int>() + 1;
    return summary;
}

namespace {

// A restricted run (--stage, --level) updates its stages inside the previous report instead of
// replacing it, so report.json always holds the latest result of every stage and the next run
// compares against all of them.
json merge_into(const json& previous, const json& partial) {
    json merged = previous;
    merged["meta"] = partial["meta"];
    // complete again only if the previous report was complete
    const std::string before = previous["meta"].value("selection", "*");
    merged["meta"]["selection"] = before == "*" ? "*" : before + ", " + partial["meta"].value("selection", "*");
    merged["meta"]["updated_by"] = partial["meta"].value("selection", "*");
    // gates that failed now: kept results of the stages that need them would contradict the gating
    std::vector<std::string> failed_gates;
    for (const json& s : partial["stages"])
        if (const Stage* st = find_stage(s["id"].get<std::string>());
            st && (s["status"] == "fail" || s["status"] == "error" || s["status"] == "not_run"))
            for (const std::string& g : stage_provides(*st)) failed_gates.push_back(g);
    for (json& old : merged["stages"]) {
        bool updated = false;
        for (const json& s : partial["stages"]) updated = updated || s["id"] == old["id"];
        if (updated) continue;
        old["kept_from"] = previous["meta"].value("git_commit", "unknown") + " " + previous["meta"].value("date_utc", "");
        const Stage* st = find_stage(old["id"].get<std::string>());
        if (!st) continue;
        for (const std::string& req : stage_requires(*st))
            if (std::find(failed_gates.begin(), failed_gates.end(), req) != failed_gates.end()) {
                old["status"] = "not_run";
                old["reason"] = "'" + req + "' failed in the latest run (" + merged["meta"]["updated_by"].get<std::string>() + ")";
                break;
            }
    }
    for (const json& s : partial["stages"]) {
        bool replaced = false;
        for (json& old : merged["stages"])
            if (old["id"] == s["id"]) {
                old = s;
                replaced = true;
            }
        if (!replaced) merged["stages"].push_back(s);
    }
    merged["summary"] = status_summary(merged["stages"]);
    return merged;
}

}  // namespace

std::vector<std::string> write_report(const std::string& dir, const json& report, std::size_t* stages_written) {
    fs::create_directories(dir);
    const fs::path current = fs::path(dir) / "report.json";
    const fs::path previous = fs::path(dir) / "report.prev.json";
    std::vector<std::string> changes;
    json to_write = report;
    if (fs::exists(current)) {
        try {
            const json old = load_report(current.string());
            changes = compare_reports(old, report);
            if (report["meta"].value("selection", "*") != "*") to_write = merge_into(old, report);
        } catch (const std::exception& e) {
            changes.push_back(std::string("previous report unreadable, not compared: ") + e.what());
        }
        fs::rename(current, previous);
    }
    std::ofstream(current) << to_write.dump(2) << "\n";
    std::ofstream(fs::path(dir) / "report.md") << report_markdown(to_write);
    std::ofstream(fs::path(dir) / "report.html") << report_html(to_write);
    if (stages_written) *stages_written = to_write["stages"].size();
    return changes;
}

void print_stage_line(const StageResult& r) {
    std::string detail;
    if (r.status == "pass" || r.status == "fail")
        detail = fmt::format("max abs {:<9.3g} max rel {:<9.3g} ours/torch vs f64 {:<8} matched {}/{}", r.worst_max_abs,
                             r.worst_max_rel, r.has_reference64 ? fmt::format("{:.3g}", r.worst_accuracy_ratio) : "-",
                             r.n_elements - r.n_mismatch, r.n_elements);
    fmt::print("{:<8} {:<30} {:<10} {} ({:.2f} s)\n", r.status == "not_run" ? "NOT RUN" : r.status, r.id, r.level,
               detail, r.seconds);
    if (r.status == "fail" && r.first_failure) {
        const OutputResult& f = r.outputs[*r.first_failure];
        fmt::print("    {}: {}\n", r.fixture, r.reason);
        std::string msg = f.message, indented = "    ";
        for (char c : msg) indented += c == '\n' ? std::string("\n    ") : std::string(1, c);
        fmt::print("{}\n", indented);
    } else if (!r.reason.empty()) {
        fmt::print("    {}\n", r.reason);
    }
    for (const Measurement& m : r.measurements) fmt::print("    {:<52} {:.6g}\n", m.name, m.value);
    if (!r.skipped.empty()) {
        // every case skipped whole, with its reason; outputs left uncompared grouped by reason (report.md
        // and report.json list each one)
        std::size_t whole = 0;
        std::vector<std::pair<std::string, std::vector<const SkippedCase*>>> by_reason;
        for (const SkippedCase& k : r.skipped) {
            if (k.output.empty()) {
                ++whole;
                continue;
            }
            auto it = std::find_if(by_reason.begin(), by_reason.end(), [&](const auto& g) { return g.first == k.reason; });
            if (it == by_reason.end()) by_reason.push_back({k.reason, {&k}});
            else it->second.push_back(&k);
        }
        fmt::print("    {} cases run, {} skipped{}\n", r.cases_run, whole,
                   whole == r.skipped.size() ? "" : fmt::format(", {} outputs not compared", r.skipped.size() - whole));
        for (const SkippedCase& k : r.skipped)
            if (k.output.empty()) fmt::print("      skipped {}: {}\n", k.case_name, k.reason);
        for (const auto& [reason, group] : by_reason) {
            std::vector<std::string> names, cases;  // the distinct output names and cases
            for (const SkippedCase* k : group) {
                if (std::find(names.begin(), names.end(), k->output) == names.end()) names.push_back(k->output);
                if (std::find(cases.begin(), cases.end(), k->case_name) == cases.end()) cases.push_back(k->case_name);
            }
            fmt::print("      not compared: {} in {}: {}\n", fmt::join(names, ", "),
                       cases.size() == 1 ? cases.front() : fmt::format("{} cases", cases.size()), reason);
        }
    }
    std::fflush(stdout);
}

}  // namespace lmlab
