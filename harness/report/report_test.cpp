// The comparison with the previous report: which changes are flagged, and how a restricted run
// (--stage/--level) updates report.json instead of replacing it.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "harness/report/report.h"

namespace lmlab {

namespace {

using nlohmann::json;

json stage(const std::string& id, const std::string& status, json max_abs, const std::string& level = "kernel") {
    return {{"id", id}, {"level", level}, {"status", status}, {"worst", {{"max_abs", max_abs}}}};
}

json report(std::vector<json> stages, const std::string& selection = "*") {
    json r = {{"schema_version", kReportSchemaVersion},
              {"meta", {{"selection", selection}}},
              {"summary", json::object()},
              {"stages", json::array()}};
    for (auto& s : stages) r["stages"].push_back(s);
    return r;
}

bool has_line(const std::vector<std::string>& lines, const std::string& text) {
    for (const auto& l : lines)
        if (l.find(text) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST(CompareReports, StatusChangeAndTwofoldGrowthAreFlagged) {
    const json old_r = report({stage("a", "pass", 1e-6), stage("b", "pass", 1e-6), stage("c", "pass", 1e-6)});
    const json new_r = report({stage("a", "fail", 1e-6), stage("b", "pass", 3e-6), stage("c", "pass", 1.9e-6)});
    const auto lines = compare_reports(old_r, new_r);
    EXPECT_TRUE(has_line(lines, "a: status pass -> fail"));
    EXPECT_TRUE(has_line(lines, "b: worst abs error grew 1e-06 -> 3e-06 (3.0x)"));
    EXPECT_FALSE(has_line(lines, "c:")) << "1.9x is below the 2x threshold";
    EXPECT_EQ(lines.size(), 2u);
}

TEST(CompareReports, NaNIsFlaggedAndUnmeasuredStagesAreNotCompared) {
    const json old_r = report({stage("a", "pass", 1e-6), stage("b", "not_run", 0.0)});
    const json new_r = report({stage("a", "fail", "nan"), stage("b", "pass", 1e-6)});
    const auto lines = compare_reports(old_r, new_r);
    EXPECT_TRUE(has_line(lines, "a: worst abs error grew 1e-06 -> nan"));
    EXPECT_TRUE(has_line(lines, "b: status not_run -> pass"));
    EXPECT_FALSE(has_line(lines, "b: worst abs error grew")) << "not_run measured nothing";
}

TEST(CompareReports, NewAndDisappearedStages) {
    const json old_r = report({stage("a", "pass", 0.0), stage("gone", "pass", 0.0)});
    EXPECT_TRUE(has_line(compare_reports(old_r, report({stage("a", "pass", 0.0), stage("b", "pass", 0.0)})), "b: new stage"));
    EXPECT_TRUE(has_line(compare_reports(old_r, report({stage("a", "pass", 0.0)})), "gone: stage disappeared"));
    // a restricted run leaves stages out on purpose
    EXPECT_TRUE(compare_reports(old_r, report({stage("a", "pass", 0.0)}, "a")).empty());
}

// A report with every field report_markdown() reads.
json complete(json r, const std::string& selection = "*") {
    r["meta"] = {{"git_commit", "x"}, {"git_dirty", false}, {"compiler", ""}, {"cxx_flags", ""}, {"build_type", ""},
                 {"date_utc", ""}, {"manifest_sha256", ""}, {"golden_dir", ""}, {"selection", selection}};
    json summary = {{"stages", r["stages"].size()}, {"pass", 0}, {"fail", 0}, {"error", 0}, {"skipped", 0}, {"not_run", 0}};
    for (auto& s : r["stages"]) {
        summary[s["status"].get<std::string>()] = summary[s["status"].get<std::string>()].get<int>() + 1;
        s["fixture"] = "f.h5";
        s["reason"] = "";
        s["seconds"] = 0.0;
        s["tolerance"] = {{"atol", 0.0}, {"rtol", 0.0}, {"why", ""}};
        s["worst"]["max_rel"] = 0.0;
        s["worst"]["accuracy_ratio"] = nullptr;
        s["mismatched"] = 0;
        s["elements"] = 1;
        s["first_failure"] = nullptr;
        s["outputs"] = json::array();
    }
    r["summary"] = summary;
    return r;
}

std::filesystem::path scratch_dir() {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("lmlab_report_test_" + std::to_string(::getpid()) + "_" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    return dir;
}

TEST(WriteReport, RestrictedRunUpdatesItsStagesInPlace) {
    const auto dir = scratch_dir();
    const json full = complete(report({stage("a", "pass", 1e-6), stage("b", "pass", 2e-6)}));
    EXPECT_TRUE(write_report(dir.string(), full).empty());

    const json partial = complete(report({stage("b", "fail", 2e-6)}), "b");
    std::size_t in_report = 0;
    const auto changes = write_report(dir.string(), partial, &in_report);
    EXPECT_EQ(in_report, 2u) << "the report written holds both stages, which check then says";
    EXPECT_TRUE(has_line(changes, "b: status pass -> fail"));
    EXPECT_EQ(changes.size(), 1u) << "stage a was not run, so it neither changed nor disappeared";

    const json written = load_report((dir / "report.json").string());
    ASSERT_EQ(written["stages"].size(), 2u) << "the restricted run kept stage a";
    EXPECT_EQ(written["stages"][0]["status"], "pass");
    EXPECT_EQ(written["stages"][1]["status"], "fail");
    EXPECT_EQ(written["summary"]["pass"], 1);
    EXPECT_EQ(written["summary"]["fail"], 1);
    EXPECT_EQ(written["meta"]["updated_by"], "b");
    EXPECT_TRUE(std::filesystem::exists(dir / "report.prev.json"));
    EXPECT_TRUE(std::filesystem::exists(dir / "report.md"));
    EXPECT_TRUE(written["stages"][0].contains("kept_from")) << "stage a's result is from the earlier run";
    std::filesystem::remove_all(dir);
}

TEST(WriteReport, KeptStagesAboveANewFailureBecomeNotRun) {
    // GPT-2's GELU kernel fails in a restricted run: the GPT-2 layer's old "pass" would contradict
    // the gating; LLaMA's layer, which never calls GELU, keeps its pass (gating is per family)
    const auto dir = scratch_dir();
    write_report(dir.string(), complete(report({stage("kernel.gelu_tanh", "pass", 1e-6),
                                                stage("layer.block.gpt2", "pass", 1e-6, "layer"),
                                                stage("layer.block", "pass", 1e-6, "layer")})));
    write_report(dir.string(), complete(report({stage("kernel.gelu_tanh", "fail", 1.0)}), "kernel.gelu_tanh"));
    const json written = load_report((dir / "report.json").string());
    EXPECT_EQ(written["stages"][1]["status"], "not_run");
    EXPECT_NE(written["stages"][1]["reason"].get<std::string>().find("'kernel.gpt2' failed"), std::string::npos);
    EXPECT_EQ(written["stages"][2]["status"], "pass") << "LLaMA's block does not use GELU";
    std::filesystem::remove_all(dir);
}

TEST(WriteReport, TwoRestrictedRunsInAFreshFolderStayPartial) {
    // partial + partial is still partial: the next full run must not call every other stage new...
    const auto dir = scratch_dir();
    write_report(dir.string(), complete(report({stage("a", "pass", 1e-6)}), "a"));
    write_report(dir.string(), complete(report({stage("b", "pass", 1e-6)}), "b"));
    const json written = load_report((dir / "report.json").string());
    EXPECT_NE(written["meta"]["selection"], "*");
    const auto changes =
        write_report(dir.string(), complete(report({stage("a", "pass", 1e-6), stage("b", "pass", 1e-6), stage("c", "pass", 0.0)})));
    EXPECT_FALSE(has_line(changes, "new stage")) << "the previous report never claimed to hold every stage";
    std::filesystem::remove_all(dir);
}

// ---- schema 2: the plot data, and the pages drawn from it -------------------------------------------

TEST(ReportJson, PlotDataIsWritten) {
    StageResult r;
    r.id = "kernel.matvec";
    r.level = "kernel";
    r.status = "fail";
    OutputResult o;
    o.case_name = "case_000";
    o.output = "y";
    o.shape = {2, 3};
    o.metrics.n = 6;
    o.metrics.n_mismatch = 1;
    o.metrics.ulp_bins[0] = 4;
    o.metrics.ulp_bins[3] = 2;
    o.by_row = {{0.5, NAN}, 1};
    o.heatmap = Heatmap{2, 3, 1, 1, 2, 3, {0, 0, 0.5, 0, 0, NAN}};
    o.heatmap_rows = "dim 0";
    o.heatmap_cols = "dim 1 (3)";
    r.outputs.push_back(o);
    r.first_failure = 0;
    r.series.push_back({"gap", {1.0, INFINITY}, "about"});
    const json j = report_json({r}, RunMeta{});
    EXPECT_EQ(j["schema_version"], 2);
    const json& out = j["stages"][0]["outputs"][0];
    EXPECT_EQ(out["metrics"]["ulp_histogram"], json({4, 0, 0, 2})) << "trimmed after the last non-empty bin";
    EXPECT_EQ(out["error_by_row"]["max_abs"], json({0.5, "nan"}));
    EXPECT_EQ(out["error_by_row"]["rows_per_value"], 1);
    EXPECT_EQ(out["heatmap"]["cell_rows"], 2);
    EXPECT_EQ(out["heatmap"]["cell_cols"], 3);
    EXPECT_EQ(out["heatmap"]["max_abs"], json({0, 0, 0.5, 0, 0, "nan"}));
    EXPECT_EQ(out["heatmap"]["row_axis"], "dim 0");
    EXPECT_EQ(j["stages"][0]["series"][0]["values"], json({1.0, "inf"}));
    EXPECT_EQ(j["stages"][0]["series"][0]["name"], "gap");
}

TEST(LoadReport, ReadsSchemaOneAndRefusesNewer) {
    const auto dir = scratch_dir();
    std::filesystem::create_directories(dir);
    json r = complete(report({stage("a", "pass", 1e-6)}));
    r["schema_version"] = 1;
    std::ofstream(dir / "v1.json") << r.dump();
    EXPECT_NO_THROW(load_report((dir / "v1.json").string())) << "schema 1 lacks only the plot data";
    r["schema_version"] = kReportSchemaVersion + 1;
    std::ofstream(dir / "v3.json") << r.dump();
    try {
        load_report((dir / "v3.json").string());
        FAIL() << "a newer schema was accepted";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("v3.json"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("schema_version"), std::string::npos) << e.what();
    }
    std::filesystem::remove_all(dir);
}

// What is not a report, or a report with a field the comparison cannot read, is refused naming the
// file and the field, not with a JSON library's type error (lmlab diff, check's merge).
TEST(LoadReport, WhatIsNotAReportIsNamed) {
    const auto dir = scratch_dir();
    std::filesystem::create_directories(dir);
    const json good = complete(report({stage("a", "pass", 1e-6)}));
    auto with = [&](const char* field, const json& value) {
        json r = good;
        if (value.is_null()) r["stages"][0].erase(field);
        else r["stages"][0][field] = value;
        return r.dump();
    };
    const std::vector<std::pair<std::string, std::string>> cases = {
        {R"({"a": 1})", "not an lmlab report"},
        {"[]", "not an lmlab report"},
        {R"({"schema_version": 2})", "no \"stages\" list"},
        {R"({"schema_version": "2", "stages": []})", "schema_version \"2\""},
        {with("status", nullptr), "stages[0] (a): \"status\" is missing"},
        {with("status", "weird"), "\"status\" is \"weird\", expected one of pass"},
        {with("id", 7), "stages[0] has no string \"id\""},
    };
    for (std::size_t i = 0; i < cases.size(); ++i) {
        const auto file = dir / ("r" + std::to_string(i) + ".json");
        std::ofstream(file) << cases[i].first;
        try {
            load_report(file.string());
            ADD_FAILURE() << cases[i].first << ": accepted";
        } catch (const HarnessError& e) {
            EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(cases[i].second), std::string::npos) << e.what();
        }
    }
    try {
        load_report(dir.string());
        ADD_FAILURE() << "a folder accepted";
    } catch (const HarnessError& e) {
        EXPECT_NE(std::string(e.what()).find("a folder, not a report"), std::string::npos) << e.what();
    }
    std::filesystem::remove_all(dir);
}

// A report with a failing kernel (one output with a heatmap), a stage it blocks and a passing one.
json failing_report() {
    json r = complete(report({stage("kernel.rope", "fail", 1.5), stage("layer.block", "not_run", 0.0, "layer"),
                              stage("tokenizer.gpt2", "pass", 0.0, "tokenizer")}));
    r["stages"][0]["reason"] = "first mismatch: case_001, output 'y' <|endoftext|>";
    r["stages"][0]["first_failure"] = {{"case", "case_001"}, {"output", "y"}, {"message", "Tensor-likes are not close! a < b"}};
    r["stages"][0]["outputs"].push_back(
        {{"case", "case_001"}, {"description", "pos 1"}, {"output", "y"}, {"golden", "y"}, {"shape", {8}}, {"passed", false},
         {"metrics", {{"max_abs", 1.5}, {"max_ulp", 1e6}, {"mismatched", 8}, {"elements", 8}, {"ulp_histogram", {0, 8}}}},
         {"message", "m"},
         {"heatmap", {{"rows", 2}, {"cols", 4}, {"block_rows", 1}, {"block_cols", 1}, {"cell_rows", 2}, {"cell_cols", 4},
                      {"row_axis", "head"}, {"col_axis", "element of the head"},
                      {"max_abs", {0, 1.5, 0.25, "nan", 0, 0, 0, 1}}}}});
    r["stages"][1]["reason"] = "'kernel.llama' failed (a stage this one needs)";
    return r;
}

TEST(ReportHtml, SummaryStatusesAndProblemsAreInThePage) {
    const json r = failing_report();
    const std::string page = report_html(r);
    EXPECT_NE(page.find("data-key=\"fail\">1<"), std::string::npos);
    EXPECT_NE(page.find("data-key=\"not_run\">1<"), std::string::npos);
    EXPECT_NE(page.find("data-key=\"stages\">3<"), std::string::npos);
    EXPECT_NE(page.find("data-stage=\"kernel.rope\" data-status=\"fail\" data-max-abs=\"1.5\""), std::string::npos);
    EXPECT_NE(page.find("data-stage=\"layer.block\" data-status=\"not_run\"><code>layer.block</code>"), std::string::npos);
    // one anchor per stage (the summary chart links to #stage-<id>): the failing stage's plots, the
    // blocked stage's entry under Problems, the passing stage's table row
    for (const std::string id : {"kernel.rope", "layer.block", "tokenizer.gpt2"}) {
        const std::string anchor = "id=\"stage-" + id + "\"";
        const auto first = page.find(anchor);
        EXPECT_NE(first, std::string::npos) << id;
        EXPECT_EQ(page.find(anchor, first + 1), std::string::npos) << id << " has two anchors";
    }
    EXPECT_NE(page.find("<section class=\"stage\" id=\"stage-kernel.rope\""), std::string::npos);
    EXPECT_NE(page.find("<tr id=\"stage-tokenizer.gpt2\""), std::string::npos);
    EXPECT_NE(page.find("data-plot=\"kernel.rope.heatmap.case_001.y\""), std::string::npos) << "the failing output's heatmap";
    EXPECT_NE(page.find("data-plot=\"summary\""), std::string::npos);
    // text from the report is escaped: a tokenizer's special token must not become a tag
    EXPECT_EQ(page.find("<|endoftext|>"), std::string::npos);
    EXPECT_NE(page.find("&lt;|endoftext|&gt;"), std::string::npos);
    EXPECT_NE(page.find("a &lt; b"), std::string::npos);
    // no network: the policy forbids everything but inline content
    EXPECT_NE(page.find("Content-Security-Policy\" content=\"default-src 'none'"), std::string::npos);
    EXPECT_EQ(page.find("http://"), page.find("http://www.w3.org/2000/svg")) << "no address but the SVG namespace";
    EXPECT_EQ(page, report_html(r)) << "same report, same bytes";
}

TEST(ReportHtml, TheLongestStageIdFitsLeftOfTheSummaryPlot) {
    // generation.speculative.early_exit.stories260k (45 characters) was cut on the left
    const std::string id = "generation.speculative.early_exit.stories260k";
    json r = complete(report({stage(id, "pass", 0.0, "generation"), stage("kernel.add", "pass", 0.0)}));
    const std::string page = report_html(r);
    const std::string text = "text-anchor=\"end\">" + id + "</text>";
    const auto at = page.find(text);
    ASSERT_NE(at, std::string::npos);
    const auto x = page.rfind("x=\"", at);
    const double right_edge = std::stod(page.substr(x + 3));
    EXPECT_GE(right_edge, 6.2 * static_cast<double>(id.size())) << "the id's right end must leave room for its text";
}

TEST(ReportHtml, TheTickIsWhatTheWorstElementWasAllowed) {
    // a perplexity of 60 within rtol: a dot past atol must not look like a failure beside a "pass"
    json r = complete(report({stage("generation.q8_0.cost", "pass", 0.004, "generation")}));
    r["stages"][0]["tolerance"] = {{"atol", 1e-4}, {"rtol", 1e-4}, {"why", "w"}};
    r["stages"][0]["outputs"].push_back({{"case", "case_000"}, {"output", "ppl_float"}, {"golden", "ppl_float"}, {"shape", {1}},
                                         {"passed", true}, {"tolerance", {{"atol", 1e-4}, {"rtol", 1e-4}}},
                                         {"metrics", {{"max_abs", 0.004}, {"worst", {{"ours", 60.004}, {"torch", 60.0}}}}}});
    r["stages"][0]["measurements"] = json::array({{{"name", "m"}, {"value", 1.0}, {"about", "a"}}});
    const std::string page = report_html(r);
    EXPECT_NE(page.find("allowed at the worst element: 0.0061"), std::string::npos);
    EXPECT_NE(page.find("+ 1 measured"), std::string::npos);
}

TEST(ReportHtml, NanCellOfAHeatmapIsDrawnNotDropped) {
    const std::string page = report_html(failing_report());
    EXPECT_NE(page.find("fill=\"#ff00ff\""), std::string::npos) << "the NaN cell (magenta)";
    EXPECT_NE(page.find("fill=\"#ffffff\"><title>rows 0..0, columns 0..0: 0</title>"), std::string::npos) << "a 0 cell is white";
}

TEST(DiffHtml, FlaggedStageShowsBeforeAndAfter) {
    json before = failing_report();
    before["stages"][0]["status"] = "pass";
    before["stages"][0]["worst"]["max_abs"] = 1e-6;
    const std::string page = diff_html(before, failing_report(), "old.json", "new.json");
    EXPECT_NE(page.find("data-stage=\"kernel.rope\" data-old-status=\"pass\" data-new-status=\"fail\""), std::string::npos);
    EXPECT_NE(page.find("<li>kernel.rope: status pass -&gt; fail</li>"), std::string::npos);
    EXPECT_NE(page.find("data-plot=\"after.kernel.rope.heatmap.case_001.y\""), std::string::npos);
    EXPECT_NE(page.find("data-plot=\"diff\""), std::string::npos);
}

}  // namespace lmlab
