// Speculative decoding, greedy: a cheap draft model guesses the next k tokens one at a time, the
// target model checks all k in ONE forward over k+1 rows (model/forward.h), keeps the longest prefix it
// agrees with plus its own next token, and both KV caches are rolled back past what was rejected.
//
// Analogy: a CPU's branch prediction. Guess cheaply (the draft), execute ahead, verify in bulk (the
// target's batched pass), and on a mispredict throw away the speculative work (KVCache::truncate).
//
// Why the output is the target's own greedy output, token for token: the target's logits for row i
// of the batched verification are bit-identical to the logits forward() gives for that token one at
// a time (forward() is the same code with T = 1, model/forward.h: a row's numbers never depend on
// the other rows, on either kernel path). Every emitted token is the target's argmax over exactly the same
// context as in plain greedy decoding; the draft only decides how many of them one target pass
// confirms. A bad draft makes it slower, never different.
//
// One round, with the context c_1 .. c_n (c_n = "pending": chosen, not yet fed to the target):
//
//   draft:  feed what it has not seen (up to c_n), then d_1 = argmax, feed d_1, d_2 = argmax, … d_k
//   target: one batched forward over [c_n, d_1, …, d_k] -> k+1 rows of logits, row i predicts the
//           token after (c_n, d_1 … d_i)
//   accept: d_1 … d_j while d_i == argmax(row i-1); then t = argmax(row j) (the target's correction
//           at the first disagreement, or a bonus token when all k agreed): j+1 new tokens
//   roll back: target cache to n + j positions (c_1 .. c_n, d_1 .. d_j; t is the new pending), the
//           draft's to the part of what it fed that was accepted.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace lmlab {

// ---- Drafts that need no new weights ------------------------------------------------------------

// Early exit: the target's first n_layers blocks, then its own final norm and classifier (the same
// embeddings and head; the weights are copied). Throws ModelError for n_layers 0 or >= the target's
// layer count (all layers would be the target itself: no saving).
Model early_exit_draft(const Model& target, std::size_t n_layers);

// An int8 (Q8_0) copy of the target (quantize_model on a copy). group 0: the largest group <= 64
// that divides every row length (64 for the tiny LLaMA, 4 for stories260K's ffn width 172).
// Throws ModelError when the target is already int8.
Model int8_draft(const Model& target, std::size_t group = 0);
std::size_t largest_q8_group(const Config& c);  // that group

// ---- The decoder ---------------------------------------------------------------------------------

struct SpeculativeStats {
    std::size_t rounds = 0;          // draft-propose / target-verify cycles
    std::size_t proposed = 0;        // draft tokens proposed (at most k per round; fewer near max_new_tokens)
    std::size_t accepted = 0;        // of those, accepted by the target
    std::size_t target_calls = 0;    // batched target forwards (one per round; the prompt's prefill not counted)
    std::size_t target_tokens = 0;   // positions the target ran in them (rejected ones included)
    std::size_t draft_tokens = 0;    // positions the draft ran through forward() (catch-up + proposals; prompt not counted)
    double acceptance_rate() const { return proposed ? static_cast<double>(accepted) / static_cast<double>(proposed) : 0.0; }
};

struct SpeculativeResult {
    std::vector<int> tokens;       // the new tokens (a stop token, when hit, is included last)
    std::string stop_reason;       // "max_new_tokens" or "stop token <id>", as Session::generate
    SpeculativeStats stats;
    double prompt_seconds = 0;     // time to run the prompt through both models
    double generate_seconds = 0;   // time for the new tokens
};

class SpeculativeSession {
public:
    // target and draft must outlive the session. Throws ModelError for k == 0 or a draft whose
    // vocabulary size differs from the target's (its token ids would mean other tokens).
    SpeculativeSession(const Model& target, const Model& draft, std::size_t k);

    // Greedy generation (temperature 0), token-identical to Session::generate with a greedy sampler:
    // the same checks first (check_request, for the draft's context too), then up to max_new_tokens
    // tokens, stopping after any id in stop_ids. on_token (optional) sees each new token in order.
    SpeculativeResult generate(std::span<const int> prompt, std::size_t max_new_tokens, std::span<const int> stop_ids = {},
                               const std::function<void(int)>& on_token = {});

    // After generate(): the target cache holds prompt + new tokens except the last (that one was
    // chosen but never fed); the draft cache holds at most as many, all of them the same tokens.
    const KVCache& target_cache() const { return target_cache_; }
    const KVCache& draft_cache() const { return draft_cache_; }
    std::size_t k() const { return k_; }

private:
    const Model& target_;
    const Model& draft_;
    std::size_t k_;
    KVCache target_cache_, draft_cache_;
};

}  // namespace lmlab
