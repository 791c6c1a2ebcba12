// The comparison with the previous report: which changes are flagged, and how a restricted run
// (--stage/--level) updates report.json instead of replacing it.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "report.h"

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
    const auto changes = write_report(dir.string(), partial);
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

}  // namespace lmlab
