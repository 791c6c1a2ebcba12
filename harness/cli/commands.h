// The commands of the lmlab binary, one function each (harness/cli/main.cpp declares their options
// and calls them). Each returns an exit code (options.h) or throws: UsageError for the command
// line, ModelError for a model, tokenizer or request, HarnessError for fixtures and reports.
//
//   list, check, diff, verify-fixtures, ctest-script   check.cpp    the stages and their reports
//   generate, trace, tokenize, decode                  generate.cpp text in, text out
//   serve-batch                                        serve.cpp    many requests at once
//   serve                                              serve_http.cpp  the same scheduler behind an HTTP API
//   verify                                             verify.cpp   a user's model against the reference
#pragma once

#include <string>
#include <vector>

#include "harness/cli/options.h"
#include "harness/runner.h"
#include "model/sampler.h"
#include "model/serve/scheduler.h"

namespace lmlab {

// Folders every command may use: the fixtures, the reports, ../shared, the exporter's scripts.
struct Paths {
    std::string golden, reports, shared, scripts;
};
Paths default_paths();

// ---- check.cpp ------------------------------------------------------------------------------------
int cmd_list(bool json, bool families);
int cmd_check(RunOptions opt, const Paths& paths, bool no_report);
int cmd_diff(const std::string& old_path, const std::string& new_path, const std::string& page_path);
int cmd_verify_fixtures(const Paths& paths);
int cmd_ctest_script(const std::string& lmlab_path, const std::string& report_dir);

// ---- generate.cpp ---------------------------------------------------------------------------------
struct GenerateArgs {
    ModelOptions model;
    PromptOptions prompt;
    bool verbose = false;        // the prompt as the model sees it (the chat template) on stderr
    bool json = false;           // one JSON object on stdout instead of the streamed text
    int max_new_tokens = 0;      // 0: as many as the context allows, up to 256
    SamplerConfig sampling;
    QuantizeOptions quantize;    // a quantized copy made on load (model/quantize.cpp)
    std::string draft;           // speculative decoding (model/serve/speculative.h): "early-exit:N" or "int8"; "" = off
    std::size_t k = 4;           // draft tokens per round
};
int cmd_generate(const GenerateArgs& a);

struct TraceArgs {
    ModelOptions model;
    PromptOptions prompt;
    int max_new_tokens = 8;
    std::string out;  // the page
};
int cmd_trace(const TraceArgs& a);

struct TokenizeArgs {
    ModelOptions model;
    std::string input = "-";
    int vocab_size = 0;
    bool add_bos = false, show_pieces = false, allow_special = false;
};
int cmd_tokenize(const TokenizeArgs& a);

struct DecodeArgs {
    ModelOptions model;
    std::string ids;      // "1,403,407"
    std::string context;  // the ids before them ("" : the start of a text)
};
int cmd_decode(const DecodeArgs& a);

// ---- serve.cpp ------------------------------------------------------------------------------------
struct ServeArgs {
    ModelOptions model;
    std::string requests_path, out_path;
    ServeOptions options;
    bool sequential = false;  // run the same requests one after another (Session::generate), for comparison
    bool quiet = false;       // no progress line
};
int cmd_serve_batch(const ServeArgs& a);

// ---- serve_http.cpp -------------------------------------------------------------------------------
struct ServeHttpArgs {
    ModelOptions model;
    std::string host = "127.0.0.1";  // loopback: reachable from this machine only, unless asked
    int port = 8080;                 // 0: any free port (the one taken is printed on stderr)
    ServeOptions options;            // chunk, max_running, page_size, n_pages (0: max_running full contexts)
    std::size_t queue = 64;          // waiting requests past which the answer is 429
    std::size_t http_threads = 64;   // connections served at once (each open connection holds one)
    double shutdown_timeout = 10;    // seconds in-flight requests get after SIGTERM / SIGINT
    bool check_invariants = false;   // the paged cache's invariants after every step (tests)
};
int cmd_serve(const ServeHttpArgs& a);

// ---- verify.cpp -----------------------------------------------------------------------------------
struct VerifyArgs {
    ModelOptions model;
    PromptOptions prompt;
    int generate = 16;    // greedy tokens after the prompt
    std::string out_dir;  // default: <repo>/reports/verify/<model name>
    bool no_f64 = false;  // no float64 truth: half the reference's time and memory, no accuracy ratio
    // the quantization report (harness/quantization.h) instead of the reference: --model (quantized
    // on load with --quantize) against --against (default: --model's own float weights)
    std::string against;
    QuantizeOptions quantize;
    std::size_t ctx = 0;            // chunk length of the held-out text (0: the model's context)
    std::size_t analysed_rows = 128;  // positions the per-tensor errors are measured over
};
// verify --against / --quantize (harness/cli/verify_quant.cpp)
int cmd_verify_quantization(const VerifyArgs& a, const Paths& paths);
std::string default_verify_dir(const std::string& reports_dir, const std::string& model_path);
int cmd_verify(const VerifyArgs& a, const Paths& paths);

}  // namespace lmlab
