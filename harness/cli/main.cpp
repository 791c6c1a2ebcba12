// lmlab: the harness binary. Its commands (harness/cli/commands.h):
//   lmlab list                       the stages, in table order
//   lmlab check [--stage GLOB] ...   run stages against the golden fixtures, write the report
//   lmlab diff OLD.json NEW.json     compare two reports stage by stage
//   lmlab verify-fixtures            are the fixtures present and current?
//   lmlab generate [--prompt TEXT]   run a model: text in, streamed text out (--draft: speculative decoding)
//   lmlab tokenize [FILE|-]          show how text becomes token ids
//   lmlab decode IDS                 ids -> text
//   lmlab verify --model PATH        run the reference on your checkpoint, report layer by layer
//   lmlab trace --prompt TEXT        attention heatmaps and top-5 predictions as a page (trace.html)
//   lmlab serve-batch --requests F   many requests at once: continuous batching over a paged KV cache
//   lmlab serve [--port N]           the same scheduler behind an OpenAI-compatible HTTP API
// This file declares their options (the shared ones once, harness/cli/options.h) and maps every
// error to an exit code.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <limits>

#include "harness/cli/commands.h"
#include "harness/fixture.h"
#include "harness/report/report.h"
#include "harness/stages/stages.h"
#include "kernels/kernels.h"

namespace fs = std::filesystem;
using namespace lmlab;

namespace {


std::string version_text() {
    const RunMeta meta = collect_meta(LMLAB_SOURCE_DIR, "");
    return fmt::format("lmlab {}{} ({} build, {}, flags '{}')", meta.git_commit.substr(0, 12), meta.git_dirty ? "-dirty" : "",
                       meta.build_type, meta.compiler, meta.cxx_flags);
}

constexpr const char* kExitCodes =
    "Exit codes: 0 done; 1 a check ran and failed (check, verify); 2 the command could not do its work (bad input, a "
    "file it cannot read or write: the message says which); 77 every selected stage was skipped (check); 105-109 the "
    "command line itself is wrong (CLI11: 105 a value of the wrong form, 106 a required option missing, 109 an unknown "
    "option).";

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"lmlab: a readable LLM inference engine, checked number by number against PyTorch"};
    app.require_subcommand(1);
    app.footer(kExitCodes);
    app.set_version_flag("--version", [] { return version_text(); }, "Commit, build type and compiler of this binary");

    Paths paths = default_paths();

    // ---- the stages ----
    auto* list = app.add_subcommand("list", "List the stages in the stage table's order (check runs them level by level: kernel, layer, model, generation, ...)");
    bool list_json = false, list_families = false;
    list->add_flag("--json", list_json, "As JSON: the stage table and the family rows (what the exporter reads)");
    list->add_flag("--families", list_families, "The families instead: one row each (model/family.h)");

    RunOptions opt;
    bool no_report = false;
    KernelOptions kernels;
    auto* check = app.add_subcommand("check", "Run stages against the golden fixtures and write the error report");
    check->add_option("--stage", opt.stage_glob, "Only stages whose id matches this glob (e.g. 'kernel.*')");
    check->add_option("--except", opt.except_globs,
                      "Leave out the stages whose id matches this glob (repeatable; e.g. '*.gguf.*')");
    check->add_option("--level", opt.level, "Only this level")->check(CLI::IsMember(levels()));
    check->add_option("--golden", paths.golden, "Fixture folder")
        ->check(existing_folder("the folder export_golden.py wrote (the repository's golden/)"))
        ->capture_default_str();
    check->add_option("--report", paths.reports, "Report folder")->capture_default_str();
    check->add_option("--shared", paths.shared, "Folder with models/ and tokenizers/ (env LMLAB_SHARED)")
        ->check(existing_folder("the folder that holds models/ and tokenizers/ (../shared beside the checkout)"))
        ->capture_default_str();
    check->add_flag("--keep-going", opt.keep_going, "Run higher levels even when a lower level failed");
    check->add_flag("--no-report", no_report, "Do not write report files");

    std::string old_path, new_path, diff_page;
    auto* diff = app.add_subcommand("diff", "Compare two report.json files stage by stage (and write an HTML page)");
    diff->add_option("old", old_path, "Older report.json")->required();
    diff->add_option("new", new_path, "Newer report.json")->required();
    diff->add_option("--html", diff_page, "Where to write the page (default: diff.html beside NEW)");

    auto* verify_fixtures = app.add_subcommand("verify-fixtures", "Check that the fixtures exist and match the exporter");
    verify_fixtures->add_option("--golden", paths.golden, "Fixture folder")
        ->check(existing_folder("the folder export_golden.py wrote (the repository's golden/)"))
        ->capture_default_str();

    std::string lmlab_path;
    auto* ctest_script =
        app.add_subcommand("ctest-script", "Print the CTest code that declares one test per stage (used by the build)");
    ctest_script->group("");  // internal
    ctest_script->add_option("--binary", lmlab_path)->required();
    ctest_script->add_option("--report", paths.reports);

    auto* exporter_hash = app.add_subcommand(
        "exporter-sha256", "Print the exporter's hash (what every fixture records; the one definition of it)");
    exporter_hash->group("");  // internal: the exporter and scripts/golden_status.py ask it

    // ---- text in, text out ----
    GenerateArgs gen;
    auto* generate = app.add_subcommand("generate", "Generate text with a model");
    add_model_options(*generate, gen.model, false);
    add_prompt_options(*generate, gen.prompt);
    generate->add_option("--max-new-tokens", gen.max_new_tokens, "Tokens to generate (default: 256, or what the context allows)")
        ->check(whole_number(1, 1 << 30));
    generate->add_option("--temperature", gen.sampling.temperature, "0 = greedy")
        ->check(real_number(0.0, std::numeric_limits<float>::max(), false, "0 = greedy"))
        ->capture_default_str();
    generate->add_option("--top-k", gen.sampling.top_k, "Keep the k most probable tokens (0 = off)")
        ->check(whole_number(0, std::numeric_limits<int>::max()))
        ->capture_default_str();
    generate->add_option("--top-p", gen.sampling.top_p, "Nucleus: keep the smallest set with probability >= p (1 = off)")
        ->check(real_number(0.0, 1.0, true, "1 = off"))
        ->capture_default_str();
    generate->add_option("--seed", gen.sampling.seed, "RNG seed, 0 .. 2^63-1: same seed, same text")
        ->check(whole_number(0, std::numeric_limits<long long>::max()))
        ->capture_default_str();
    add_quantize_options(*generate, gen.quantize);
    auto* opt_draft = generate->add_option("--draft", gen.draft,
                                           "Speculative decoding (greedy only): early-exit:N = the model's first N layers "
                                           "as the draft, int8 = a Q8_0 copy; the output is the same text, faster or not");
    generate->add_option("--k", gen.k, "Draft tokens per round (with --draft)")
        ->check(whole_number(1, 256))
        ->needs(opt_draft)
        ->capture_default_str();
    generate->add_flag("--json", gen.json,
                       "Print one JSON object when done (ids, text, stop reason, timings) instead of streaming the text");
    generate->add_flag("--verbose", gen.verbose, "Show the prompt as the model sees it (the chat template) on stderr");
    add_kernel_options(*generate, kernels);

    TraceArgs tr;
    tr.out = (fs::path(paths.reports) / "trace.html").string();
    auto* trace = app.add_subcommand("trace", "Attention weights per layer and head, and the top-5 next tokens per step, as a page");
    add_model_options(*trace, tr.model, false);
    add_prompt_options(*trace, tr.prompt);
    trace->add_option("--max-new-tokens", tr.max_new_tokens, "Greedy tokens to generate")
        ->check(whole_number(1, 1 << 20))
        ->capture_default_str();
    trace->add_option("--out", tr.out, "The page (its folder must exist)")->capture_default_str();
    add_kernel_options(*trace, kernels);

    TokenizeArgs tk;
    auto* tokenize = app.add_subcommand("tokenize", "Encode text into token ids (JSON array)");
    add_model_options(*tokenize, tk.model, false);
    tokenize->add_option("--vocab-size", tk.vocab_size, "Read only this many tokens of a llama2.c --tokenizer (default: all)")
        ->check(whole_number(1, 1 << 24));
    tokenize->add_flag("--bos", tk.add_bos,
                       "Encode as a prompt: prepend BOS where the vocabulary has one (SentencePiece's 1, a tokenizer.json "
                       "post-processor's such as Llama 3's <|begin_of_text|>)");
    tokenize->add_flag("--allow-special", tk.allow_special,
                       "Byte-level BPE: recognise special tokens such as <|endoftext|> in the text (else plain text)");
    tokenize->add_flag("--pieces", tk.show_pieces, "Show the pieces instead of the ids");
    tokenize->add_option("input", tk.input, "Text file, or - for standard input")->capture_default_str();

    DecodeArgs dc;
    auto* decode = app.add_subcommand("decode", "Turn token ids into text (the rule every command uses)");
    add_model_options(*decode, dc.model, false);
    decode->add_option("ids", dc.ids, "Token ids, e.g. 1,1046,261,2074")->required();
    decode->add_option("--context", dc.context,
                       "The ids before them (a continuation keeps the space before its first word; default: the start "
                       "of a text)");

    // ---- many requests ----
    ServeArgs sv;
    auto* serve_batch = app.add_subcommand(
        "serve-batch", "Serve many requests at once: continuous batching, chunked prefill, paged KV cache");
    add_model_options(*serve_batch, sv.model, false);
    serve_batch->add_option("--requests", sv.requests_path,
                            "JSON Lines, one request per line: {\"prompt\": \"...\" or \"prompt_ids\": [...], "
                            "\"max_tokens\": N, \"arrival_step\": S, \"temperature\", \"top_k\", \"top_p\", \"seed\", \"id\"}")
        ->required();
    serve_batch->add_option("--out", sv.out_path, "Write every request's output and latency here (JSON Lines)");
    add_scheduler_options(*serve_batch, sv.options, "enough for the --max-running largest requests at once");
    serve_batch->add_flag("--sequential", sv.sequential,
                          "Run the same requests one after another instead (the baseline batching is compared with)");
    serve_batch->add_flag("--quiet", sv.quiet, "No progress line");
    add_kernel_options(*serve_batch, kernels);

    ServeHttpArgs http;
    auto* serve = app.add_subcommand(
        "serve", "An OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /v1/models, /health, "
                 "/metrics) in front of the continuous-batching scheduler; SIGTERM or SIGINT stops it");
    add_model_options(*serve, http.model, false);
    serve->add_option("--host", http.host, "Address to listen on (loopback by default: this machine only)")
        ->capture_default_str();
    serve->add_option("--port", http.port, "Port (0: any free one, printed on stderr)")
        ->check(whole_number(0, 65535))
        ->capture_default_str();
    add_scheduler_options(*serve, http.options, "--max-running full contexts");
    serve->add_option("--queue", http.queue, "Waiting requests past which a new one is answered 429 at once")
        ->check(whole_number(1, 1 << 20))
        ->capture_default_str();
    serve->add_option("--http-threads", http.http_threads, "Connections served at once (each open connection holds a thread)")
        ->check(whole_number(1, 1024))
        ->capture_default_str();
    serve->add_option("--shutdown-timeout", http.shutdown_timeout,
                      "Seconds the requests in flight get to finish after SIGTERM / SIGINT; then they are cancelled")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
    serve->add_flag("--check-invariants", http.check_invariants,
                    "Check the paged KV cache's invariants after every step (the tests do; costs a little per step)");
    add_kernel_options(*serve, kernels);

    // ---- a user's model against the reference ----
    VerifyArgs va;
    auto* verify = app.add_subcommand(
        "verify", "Run the reference (transformers, llama_ref.py) on your own checkpoint and report layer by layer");
    add_model_options(*verify, va.model, true);
    add_prompt_options(*verify, va.prompt, "Once upon a time");
    verify->add_option("--generate", va.generate, "Greedy tokens to compare after the prompt")
        ->check(whole_number(1, 1 << 20))
        ->capture_default_str();
    verify->add_option("--out", va.out_dir, "Folder for the fixtures and the report (default: reports/verify/<model>)");
    verify->add_flag("--no-f64", va.no_f64,
                     "Skip the float64 truth (about half the reference's time and memory; no accuracy ratio)");
    // the quantization report: no reference, the quantized model against the float one
    verify->add_option("--against", va.against,
                       "The quantization report instead of the reference: --model (a quantized file, or quantized with "
                       "--quantize) against this float model of the same architecture (a float GGUF, a Hugging Face "
                       "directory, any model path); per layer and tensor the error added, KL divergence, top-1 agreement, "
                       "perplexity on the prompt's text");
    add_quantize_options(*verify, va.quantize);
    verify->add_option("--ctx", va.ctx, "With --against/--quantize: chunk length of the text (default: the model's context)")
        ->check(whole_number(2, 1 << 20));
    verify->add_option("--tensor-rows", va.analysed_rows,
                       "With --against/--quantize: text positions the per-tensor errors are measured over")
        ->check(whole_number(1, 1 << 20))
        ->capture_default_str();
    add_kernel_options(*verify, kernels);
    add_kernel_options(*check, kernels);

    // a wrong command line is reported as every other error is: one "lmlab: " line, then where to look
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return fmt::format("lmlab: {}\nRun with --help for more information.\n", e.what());
    });
    CLI11_PARSE(app, argc, argv);
    try {
        apply_kernel_options(kernels);
        if (*list) return cmd_list(list_json, list_families);
        if (*check) return cmd_check(opt, paths, no_report);
        if (*diff) return cmd_diff(old_path, new_path, diff_page);
        if (*verify_fixtures) return cmd_verify_fixtures(paths);
        if (*ctest_script) return cmd_ctest_script(lmlab_path, paths.reports);
        if (*exporter_hash) {
            fmt::print("{}\n", exporter_sha256(paths.scripts));
            finish_stdout();
            return kExitOk;
        }
        if (*generate) return cmd_generate(gen);
        if (*trace) return cmd_trace(tr);
        if (*tokenize) return cmd_tokenize(tk);
        if (*decode) return cmd_decode(dc);
        if (*serve_batch) return cmd_serve_batch(sv);
        if (*serve) return cmd_serve(http);
        if (*verify) {
            if (va.out_dir.empty()) va.out_dir = default_verify_dir(paths.reports, va.model.model_path);
            if (!va.against.empty() || va.quantize.given()) return cmd_verify_quantization(va, paths);
            return cmd_verify(va, paths);
        }
    } catch (const std::exception& e) {  // UsageError, ModelError, HarnessError: the message says what and where
        std::fflush(stdout);
        fmt::print(stderr, "lmlab: {}\n", e.what());
        return kExitError;
    }
    return kExitOk;
}
