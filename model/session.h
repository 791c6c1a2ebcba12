// A session: one model, one KV cache, one sequence at a time. The prompt goes through forward() as
// T rows at once (prefill, model/forward.h, in chunks of kPrefillChunk rows), generated tokens one at
// a time (T = 1): the same code, so the same bits as feeding the prompt token by token. The cache is
// sized to the request (prompt + new tokens), not to the model's whole context, and a layer with a
// sliding window keeps a ring of window + kPrefillChunk - 1 positions: a long prompt's memory is the
// weights, the cache of the positions it holds and one chunk's activations.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/forward.h"
#include "model/sampler.h"

namespace lmlab {

struct GenerationResult {
    std::vector<int> tokens;         // the new tokens (a stop token, when hit, is included last)
    std::size_t n_prompt = 0;
    double prompt_seconds = 0;       // time to run the prompt
    double generate_seconds = 0;     // time for the new tokens
    std::string stop_reason;         // "stop token <id>", "context full" (max_seq_len reached) or "max_new_tokens"
};

// Why a generation that hit no stop token ended: "context full" when prompt + tokens fill max_seq_len,
// else "max_new_tokens".
std::string length_stop_reason(const Config& c, std::size_t n_prompt, std::size_t n_tokens);

// The checks Session::generate() makes before running anything (callers can ask first, e.g. before
// printing or before running a reference): throws ModelError for an empty prompt, an id outside
// the vocabulary, or a prompt + max_new_tokens that does not fit in max_seq_len.
void check_request(const Config& c, std::span<const int> prompt, std::size_t max_new_tokens);

class Session {
public:
    explicit Session(const Model& m);

    // Runs one token at the next position; returns its logits (valid until the next call).
    std::span<const float> feed(int token);
    // Starts a sequence: resets the cache and runs `prompt` as one prompt (dynamic RoPE scaling rotates
    // its rows for its length, as transformers' generate() does); returns its last row's logits.
    std::span<const float> start(std::span<const int> prompt, std::size_t max_new_tokens = 0);

    // Checks prompt and limits before running anything: the prompt must be non-empty with every
    // id in the vocabulary, and prompt + max_new_tokens must fit in max_seq_len. Then resets the
    // cache, runs the prompt, and samples up to max_new_tokens tokens, stopping after any id in
    // stop_ids. on_token (optional) sees each new token as it is chosen; step_logits (optional)
    // receives the logits each one was sampled from, [tokens, vocab].
    GenerationResult generate(std::span<const int> prompt, std::size_t max_new_tokens, Sampler& sampler,
                              std::span<const int> stop_ids = {}, const std::function<void(int)>& on_token = {},
                              std::vector<float>* step_logits = nullptr);

    // lmlab::check_request for this session's model.
    void check_request(std::span<const int> prompt, std::size_t max_new_tokens) const {
        lmlab::check_request(model_.config, prompt, max_new_tokens);
    }

    void reset() { cache_.reset(); }
    std::size_t position() const { return cache_.length(); }
    const KVCache& cache() const { return cache_; }
    const Model& model() const { return model_; }

private:
    const Model& model_;
    KVCache cache_;
    RunState state_;
};

}  // namespace lmlab
