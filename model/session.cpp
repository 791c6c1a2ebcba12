#include "model/session.h"

#include <algorithm>
#include <chrono>

namespace lmlab {

Session::Session(const Model& m) : model_(m), cache_(m.config, 0), state_(m.config) {}

std::span<const float> Session::feed(int token) {
    cache_.reserve(cache_.length() + 1);  // (grows geometrically: rarely)
    return forward(model_, token, cache_.length(), cache_, state_);
}

std::span<const float> Session::start(std::span<const int> prompt, std::size_t max_new_tokens) {
    if (prompt.empty()) throw ModelError("the prompt is empty: give at least one token (e.g. BOS = 1)");
    // the prompt in calls of up to kPrefillChunk rows (the same code as one token: T rows instead of 1);
    // a cache for the request, whose windowed layers keep window + (rows of the largest call) - 1 positions
    const std::size_t rows = std::min(prompt.size(), kPrefillChunk);
    cache_ = KVCache(model_.config, std::min(model_.config.max_seq_len, prompt.size() + max_new_tokens), rows);
    cache_.set_prompt_length(prompt.size());
    RunState prompt_state(model_.config, rows);
    const std::span<const float> logits = prefill(model_, prompt, cache_, prompt_state);
    std::copy(logits.begin(), logits.end(), state_.logits.begin());
    return state_.logits;
}

std::string length_stop_reason(const Config& c, std::size_t n_prompt, std::size_t n_tokens) {
    return n_prompt + n_tokens >= c.max_seq_len ? "context full" : "max_new_tokens";
}

void check_request(const Config& c, std::span<const int> prompt, std::size_t max_new_tokens) {
    if (prompt.empty()) throw ModelError("the prompt is empty: give at least one token (e.g. BOS = 1)");
    for (std::size_t i = 0; i < prompt.size(); ++i)
        if (prompt[i] < 0 || static_cast<std::size_t>(prompt[i]) >= c.vocab_size)
            throw ModelError("prompt token " + std::to_string(i) + " (counting from 0) is id " + std::to_string(prompt[i]) +
                             ", outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
    if (prompt.size() > c.max_seq_len)
        throw ModelError("the prompt has " + std::to_string(prompt.size()) + " tokens, longer than the context of " +
                         std::to_string(c.max_seq_len) + " (max_seq_len)");
    if (prompt.size() == c.max_seq_len && max_new_tokens > 0)
        throw ModelError("the prompt (" + std::to_string(prompt.size()) + " tokens) fills the whole context of " +
                         std::to_string(c.max_seq_len) + " (max_seq_len): no room for new tokens; shorten the prompt");
    if (max_new_tokens > c.max_seq_len - prompt.size())  // (not prompt + n > max: the sum could wrap)
        throw ModelError("prompt (" + std::to_string(prompt.size()) + " tokens) + max_new_tokens (" +
                         std::to_string(max_new_tokens) + ") exceeds the context of " + std::to_string(c.max_seq_len) +
                         " (max_seq_len); ask for at most " + std::to_string(c.max_seq_len - prompt.size()) +
                         " new tokens");
}

GenerationResult Session::generate(std::span<const int> prompt, std::size_t max_new_tokens, Sampler& sampler,
                                   std::span<const int> stop_ids, const std::function<void(int)>& on_token,
                                   std::vector<float>* step_logits) {
    check_request(prompt, max_new_tokens);
    using clock = std::chrono::steady_clock;
    GenerationResult r;
    r.n_prompt = prompt.size();
    r.tokens.reserve(max_new_tokens);

    const auto t0 = clock::now();
    std::span<const float> logits = start(prompt, max_new_tokens);
    const auto t1 = clock::now();

    r.stop_reason = length_stop_reason(model_.config, prompt.size(), max_new_tokens);
    if (step_logits) step_logits->clear();
    for (std::size_t i = 0; i < max_new_tokens; ++i) {
        if (step_logits) step_logits->insert(step_logits->end(), logits.begin(), logits.end());
        const int next = sampler.sample(logits);
        r.tokens.push_back(next);
        if (on_token) on_token(next);
        if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
            r.stop_reason = "stop token " + std::to_string(next);
            break;
        }
        if (i + 1 < max_new_tokens) logits = feed(next);
    }
    r.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
    r.generate_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return r;
}

}  // namespace lmlab
