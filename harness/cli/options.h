// What several commands share, declared once: the model and tokenizer options, the prompt options,
// the kernel options, how a prompt becomes ids, and how a command's output is written and checked.
//
//   option                     commands
//   --model, --tokenizer       generate, trace, serve-batch, verify, tokenize, decode
//   --prompt, --prompt-ids,    generate, trace, verify
//   --prompt-file, --chat,
//   --allow-special
//   --plain, --threads         check, generate, trace, serve-batch, serve, verify
//   --quantize, --group        generate, verify
//   --chunk, --max-running,    serve-batch, serve
//   --page-size, --kv-pages
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/serve/scheduler.h"
#include "model/tokenizer/text_tokenizer.h"

namespace lmlab {

// The command line's one error type (as ModelError is the model's and HarnessError the harness's):
// an option missing, malformed or out of range, or options that do not go together. The message
// names the option and the value; main() prints it and exits with kExitError.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Exit codes (also in `lmlab --help` and the README).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;   // a check ran and failed (lmlab check, lmlab verify)
inline constexpr int kExitError = 2;    // the command could not do its work: bad input, a file it cannot read or write
inline constexpr int kExitSkipped = 77; // every selected stage skipped (ctest's SKIP_RETURN_CODE)
// (CLI11's own parse errors, before any work: 105-109, e.g. 105 an option's value of the wrong form,
// 106 a required option missing, 109 an unknown option)

// A whole number in [lo, hi] for an option, checked before CLI11 converts it: CLI11 prefixes the
// message with the option's name ("--max-new-tokens: 'abc' is not a whole number from 1 to
// 1073741824"), and a negative value for an unsigned option (--seed -1) is refused instead of
// wrapping to 2^64 - 1.
CLI::Validator whole_number(long long lo, long long hi);
// A finite number in [lo, hi], or (lo, hi] when lo_open ("--top-p: '2' is not a number in (0, 1]"),
// checked before CLI11 converts it, as whole_number; `about` ends the message ("1 = off").
CLI::Validator real_number(double lo, double hi, bool lo_open, const std::string& about);
// A folder that exists (an option whose default may be absent, such as --shared, is refused when
// the user names a folder that is not there, instead of every stage that needs it being skipped).
CLI::Validator existing_folder(const std::string& what);

// --model and --tokenizer.
struct ModelOptions {
    std::string model_path;      // a Hugging Face directory, an llm.c / llama2.c checkpoint, an lmlab .h5 file
    std::string tokenizer_path;  // "": the one that comes with the model (find_tokenizer)
    const CLI::Option* model_opt = nullptr;  // --model: was it given?
    bool model_defaulted() const { return model_opt && model_opt->count() == 0; }  // the test model, by default
};
// required: no default (verify); otherwise the default is the exporter's tiny LLaMA.
void add_model_options(CLI::App& cmd, ModelOptions& o, bool required);
std::string default_model_path();
// ../shared beside the checkout, or $LMLAB_SHARED (model/testing/shared_dir.h)
std::string default_shared_dir();
// load_model for --model: a path that is not there is named with the option, and without --model
// stderr says that the model is the exporter's test model (random weights: its text means nothing).
Model load_model_option(const ModelOptions& o);
// The existence half of it, for commands that read --model without loading it (decode, tokenize, verify).
void require_model_path(const ModelOptions& o);

// --prompt, --prompt-ids, --prompt-file, --chat, --allow-special (at most one of the first three).
struct PromptOptions {
    std::string text, ids, file;
    bool chat = false, allow_special = false;
    CLI::Option *text_opt = nullptr, *ids_opt = nullptr, *file_opt = nullptr;
    bool has_text() const { return text_opt && text_opt->count() > 0; }
    bool has_ids() const { return ids_opt && ids_opt->count() > 0; }
    bool has_file() const { return file_opt && file_opt->count() > 0; }
    bool given() const { return has_text() || has_ids() || has_file(); }
};
void add_prompt_options(CLI::App& cmd, PromptOptions& p, const std::string& default_text = "");

// --quantize and --group: a quantized copy of the model made on load (model/model.h's Quantization).
struct QuantizeOptions {
    std::string spec;          // "": as stored; "q8_0"; "gguf-q4_k", ...
    std::size_t group = 64;    // q8_0's group size
    CLI::Option* spec_opt = nullptr;
    bool given() const { return !spec.empty(); }
};
void add_quantize_options(CLI::App& cmd, QuantizeOptions& q);
// The model quantized as asked (unchanged when nothing was asked), with one line on stderr: the
// weight memory before and after, and every fallback to another type.
Model apply_quantize(Model m, const QuantizeOptions& q);

// --plain and --threads (model/forward.h's kernel path, kernels.h's threads).
struct KernelOptions {
    bool plain = false;
    int threads = 1;
};
void add_kernel_options(CLI::App& cmd, KernelOptions& k);
// --chunk, --max-running, --page-size, --kv-pages: the continuous-batching scheduler's options
// (model/serve/scheduler.h). kv_pages_default says what --kv-pages 0 means for the command.
void add_scheduler_options(CLI::App& cmd, ServeOptions& o, const std::string& kv_pages_default);

// Sets the kernel path and threads; warns on stderr when more threads than cores were asked for.
void apply_kernel_options(const KernelOptions& k);

// The tokenizer that comes with the model (or --tokenizer), checked against the model: a tokenizer
// with more ids than the model has embedding rows is refused by name with both numbers, and one with
// fewer is allowed with a note (a padded embedding, as Qwen's 151936 rows for 151665 ids). A tokenizer
// found beside the model that this engine cannot read is not fatal when `needed` is false: it says
// why on stderr and goes on without one. nullopt when none is found.
std::optional<TextTokenizer> model_tokenizer(const Model& m, const ModelOptions& o, bool needed);

// The prompt: --prompt-ids as given, --prompt / --prompt-file ("-": standard input) encoded (the
// ChatML template with --chat), neither: `fallback` (the verify default text) or BOS alone.
struct Prompt {
    std::vector<int> ids;
    std::string text;    // the text the user gave ("" for ids)
    bool from_ids = false;
};
Prompt read_prompt(const Model& m, const std::optional<TextTokenizer>& tok, const PromptOptions& p,
                   const ModelOptions& o);

// "1,403,407" (spaces around an id allowed) -> {1, 403, 407}. Throws UsageError naming the item for
// anything else: an empty list, an empty item, "1 403" (not one integer), a value outside int.
// Range against a vocabulary is the caller's check (check_request).
std::vector<int> parse_ids(const std::string& text, const std::string& option = "--prompt-ids");
// Every id in [0, vocab), else a UsageError naming the option, the id, its position and owner (the
// model or tokenizer whose vocabulary it is): decode's ids and --context, generate's --prompt-ids.
void check_ids_in_vocabulary(const std::vector<int>& ids, std::size_t vocab, const std::string& option,
                             const std::string& owner);

// A whole file, or standard input for "-"; UsageError naming the option and the path when unreadable.
std::string read_input(const std::string& path, const std::string& option);

// An output file that is created before any work (its folder must exist: a mistyped folder is
// refused, never made), written, flushed and closed with every error checked: a full disk or a
// missing folder is an error naming the path, never a silent loss. "-" (or "") is standard output.
class OutputFile {
public:
    // Opens path's stand-in now (path + ".part" beside it, renamed over path by close(): a command that
    // fails keeps the page it wrote last time); UsageError naming `option` and the path when that
    // fails. A path that exists and is not a regular file (a device, a pipe) is written directly.
    OutputFile(const std::string& path, const std::string& option);
    ~OutputFile();  // not closed (the command failed): the stand-in is removed
    OutputFile(const OutputFile&) = delete;
    OutputFile& operator=(const OutputFile&) = delete;
    void write(const std::string& text);
    // Flushes, closes and renames the stand-in over path; throws UsageError naming the path when any
    // write failed (path is then left as it was).
    void close();
    const std::string& path() const { return path_; }

private:
    std::string path_, option_, part_;  // part_: the stand-in ("" when writing path itself)
    std::FILE* f_ = nullptr;
    bool is_stdout_ = false, failed_ = false;
};

// Everything the command printed to standard output, flushed and checked: "generate > /dev/full"
// must fail. Call before returning kExitOk.
void finish_stdout();

// The folder for a report (check --report, verify --out): created now (with its parents: a report
// tree is lmlab's own) and checked writable, so that a wrong path is refused before the stages run.
void prepare_output_dir(const std::string& dir, const std::string& option);

}  // namespace lmlab
