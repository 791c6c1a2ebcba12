// lmlab serve's OpenAI-compatible API, the parts that touch no socket: a request body in, a checked
// request out (or an OpenAI-shaped error naming the field), and the text of a request's tokens as
// they come, cut at its stop strings. harness/cli/serve_http.cpp puts them behind HTTP; the fuzz
// target fuzz/fuzz_openai_request.cpp feeds the parser arbitrary bodies.
//
// The two endpoints and the fields they take (anything else is refused by name: a typo must not
// silently mean a default, as in serve-batch's requests file):
//   POST /v1/completions       prompt (text, or a list of token ids), max_tokens (default 16),
//                              logprobs (0-20: the chosen token's and the top N alternatives')
//   POST /v1/chat/completions  messages (system, user and assistant turns {"role", "content": text,
//                              "name" (ignored, as the templates do)}: encode_chat's ChatML or Llama
//                              3 template, so only a model whose tokenizer has their tokens; what
//                              TextTokenizer::chat_refusal names is refused, "tool" among them),
//                              max_tokens or max_completion_tokens (default: the rest of the context)
//   both                       model (optional; when given, the served model's id), temperature
//                              (0-2, default 1 as OpenAI's), top_p, top_k (an extension), seed (default:
//                              a fresh one per request), stop (a string or up to 4), stream,
//                              stream_options.include_usage, user (ignored), return_token_ids (an
//                              extension: the token ids beside the text, for tests)
//   accepted at their neutral value only (anything else is "unsupported" by name): n 1, best_of 1,
//   echo false, suffix "", presence_penalty 0, frequency_penalty 0, logit_bias {}, chat's
//   logprobs false, response_format {"type": "text"}, tools / tool_choice / functions / function_call null.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.h"
#include "model/sampler.h"
#include "model/tokenizer/text_tokenizer.h"

namespace lmlab {

// An error a client gets, as OpenAI shapes it: {"error": {"message", "type", "param", "code"}} with
// an HTTP status. The message names the field and the value and says what to do.
struct ApiError : std::runtime_error {
    int status;
    std::string type, param, code;  // param "": null (the request as a whole)
    ApiError(int status, std::string message, std::string type, std::string param, std::string code)
        : std::runtime_error(std::move(message)), status(status), type(std::move(type)), param(std::move(param)),
          code(std::move(code)) {}
    nlohmann::json body() const;
};
// 400 invalid_request_error naming `param`: the usual client mistake.
ApiError bad_request(const std::string& param, const std::string& code, const std::string& message);

// Is the JSON integer v in [lo, hi]? nlohmann::json holds 0 and every positive integer as unsigned:
// compared as such, so that a value past int64 does not wrap to a negative one, and with both bounds
// (serve's request bodies and serve-batch's request lines).
bool json_integer_in(const nlohmann::json& v, std::int64_t lo, std::int64_t hi);

enum class Endpoint { Completions, Chat };

// What the parser needs to know about the server: the model, its tokenizer, the KV pool.
struct ApiContext {
    const Config& config;
    const TextTokenizer& tok;
    std::string model_id;                // what /v1/models lists and "model" must name
    std::size_t page_size = 16, n_pages = 0;
};

struct CompletionRequest {
    Endpoint endpoint = Endpoint::Completions;
    std::vector<int> prompt;             // ids: the text encoded (BOS first for SentencePiece), or chat's ChatML turn
    std::size_t max_tokens = 0;
    SamplerConfig sampling;
    std::vector<std::string> stop;       // stop strings (the model's stop tokens apply too)
    bool stream = false, include_usage = false, return_token_ids = false;
    int logprobs = -1;                   // completions: alternatives per token, 0-20; -1: none
};

// The body of a POST to `endpoint`, checked against the model and the pool. default_seed is used
// when the request gives none. Throws ApiError: 400 for a malformed or wrong request (malformed
// JSON, not an object, a key given twice, an unknown field, a wrong type, a value out of range, a
// prompt too long for the context, max_tokens past it or past the pool, an unsupported feature such
// as n > 1, chat with a model that has no chat template), 404 for another model's name.
CompletionRequest parse_completion_request(Endpoint endpoint, std::string_view body, const ApiContext& ctx,
                                           std::uint64_t default_seed);

// A token's log-probabilities from the logits row it was sampled from: log softmax of the raw
// logits (the model's distribution, before temperature and cuts), the chosen token's and the
// `top` most probable ids' (ties: lower id first).
struct TokenLogprobs {
    float logprob = 0;
    std::vector<std::pair<int, float>> top;
};
TokenLogprobs token_logprobs(std::span<const float> logits, int token, int top);

// The text of a request's new tokens as they come: TextTokenizer::Stream with the prompt as
// context (decode's one rule), minus the model's stop tokens, cut before the first stop string.
// Text that might be the start of a stop string is held back until it is known not to be one, so
// that no client ever sees part of a stop string.
class TextOutput {
public:
    TextOutput(const TextTokenizer& tok, std::span<const int> prompt, std::vector<std::string> stop,
               std::span<const int> stop_ids);
    // The text token `id` adds that can be sent now ("" once stopped).
    std::string push(int id);
    // At the end of generation: what was held back (never past a stop string).
    std::string finish();
    bool stopped() const { return stopped_; }  // a stop string appeared
    std::size_t tokens() const { return tokens_; }  // pushed before the stop (the stop string's last token included)

private:
    std::string release(bool at_end);
    TextTokenizer::Stream stream_;
    std::vector<std::string> stop_;
    std::vector<int> stop_ids_;
    std::string pending_;  // decoded, not yet sent
    bool stopped_ = false;
    std::size_t tokens_ = 0;
};

}  // namespace lmlab
