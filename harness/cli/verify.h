// lmlab verify: the harness turned on a user's own checkpoint.
//
// 1. Load the model with the engine's loader: a config feature the engine does not implement
//    (rope_scaling, sliding windows, an unknown model_type or activation) is refused here, by name,
//    before anything runs.
// 2. Run the reference on the same weights (scripts/verify_ref.py: transformers' own class for a
//    Hugging Face directory or an llm.c file, llama_ref.py for a llama2.c file), which writes golden-
//    format fixtures into the output folder (never into golden/). Reruns reuse them when the model
//    files, the prompt and the exporter are unchanged.
// 3. Run the model, KV-cache, prefill and generation stages on them, write report.md / report.json
//    into the same folder, and print a one-line verdict.
#pragma once

#include <string>
#include <vector>

namespace lmlab {

struct VerifyArgs {
    std::string model_path;
    std::string tokenizer_path;  // for --prompt text; default: the one that comes with the model
    std::string prompt_text = "Once upon a time";
    std::vector<int> prompt_ids;  // wins over prompt_text when non-empty
    int generate = 16;           // greedy tokens after the prompt
    std::string out_dir;         // default: <repo>/reports/verify/<model name>
    bool no_f64 = false;         // no float64 truth: half the reference's time and memory, no accuracy ratio
};

// The default output folder for a model path: <reports_dir>/verify/<last path component, no extension>.
std::string default_verify_dir(const std::string& reports_dir, const std::string& model_path);

// Returns the process exit code: 0 every stage passed, 1 a stage failed or could not run.
// Throws (ModelError, std::runtime_error) for a model or request refused up front.
int cmd_verify(const VerifyArgs& args, const std::string& scripts_dir, const std::string& python,
               const std::string& shared_dir);

}  // namespace lmlab
