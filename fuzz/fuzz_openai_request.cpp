// lmlab serve's request parser (harness/cli/serve_api.h): arbitrary bodies for POST /v1/completions
// and POST /v1/chat/completions, against a Qwen-sized configuration with Qwen's tokenizer from
// ../shared (a ChatML vocabulary, so the chat template is reached too). First byte: bit 0 = the chat
// endpoint; the rest is the body. Accepted outcome besides success: ApiError (whose JSON body must
// serialise). Checked on a request that parses:
//   - it fits: prompt ids inside the vocabulary, prompt + max_tokens within the context and the pool;
//   - TextOutput over its own prompt ids as the "generated" tokens: the text sent never contains a
//     stop string, and what is sent plus finish() is the streamed text cut before the first stop
//     string to appear.
#include <algorithm>
#include <cstdio>
#include <optional>

#include "fuzz/fuzz.h"
#include "harness/cli/serve_api.h"

namespace {

std::optional<lmlab::TextTokenizer> g_tok;
lmlab::Config g_config;

[[noreturn]] void finding(const char* what) {
    std::fprintf(stderr, "fuzz_openai_request: %s\n", what);
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const std::string path = lmlab::fuzz::shared_dir() + "/tokenizers/qwen/tokenizer.json";
    if (!std::filesystem::exists(path)) {
        std::fprintf(stderr, "SKIPPED: %s not found (the shared data folder; set LMLAB_SHARED)\n", path.c_str());
        return 1;  // replay: skip; libFuzzer ignores the value, and the first input then aborts below
    }
    g_tok = lmlab::load_tokenizer(path);
    g_config = lmlab::Config::of(lmlab::Arch::Qwen2);
    g_config.vocab_size = 151936;
    g_config.max_seq_len = 64;
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (!g_tok) std::abort();  // no tokenizer: see LLVMFuzzerInitialize
    if (size == 0) return 0;
    const lmlab::Endpoint endpoint = data[0] & 1 ? lmlab::Endpoint::Chat : lmlab::Endpoint::Completions;
    const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
    const lmlab::ApiContext ctx{g_config, *g_tok, "tiny-qwen2", 4, 12};  // 48 positions in the pool
    lmlab::CompletionRequest r;
    try {
        r = lmlab::parse_completion_request(endpoint, body, ctx, 7);
    } catch (const lmlab::ApiError& e) {
        (void)e.body().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        if (e.status < 400 || e.status > 499) finding("an error that is not a 4xx");
        return 0;
    }
    if (r.prompt.empty() || r.max_tokens == 0 || r.prompt.size() + r.max_tokens > g_config.max_seq_len ||
        (r.prompt.size() + r.max_tokens + 3) / 4 > 12)
        finding("an accepted request that does not fit the context or the pool");
    for (const int id : r.prompt)
        if (id < 0 || static_cast<std::size_t>(id) >= g_config.vocab_size) finding("a prompt id outside the vocabulary");
    r.sampling.validate();

    // the prompt's ids as if generated: what TextOutput sends, against the rule spelled out plainly
    // (the text as each token arrives; at the first token after which it holds a stop string, the
    // text before that string's first occurrence; the stream's held-back bytes only at the end)
    const std::vector<int> stop_ids = g_tok->stop_ids();
    lmlab::TextOutput out(*g_tok, {}, r.stop, stop_ids);
    lmlab::TextTokenizer::Stream stream(*g_tok, {});
    std::string sent, text;
    bool stopped = false;
    for (const int id : r.prompt) {
        sent += out.push(id);
        if (std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end()) break;  // the scheduler ends there
        text += stream.push(id);
        std::size_t cut = std::string::npos;
        for (const std::string& s : r.stop) cut = std::min(cut, text.find(s));
        if (cut != std::string::npos) {
            text.resize(cut);
            stopped = true;
            break;
        }
    }
    sent += out.finish();
    if (!stopped) {
        text += stream.flush();
        std::size_t cut = std::string::npos;  // (a stop string completed by the flushed bytes)
        for (const std::string& s : r.stop) cut = std::min(cut, text.find(s));
        if (cut != std::string::npos) text.resize(cut);
    }
    if (sent != text) finding("the text sent is not the text before the first stop string");
    for (const std::string& s : r.stop)
        if (sent.find(s) != std::string::npos) finding("a stop string was sent");
    return 0;
}
