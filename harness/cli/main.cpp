// lmlab: the harness binary.
//   lmlab list                       the stages, in level order
//   lmlab check [--stage GLOB] ...   run stages against the golden fixtures, write the report
//   lmlab diff OLD.json NEW.json     compare two reports stage by stage
//   lmlab verify-fixtures            are the fixtures present and current?
//   lmlab generate [--prompt TEXT]   run a model: text in, streamed text out (--draft: speculative decoding)
//   lmlab tokenize [FILE|-]          show how text becomes token ids
//   lmlab verify --model PATH        run the reference on your checkpoint, report layer by layer
//   lmlab trace --prompt TEXT        attention heatmaps and top-5 predictions as a page (trace.html)
//   lmlab serve-batch --requests F   many requests at once: continuous batching over a paged KV cache
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "model/load/load.h"
#include "harness/cli/cli_parse.h"
#include "harness/fixture.h"
#include "model/forward.h"
#include "model/session.h"
#include "model/testing/shared_dir.h"
#include "model/serve/speculative.h"
#include "model/tokenizer/text_tokenizer.h"
#include "model/tokenizer/utf8.h"
#include "harness/report/report.h"
#include "harness/cli/serve.h"
#include "harness/runner.h"
#include "harness/stages/stages.h"
#include "harness/report/trace.h"
#include "harness/cli/verify.h"

namespace fs = std::filesystem;
using namespace lmlab;

namespace {

constexpr int kExitSkipped = 77;  // every selected stage skipped: ctest's SKIP_RETURN_CODE

std::string default_shared_dir() {
    return shared_dir_or((fs::path(LMLAB_SOURCE_DIR) / ".." / "shared").lexically_normal().string());
}

std::string default_model_path() { return (fs::path(LMLAB_SOURCE_DIR) / "golden" / "models" / "tiny-llama.h5").string(); }

std::string read_all(const std::string& file) {
    if (file == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
    std::ifstream in(file, std::ios::binary);
    if (!in) throw std::runtime_error(file + ": cannot open");
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// lmlab generate: text (or ids) in, streamed text out, speed on stderr.
struct GenerateArgs {
    std::string model_path, tokenizer_path, prompt_text, prompt_ids;
    bool has_prompt = false, has_prompt_ids = false, allow_special = false, chat = false;
    int max_new_tokens = 0;  // 0: as many as the context allows, up to 256
    SamplerConfig sampling;
    std::string quantize;      // "q8_0": int8 weights on load (model/quantize.cpp)
    std::size_t group = 64;    // its group size
    std::string draft;         // speculative decoding (model/speculative.h): "early-exit:N" or "int8"; "" = off
    std::size_t k = 4;         // draft tokens per round
};

// --draft: the draft model, made from the target (no new weights). Throws naming the value.
Model make_draft(const Model& target, const std::string& spec) {
    const std::string prefix = "early-exit:";
    if (spec == "int8") return int8_draft(target);
    if (spec.rfind(prefix, 0) == 0) {
        const std::string n = spec.substr(prefix.size());
        if (n.empty() || n.size() > 6 || n.find_first_not_of("0123456789") != std::string::npos)
            throw std::runtime_error("--draft '" + spec + "': N must be a number of layers, e.g. early-exit:1");
        return early_exit_draft(target, std::stoul(n));
    }
    throw std::runtime_error("--draft '" + spec + "': known drafts are early-exit:N (the target's first N layers and its "
                             "head) and int8 (a Q8_0 copy of the target)");
}

// The tokenizer that comes with the model and the prompt's ids, for generate and trace: --prompt-ids
// as given, --prompt encoded (ChatML with --chat), neither: BOS alone. A tokenizer found beside the
// model that this engine cannot read (e.g. a SentencePiece-style tokenizer.json with byte_fallback)
// is not fatal for --prompt-ids: it says why and goes on without one.
std::pair<std::optional<TextTokenizer>, std::vector<int>> tokenizer_and_prompt(const Model& model, const GenerateArgs& a) {
    std::optional<TextTokenizer> tok;
    try {
        tok = find_tokenizer(model, a.tokenizer_path);
    } catch (const ModelError& e) {
        if (!a.tokenizer_path.empty() || !a.has_prompt_ids) throw;
        fmt::print(stderr, "lmlab: no usable tokenizer with the model ({}); printing ids\n", e.what());
    }
    std::vector<int> prompt;
    if (a.has_prompt_ids) {
        prompt = parse_ids(a.prompt_ids);
    } else if (a.has_prompt || tok) {
        if (!tok)
            throw std::runtime_error("--prompt needs a tokenizer: none found with " + a.model_path +
                                     "; pass --tokenizer PATH (tokenizer.json, a directory with encoder.json + vocab.bpe, "
                                     "or a llama2.c tokenizer.bin)");
        prompt = a.chat ? tok->encode_chat(a.prompt_text) : tok->encode_prompt(a.prompt_text, a.allow_special);
        if (prompt.empty())
            throw std::runtime_error("the prompt encodes to no tokens: give some text (this tokenizer adds no BOS)");
    } else {
        prompt = {1};  // BOS
    }
    return {std::move(tok), std::move(prompt)};
}

int cmd_generate(const GenerateArgs& a) {
    Model model = load_model(a.model_path);
    constexpr double kMB = 1e6;
    if (!a.quantize.empty()) {  // int8 on load; the float weights are freed
        const double before = static_cast<double>(weight_bytes(model));
        model = quantize_model(std::move(model), a.group);
        const double after = static_cast<double>(weight_bytes(model));
        fmt::print(stderr, "quantized to Q8_0 (group {}): weights {:.2f} MB -> {:.2f} MB ({:.0f}%)\n", a.group,
                   before / kMB, after / kMB, 100.0 * after / before);
    } else if (model.quantized()) {
        fmt::print(stderr, "int8 weights from the file (Q8_0, group {}): {:.2f} MB\n", model.tok_embeddings_q8.group,
                   static_cast<double>(weight_bytes(model)) / kMB);
    }
    const Config& c = model.config;
    // (not a structured binding: the lambdas below capture tok, and capturing a structured binding
    // is C++20 that clang learned only in version 16)
    auto tokenized = tokenizer_and_prompt(model, a);
    std::optional<TextTokenizer>& tok = tokenized.first;
    const std::vector<int>& prompt = tokenized.second;
    // default: up to 256 new tokens, fewer when the context is nearly full (generate()
    // reports a prompt that does not fit at all)
    const std::size_t room = c.max_seq_len > prompt.size() ? c.max_seq_len - prompt.size() : 1;
    const std::size_t n_new = a.max_new_tokens > 0 ? static_cast<std::size_t>(a.max_new_tokens) : std::min<std::size_t>(256, room);
    Sampler sampler(a.sampling, c.vocab_size);
    Session session(model);
    session.check_request(prompt, n_new);  // refuse before printing anything
    // speculative decoding: the draft and its session made (and refused) before printing too
    std::optional<Model> draft;
    std::optional<SpeculativeSession> speculative;
    if (!a.draft.empty()) {
        if (a.sampling.temperature > 0)
            throw std::runtime_error(fmt::format("--draft with --temperature {}: speculative sampling is not implemented "
                                                 "(greedy only); use --temperature 0 or drop --draft",
                                                 a.sampling.temperature));
        draft.emplace(make_draft(model, a.draft));
        speculative.emplace(model, *draft, a.k);
        fmt::print(stderr, "speculative decoding: draft {}, k = {}\n", draft->source, a.k);
    }
    // stop tokens: EOS and BOS (llama2.c's end-of-story marker), or GPT-2's <|endoftext|>
    const std::vector<int> stops = generation_stop_ids(model, tok ? &*tok : nullptr);
    auto is_stop = [&](int id) { return std::find(stops.begin(), stops.end(), id) != stops.end(); };
    std::optional<TextTokenizer::Stream> stream;
    if (tok) {
        stream.emplace(*tok, prompt.back());  // keeps the space after the prompt's last word
        // echo the prompt as text (an id past the tokenizer's vocabulary, e.g. a padding row, as <id N>)
        if (a.has_prompt_ids || a.chat)
            for (int id : prompt) fmt::print("{}", id < tok->vocab_size() ? tok->decode(std::span<const int>(&id, 1)) : fmt::format("<id {}>", id));
        else
            fmt::print("{}", a.prompt_text);
    } else {
        fmt::print("prompt ids: {}\nnew ids:", fmt::join(prompt, ","));
    }
    std::fflush(stdout);
    auto on_token = [&](int id) {
        // (an id past the tokenizer's vocabulary: a padding row of the embedding, e.g. Qwen's 151665..151935)
        if (stream && !is_stop(id)) fmt::print("{}", id < tok->vocab_size() ? stream->push(id) : fmt::format("<id {}>", id));
        else if (!stream) fmt::print(" {}", id);
        std::fflush(stdout);
    };
    GenerationResult result;
    SpeculativeStats stats;
    if (speculative) {
        SpeculativeResult r = speculative->generate(prompt, n_new, stops, on_token);
        result.tokens = std::move(r.tokens);
        result.n_prompt = prompt.size();
        result.prompt_seconds = r.prompt_seconds;
        result.generate_seconds = r.generate_seconds;
        result.stop_reason = r.stop_reason;
        stats = r.stats;
    } else {
        result = session.generate(prompt, n_new, sampler, stops, on_token);
    }
    if (stream) fmt::print("{}", stream->flush());
    fmt::print("\n");
    std::fflush(stdout);  // the text first, then the statistics on stderr
    if (tok) fmt::print(stderr, "new ids: {}\n", fmt::join(result.tokens, ","));
    // speculative: the prompt's last token is fed in the first round, with the first guesses
    const std::size_t prompt_run = speculative ? result.n_prompt - 1 : result.n_prompt;
    fmt::print(stderr, "prompt: {} tokens in {:.3f} s ({:.1f} tok/s); generated: {} tokens in {:.3f} s ({:.1f} tok/s); stop: {}\n",
               prompt_run, result.prompt_seconds, static_cast<double>(prompt_run) / std::max(result.prompt_seconds, 1e-9),
               result.tokens.size(), result.generate_seconds,
               static_cast<double>(result.tokens.size()) / std::max(result.generate_seconds, 1e-9), result.stop_reason);
    if (speculative)
        fmt::print(stderr,
                   "speculative: acceptance {:.1f}% ({} of {} draft tokens), {} rounds ({:.2f} tokens per target call), "
                   "{} draft tokens run, {:.1f} tok/s\n",
                   100.0 * stats.acceptance_rate(), stats.accepted, stats.proposed, stats.rounds,
                   static_cast<double>(result.tokens.size()) / static_cast<double>(std::max<std::size_t>(stats.target_calls, 1)),
                   stats.draft_tokens, static_cast<double>(result.tokens.size()) / std::max(result.generate_seconds, 1e-9));
    return 0;
}

// lmlab trace: the attention weights of every layer and head over the prompt and the greedy tokens,
// and the top-5 at every step, as a page (harness/trace.h).
int cmd_trace(const GenerateArgs& a, const std::string& out_path) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!a.has_prompt && !a.has_prompt_ids)
        throw std::invalid_argument("lmlab trace needs a prompt: --prompt TEXT or --prompt-ids IDS");
    const Model model = load_model(a.model_path);
    const auto [tok, prompt] = tokenizer_and_prompt(model, a);
    const std::vector<int> stops = generation_stop_ids(model, tok ? &*tok : nullptr);
    const AttentionTrace t = trace_attention(model, prompt, static_cast<std::size_t>(a.max_new_tokens), stops);
    const std::string page = trace_html(t, model, tok ? &*tok : nullptr, a.model_path, a.has_prompt ? a.prompt_text : "");
    if (fs::path(out_path).has_parent_path()) fs::create_directories(fs::path(out_path).parent_path());
    std::ofstream out(out_path);
    if (!(out << page)) throw std::runtime_error(out_path + ": cannot write the trace page (pass --out PATH)");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("trace: {} ({:.0f} KB: {} layers x {} heads over {} positions, {} steps; {:.2f} s)\n", out_path,
               static_cast<double>(page.size()) / 1024.0, model.config.n_layers, model.config.n_heads, t.tokens.size(),
               t.steps.size(), seconds);
    return 0;
}

// lmlab tokenize: text -> ids (or pieces) as JSON.
struct TokenizeArgs {
    std::string model_path, tokenizer_path, input = "-";
    int vocab_size = 0;
    bool add_bos = false, show_pieces = false, allow_special = false;
};

int cmd_tokenize(const TokenizeArgs& a) {
    std::optional<TextTokenizer> tok;
    if (!a.tokenizer_path.empty()) {
        tok = load_tokenizer(a.tokenizer_path, a.vocab_size);
    } else if (fs::path(a.model_path).extension() == ".h5") {
        tok = load_tokenizer(a.model_path);  // the vocabulary only, no need to load the weights
    } else {
        tok = find_tokenizer(load_model(a.model_path), "");
        if (!tok) throw std::runtime_error("no tokenizer found with " + a.model_path + "; pass --tokenizer PATH");
    }
    const std::string text = read_all(a.input);
    const std::vector<int> ids = a.add_bos ? tok->encode_prompt(text, a.allow_special) : tok->encode(text, a.allow_special);
    if (a.show_pieces) {
        nlohmann::json pieces = nlohmann::json::array();
        for (int id : ids) pieces.push_back(utf8_escaped(tok->piece(id)));  // half a character shows as \xNN
        fmt::print("{}\n", pieces.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } else {
        fmt::print("[{}]\n", fmt::join(ids, ", "));
    }
    return 0;
}

// lmlab check: run the stages, print a line each, write the report.
int cmd_check(RunOptions opt, const std::string& golden_dir, const std::string& shared_dir, const std::string& report_dir,
              const std::string& scripts_dir, bool no_report) {
    check_manifest(golden_dir, scripts_dir);  // refuse stale or damaged fixtures up front
    opt.golden_dir = golden_dir;
    opt.shared_dir = shared_dir;
    opt.exporter_sha256 = exporter_sha256(scripts_dir);
    const auto results = run_stages(opt, print_stage_line);
    if (results.empty()) {
        fmt::print(stderr, "no stage matches --stage '{}'{}; `lmlab list` shows them\n", opt.stage_glob,
                   opt.level.empty() ? "" : " at level " + opt.level);
        return 2;
    }
    auto meta = collect_meta(LMLAB_SOURCE_DIR, golden_dir);
    meta.selection = opt.stage_glob + (opt.level.empty() ? "" : " level " + opt.level);
    const auto report = report_json(results, meta);
    const auto& sum = report["summary"];
    const int n = sum["stages"].get<int>(), fail = sum["fail"].get<int>(), error = sum["error"].get<int>(),
              skipped = sum["skipped"].get<int>();
    fmt::print("\n{} stage{}: {} passed, {} failed, {} errors, {} skipped, {} not run\n", n, n == 1 ? "" : "s",
               sum["pass"].get<int>(), fail, error, skipped, sum["not_run"].get<int>());
    if (!no_report) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto changes = write_report(report_dir, report);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::error_code ec;
        const auto html_bytes = fs::file_size(fs::path(report_dir) / "report.html", ec);
        fmt::print("report: {}/report.html (plots, {:.0f} KB; also report.md, report.json; written in {:.2f} s)\n", report_dir,
                   ec ? 0.0 : static_cast<double>(html_bytes) / 1024.0, seconds);
        if (!changes.empty()) {
            fmt::print("changed since the previous report ({}/report.prev.json):\n", report_dir);
            for (const auto& c : changes) fmt::print("  ! {}\n", c);
        }
    }
    if (fail || error) return 1;
    return (skipped == n) ? kExitSkipped : 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"lmlab: a readable LLM inference engine, checked number by number against PyTorch"};
    app.require_subcommand(1);

    std::string golden_dir = (fs::path(LMLAB_SOURCE_DIR) / "golden").string();
    std::string report_dir = (fs::path(LMLAB_SOURCE_DIR) / "reports").string();
    std::string shared_dir = default_shared_dir();
    const std::string scripts_dir = (fs::path(LMLAB_SOURCE_DIR) / "scripts").string();

    auto* list = app.add_subcommand("list", "List the stages in level order");
    bool list_json = false;
    list->add_flag("--json", list_json, "As JSON (what the exporter reads)");

    RunOptions opt;
    bool no_report = false;
    auto* check = app.add_subcommand("check", "Run stages against the golden fixtures and write the error report");
    check->add_option("--stage", opt.stage_glob, "Only stages whose id matches this glob (e.g. 'kernel.*')");
    check->add_option("--level", opt.level, "Only this level")->check(CLI::IsMember(levels()));
    check->add_option("--golden", golden_dir, "Fixture folder")->capture_default_str();
    check->add_option("--report", report_dir, "Report folder")->capture_default_str();
    check->add_option("--shared", shared_dir, "Folder with models/ and tokenizers/ (env LMLAB_SHARED)")->capture_default_str();
    check->add_flag("--keep-going", opt.keep_going, "Run higher levels even when a lower level failed");

    check->add_flag("--no-report", no_report, "Do not write report files");

    std::string old_path, new_path, diff_page;
    auto* diff = app.add_subcommand("diff", "Compare two report.json files stage by stage (and write an HTML page)");
    diff->add_option("old", old_path, "Older report.json")->required();
    diff->add_option("new", new_path, "Newer report.json")->required();
    diff->add_option("--html", diff_page, "Where to write the page (default: diff.html beside NEW)");

    auto* verify = app.add_subcommand("verify-fixtures", "Check that the fixtures exist and match the exporter");
    verify->add_option("--golden", golden_dir, "Fixture folder")->capture_default_str();

    auto* exporter_hash = app.add_subcommand(
        "exporter-sha256", "Print the exporter's hash (what every fixture records; the one definition of it)");
    exporter_hash->group("");  // internal: the exporter and scripts/golden_status.py ask it

    std::string lmlab_path;
    auto* ctest_script = app.add_subcommand("ctest-script", "Print the CTest code that declares one test per stage (used by the build)");
    ctest_script->group("");  // internal
    ctest_script->add_option("--binary", lmlab_path)->required();
    ctest_script->add_option("--report", report_dir);

    GenerateArgs gen;
    gen.model_path = default_model_path();
    auto* generate = app.add_subcommand("generate", "Generate text with a model");
    generate->add_option("--model", gen.model_path,
                         "Hugging Face directory (config.json), llm.c or llama2.c checkpoint, or lmlab .h5 file")
        ->capture_default_str();
    generate->add_option("--tokenizer", gen.tokenizer_path,
                         "tokenizer.json, a directory with encoder.json + vocab.bpe, or a llama2.c tokenizer.bin "
                         "(default: the one that comes with the model)");
    generate->add_flag("--chat", gen.chat,
                       "Wrap the prompt in the ChatML template (Qwen: <|im_start|>user ... <|im_start|>assistant); "
                       "generation stops at <|im_end|>");
    generate->add_flag("--allow-special", gen.allow_special,
                       "Recognise special tokens such as <|endoftext|> in the prompt (else plain text)");
    auto* opt_prompt = generate->add_option("--prompt", gen.prompt_text, "Prompt text (encoded with BOS)");
    auto* opt_prompt_ids =
        generate->add_option("--prompt-ids", gen.prompt_ids, "Prompt as token ids, e.g. 1,403,407")->excludes(opt_prompt);
    generate->add_option("--max-new-tokens", gen.max_new_tokens, "Tokens to generate (default: 256, or what the context allows)")
        ->check(CLI::Range(1, 1 << 30));
    generate->add_option("--temperature", gen.sampling.temperature, "0 = greedy")->capture_default_str();
    generate->add_option("--top-k", gen.sampling.top_k, "Keep the k most probable tokens (0 = off)")->capture_default_str();
    generate->add_option("--top-p", gen.sampling.top_p, "Nucleus: keep the smallest set with probability >= p (1 = off)")->capture_default_str();
    generate->add_option("--seed", gen.sampling.seed, "RNG seed: same seed, same text")->capture_default_str();
    auto* opt_quantize = generate->add_option("--quantize", gen.quantize,
                                              "Quantize the weights on load: q8_0 = int8 in groups, as llama2.c's runq.c "
                                              "(prints the weight memory before and after on stderr)")
                             ->check(CLI::IsMember({"q8_0"}));
    generate->add_option("--group", gen.group, "Q8_0 group size: elements per scale; must divide every row length")
        ->check(CLI::Range(std::size_t{1}, kQ8MaxGroup))
        ->needs(opt_quantize)
        ->capture_default_str();
    auto* opt_draft = generate->add_option("--draft", gen.draft,
                                           "Speculative decoding (greedy only): early-exit:N = the model's first N layers "
                                           "as the draft, int8 = a Q8_0 copy; the output is the same text, faster or not");
    generate->add_option("--k", gen.k, "Draft tokens per round (with --draft)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{256}))
        ->needs(opt_draft)
        ->capture_default_str();

    GenerateArgs tr;
    tr.model_path = default_model_path();
    tr.max_new_tokens = 8;
    std::string trace_out = (fs::path(report_dir) / "trace.html").string();
    auto* trace = app.add_subcommand("trace", "Attention weights per layer and head, and the top-5 next tokens per step, as a page");
    trace->add_option("--model", tr.model_path, "A model as for generate")->capture_default_str();
    trace->add_option("--tokenizer", tr.tokenizer_path, "As for generate (default: the one that comes with the model)");
    auto* tr_prompt = trace->add_option("--prompt", tr.prompt_text, "Prompt text (encoded as generate does)");
    auto* tr_prompt_ids = trace->add_option("--prompt-ids", tr.prompt_ids, "Prompt as token ids, e.g. 1,403,407")->excludes(tr_prompt);
    trace->add_flag("--chat", tr.chat, "Wrap the prompt in the ChatML template (Qwen)");
    trace->add_flag("--allow-special", tr.allow_special, "Recognise special tokens such as <|endoftext|> in the prompt");
    trace->add_option("--max-new-tokens", tr.max_new_tokens, "Greedy tokens to generate")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    trace->add_option("--out", trace_out, "The page")->capture_default_str();

    TokenizeArgs tk;
    tk.model_path = default_model_path();
    auto* tokenize = app.add_subcommand("tokenize", "Encode text into token ids (JSON array)");
    auto* tok_opt = tokenize->add_option("--tokenizer", tk.tokenizer_path,
                                         "tokenizer.json, a directory with encoder.json + vocab.bpe, llm.c's "
                                         "gpt2_tokenizer.bin, or a llama2.c tokenizer.bin");
    tokenize->add_option("--model", tk.model_path, "Use this model's vocabulary")->excludes(tok_opt)->capture_default_str();
    tokenize->add_option("--vocab-size", tk.vocab_size, "Read only this many tokens of --tokenizer (default: all in the file)")
        ->check(CLI::Range(1, 1 << 24));
    tokenize->add_flag("--bos", tk.add_bos, "Encode as a prompt: prepend BOS (id 1) where the vocabulary has one");
    tokenize->add_flag("--allow-special", tk.allow_special,
                       "Byte-level BPE: recognise special tokens such as <|endoftext|> in the text (else plain text)");
    tokenize->add_flag("--pieces", tk.show_pieces, "Show the pieces instead of the ids");
    tokenize->add_option("input", tk.input, "Text file, or - for standard input")->capture_default_str();

    VerifyArgs va;
    std::string verify_prompt_ids;
    auto* verify_model = app.add_subcommand(
        "verify", "Run the reference (transformers, llama_ref.py) on your own checkpoint and report layer by layer");
    verify_model->add_option("--model", va.model_path, "Hugging Face directory (config.json), llm.c or llama2.c checkpoint")
        ->required();
    auto* v_prompt = verify_model->add_option("--prompt", va.prompt_text, "Prompt text, encoded with the model's tokenizer")
                         ->capture_default_str();
    verify_model->add_option("--prompt-ids", verify_prompt_ids, "Prompt as token ids, e.g. 1,403,407")->excludes(v_prompt);
    verify_model->add_option("--tokenizer", va.tokenizer_path, "Tokenizer for --prompt (default: the one with the model)");
    verify_model->add_option("--generate", va.generate, "Greedy tokens to compare after the prompt")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    verify_model->add_option("--out", va.out_dir, "Folder for the fixtures and the report (default: reports/verify/<model>)");
    verify_model->add_flag("--no-f64", va.no_f64,
                           "Skip the float64 truth (about half the reference's time and memory; no accuracy ratio)");

    ServeArgs sv;
    sv.model_path = default_model_path();
    auto* serve_batch = app.add_subcommand(
        "serve-batch", "Serve many requests at once: continuous batching, chunked prefill, paged KV cache");
    serve_batch->add_option("--model", sv.model_path, "A model as for generate")->capture_default_str();
    serve_batch->add_option("--requests", sv.requests_path,
                            "JSON Lines, one request per line: {\"prompt\": \"...\" or \"prompt_ids\": [...], "
                            "\"max_tokens\": N, \"arrival_step\": S, \"temperature\", \"top_k\", \"top_p\", \"seed\", \"id\"}")
        ->required();
    serve_batch->add_option("--tokenizer", sv.tokenizer_path, "As for generate (default: the one that comes with the model)");
    serve_batch->add_option("--out", sv.out_path, "Write every request's output and latency here (JSON Lines)");
    serve_batch->add_option("--chunk", sv.options.chunk, "At most this many prompt tokens per step (chunked prefill)")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    serve_batch->add_option("--max-running", sv.options.max_running, "Sequences in the batch at once")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();
    serve_batch->add_option("--page-size", sv.options.page_size, "Positions per KV-cache page")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    serve_batch->add_option("--kv-pages", sv.options.n_pages,
                            "Pages in the KV pool (default 0: enough for the --max-running largest requests at "
                            "once); a request waits at admission until its prompt + max_tokens fit")
        ->check(CLI::Range(0, 1 << 24))
        ->capture_default_str();
    serve_batch->add_flag("--sequential", sv.sequential,
                          "Run the same requests one after another instead (the baseline batching is compared with)");
    serve_batch->add_flag("--quiet", sv.quiet, "No progress line");

    // The kernel path and threads, the same options for check and generate (model/forward.h).
    bool plain = false;
    int threads = 1;
    for (CLI::App* sub : {check, generate, verify_model, trace, serve_batch}) {
        sub->add_flag("--plain", plain, "Run on the plain kernels (the readable reference) instead of the fast ones");
        sub->add_option("--threads", threads, "Threads for the fast kernels (results are bit-identical for any count)")
            ->check(CLI::Range(1, 256))
            ->capture_default_str();
    }

    CLI11_PARSE(app, argc, argv);
    set_kernel_path(plain ? KernelPath::Plain : KernelPath::Fast);
    set_kernel_threads(threads);
    gen.has_prompt = opt_prompt->count() > 0;
    gen.has_prompt_ids = opt_prompt_ids->count() > 0;
    tr.has_prompt = tr_prompt->count() > 0;
    tr.has_prompt_ids = tr_prompt_ids->count() > 0;

    try {
        if (*list) {
            if (list_json) {
                // what the exporter reads (scripts/lmlab_ref): the stage table and the family rows, one source
                fmt::print("{}\n", stage_table_json().dump(1));
                return 0;
            }
            std::size_t id_width = 0;  // the longest id sets the first column
            for (const Stage& s : stages()) id_width = std::max(id_width, std::string(s.id).size());
            for (const Stage& s : stages())
                fmt::print("{:<{}} {:<10} {:<14} {:<32} atol {:<7g} rtol {:<7g} {}\n", s.id, id_width, s.level,
                           stage_family_label(s), s.fixture, s.tol.atol, s.tol.rtol, s.tol_why);
            return 0;
        }
        if (*exporter_hash) {
            fmt::print("{}\n", exporter_sha256(scripts_dir));
            return 0;
        }
        if (*verify) {
            check_manifest(golden_dir, scripts_dir, /*model_files=*/true);
            fmt::print("fixtures in {} are present and current (exporter {})\n", golden_dir,
                       exporter_sha256(scripts_dir).substr(0, 12));
            return 0;
        }
        if (*diff) {
            const auto old_report = load_report(old_path), new_report = load_report(new_path);
            fmt::print("{}", diff_table(old_report, new_report));
            if (diff_page.empty()) diff_page = (fs::path(new_path).parent_path() / "diff.html").string();
            std::ofstream page(diff_page);
            if (!(page << diff_html(old_report, new_report, old_path, new_path)))
                throw std::runtime_error(diff_page + ": cannot write the diff page: is its folder there and writable? (--html PATH writes it elsewhere)");
            fmt::print("diff page: {}\n", diff_page);
            return 0;
        }
        if (*ctest_script) {
            // One test per stage. Gating with CTest fixtures, per family: every stage sets up the gates
            // it provides ("kernel.gpt2", "gpt2.layer", ...) and requires the gates below it of its own
            // family (stage_requires), so one failing kernel turns every test of the families that
            // use it into "Not Run", and nothing else.
            for (const Stage& s : stages()) {
                const std::string name = std::string("stage.") + s.id;
                std::string provides, required = "golden";
                for (const std::string& g : stage_provides(s)) provides += (provides.empty() ? "" : ";") + g;
                for (const std::string& g : stage_requires(s)) required += ";" + g;
                fmt::print("add_test([=[{}]=] \"{}\" check --stage [=[{}]=] --report \"{}/ctest/{}\")\n", name, lmlab_path,
                           s.id, report_dir, s.id);
                fmt::print("set_tests_properties([=[{}]=] PROPERTIES LABELS \"{}\" FIXTURES_SETUP \"{}\" "
                           "FIXTURES_REQUIRED \"{}\" SKIP_RETURN_CODE {})\n",
                           name, s.level, provides, required, kExitSkipped);
            }
            return 0;
        }
        if (*generate) return cmd_generate(gen);
        if (*verify_model) {
            if (!verify_prompt_ids.empty()) va.prompt_ids = parse_ids(verify_prompt_ids);
            if (va.out_dir.empty()) va.out_dir = default_verify_dir(report_dir, va.model_path);
            return cmd_verify(va, scripts_dir, LMLAB_PYTHON, shared_dir);
        }
        if (*tokenize) return cmd_tokenize(tk);
        if (*trace) return cmd_trace(tr, trace_out);
        if (*serve_batch) return cmd_serve_batch(sv);
        if (*check) return cmd_check(opt, golden_dir, shared_dir, report_dir, scripts_dir, no_report);
    } catch (const std::exception& e) {
        fmt::print(stderr, "lmlab: {}\n", e.what());
        return 2;
    }
    return 0;
}
