// Corrupt and stale fixtures: every kind of bad input gives an error that names the file, the
// dataset, what was expected and what was found.
#include <gtest/gtest.h>

#include <H5Cpp.h>

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "harness/fixture.h"
#include "harness/report/report.h"
#include "harness/runner.h"
#include "harness/stages/stages.h"

namespace lmlab {

namespace fs = std::filesystem;

namespace {

// A scratch folder per test, removed afterwards.
class FixtureFiles : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("lmlab_fixture_test_" + std::to_string(::getpid()) + "_" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_ / "kernel");
    }
    void TearDown() override { fs::remove_all(dir_); }

    static void write(H5::Group& g, const std::string& name, const std::vector<hsize_t>& dims, float value) {
        std::size_t n = 1;
        for (hsize_t d : dims) n *= d;
        std::vector<float> data(n, value);
        H5::DataSet ds = g.createDataSet(name, H5::PredType::IEEE_F32LE,
                                         H5::DataSpace(static_cast<int>(dims.size()), dims.data()));
        ds.write(data.data(), H5::PredType::NATIVE_FLOAT);
    }
    static void str_attr(H5::H5Object& o, const std::string& name, const std::string& value) {
        H5::StrType t(H5::PredType::C_S1, H5T_VARIABLE);
        o.createAttribute(name, t, H5::DataSpace(H5S_SCALAR)).write(t, value);
    }

    // A matvec fixture with W: w_dims, x: [4], y: [3]; `with_w` false leaves W out.
    std::string write_matvec(const std::vector<hsize_t>& w_dims, bool with_w = true) {
        const std::string path = (dir_ / "kernel" / "matvec.h5").string();
        H5::H5File f(path, H5F_ACC_TRUNC);
        str_attr(f, "fixture", "kernel/matvec.h5");
        str_attr(f, "level", "kernel");
        long version = 1;
        f.createAttribute("format_version", H5::PredType::STD_I64LE, H5::DataSpace(H5S_SCALAR))
            .write(H5::PredType::NATIVE_LONG, &version);
        H5::Group c = f.createGroup("case_000");
        H5::Group in = c.createGroup("inputs"), out = c.createGroup("outputs");
        if (with_w) write(in, "W", w_dims, 1.0f);
        write(in, "x", {4}, 1.0f);
        write(out, "y", {3}, 4.0f);
        return path;
    }

    // A matvec fixture of n cases (W [3, 4] and x [4] all ones, so y = 4): case i's golden y holds
    // golden_y(i), so a case whose value is not 4 fails in all 3 elements.
    void write_matvec_cases(std::size_t n, float (*golden_y)(std::size_t)) {
        H5::H5File f((dir_ / "kernel" / "matvec.h5").string(), H5F_ACC_TRUNC);
        str_attr(f, "fixture", "kernel/matvec.h5");
        str_attr(f, "level", "kernel");
        long version = 1;
        f.createAttribute("format_version", H5::PredType::STD_I64LE, H5::DataSpace(H5S_SCALAR))
            .write(H5::PredType::NATIVE_LONG, &version);
        for (std::size_t i = 0; i < n; ++i) {
            H5::Group c = f.createGroup(fmt::format("case_{:03d}", i));
            H5::Group in = c.createGroup("inputs"), out = c.createGroup("outputs");
            write(in, "W", {3, 4}, 1.0f);
            write(in, "x", {4}, 1.0f);
            write(out, "y", {3}, golden_y(i));
        }
    }

    StageResult run_matvec() {
        for (const Stage& s : stages())
            if (std::string(s.id) == "kernel.matvec") return run_stage(s, {dir_.string(), ""});
        throw std::logic_error("no kernel.matvec stage");
    }

    fs::path dir_;
};

}  // namespace

TEST_F(FixtureFiles, WellFormedFixturePasses) {
    write_matvec({3, 4});
    const StageResult r = run_matvec();
    EXPECT_EQ(r.status, "pass") << r.reason;
    EXPECT_EQ(r.n_elements, 3u);
}

TEST_F(FixtureFiles, HeatmapsForTheFirstFailingOutputsOnly) {
    // case 0 passes, cases 1..10 fail by 1 in every element: heatmaps for cases 1..8 (kMaxHeatmapsPerStage)
    write_matvec_cases(11, [](std::size_t i) { return i == 0 ? 4.0f : 5.0f; });
    const StageResult r = run_matvec();
    ASSERT_EQ(r.status, "fail") << r.reason;
    ASSERT_EQ(r.outputs.size(), 11u);
    ASSERT_EQ(kMaxHeatmapsPerStage, 8u);
    EXPECT_FALSE(r.outputs[0].heatmap) << "a passing output gets no heatmap";
    for (std::size_t i = 1; i <= 8; ++i) {
        ASSERT_TRUE(r.outputs[i].heatmap) << i;
        const Heatmap& h = *r.outputs[i].heatmap;
        EXPECT_EQ(h.cell_rows, 1u);  // y [3], no head_dim: one row
        EXPECT_EQ(h.cell_cols, 3u);
        EXPECT_EQ(h.cells, (std::vector<double>{1.0, 1.0, 1.0})) << "|4 - 5| everywhere";
        EXPECT_EQ(r.outputs[i].heatmap_cols, "element");
    }
    EXPECT_FALSE(r.outputs[9].heatmap) << "only the first 8 failing outputs";
    EXPECT_FALSE(r.outputs[10].heatmap);
    // 4 and 5 are 2^21 float steps apart (exponent 2, 23-bit mantissa: a step of 2^-21): bin 22
    EXPECT_EQ(r.outputs[1].metrics.ulp_bins[22], 3u);
    EXPECT_EQ(r.outputs[0].metrics.ulp_bins[0], 3u);
    EXPECT_TRUE(r.outputs[1].by_row.max_abs.empty()) << "a 1-D output has no rows";
}

namespace {
// A stage function that skips case_001 whole (SkipCase) and leaves case_002's second output uncompared
// (StageOutput::skip), as the conformance stages do with ONNX cases and outputs our kernels do not take
std::vector<StageOutput> matvec_skipping(const Fixture& fx, const Case& c, const StageEnv& env) {
    if (c.name == "case_001") throw SkipCase("attribute alpha=2: not ours");
    auto outs = stage_matvec(fx, c, env);
    if (c.name == "case_002") outs.push_back({"mean", "mean", {}, "", {}, {}, false, {}, "our kernel has no mean output"});
    return outs;
}
std::vector<StageOutput> matvec_skipping_all(const Fixture&, const Case& c, const StageEnv&) {
    throw SkipCase("attribute beta=" + c.name + ": not ours");
}
}  // namespace

TEST_F(FixtureFiles, SkippedCasesAreListedWithTheirReasonNeverDropped) {
    write_matvec_cases(3, [](std::size_t) { return 4.0f; });
    Stage s = *find_stage("kernel.matvec");
    s.run = matvec_skipping;
    const StageResult r = run_stage(s, {dir_.string(), ""});
    EXPECT_EQ(r.status, "pass") << r.reason;
    EXPECT_EQ(r.cases_run, 2u);
    EXPECT_EQ(r.outputs.size(), 2u) << "case_000's y and case_002's y; nothing of case_001";
    ASSERT_EQ(r.skipped.size(), 2u);
    EXPECT_EQ(r.skipped[0].case_name, "case_001");
    EXPECT_EQ(r.skipped[0].output, "") << "the whole case";
    EXPECT_EQ(r.skipped[0].reason, "attribute alpha=2: not ours");
    EXPECT_EQ(r.skipped[1].case_name, "case_002");
    EXPECT_EQ(r.skipped[1].output, "mean");
    EXPECT_EQ(r.skipped[1].reason, "our kernel has no mean output");
    // in the report: every skipped case with its reason, in report.json and report.md
    const nlohmann::json report = report_json({r}, RunMeta{});
    const auto& st = report["stages"][0];
    EXPECT_EQ(st["cases_run"], 2);
    ASSERT_EQ(st["skipped_cases"].size(), 2u);
    EXPECT_EQ(st["skipped_cases"][0]["reason"], "attribute alpha=2: not ours");
    const std::string md = report_markdown(report);
    EXPECT_NE(md.find("## Cases not run"), std::string::npos);
    EXPECT_NE(md.find("kernel.matvec: 2 cases run, 1 skipped"), std::string::npos) << md;
    EXPECT_NE(md.find("| kernel.matvec | kernel | pass | 2 (+1 skipped) |"), std::string::npos) << md;
    EXPECT_NE(md.find("| case_001 |  | (whole case) | attribute alpha=2: not ours |"), std::string::npos) << md;
    EXPECT_NE(report_html(report).find("attribute alpha=2: not ours"), std::string::npos);
}

TEST_F(FixtureFiles, AStageWhoseEveryCaseIsSkippedIsSkippedNotPassed) {
    write_matvec_cases(2, [](std::size_t) { return 4.0f; });
    Stage s = *find_stage("kernel.matvec");
    s.run = matvec_skipping_all;
    const StageResult r = run_stage(s, {dir_.string(), ""});
    EXPECT_EQ(r.status, "skipped");
    EXPECT_EQ(r.cases_run, 0u);
    EXPECT_EQ(r.skipped.size(), 2u);
    EXPECT_NE(r.reason.find("every case skipped (2): attribute beta=case_000"), std::string::npos) << r.reason;
}

TEST_F(FixtureFiles, MissingFileNamesFileAndCommand) {
    const StageResult r = run_matvec();
    EXPECT_EQ(r.status, "error");
    EXPECT_NE(r.reason.find("kernel/matvec.h5: fixture file is missing"), std::string::npos) << r.reason;
    EXPECT_NE(r.reason.find("scripts/export_golden.py"), std::string::npos) << r.reason;
}

TEST_F(FixtureFiles, TruncatedFileIsReportedNotCrashed) {
    const std::string path = write_matvec({3, 4});
    fs::resize_file(path, fs::file_size(path) / 2);
    const StageResult r = run_matvec();
    EXPECT_EQ(r.status, "error");
    EXPECT_NE(r.reason.find(path), std::string::npos) << r.reason;
    EXPECT_NE(r.reason.find("truncated"), std::string::npos) << r.reason;
}

TEST_F(FixtureFiles, NotHdf5AtAll) {
    const std::string path = (dir_ / "kernel" / "matvec.h5").string();
    std::ofstream(path) << "this is not HDF5";
    EXPECT_THROW(
        {
            try {
                read_fixture(path);
            } catch (const HarnessError& e) {
                EXPECT_NE(std::string(e.what()).find("not an HDF5 file"), std::string::npos) << e.what();
                throw;
            }
        },
        HarnessError);
}

TEST_F(FixtureFiles, MissingDatasetNamesDatasetAndExpectedShape) {
    write_matvec({3, 4}, /*with_w=*/false);
    const StageResult r = run_matvec();
    EXPECT_EQ(r.status, "error");
    EXPECT_NE(r.reason.find("/case_000/inputs/W is missing (expected shape [*, 4])"), std::string::npos) << r.reason;
}

TEST_F(FixtureFiles, WrongShapeNamesExpectedAndActual) {
    write_matvec({3, 5});  // x has 4 elements, so W must be [*, 4]
    const StageResult r = run_matvec();
    EXPECT_EQ(r.status, "error");
    EXPECT_NE(r.reason.find("/case_000/inputs/W has shape [3, 5], expected [*, 4]"), std::string::npos) << r.reason;
}

TEST_F(FixtureFiles, WrongOutputSizeIsAnErrorNotAComparison) {
    write_matvec({2, 4});  // we produce 2 outputs, the fixture holds 3
    const StageResult r = run_matvec();
    EXPECT_EQ(r.status, "error");
    EXPECT_NE(r.reason.find("/case_000/outputs/y has shape [3]"), std::string::npos) << r.reason;
}

// The exporter's hash covers exactly the package scripts/lmlab_ref, recursively, by relative path:
// sha256 of sha256sum's lines for its *.py files in byte order of their paths.
TEST_F(FixtureFiles, ExporterHashIsThePackageByRelativePath) {
    const fs::path scripts = dir_ / "scripts", package = scripts / "lmlab_ref";
    fs::create_directories(package / "families");
    EXPECT_EQ(exporter_sha256(scripts.string()),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")  // sha256 of nothing
        << "scripts/ without the package: no files";
    std::ofstream(package / "common.py") << "SEED = 1\n";
    std::ofstream(package / "families" / "llama.py") << "NAME = 'llama'\n";
    // sha256("SEED = 1\n") and sha256("NAME = 'llama'\n"), in sha256sum's format, paths sorted
    const std::string listing =
        sha256_file((package / "common.py").string()) + "  common.py\n" +
        sha256_file((package / "families" / "llama.py").string()) + "  families/llama.py\n";
    const fs::path listing_file = dir_ / "listing";
    std::ofstream(listing_file) << listing;
    const std::string hash = exporter_sha256(scripts.string());
    EXPECT_EQ(hash, sha256_file(listing_file.string()));

    // what is not the package's Python does not count: other scripts, other files, __pycache__
    std::ofstream(scripts / "export_golden.py") << "# the command line\n";
    std::ofstream(package / "notes.txt") << "not Python\n";
    fs::create_directories(package / "__pycache__");
    std::ofstream(package / "__pycache__" / "common.py") << "# a stray copy\n";
    EXPECT_EQ(exporter_sha256(scripts.string()), hash);

    // a rename changes it, as an edit does
    fs::rename(package / "families" / "llama.py", package / "families" / "llama2.py");
    EXPECT_NE(exporter_sha256(scripts.string()), hash);
    fs::rename(package / "families" / "llama2.py", package / "families" / "llama.py");
    EXPECT_EQ(exporter_sha256(scripts.string()), hash);
    std::ofstream(package / "families" / "llama.py") << "NAME = 'llama' \n";
    EXPECT_NE(exporter_sha256(scripts.string()), hash);
}

TEST_F(FixtureFiles, StaleManifestIsRefused) {
    const std::string fixture = write_matvec({3, 4});
    const fs::path scripts = dir_ / "scripts";
    fs::create_directories(scripts / "lmlab_ref");
    std::ofstream(scripts / "lmlab_ref" / "export.py") << "# version 1\n";
    nlohmann::json manifest = {{"exporter_sha256", exporter_sha256(scripts.string())},
                               {"files", {{"kernel/matvec.h5", sha256_file(fixture)}}}};
    std::ofstream(dir_ / "manifest.json") << manifest.dump();
    EXPECT_NO_THROW(check_manifest(dir_.string(), scripts.string()));

    // the exporter changes: every fixture is stale
    std::ofstream(scripts / "lmlab_ref" / "export.py") << "# version 2\n";
    try {
        check_manifest(dir_.string(), scripts.string());
        FAIL() << "stale fixtures accepted";
    } catch (const HarnessError& e) {
        EXPECT_NE(std::string(e.what()).find("fixtures are stale"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("scripts/lmlab_ref is now"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("export_golden.py"), std::string::npos) << e.what();  // the command
    }

    // a fixture changed after export
    manifest["exporter_sha256"] = exporter_sha256(scripts.string());
    std::ofstream(dir_ / "manifest.json") << manifest.dump();
    fs::resize_file(fixture, fs::file_size(fixture) - 1);
    try {
        check_manifest(dir_.string(), scripts.string());
        FAIL() << "damaged fixture accepted";
    } catch (const HarnessError& e) {
        EXPECT_NE(std::string(e.what()).find(fixture), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("differs from the manifest"), std::string::npos) << e.what();
    }

    // lmlab check --stage: only the files the stages read are hashed; the others must still exist
    const std::set<std::string> other = {"kernel/other.h5"}, this_one = {"kernel/matvec.h5"};
    EXPECT_NO_THROW(check_manifest(dir_.string(), scripts.string(), false, &other));
    EXPECT_THROW(check_manifest(dir_.string(), scripts.string(), false, &this_one), HarnessError);

    fs::remove(fixture);
    EXPECT_THROW(check_manifest(dir_.string(), scripts.string()), HarnessError);
    EXPECT_THROW(check_manifest(dir_.string(), scripts.string(), false, &other), HarnessError);

    // more than one bad file: every one is named in the one error, with how many there are
    const fs::path copy = dir_ / "kernel" / "copy.h5";
    std::ofstream(copy) << "not the exported bytes";
    manifest["files"]["kernel/copy.h5"] = std::string(64, '0');
    std::ofstream(dir_ / "manifest.json") << manifest.dump();
    try {
        check_manifest(dir_.string(), scripts.string());
        FAIL() << "a missing and a damaged fixture accepted";
    } catch (const HarnessError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("2 fixture files"), std::string::npos) << what;
        EXPECT_NE(what.find(fixture + " is listed in the manifest but missing"), std::string::npos) << what;
        EXPECT_NE(what.find(copy.string() + ": sha256"), std::string::npos) << what;
        EXPECT_NE(what.find("--out " + dir_.string()), std::string::npos) << what;  // the folder it read
    }

    // with the stages' files given, their problems come first, then the other missing files
    manifest["files"]["kernel/absent.h5"] = std::string(64, '0');
    std::ofstream(dir_ / "manifest.json") << manifest.dump();
    const std::set<std::string> copy_only = {"kernel/copy.h5"};
    try {
        check_manifest(dir_.string(), scripts.string(), false, &copy_only);
        FAIL() << "missing and damaged fixtures accepted";
    } catch (const HarnessError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("3 fixture files"), std::string::npos) << what;
        EXPECT_LT(what.find(copy.string() + ": sha256"), what.find("absent.h5")) << what;
    }
}

// The command in every fixture error writes the folder that was read: golden/ by default (or the
// build's `golden` target), another folder (lmlab check --golden DIR) with --out DIR and no rebuild.
TEST_F(FixtureFiles, RegenerateHintNamesTheFolderItRead) {
    const std::string repo = regenerate_hint();
    EXPECT_NE(repo.find("scripts/export_golden.py"), std::string::npos) << repo;
    EXPECT_NE(repo.find("rebuild"), std::string::npos) << repo;
    EXPECT_EQ(repo.find("--out"), std::string::npos) << repo;
    EXPECT_EQ(regenerate_hint(std::string(LMLAB_SOURCE_DIR) + "/golden"), repo);
    EXPECT_EQ(regenerate_hint(std::string(LMLAB_SOURCE_DIR) + "/scripts/../golden"), repo);
    const std::string other = regenerate_hint(dir_.string());
    EXPECT_NE(other.find("scripts/export_golden.py --out " + dir_.string()), std::string::npos) << other;
    EXPECT_EQ(other.find("rebuild"), std::string::npos) << other;
    EXPECT_NE(other.find(std::string("from ") + LMLAB_SOURCE_DIR), std::string::npos) << other;  // where to run it

    // a folder with a space is quoted, so that the command can be pasted
    const fs::path spaced = dir_ / "with space";
    fs::create_directories(spaced);
    const std::string quoted = regenerate_hint(spaced.string());
    EXPECT_NE(quoted.find("--out '" + spaced.string() + "'"), std::string::npos) << quoted;
    // a file in a fixture folder: the folder is the nearest one above it with manifest.json
    std::ofstream(dir_ / "manifest.json") << "{}";
    EXPECT_EQ(regenerate_hint((dir_ / "kernel" / "matvec.h5").string()), other);
    // a relative folder is written absolute (the command runs from the repository, not from here)
    const fs::path here = fs::current_path();
    fs::current_path(dir_);
    EXPECT_EQ(regenerate_hint("kernel/matvec.h5"), other);
    EXPECT_EQ(regenerate_hint("."), other);
    fs::current_path(here);
}

}  // namespace lmlab
