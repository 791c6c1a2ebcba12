#include "harness/cli/serve_api.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <numeric>
#include <set>

#include "model/load/json_depth.h"

namespace lmlab {

nlohmann::json ApiError::body() const {
    return {{"error",
             {{"message", what()},
              {"type", type},
              {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
              {"code", code}}}};
}

bool json_integer_in(const nlohmann::json& v, std::int64_t lo, std::int64_t hi) {
    if (v.is_number_unsigned())
        return v.get<std::uint64_t>() >= static_cast<std::uint64_t>(std::max<std::int64_t>(lo, 0)) &&
               (hi >= 0 && v.get<std::uint64_t>() <= static_cast<std::uint64_t>(hi));
    return v.get<std::int64_t>() >= lo && v.get<std::int64_t>() <= hi;
}

ApiError bad_request(const std::string& param, const std::string& code, const std::string& message) {
    return ApiError(400, message, "invalid_request_error", param, code);
}

namespace {

constexpr std::size_t kMaxStops = 4;  // as OpenAI
constexpr int kMaxLogprobs = 20;
constexpr std::size_t kDefaultCompletionTokens = 16;  // OpenAI's default max_tokens for completions

// A value shown in a message: short, whatever it holds (error_handler replace: invalid UTF-8 is shown, not thrown).
std::string shown(const nlohmann::json& v) {
    std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

ApiError wrong_type(const std::string& key, const nlohmann::json& v, const std::string& expected) {
    return bad_request(key, "invalid_type", fmt::format("'{}' must be {}, got {}", key, expected, shown(v)));
}

ApiError unsupported(const std::string& key, const nlohmann::json& v, const std::string& what) {
    return bad_request(key, "unsupported_value",
                       fmt::format("'{}' {} is not supported by this server: {}", key, shown(v), what));
}

bool get_bool(const std::string& key, const nlohmann::json& v) {
    if (!v.is_boolean()) throw wrong_type(key, v, "true or false");
    return v.get<bool>();
}

// A number in [lo, hi] (both ends included).
double get_number(const std::string& key, const nlohmann::json& v, double lo, double hi) {
    if (!v.is_number()) throw wrong_type(key, v, "a number");
    const double x = v.get<double>();
    if (!(x >= lo && x <= hi)) throw bad_request(key, "invalid_value", fmt::format("'{}' is {}, expected {} to {}", key, shown(v), lo, hi));
    return x;
}

// A whole number in [lo, hi]; 16.0 is not one (as JSON schema's "integer").
std::int64_t get_integer(const std::string& key, const nlohmann::json& v, std::int64_t lo, std::int64_t hi) {
    if (!v.is_number_integer()) throw wrong_type(key, v, "an integer");
    if (!json_integer_in(v, lo, hi))
        throw bad_request(key, "invalid_value", fmt::format("'{}' is {}, expected {} to {}", key, shown(v), lo, hi));
    return v.get<std::int64_t>();
}

std::vector<int> prompt_ids(const nlohmann::json& v, const ApiContext& ctx) {
    std::vector<int> ids;
    if (v.is_string()) {
        ids = ctx.tok.encode_prompt(v.get<std::string>(), false);
        if (ids.empty())
            throw bad_request("prompt", "invalid_value", "'prompt' encodes to no tokens (this tokenizer adds no BOS): give some text");
        return ids;
    }
    if (!v.is_array() || v.empty())
        throw wrong_type("prompt", v, "a string or a non-empty list of token ids");
    if (!v[0].is_number())
        throw bad_request("prompt", "unsupported_value", "'prompt' as a list of prompts (a batch) is not supported: send "
                                                         "one request per prompt, as a string or a list of token ids");
    for (std::size_t i = 0; i < v.size(); ++i) {
        const std::string key = fmt::format("prompt[{}]", i);
        ids.push_back(static_cast<int>(get_integer(key, v[i], 0, static_cast<std::int64_t>(ctx.config.vocab_size) - 1)));
    }
    return ids;
}

std::vector<int> chat_ids(const nlohmann::json& v, const ApiContext& ctx) {
    if (!v.is_array()) throw wrong_type("messages", v, "a list of messages");
    std::vector<TextTokenizer::ChatMessage> messages;
    for (std::size_t i = 0; i < v.size(); ++i) {
        const nlohmann::json& m = v[i];
        const std::string key = fmt::format("messages[{}]", i);
        if (!m.is_object()) throw wrong_type(key, m, "an object {\"role\": ..., \"content\": ...}");
        for (const auto& [k, _] : m.items())
            if (k != "role" && k != "content" && k != "name")
                throw bad_request(key + "." + k, "unknown_parameter",
                                  fmt::format("unknown field '{}.{}' (a message has role, content, name)", key, k));
        if (!m.contains("role") || !m["role"].is_string()) throw wrong_type(key + ".role", m.value("role", nlohmann::json()), "a string");
        const nlohmann::json& content = m.value("content", nlohmann::json());
        if (!content.is_string()) throw wrong_type(key + ".content", content, "a string (content parts are not supported)");
        if (m.contains("name") && !m["name"].is_string()) throw wrong_type(key + ".name", m["name"], "a string");
        messages.push_back({m["role"].get<std::string>(), content.get<std::string>()});
    }
    if (const auto r = TextTokenizer::chat_refusal(messages))
        throw r->field.empty() ? bad_request("messages", "invalid_value", "'messages' is empty: " + r->why)
                               : bad_request(fmt::format("messages[{}].{}", r->index, r->field), "unsupported_value",
                                             fmt::format("'messages[{}].{}': {}", r->index, r->field, r->why));
    try {
        return ctx.tok.encode_chat(messages);
    } catch (const ModelError&) {
        throw bad_request("messages", "chat_template_missing",
                          fmt::format("model '{}' has no chat template (ChatML needs <|im_start|> and <|im_end|> in the "
                                      "vocabulary, as Qwen2's; Llama 3's template its header and <|eot_id|> tokens): "
                                      "use /v1/completions with a prompt",
                                      ctx.model_id));
    }
}

// The keys of each endpoint: what they mean is in serve_api.h's header comment.
const std::set<std::string>& known_keys(Endpoint e) {
    static const std::set<std::string> completions = {
        "model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options",
        "logprobs", "user", "return_token_ids", "n", "best_of", "echo", "suffix", "presence_penalty",
        "frequency_penalty", "logit_bias"};
    static const std::set<std::string> chat = {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop",
        "stream", "stream_options", "logprobs", "top_logprobs", "user", "return_token_ids", "n", "presence_penalty",
        "frequency_penalty", "logit_bias", "response_format", "tools", "tool_choice", "functions", "function_call",
        "parallel_tool_calls"};
    return e == Endpoint::Chat ? chat : completions;
}

}  // namespace

CompletionRequest parse_completion_request(Endpoint endpoint, std::string_view body, const ApiContext& ctx,
                                           std::uint64_t default_seed) {
    nlohmann::json j;
    std::set<std::string> keys;  // a key given twice is refused, not "last one wins"
    try {
        j = nlohmann::json::parse(body, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
            check_json_depth(depth, "the request body");
            if (event == nlohmann::json::parse_event_t::key && depth == 1 && !keys.insert(parsed.get<std::string>()).second)
                throw bad_request(parsed.get<std::string>(), "duplicate_parameter",
                                  fmt::format("'{}' is given twice: give each field once", parsed.get<std::string>()));
            return true;
        });
    } catch (const nlohmann::json::exception& e) {
        throw bad_request("", "invalid_json", fmt::format("the request body is not JSON ({})", e.what()));
    } catch (const ModelError& e) {
        throw bad_request("", "invalid_json", e.what());
    }
    if (!j.is_object())
        throw bad_request("", "invalid_json", fmt::format("the request body must be a JSON object, got {}", shown(j)));
    const auto& known = known_keys(endpoint);
    for (const auto& [key, _] : j.items())
        if (!known.count(key))
            throw bad_request(key, "unknown_parameter",
                              fmt::format("unknown field '{}' (known: {})", key, fmt::join(known, ", ")));

    CompletionRequest r;
    r.endpoint = endpoint;
    r.sampling.temperature = 1.0f;  // OpenAI's default
    r.sampling.seed = default_seed;
    std::optional<std::size_t> max_tokens;
    for (const auto& [key, v] : j.items()) {
        if (v.is_null()) continue;  // null: the default, as OpenAI's clients send it
        if (key == "model") {
            if (!v.is_string()) throw wrong_type(key, v, "a string");
            if (v.get<std::string>() != ctx.model_id)
                throw ApiError(404, fmt::format("model {} is not served here: this server serves '{}' (GET /v1/models)",
                                                shown(v), ctx.model_id),
                               "invalid_request_error", "model", "model_not_found");
        } else if (key == "prompt") {
            r.prompt = prompt_ids(v, ctx);
        } else if (key == "messages") {
            r.prompt = chat_ids(v, ctx);
        } else if (key == "max_tokens" || key == "max_completion_tokens") {
            if (max_tokens) throw bad_request(key, "invalid_value", "give max_tokens or max_completion_tokens, not both");
            max_tokens = static_cast<std::size_t>(get_integer(key, v, 1, std::numeric_limits<std::int32_t>::max()));
        } else if (key == "temperature") {
            r.sampling.temperature = static_cast<float>(get_number(key, v, 0, 2));
        } else if (key == "top_p") {
            r.sampling.top_p = static_cast<float>(get_number(key, v, 0, 1));
            if (r.sampling.top_p == 0.0f) throw bad_request(key, "invalid_value", "'top_p' is 0: keep some tokens (0 < top_p <= 1; 1 = off)");
        } else if (key == "top_k") {
            r.sampling.top_k = static_cast<int>(get_integer(key, v, 0, std::numeric_limits<std::int32_t>::max()));
        } else if (key == "seed") {
            r.sampling.seed = static_cast<std::uint64_t>(get_integer(key, v, 0, std::numeric_limits<std::int64_t>::max()));
        } else if (key == "stop") {
            if (v.is_string()) {
                r.stop = {v.get<std::string>()};
            } else if (v.is_array()) {
                if (v.size() > kMaxStops)
                    throw bad_request(key, "invalid_value", fmt::format("'stop' has {} strings, at most {}", v.size(), kMaxStops));
                for (std::size_t i = 0; i < v.size(); ++i) {
                    if (!v[i].is_string()) throw wrong_type(fmt::format("stop[{}]", i), v[i], "a string");
                    r.stop.push_back(v[i].get<std::string>());
                }
            } else {
                throw wrong_type(key, v, "a string or a list of strings");
            }
            for (std::size_t i = 0; i < r.stop.size(); ++i)
                if (r.stop[i].empty()) throw bad_request(fmt::format("stop[{}]", i), "invalid_value", "a stop string is empty: it would stop at once");
        } else if (key == "stream") {
            r.stream = get_bool(key, v);
        } else if (key == "stream_options") {
            if (!v.is_object()) throw wrong_type(key, v, "an object {\"include_usage\": true}");
            for (const auto& [k, x] : v.items()) {
                if (k != "include_usage")
                    throw bad_request("stream_options." + k, "unknown_parameter",
                                      fmt::format("unknown field 'stream_options.{}' (known: include_usage)", k));
                if (!x.is_null()) r.include_usage = get_bool("stream_options.include_usage", x);
            }
        } else if (key == "return_token_ids") {
            r.return_token_ids = get_bool(key, v);
        } else if (key == "logprobs" && endpoint == Endpoint::Completions) {
            r.logprobs = static_cast<int>(get_integer(key, v, 0, kMaxLogprobs));
        } else if (key == "logprobs") {  // chat's: a flag
            if (get_bool(key, v)) throw unsupported(key, v, "log-probabilities are served by /v1/completions ('logprobs': N)");
        } else if (key == "top_logprobs") {
            throw unsupported(key, v, "log-probabilities are served by /v1/completions ('logprobs': N)");
        } else if (key == "n" || key == "best_of") {
            if (get_integer(key, v, 1, std::numeric_limits<std::int32_t>::max()) != 1)
                throw unsupported(key, v, "one completion per request; send several requests (with their own seeds)");
        } else if (key == "echo") {
            if (get_bool(key, v)) throw unsupported(key, v, "the prompt is not echoed back");
        } else if (key == "suffix") {
            if (!v.is_string()) throw wrong_type(key, v, "a string");
            if (!v.get<std::string>().empty()) throw unsupported(key, v, "no insertion (fill in the middle)");
        } else if (key == "presence_penalty" || key == "frequency_penalty") {
            if (get_number(key, v, -2, 2) != 0) throw unsupported(key, v, "no penalties (the sampler is sampler.h's: temperature, top_k, top_p)");
        } else if (key == "logit_bias") {
            if (!v.is_object()) throw wrong_type(key, v, "an object");
            if (!v.empty()) throw unsupported(key, v, "no logit bias");
        } else if (key == "response_format") {
            if (!v.is_object() || v.value("type", nlohmann::json()) != "text" || v.size() != 1)
                throw unsupported(key, v, "text only ({\"type\": \"text\"})");
        } else if (key == "tools" || key == "tool_choice" || key == "functions" || key == "function_call" ||
                   key == "parallel_tool_calls") {
            throw unsupported(key, v, "no tool or function calling");
        } else if (key == "user") {
            if (!v.is_string()) throw wrong_type(key, v, "a string");
        }
    }
    if (r.include_usage && !r.stream)
        throw bad_request("stream_options", "invalid_value", "'stream_options' is only allowed with \"stream\": true");
    const char* prompt_key = endpoint == Endpoint::Chat ? "messages" : "prompt";
    if (!j.contains(prompt_key) || j[prompt_key].is_null())
        throw bad_request(prompt_key, "missing_required_parameter", fmt::format("'{}' is required", prompt_key));

    // the context: the prompt and at least one new token; then max_tokens within it and the pool
    const std::size_t ctx_len = ctx.config.max_seq_len, n = r.prompt.size();
    if (n >= ctx_len)
        throw bad_request(prompt_key, "context_length_exceeded",
                          fmt::format("the prompt is {} tokens, but model '{}' has a context of {}: at most {} prompt "
                                      "tokens leave room for one new token; shorten the prompt",
                                      n, ctx.model_id, ctx_len, ctx_len - 1));
    const std::size_t room = ctx_len - n;
    if (max_tokens && *max_tokens > room)
        throw bad_request(j.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
                          "context_length_exceeded",
                          fmt::format("max_tokens is {}, but the {}-token prompt leaves room for {} in the context of {} "
                                      "(model '{}'); ask for at most {}",
                                      *max_tokens, n, room, ctx_len, ctx.model_id, room));
    r.max_tokens = max_tokens ? *max_tokens : endpoint == Endpoint::Chat ? room : std::min(kDefaultCompletionTokens, room);
    const std::size_t pages = (n + r.max_tokens + ctx.page_size - 1) / ctx.page_size;
    if (pages > ctx.n_pages)
        throw bad_request(max_tokens ? "max_tokens" : prompt_key, "context_length_exceeded",
                          fmt::format("{} prompt + {} new tokens need {} KV pages of {} positions, but the server's pool "
                                      "has {} (lmlab serve --kv-pages); ask for fewer tokens",
                                      n, r.max_tokens, pages, ctx.page_size, ctx.n_pages));
    return r;
}

TokenLogprobs token_logprobs(std::span<const float> logits, int token, int top) {
    // log softmax: x - max - log(sum exp(x - max)), in double (the sum of 150k exponentials)
    const float mx = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (const float x : logits) sum += std::exp(static_cast<double>(x) - mx);
    const double lse = static_cast<double>(mx) + std::log(sum);
    TokenLogprobs out;
    out.logprob = static_cast<float>(logits[static_cast<std::size_t>(token)] - lse);
    const std::size_t k = std::min(static_cast<std::size_t>(std::max(top, 0)), logits.size());
    std::vector<int> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), [&](int a, int b) {
        const float la = logits[static_cast<std::size_t>(a)], lb = logits[static_cast<std::size_t>(b)];
        return la > lb || (la == lb && a < b);
    });
    for (std::size_t i = 0; i < k; ++i)
        out.top.emplace_back(ids[i], static_cast<float>(logits[static_cast<std::size_t>(ids[i])] - lse));
    return out;
}

TextOutput::TextOutput(const TextTokenizer& tok, std::span<const int> prompt, std::vector<std::string> stop,
                       std::span<const int> stop_ids)
    : stream_(tok, prompt), stop_(std::move(stop)), stop_ids_(stop_ids.begin(), stop_ids.end()) {}

std::string TextOutput::push(int id) {
    if (stopped_) return "";
    ++tokens_;
    if (std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end()) return "";  // ends the text, not part of it
    pending_ += stream_.push(id);
    return release(false);
}

std::string TextOutput::finish() {
    if (stopped_) return "";
    pending_ += stream_.flush();
    return release(true);
}

std::string TextOutput::release(bool at_end) {
    // Every stop string that could start in the text already sent was held back (below), so the
    // first occurrence lies in pending_.
    std::size_t cut = std::string::npos;
    for (const std::string& s : stop_) cut = std::min(cut, pending_.find(s));
    if (cut != std::string::npos) {
        stopped_ = true;
        std::string out = pending_.substr(0, cut);
        pending_.clear();
        return out;
    }
    // hold back the longest tail that is the beginning of a stop string ("Th" of "The end")
    std::size_t hold = 0;
    if (!at_end)
        for (const std::string& s : stop_)
            for (std::size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
                if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
                    hold = k;
                    break;
                }
    std::string out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
    return out;
}

}  // namespace lmlab
