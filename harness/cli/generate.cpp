// Text in, text out: lmlab generate, trace, tokenize and decode.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "harness/cli/commands.h"
#include "harness/report/trace.h"
#include "model/load/load.h"
#include "model/serve/speculative.h"
#include "model/session.h"
#include "model/tokenizer/utf8.h"

namespace fs = std::filesystem;

namespace lmlab {

namespace {

// --draft: the draft model, made from the target (no new weights). Throws naming the value.
Model make_draft(const Model& target, const std::string& spec) {
    const std::string prefix = "early-exit:";
    if (spec == "int8") return int8_draft(target);
    if (spec.rfind(prefix, 0) == 0) {
        const std::string n = spec.substr(prefix.size());
        if (n.empty() || n.size() > 6 || n.find_first_not_of("0123456789") != std::string::npos)
            throw UsageError("--draft '" + spec + "': N must be a number of layers, e.g. early-exit:1");
        return early_exit_draft(target, std::stoul(n));
    }
    throw UsageError("--draft '" + spec + "': known drafts are early-exit:N (the target's first N layers and its head) and "
                     "int8 (a Q8_0 copy of the target)");
}

double per_second(std::size_t n, double seconds) { return static_cast<double>(n) / std::max(seconds, 1e-9); }

// The prompt as the reader sees it on stdout: the text they typed, or the ids' text (decode's rule:
// "In the beginning", spaces kept). With --chat only the answer is printed: the template is not the
// user's text (--verbose shows it on stderr).
std::string prompt_echo(const Prompt& p, const TextTokenizer* tok, const GenerateArgs& a) {
    if (a.prompt.chat) return "";
    if (!p.from_ids) return p.text;
    return tok ? tok->decode(p.ids) : "";
}

}  // namespace

int cmd_generate(const GenerateArgs& a) {
    Model model = load_model_option(a.model);
    constexpr double kMB = 1e6;
    if (a.quantize.given()) {
        model = apply_quantize(std::move(model), a.quantize);
    } else if (model.quantized()) {
        fmt::print(stderr, "int8 weights from the file (Q8_0, group {}): {:.2f} MB\n", model.tok_embeddings_q8.group,
                   static_cast<double>(weight_bytes(model)) / kMB);
    }
    const Config& c = model.config;
    const std::optional<TextTokenizer> tok = model_tokenizer(model, a.model, !a.prompt.has_ids());
    const TextTokenizer* tk = tok ? &*tok : nullptr;
    const Prompt prompt = read_prompt(model, tok, a.prompt, a.model);
    if (a.verbose && tk) fmt::print(stderr, "prompt as the model sees it ({} tokens): {}\n", prompt.ids.size(), tk->decode(prompt.ids));
    // default: up to 256 new tokens, fewer when the context is nearly full (a prompt that does not
    // fit at all is refused by check_request)
    const std::size_t room = c.max_seq_len > prompt.ids.size() ? c.max_seq_len - prompt.ids.size() : 1;
    const std::size_t n_new =
        a.max_new_tokens > 0 ? static_cast<std::size_t>(a.max_new_tokens) : std::min<std::size_t>(256, room);
    Sampler sampler(a.sampling, c.vocab_size);
    Session session(model);
    session.check_request(prompt.ids, n_new);  // refuse before printing anything
    // speculative decoding: the draft and its session made (and refused) before printing too
    std::optional<Model> draft;
    std::optional<SpeculativeSession> speculative;
    if (!a.draft.empty()) {
        if (a.sampling.temperature > 0)
            throw UsageError(fmt::format("--draft with --temperature {}: speculative sampling is not implemented (greedy "
                                         "only); use --temperature 0 or drop --draft",
                                         a.sampling.temperature));
        draft.emplace(make_draft(model, a.draft));
        speculative.emplace(model, *draft, a.k);
        fmt::print(stderr, "speculative decoding: draft {}, k = {}\n", draft->source, a.k);
    }
    // stop tokens: EOS and BOS (llama2.c's end-of-story marker), GPT-2's <|endoftext|>, config.json's eos
    const std::vector<int> stops = generation_stop_ids(model, tk);
    auto is_stop = [&](int id) { return std::find(stops.begin(), stops.end(), id) != stops.end(); };
    // streamed as it comes (not with --json): the text continues the prompt (decode's rule keeps the
    // space before the first new word)
    std::optional<TextTokenizer::Stream> stream;
    if (!a.json) {
        if (tk) {
            stream.emplace(*tk, prompt.ids);
            fmt::print("{}", prompt_echo(prompt, tk, a));
        } else {
            fmt::print("prompt ids: {}\nnew ids:", fmt::join(prompt.ids, ","));
        }
        std::fflush(stdout);
    }
    auto on_token = [&](int id) {
        if (a.json) return;
        if (stream && !is_stop(id)) fmt::print("{}", stream->push(id));
        else if (!stream) fmt::print(" {}", id);
        std::fflush(stdout);
    };
    GenerationResult result;
    SpeculativeStats stats;
    if (speculative) {
        SpeculativeResult r = speculative->generate(prompt.ids, n_new, stops, on_token);
        result.tokens = std::move(r.tokens);
        result.n_prompt = prompt.ids.size();
        result.prompt_seconds = r.prompt_seconds;
        result.generate_seconds = r.generate_seconds;
        result.stop_reason = r.stop_reason;
        stats = r.stats;
    } else {
        result = session.generate(prompt.ids, n_new, sampler, stops, on_token);
    }
    std::vector<int> shown = result.tokens;  // a stop token ends the text; it is not part of it
    if (!shown.empty() && is_stop(shown.back())) shown.pop_back();
    if (a.json) {
        nlohmann::json j = {{"model", model.source},
                            {"prompt_ids", prompt.ids},
                            {"ids", result.tokens},
                            {"stop_reason", result.stop_reason},
                            {"prompt_tokens", prompt.ids.size()},
                            {"new_tokens", result.tokens.size()},
                            {"prompt_seconds", result.prompt_seconds},
                            {"generate_seconds", result.generate_seconds},
                            {"prompt_tokens_per_second", per_second(prompt.ids.size(), result.prompt_seconds)},
                            {"tokens_per_second", per_second(result.tokens.size(), result.generate_seconds)}};
        if (tk) {
            j["prompt_text"] = prompt.from_ids ? tk->decode(prompt.ids) : prompt.text;
            j["text"] = tk->decode(shown, prompt.ids);
        }
        fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } else {
        if (stream) fmt::print("{}", stream->flush());
        fmt::print("\n");
    }
    finish_stdout();  // the text first (and checked: a full disk is an error), then the statistics on stderr
    if (a.json) return kExitOk;
    if (tk) fmt::print(stderr, "new ids: {}\n", fmt::join(result.tokens, ","));
    // speculative decoding runs the prompt but its last token, which goes with the first round's guesses
    const std::size_t run = speculative ? result.n_prompt - 1 : result.n_prompt;
    const std::string prompt_line =
        speculative ? fmt::format("prompt: {} token{} ({} run before the first round, the last with its guesses) in "
                                  "{:.3f} s",
                                  result.n_prompt, result.n_prompt == 1 ? "" : "s", run, result.prompt_seconds)
                    : fmt::format("prompt: {} token{} in {:.3f} s ({:.1f} tok/s)", run, run == 1 ? "" : "s",
                                  result.prompt_seconds, per_second(run, result.prompt_seconds));
    fmt::print(stderr, "{}; generated: {} token{} in {:.3f} s ({:.1f} tok/s); stop: {}\n", prompt_line,
               result.tokens.size(), result.tokens.size() == 1 ? "" : "s", result.generate_seconds,
               per_second(result.tokens.size(), result.generate_seconds), result.stop_reason);
    if (speculative)
        fmt::print(stderr,
                   "speculative: acceptance {:.1f}% ({} of {} draft tokens), {} rounds ({:.2f} tokens per target call), "
                   "{} draft tokens run, {:.1f} tok/s\n",
                   100.0 * stats.acceptance_rate(), stats.accepted, stats.proposed, stats.rounds,
                   static_cast<double>(result.tokens.size()) / static_cast<double>(std::max<std::size_t>(stats.target_calls, 1)),
                   stats.draft_tokens, per_second(result.tokens.size(), result.generate_seconds));
    return kExitOk;
}

// lmlab trace: the attention weights of every layer and head over the prompt and the greedy tokens,
// and the top-5 at every step, as a page (harness/report/trace.h).
int cmd_trace(const TraceArgs& a) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!a.prompt.given()) throw UsageError("lmlab trace needs a prompt: --prompt TEXT, --prompt-file PATH or --prompt-ids IDS");
    OutputFile out(a.out, "--out");  // before the work: a wrong path fails now
    const Model model = load_model_option(a.model);
    const std::optional<TextTokenizer> tok = model_tokenizer(model, a.model, !a.prompt.has_ids());
    const Prompt prompt = read_prompt(model, tok, a.prompt, a.model);
    const std::vector<int> stops = generation_stop_ids(model, tok ? &*tok : nullptr);
    const AttentionTrace t = trace_attention(model, prompt.ids, static_cast<std::size_t>(a.max_new_tokens), stops);
    const std::string page = trace_html(t, model, tok ? &*tok : nullptr, a.model.model_path, prompt.text);
    out.write(page);
    out.close();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("trace: {} ({:.0f} KB: {} layers x {} heads over {} positions, {} steps; {:.2f} s)\n", a.out,
               static_cast<double>(page.size()) / 1024.0, model.config.n_layers, model.config.n_heads, t.tokens.size(),
               t.steps.size(), seconds);
    finish_stdout();
    return kExitOk;
}

// lmlab tokenize: text -> ids (or pieces) as JSON.
int cmd_tokenize(const TokenizeArgs& a) {
    if (a.input != "-" && !fs::exists(a.input))  // most often the text itself, typed where the file goes
        throw UsageError(fmt::format("input '{}': no such file. tokenize reads a text file, or standard input with "
                                     "-: printf '%s' 'Once upon a time' | lmlab tokenize -",
                                     a.input));
    require_model_path(a.model);  // given with --tokenizer too: a mistyped --model is not ignored
    std::optional<TextTokenizer> tok;
    if (!a.model.tokenizer_path.empty()) {
        tok = load_tokenizer(a.model.tokenizer_path, a.vocab_size);
    } else if (fs::path(a.model.model_path).extension() == ".h5") {
        tok = load_tokenizer(a.model.model_path);  // the vocabulary only, no need to load the weights
    } else {
        tok = model_tokenizer(load_model_option(a.model), a.model, true);
        if (!tok) throw UsageError("no tokenizer found with " + a.model.model_path + "; pass --tokenizer PATH");
    }
    const std::string text = read_input(a.input, "input");
    const std::vector<int> ids = a.add_bos ? tok->encode_prompt(text, a.allow_special) : tok->encode(text, a.allow_special);
    if (a.show_pieces) {
        nlohmann::json pieces = nlohmann::json::array();
        for (int id : ids) pieces.push_back(utf8_escaped(tok->piece(id)));  // half a character shows as \xNN
        fmt::print("{}\n", pieces.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } else {
        fmt::print("[{}]\n", fmt::join(ids, ", "));
    }
    finish_stdout();
    return kExitOk;
}

// lmlab decode: ids -> text, by the rule every command uses (TextTokenizer::decode).
int cmd_decode(const DecodeArgs& a) {
    require_model_path(a.model);  // given with --tokenizer too: a mistyped --model is not ignored
    std::optional<TextTokenizer> tok;
    // the ids there are: the model's embedding rows when the model is loaded (a padded row has no
    // text and prints as <id N>), else the tokenizer's (with --tokenizer the model is not loaded, so a
    // padded row's id is refused there)
    std::size_t vocab = 0;
    std::string owner;
    if (!a.model.tokenizer_path.empty() || fs::path(a.model.model_path).extension() == ".h5") {
        owner = a.model.tokenizer_path.empty() ? a.model.model_path : a.model.tokenizer_path;
        tok = load_tokenizer(owner);
        vocab = static_cast<std::size_t>(tok->vocab_size());
    } else {
        const Model m = load_model_option(a.model);
        tok = model_tokenizer(m, a.model, true);
        vocab = m.config.vocab_size;
        owner = a.model.model_path;
    }
    if (!tok) throw UsageError("no tokenizer found with " + a.model.model_path + "; pass --tokenizer PATH");
    const std::vector<int> ids = parse_ids(a.ids, "ids");
    const std::vector<int> context = a.context.empty() ? std::vector<int>{} : parse_ids(a.context, "--context");
    // an id outside the vocabulary is refused, as generate refuses it in a prompt: printed as <id N>
    // it would look like a padded row's id
    check_ids_in_vocabulary(ids, vocab, "ids", owner);
    check_ids_in_vocabulary(context, vocab, "--context", owner);
    fmt::print("{}\n", tok->decode(ids, context));
    finish_stdout();
    return kExitOk;
}

}  // namespace lmlab
