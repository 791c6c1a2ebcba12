#include "harness/cli/commands.h"

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cerrno>
#include <deque>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

#include "model/model.h"
#include "model/session.h"
#include "model/tokenizer/text_tokenizer.h"
#include "harness/report/report.h"
#include "harness/runner.h"
#include "harness/stages/stages.h"
#include "model/forward.h"

extern char** environ;

namespace fs = std::filesystem;

namespace lmlab {

namespace {


// Runs argv[0] with these arguments (no shell: paths with spaces or quotes stay one argument);
// its stdout and stderr go to ours. Returns the exit status.
int run_process(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int err = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
    if (err != 0) throw HarnessError(fmt::format("cannot run {}: {}", args[0], std::strerror(err)));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) throw HarnessError(fmt::format("waiting for {}: {}", args[0], std::strerror(errno)));
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<int> prompt_of(const VerifyArgs& a, const Model& m) {
    const std::optional<TextTokenizer> tok = model_tokenizer(m, a.model, !a.prompt.has_ids());
    if (!tok && !a.prompt.has_ids())
        throw UsageError("no tokenizer found with " + a.model.model_path + " to encode the prompt '" + a.prompt.text +
                         "': pass --prompt-ids (e.g. --prompt-ids 1,403,407) or --tokenizer PATH");
    return read_prompt(m, tok, a.prompt, a.model).ids;
}

// The verdict's one-line summary of a passing run: worst logits error and the greedy tokens.
std::string pass_summary(const std::vector<StageResult>& results) {
    double logits_abs = 0;
    std::string tokens;
    for (const StageResult& r : results)
        for (const OutputResult& o : r.outputs) {
            if (r.id == std::string("verify.forward") && o.output == "logits") logits_abs = o.metrics.max_abs;
            if (r.id == std::string("verify.generation") && o.output == "tokens")
                tokens = fmt::format("{}/{} greedy tokens identical", o.metrics.n - o.metrics.n_mismatch, o.metrics.n);
        }
    return fmt::format("logits max |ours - reference| {:.3g}, {}", logits_abs, tokens);
}

// The checks verify runs, in order, and the fixture scripts/verify_ref.py writes for each.
struct VerifyKind {
    const char* name;
    StageFn run;
    const char* fixture;
};
const std::vector<VerifyKind>& verify_kinds() {
    static const std::vector<VerifyKind> kinds = {
        {"forward", stage_model_forward, "model/forward.h5"},
        {"kv_cache", stage_model_kv_cache, "model/kv_cache.h5"},
        {"prefill", stage_model_prefill, "model/forward.h5"},
        {"generation", stage_generation_greedy, "generation/greedy.h5"},
    };
    return kinds;
}

// What verify runs: for each kind of model check, the golden table's row of this family (its
// function, fixture recipe and tolerance with its reason), renamed verify.<kind> and pointed at the
// user's model. The ids and paths live as long as the process (the rows keep const char*).
std::vector<Stage> verify_rows(Arch arch, const std::string& model_path) {
    static std::deque<std::string> strings;  // (a few per verify run; a deque never moves them)
    const std::string family = arch_name(arch);
    std::vector<Stage> rows;
    for (const VerifyKind& kind : verify_kinds()) {
        const Stage* golden = nullptr;
        for (const Stage& s : stages())
            if (!golden && s.run == kind.run && family == s.family && !s.int8) golden = &s;
        if (!golden) continue;  // the family has no golden stage of this kind: nothing to borrow a tolerance from
        Stage row = *golden;
        // The cached k and v are the forward's free-running layer<i>.k and .v, which verify.forward holds
        // to the logits tolerance: on a deep, wide model (Llama 3.2-1B's 16 layers of 2048) they inherit
        // every layer's float32 rounding, ~2e-5 at layer 12, past the golden kv stages' 1e-5 (2 layers
        // of 64), while each layer adds ~5e-6 (the teacher-forced column). The same numbers, one tolerance.
        if (kind.run == stage_model_kv_cache)
            for (const Stage& s : stages())
                if (s.run == stage_model_forward && family == s.family && !s.int8) {
                    row.tol = s.tol;
                    row.tol_why = "the cached k and v are verify.forward's free-running layer<i>.k, .v: its tolerance";
                    break;
                }
        strings.push_back(std::string("verify.") + kind.name);
        row.id = strings.back().c_str();
        strings.push_back(model_path);
        row.model = strings.back().c_str();
        row.fixture = kind.fixture;
        rows.push_back(row);
    }
    return rows;
}

}  // namespace

std::string default_verify_dir(const std::string& reports_dir, const std::string& model_path) {
    // absolute first: "..", "." or "dir/" must name the model's folder, not climb out of reports/verify
    fs::path p = fs::absolute(model_path).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    const std::string name = p.stem().string();
    return (fs::path(reports_dir) / "verify" / (name.empty() || name == ".." ? "model" : name)).string();
}

int cmd_verify(const VerifyArgs& a, const Paths& paths) {
    // 1. The engine reads the model first: whatever it cannot compute is refused here, by name.
    const auto t_start = std::chrono::steady_clock::now();
    require_model_path(a.model);
    const std::string model_path = fs::absolute(a.model.model_path).lexically_normal().string();
    const std::string ext = fs::path(model_path).extension().string();
    if (ext == ".h5" || ext == ".hdf5")
        throw UsageError("--model " + a.model.model_path + ": lmlab's own HDF5 models are the exporter's; `lmlab check` "
                         "verifies them. verify takes a Hugging Face directory, an llm.c or a llama2.c checkpoint, or a GGUF file");
    const std::string out_dir = fs::absolute(a.out_dir).lexically_normal().string();
    const std::string golden = fs::path(paths.golden).lexically_normal().string();
    if (out_dir == golden || out_dir.rfind(golden + "/", 0) == 0)
        throw UsageError("--out " + out_dir + " is inside golden/, which holds the exporter's fixtures only; choose "
                         "another folder (default: reports/verify/<model>)");
    prepare_output_dir(out_dir, "--out");  // a wrong folder fails now, before the reference runs
    const Model& m = cached_model(model_path);
    if (m.quantized())
        throw UsageError("--model " + a.model.model_path + ": int8 weights (llama2.c's ak42 format); verify compares float "
                         "weights with a float reference: verify the float32 checkpoint it was exported from");
    const Config& c = m.config;
    if (a.generate < 1) throw UsageError("--generate must be at least 1");
    const std::vector<int> prompt = prompt_of(a, m);
    check_request(c, prompt, static_cast<std::size_t>(a.generate));
    fmt::print(stderr, "verify: {} ({}, {} layers, dim {}, vocab {}): {}-token prompt, {} greedy tokens; fixtures and "
                       "report in {}\n",
               model_path, arch_name(c.arch), c.n_layers, c.dim, c.vocab_size, prompt.size(), a.generate, out_dir);

    // 2. The reference, on the same weights.
    std::vector<std::string> cmd = {LMLAB_PYTHON, (fs::path(paths.scripts) / "verify_ref.py").string(), "--model", model_path,
                                    "--prompt-ids", fmt::format("{}", fmt::join(prompt, ",")),
                                    "--generate", std::to_string(a.generate), "--out", out_dir,
                                    // this binary: the reference takes the family rows and the exporter hash from it
                                    "--lmlab", fs::read_symlink("/proc/self/exe").string()};
    if (a.no_f64) cmd.push_back("--no-f64");
    const auto t_ref = std::chrono::steady_clock::now();
    const int rc = run_process(cmd);
    const double ref_wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ref).count();
    if (rc != 0)
        throw HarnessError(fmt::format("the reference (scripts/verify_ref.py) failed with exit code {}; its message is "
                                       "above", rc));

    // 3. The stages, on those fixtures: the golden table's rows of the model's family (their
    //    functions, fixture recipes and tolerances), the model being the user's.
    const std::vector<Stage> rows = verify_rows(c.arch, model_path);
    const StageEnv env{out_dir, paths.shared};
    if (m.format == "gguf" && kernel_path() != KernelPath::Plain) {
        // transformers dequantizes a GGUF file's weights and runs float activations: ours does the same on the
        // plain path (the fast one quantizes the activations, as ggml: kernel.ggml.matvec.* checks it)
        set_kernel_path(KernelPath::Plain);
        fmt::print(stderr, "verify: a GGUF file: the plain path (dequantized rows, float activations), as the reference\n");
    }
    std::vector<StageResult> results;
    for (const Stage& s : rows) {
        results.push_back(run_stage(s, env));
        print_stage_line(results.back());
    }
    // what it cost: the reference's time and peak memory (its manifest) and the engine's (this process)
    {
        double ref_mb = 0;
        try {
            std::ifstream in(fs::path(out_dir) / "manifest.json");
            const auto j = nlohmann::json::parse(in);
            ref_mb = j.value("peak_rss_mb", 0.0);
        } catch (const std::exception&) {  // a cost line only: never fails the run
        }
        rusage ru{};
        getrusage(RUSAGE_SELF, &ru);
        const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        fmt::print(stderr, "verify: cost: reference {:.1f} s (peak {:.0f} MB when it last ran, manifest.json); engine: "
                           "loading and stages {:.1f} s, peak {:.0f} MB\n",
                   ref_wall, ref_mb, total - ref_wall, static_cast<double>(ru.ru_maxrss) / 1024.0);
    }
    auto meta = collect_meta(LMLAB_SOURCE_DIR, out_dir);
    meta.selection = "verify " + model_path;
    write_report(out_dir, report_json(results, meta));

    const StageResult* bad = nullptr;
    for (const StageResult& r : results)
        if (!bad && r.status != "pass") bad = &r;
    if (!bad) {
        fmt::print("verify: PASS {}: {}; report {}/report.md\n", model_path, pass_summary(results), out_dir);
        finish_stdout();
        return kExitOk;
    }
    fmt::print("verify: {} {}: {} {}: {}; report {}/report.md\n", bad->status == "fail" ? "FAIL" : "ERROR", model_path,
               bad->id, bad->status, bad->reason, out_dir);
    finish_stdout();
    return kExitFailed;
}

}  // namespace lmlab
