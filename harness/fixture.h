// Reading golden fixtures: the HDF5 files written by scripts/export_golden.py (format in
// golden/README.md). Everything is read and checked here, once, so that the stages can trust
// what they get: a missing file, a damaged file, a missing dataset or a dataset of the wrong
// shape is a HarnessError whose message names the file, the dataset, what was expected and what
// to do about it.
#pragma once

#include <cstddef>
#include <map>
#include <stdexcept>
#include <set>
#include <string>
#include <vector>

#include "model/model.h"  // shape_str

namespace lmlab {

// The harness's one error type (as ModelError is the model's and UsageError the command line's):
// a missing, stale or damaged fixture, manifest or report, or an invariant a stage checks that does
// not hold. The message names the file or the stage, what was expected, what was found and what to do.
struct HarnessError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The command that rewrites every fixture; error messages quote it.
inline constexpr const char* kRegenerateCommand = ".venv/bin/python scripts/export_golden.py";
// "Regenerate the fixtures, from <repo>: <command> (or rebuild ...)", the end of every fixture error
// message. `at`: the fixture folder the command read (--golden) or a file in it (the folder is then the
// nearest one above it that holds manifest.json). A folder other than the repository's golden/ gets
// `--out <that folder, absolute>` in the command, and no "rebuild" (the build's `golden` target writes
// golden/ only).
std::string regenerate_hint(const std::string& at = "");

// An n-dimensional array read from a dataset, row-major.
template <typename T>
struct Array {
    std::vector<std::size_t> shape;
    std::vector<T> data;
};


// One case_NNN group: parameters plus inputs, PyTorch float32 outputs and float64 references.
struct Case {
    std::string file;         // for error messages
    std::string name;         // "case_003"
    std::string description;  // what the case is meant to break
    std::map<std::string, double> numbers;       // numeric attributes (eps, pos, theta, ...)
    std::map<std::string, std::string> strings;  // string attributes (style, ...)
    std::map<std::string, Array<float>> inputs;
    std::map<std::string, Array<float>> outputs;
    std::map<std::string, Array<double>> reference64;

    // The input `name`, checked against `shape` (an entry of kAnyDim matches any length).
    // Throws HarnessError naming file, dataset, expected and actual shape.
    static constexpr std::size_t kAnyDim = static_cast<std::size_t>(-1);
    const Array<float>& input(const std::string& name, const std::vector<std::size_t>& shape) const;
    double number(const std::string& attr) const;            // throws when missing
    const std::string& string(const std::string& attr) const;  // throws when missing
};

struct Fixture {
    std::string path;
    std::string name;   // root attribute "fixture": its path relative to the golden dir ("kernel/softmax.h5")
    std::string level;
    long format_version = 0;
    std::string exporter_sha256;
    std::map<std::string, double> numbers;       // other numeric root attributes
    std::map<std::string, std::string> strings;  // other string root attributes
    std::vector<Case> cases;
};

// Reads a whole fixture file. Throws HarnessError (missing, unreadable, not HDF5, wrong format
// version, no cases, a case without outputs).
Fixture read_fixture(const std::string& path);

// The exporter: the Python package under scripts/ that writes every fixture.
inline constexpr const char* kExporterPackage = "lmlab_ref";

// sha256 of the exporter, its one definition (`lmlab exporter-sha256` prints it for the scripts):
// every *.py under scripts_dir/lmlab_ref/, recursively (not __pycache__), sorted by path relative
// to it; the sha256 of the lines "<sha256 of the file>  <relative path>\n", i.e. of
//   cd scripts/lmlab_ref && find . -name '*.py' -not -path '*/__pycache__/*' -printf '%P\n' |
//     LC_ALL=C sort | xargs sha256sum
// An absent package hashes as no files (sha256 of nothing).
std::string exporter_sha256(const std::string& scripts_dir);
std::string sha256_file(const std::string& path);

// Checks golden_dir/manifest.json against the exporter and the files on disk: every listed file
// exists with the listed sha256, and the exporter has not changed since. Throws HarnessError naming
// the problem and the command that regenerates the fixtures: a stale exporter or a malformed
// manifest at once; missing and changed files after every entry is looked at, each by name.
// model_files: also the model files the exporter wrote (safetensors, llm.c files, tokenizers: about
// 150 MB), as `lmlab verify-fixtures` (ctest golden.current) does; `lmlab check` hashes the .h5
// files only, and a damaged model file is refused by its loader.
// only: when given, the files hashed are the listed ones among these paths (relative to golden_dir:
// `lmlab check` passes the fixtures and models of the stages it runs, so one stage does not read
// all 185 MB of fixtures); the others must still exist.
void check_manifest(const std::string& golden_dir, const std::string& scripts_dir, bool model_files = false,
                    const std::set<std::string>* only = nullptr);

}  // namespace lmlab
