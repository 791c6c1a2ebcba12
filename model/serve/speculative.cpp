// Speculative decoding (see speculative.h for the round, the rollback and why the output is exact).
#include "model/serve/speculative.h"

#include <algorithm>
#include <chrono>
#include <fmt/format.h>
#include <numeric>

#include "model/session.h"  // check_request

namespace lmlab {

Model early_exit_draft(const Model& target, std::size_t n_layers) {
    const std::size_t total = target.config.n_layers;
    if (n_layers == 0 || n_layers >= total)
        throw ModelError(fmt::format(
            "early-exit draft of {} layers: the target ({}) has {} layers, so give 1 .. {} (0 layers would skip every "
            "block; {} or more would be the target itself and save nothing)",
            n_layers, target.source, total, total - 1, total));
    // a copy of everything (embeddings, final norm, classifier, vocabulary, stop ids), then only the
    // first n blocks kept: the draft is the target's forward pass cut short before the head
    Model draft = target;
    draft.layers.resize(n_layers);
    draft.layers.shrink_to_fit();
    draft.config.n_layers = n_layers;
    draft.source = fmt::format("{} (early exit: first {} of {} layers)", target.source, n_layers, total);
    return draft;
}

std::size_t largest_q8_group(const Config& c) {
    // every matrix's row length (what a group must divide) is dim, n_heads*head_dim or ffn_dim
    const std::size_t common = std::gcd(std::gcd(c.dim, c.n_heads * c.head_dim()), c.ffn_dim);
    std::size_t group = 1;
    for (std::size_t g = 1; g <= std::min<std::size_t>(64, common); ++g)
        if (common % g == 0) group = g;
    return group;
}

Model int8_draft(const Model& target, std::size_t group) {
    if (target.quantized())
        throw ModelError(fmt::format("int8 draft: the target ({}) is already int8 (Q8_0), so its int8 copy would be the "
                                     "target itself; use an early-exit draft instead",
                                     target.source));
    if (group == 0) group = largest_q8_group(target.config);
    Model draft = quantize_model(Model(target), group);
    draft.source = fmt::format("{} (int8 copy: Q8_0, group {})", target.source, group);
    return draft;
}

SpeculativeSession::SpeculativeSession(const Model& target, const Model& draft, std::size_t k)
    : target_(target), draft_(draft), k_(k),
      // sized in generate(); a windowed layer's ring holds the most rows one call appends: a prompt
      // chunk, or a round's k + 1 (target) and 2 (draft's catch-up)
      target_cache_(target.config, 0, std::max(kPrefillChunk, k + 1)), draft_cache_(draft.config, 0, kPrefillChunk) {
    if (k == 0)
        throw ModelError("speculative decoding with k = 0: the draft must propose at least 1 token per round; give k >= 1 "
                         "(4 is a common choice)");
    if (draft.config.vocab_size != target.config.vocab_size)
        throw ModelError(fmt::format("draft model {} has a vocabulary of {} tokens, the target {} has {}: a draft must "
                                     "share the target's tokenizer (its ids must mean the same tokens)",
                                     draft.source, draft.config.vocab_size, target.source, target.config.vocab_size));
}

SpeculativeResult SpeculativeSession::generate(std::span<const int> prompt, std::size_t max_new_tokens,
                                               std::span<const int> stop_ids, const std::function<void(int)>& on_token) {
    check_request(target_.config, prompt, max_new_tokens);
    try {
        check_request(draft_.config, prompt, max_new_tokens);
    } catch (const ModelError& e) {
        throw ModelError(std::string("draft model: ") + e.what());
    }
    using clock = std::chrono::steady_clock;
    SpeculativeResult r;
    r.stop_reason = length_stop_reason(target_.config, prompt.size(), max_new_tokens);
    r.tokens.reserve(max_new_tokens);
    target_cache_.reset();
    draft_cache_.reset();
    if (max_new_tokens == 0) return r;
    // both see the whole prompt as the prompt (dynamic RoPE: as Session::generate), although its last
    // token reaches the target in the first round's batch
    target_cache_.set_prompt_length(prompt.size());
    draft_cache_.set_prompt_length(prompt.size());
    target_cache_.reserve(prompt.size() + max_new_tokens);
    draft_cache_.reserve(prompt.size() + max_new_tokens);
    const std::size_t vocab = target_.config.vocab_size;

    // seq: the prompt and every accepted token. Its last token is "pending": chosen, not yet fed to
    // the target (a round feeds it first, followed by the draft's guesses). So both models take
    // the prompt except its last token now.
    std::vector<int> seq(prompt.begin(), prompt.end());
    const std::size_t n_prompt = prompt.size();
    const std::size_t k_most = std::min(k_, max_new_tokens - 1);  // no round proposes more (see below)
    // run states for the most rows a call runs: the prompt, or a round's k+1 (the draft's catch-up: 2)
    RunState target_state(target_.config, std::max(std::min(n_prompt - 1, kPrefillChunk), k_most + 1));
    RunState draft_state(draft_.config, std::max<std::size_t>(std::min(n_prompt - 1, kPrefillChunk), 2));
    const auto t0 = clock::now();
    if (n_prompt > 1) {
        const auto head = std::span<const int>(seq).first(n_prompt - 1);
        prefill(target_, head, target_cache_, target_state);
        prefill(draft_, head, draft_cache_, draft_state);
    }
    const auto t1 = clock::now();

    std::vector<int> guess, batch;     // d_1 .. d_k; [pending, d_1 .. d_k]
    std::vector<float> rows;           // [k+1, vocab] the target's logits for the batch
    bool stopped = false;
    while (!stopped) {
        const std::size_t n = seq.size();  // the target cache holds n - 1 positions
        // a round emits at most k+1 tokens: never propose more than the tokens still wanted - 1
        // (0 for the last one: the target alone picks it). This also keeps every position the
        // target runs below prompt + max_new_tokens <= max_seq_len, which check_request ensured.
        const std::size_t k = std::min(k_, max_new_tokens - r.tokens.size() - 1);

        // 1. the draft guesses: first it feeds what it has not seen (the pending token, and the last
        //    accepted guess when the previous round accepted all), then one forward() per guess
        guess.clear();
        if (k > 0) {
            const std::size_t seen = draft_cache_.length();
            std::span<const float> logits =
                prefill(draft_, std::span<const int>(seq).subspan(seen), draft_cache_, draft_state);
            r.stats.draft_tokens += n - seen;
            guess.push_back(static_cast<int>(argmax(logits)));
            while (guess.size() < k) {
                logits = forward(draft_, guess.back(), draft_cache_.length(), draft_cache_, draft_state);
                ++r.stats.draft_tokens;
                guess.push_back(static_cast<int>(argmax(logits)));
            }
        }

        // 2. the target checks them all in one batched forward: row i = logits after [.., pending, d_1 .. d_i]
        batch.assign(1, seq.back());
        batch.insert(batch.end(), guess.begin(), guess.end());
        prefill(target_, batch, target_cache_, target_state, &rows);
        ++r.stats.rounds;
        ++r.stats.target_calls;
        r.stats.target_tokens += batch.size();
        r.stats.proposed += k;

        // 3. accept the longest agreeing prefix d_1 .. d_j, then the target's own token after it
        auto target_choice = [&](std::size_t i) {
            return static_cast<int>(argmax(std::span<const float>(rows).subspan(i * vocab, vocab)));
        };
        std::size_t j = 0;
        while (j < k && guess[j] == target_choice(j)) ++j;
        r.stats.accepted += j;
        std::vector<int> accepted(guess.begin(), guess.begin() + static_cast<std::ptrdiff_t>(j));
        accepted.push_back(target_choice(j));

        // 4. emit them in order, stopping as Session::generate does (after a stop token, or at max_new_tokens)
        for (int token : accepted) {
            seq.push_back(token);
            r.tokens.push_back(token);
            if (on_token) on_token(token);
            if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
                r.stop_reason = "stop token " + std::to_string(token);
                stopped = true;
                break;
            }
            if (r.tokens.size() == max_new_tokens) {
                stopped = true;
                break;
            }
        }

        // 5. roll back: the target keeps every token of seq but the new pending one (the rows of
        //    rejected guesses go); the draft keeps what it fed that is still in seq: the context,
        //    d_1 .. d_j (it fed at most d_1 .. d_{k-1}), never the pending token
        target_cache_.truncate(seq.size() - 1);
        draft_cache_.truncate(std::min({draft_cache_.length(), n + j, seq.size() - 1}));
    }
    r.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
    r.generate_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return r;
}

}  // namespace lmlab
