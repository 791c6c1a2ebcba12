// Serving stages: the paged KV cache (model.kv_cache.paged*) and continuous batching
// (generation.serve_batch*). Each compares with the reference's fixture AND checks the invariant
// that makes the technique safe: paged = contiguous, batched = alone, bit for bit.
#include <algorithm>
#include <fmt/format.h>

#include "model/testing/run_alone.h"
#include "model/serve/batch.h"
#include "model/serve/scheduler.h"
#include "harness/stages/stages.h"

namespace lmlab {

namespace {
// forward_batch runs the fast kernels only: paged attention is a fast-path kernel (verified against
// attention_tiled, itself verified against the plain attention); there is no plain twin to run
void skip_on_plain() {
    if (kernel_path() == KernelPath::Plain)
        throw SkipStage("the paged KV cache and batching run on the fast kernels only (attention_paged has no plain "
                        "twin; it is checked bit for bit against attention_tiled)");
}
}  // namespace

// The fixture's prompt through forward_batch on a paged cache, 5 tokens a step, each step also
// carrying 5 tokens of a neighbour sequence (the prompt reversed) whose pages interleave with the
// prompt's; pages of 3 (every attention tile straddles pages) and of 16 (a tile within one page).
// Outputs: every position's logits against the reference; the same against our contiguous cache,
// bit for bit; the cache's invariants after every step; every page back on the free list at the end.
std::vector<StageOutput> stage_model_paged(const Fixture&, const Case& c, const StageEnv& env) {
    skip_on_plain();
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    const std::vector<int> tokens = token_ids(c, "tokens");
    golden(c, "logits", {tokens.size(), cfg.vocab_size});
    std::vector<float> contiguous;  // forward() one token at a time on the contiguous cache
    {
        KVCache cache(cfg, tokens.size());  // (a windowed layer: a ring of its window)
        cache.set_prompt_length(tokens.size());  // the fixture's tokens are one prompt
        RunState s(cfg);
        for (std::size_t p = 0; p < tokens.size(); ++p) {
            const auto l = forward(m, tokens[p], p, cache, s);
            contiguous.insert(contiguous.end(), l.begin(), l.end());
        }
    }
    std::vector<StageOutput> outs;
    constexpr std::size_t kStep = 5;
    for (const std::size_t page_size : {3, 16}) {
        PagedKVCache kv(cfg, page_size, 2 * ((tokens.size() + page_size - 1) / page_size));
        const std::size_t seq = kv.add_sequence(tokens.size()), other = kv.add_sequence(tokens.size());
        RunState s(cfg, 2 * kStep);
        std::vector<float> paged, step_logits;
        std::size_t most_pages = 0;  // the most pages the prompt's sequence held after a step
        for (std::size_t p0 = 0; p0 < tokens.size(); p0 += kStep) {
            std::vector<BatchRow> rows;
            for (std::size_t p = p0; p < std::min(tokens.size(), p0 + kStep); ++p) {
                rows.push_back({other, tokens[tokens.size() - 1 - p], p, false});
                rows.push_back({seq, tokens[p], p, true});
            }
            forward_batch(m, rows, kv, s, step_logits);
            kv.check_invariants();  // ModelError (the stage errors) naming the broken invariant
            paged.insert(paged.end(), step_logits.begin(), step_logits.end());
            most_pages = std::max(most_pages, kv.pages_held(seq));
        }
        // a sliding window on every layer: the pages out of it went back after each step, so the
        // sequence never held more than its window and one step's rows need
        if (const std::size_t w = kv.common_window()) {
            const std::size_t bound = (w - 1 + kStep + page_size - 1) / page_size + 1;
            if (most_pages > bound)
                throw HarnessError(fmt::format("paged KV cache: a sequence under a window of {} held {} pages of {}, more "
                                               "than the {} its window and a step of {} rows need",
                                               w, most_pages, page_size, bound, kStep));
        }
        outs.push_back({fmt::format("pages held at most [pages of {}]", page_size), "", {static_cast<float>(most_pages)},
                        fmt::format("of the {} a {}-token sequence spans{}", kv.pages_for(tokens.size()), tokens.size(),
                                    kv.common_window() ? fmt::format(" (window {}: the rest given back)", kv.common_window()) : "")});
        kv.release(seq);
        kv.release(other);
        kv.check_invariants();
        if (kv.free_pages() != kv.n_pages())
            throw HarnessError(fmt::format("paged KV cache: {} of {} pages free after both sequences finished",
                                                 kv.free_pages(), kv.n_pages()));
        const std::string name = fmt::format("logits [paged, pages of {}]", page_size);
        outs.push_back({name, "logits", paged});
        outs.push_back({name + " vs contiguous", "= contiguous cache (ours, invariant)", paged,
                        "paged attention must do attention_tiled's arithmetic on the same numbers: any difference is "
                        "a page-table or gather bug",
                        kExact, std::nullopt, false, contiguous});
    }
    return outs;
}

// Continuous batching against the reference's requests, each generated alone (PyTorch, token by
// token): served together with the case's schedule (chunk, page size, running limit, pool). Per
// request: tokens exactly (a first difference is called a near-tie or a real divergence), logits at
// the reference's top-k ids within tolerance up to that point, and every logit bit-identical to our
// own run of the request alone (run_alone).
std::vector<StageOutput> stage_generation_serve_batch(const Fixture&, const Case& c, const StageEnv& env) {
    skip_on_plain();
    const Model& m = stage_model(env);
    const Config& cfg = m.config;
    const std::vector<int> all_prompts = token_ids(c, "prompt_tokens"), lengths = token_ids(c, "prompt_lengths"),
                           budgets = token_ids(c, "max_new_tokens"), arrivals = token_ids(c, "arrival_steps");
    if (budgets.size() != lengths.size() || arrivals.size() != lengths.size())
        throw HarnessError(fmt::format("{}: /{}: prompt_lengths, max_new_tokens and arrival_steps must have one entry per "
                                       "request", c.file, c.name));
    std::vector<ServeRequest> requests;
    std::size_t at = 0, n_new = 0;
    for (std::size_t i = 0; i < lengths.size(); ++i) {
        const auto len = static_cast<std::size_t>(std::max(lengths[i], 0));
        if (at + len > all_prompts.size())
            throw HarnessError(fmt::format("{}: /{}: prompt_lengths add up past the {} prompt tokens", c.file, c.name,
                                           all_prompts.size()));
        ServeRequest r;
        r.id = fmt::format("r{}", i);
        r.prompt.assign(all_prompts.begin() + static_cast<std::ptrdiff_t>(at), all_prompts.begin() + static_cast<std::ptrdiff_t>(at + len));
        r.max_new_tokens = static_cast<std::size_t>(std::max(budgets[i], 0));
        r.arrival_step = static_cast<std::size_t>(std::max(arrivals[i], 0));
        at += len;
        n_new += r.max_new_tokens;
        requests.push_back(std::move(r));
    }
    const auto& ref_tokens = golden(c, "tokens", {n_new});
    const auto& topk_ids = golden(c, "topk_ids", {n_new, Case::kAnyDim});
    const std::size_t k = topk_ids.shape[1];
    if (k < 2) throw HarnessError(fmt::format("{}: /{}/outputs/topk_ids: at least the top 2 per step", c.file, c.name));
    const auto& topk_logits = golden(c, "topk_logits", {n_new, k});
    for (float id : topk_ids.data)
        if (!(id >= 0 && id < static_cast<float>(cfg.vocab_size)))
            throw HarnessError(fmt::format("{}: /{}/outputs/topk_ids has id {} outside the vocabulary", c.file, c.name, id));

    ServeOptions opt;
    opt.chunk = case_index(c, "chunk");
    opt.page_size = case_index(c, "page_size");
    opt.max_running = case_index(c, "max_running");
    opt.n_pages = case_index(c, "n_pages");
    opt.keep_logits = true;
    opt.check_invariants = true;
    const ServeReport rep = serve(m, requests, opt);

    std::vector<StageOutput> outs;
    std::size_t off = 0, waited = 0;
    for (std::size_t i = 0; i < requests.size(); ++i) {
        const ServeRequest& r = requests[i];
        const ServeResult& res = rep.results[i];
        const std::size_t n = r.max_new_tokens;
        const auto ref = std::span<const float>(ref_tokens.data).subspan(off, n);
        const auto ids = std::span<const float>(topk_ids.data).subspan(off * k, n * k);
        const auto [matched, note] =
            first_difference(res.tokens, ref, ids, std::span<const float>(topk_logits.data).subspan(off * k, n * k), k, env.tol);
        std::vector<float> tokens(n, -1.0f);  // -1: not generated
        for (std::size_t t = 0; t < std::min(n, res.tokens.size()); ++t) tokens[t] = static_cast<float>(res.tokens[t]);
        outs.push_back({r.id + ".tokens", "tokens", tokens, note, kExact, std::pair{off, off + n}});
        if (matched > 0) {  // the logits are comparable while the tokens agree
            std::vector<float> top;
            for (std::size_t t = 0; t < matched; ++t)
                for (std::size_t j = 0; j < k; ++j)
                    top.push_back(res.logits[t * cfg.vocab_size + static_cast<std::size_t>(ids[t * k + j])]);
            outs.push_back({r.id + ".topk_logits", "topk_logits", top, "", std::nullopt, std::pair{off, off + matched}});
        }
        const ServeResult alone = run_alone(m, r);
        outs.push_back({r.id + ".logits batched vs alone", "= the request alone (ours, invariant)", res.logits,
                        "batching must not change a bit: every row of a step is computed as it is alone", kExact,
                        std::nullopt, false, alone.logits});
        if (res.admitted_step > r.arrival_step) ++waited;
        off += n;
    }
    outs.push_back({"batched steps", "", {static_cast<float>(rep.steps)}, fmt::format("for {} requests", requests.size())});
    outs.push_back({"largest batch (rows)", "", {static_cast<float>(rep.max_rows)}, "decode rows + prompt chunk"});
    outs.push_back({"peak pages held", "", {static_cast<float>(rep.peak_pages)},
                    fmt::format("of {} pages of {} positions", rep.n_pages, rep.page_size)});
    outs.push_back({"requests that waited for room", "", {static_cast<float>(waited)},
                    "admitted after their arrival step (running limit or a full pool)"});
    return outs;
}

}  // namespace lmlab
