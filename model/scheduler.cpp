#include "scheduler.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <fmt/format.h>
#include <memory>
#include <numeric>

#include "batch.h"
#include "session.h"  // check_request

namespace lmlab {

namespace {
using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

// A request while it runs: where it is in its prompt, its pending token, its sampler.
struct Running {
    std::size_t index = 0;   // into requests / results
    std::size_t seq = 0;     // its sequence in the paged cache
    std::size_t fed = 0;     // prompt tokens already in the cache
    bool has_next = false;   // a sampled token waits to be fed (decode phase)
    int next = 0;
    std::size_t reserved = 0;  // pages reserved at admission
    std::unique_ptr<Sampler> sampler;
};

void check_requests(const Config& c, const std::vector<ServeRequest>& requests, const ServeOptions& opt,
                    std::size_t n_pages) {
    if (opt.chunk == 0 || opt.max_running == 0 || opt.page_size == 0)
        throw ModelError(fmt::format("serve: chunk {}, max_running {}, page_size {}: each must be at least 1", opt.chunk,
                                     opt.max_running, opt.page_size));
    for (const ServeRequest& r : requests) {
        const std::string who = fmt::format("request '{}'", r.id);
        if (r.max_new_tokens == 0) throw ModelError(who + ": max_tokens is 0; ask for at least one token");
        try {
            check_request(c, r.prompt, r.max_new_tokens);
            r.sampling.validate();
        } catch (const std::exception& e) {
            throw ModelError(who + ": " + e.what());
        }
        const std::size_t need = (r.prompt.size() + r.max_new_tokens + opt.page_size - 1) / opt.page_size;
        if (need > n_pages)
            throw ModelError(fmt::format("{}: {} prompt + {} new tokens need {} pages of {} positions, but the pool has "
                                         "{}; give it more pages", who, r.prompt.size(), r.max_new_tokens, need,
                                         opt.page_size, n_pages));
    }
}
}  // namespace

ServeReport serve(const Model& m, const std::vector<ServeRequest>& requests, const ServeOptions& opt,
                  const std::function<void(const ServeProgress&)>& progress) {
    const Config& c = m.config;
    const std::size_t n_pages =
        opt.n_pages ? opt.n_pages : opt.max_running * ((c.max_seq_len + opt.page_size - 1) / std::max<std::size_t>(opt.page_size, 1));
    check_requests(c, requests, opt, n_pages);

    PagedKVCache kv(c.n_layers, c.kv_dim(), opt.page_size, n_pages);
    PrefillState ps(c, opt.max_running + opt.chunk);  // a step's rows: one decode row per sequence + the chunk
    RunState s(c);
    std::vector<BatchRow> rows;
    std::vector<std::size_t> row_owner;  // rows[i] belongs to running[row_owner[i]]
    std::vector<float> logits;

    ServeReport rep;
    rep.results.resize(requests.size());
    rep.n_pages = n_pages;
    rep.page_size = opt.page_size;
    // waiting: request indices by arrival step, then file order (first come, first served)
    std::deque<std::size_t> waiting(requests.size());
    std::iota(waiting.begin(), waiting.end(), std::size_t{0});
    std::stable_sort(waiting.begin(), waiting.end(),
                     [&](std::size_t a, std::size_t b) { return requests[a].arrival_step < requests[b].arrival_step; });
    std::vector<Running> running;
    std::vector<Clock::time_point> arrived_at(requests.size());
    std::size_t reserved = 0, finished = 0;
    const auto t_start = Clock::now();

    for (std::size_t step = 0; finished < requests.size(); ++step) {
        if (running.empty() && !waiting.empty())  // idle: skip ahead to the next arrival
            step = std::max(step, requests[waiting.front()].arrival_step);
        const auto t_step = Clock::now();
        for (const std::size_t w : waiting)
            if (requests[w].arrival_step == step) arrived_at[w] = t_step;
        // 1. admit, in order, while there is room (a request that does not fit waits, and so do those behind it)
        while (!waiting.empty() && requests[waiting.front()].arrival_step <= step && running.size() < opt.max_running) {
            const ServeRequest& r = requests[waiting.front()];
            const std::size_t need = kv.pages_for(r.prompt.size() + r.max_new_tokens);
            if (reserved + need > n_pages) break;
            Running run;
            run.index = waiting.front();
            run.seq = kv.add_sequence();
            run.reserved = need;
            run.sampler = std::make_unique<Sampler>(r.sampling, c.vocab_size);
            reserved += need;
            rep.results[run.index].admitted_step = step;
            running.push_back(std::move(run));
            waiting.pop_front();
        }
        // 2. the batch: decode rows first, then at most `chunk` prompt tokens
        rows.clear();
        row_owner.clear();
        for (std::size_t i = 0; i < running.size(); ++i) {
            const Running& run = running[i];
            if (!run.has_next) continue;
            rows.push_back({run.seq, run.next, kv.length(run.seq), true});
            row_owner.push_back(i);
        }
        std::size_t budget = opt.chunk;
        for (std::size_t i = 0; i < running.size() && budget > 0; ++i) {
            Running& run = running[i];
            const std::vector<int>& prompt = requests[run.index].prompt;
            if (run.fed == prompt.size()) continue;
            const std::size_t n = std::min(budget, prompt.size() - run.fed), pos0 = kv.length(run.seq);
            for (std::size_t t = 0; t < n; ++t) {
                // only the prompt's last token needs logits: they choose the first new token
                rows.push_back({run.seq, prompt[run.fed + t], pos0 + t, run.fed + t + 1 == prompt.size()});
                row_owner.push_back(i);
            }
            run.fed += n;
            budget -= n;
        }
        if (rows.empty()) continue;  // everyone admitted is waiting on nothing: cannot happen, but never spin
        // 3. one forward over every row
        forward_batch(m, rows, kv, ps, s, logits);
        if (opt.check_invariants) kv.check_invariants();
        ++rep.steps;
        rep.max_rows = std::max(rep.max_rows, rows.size());
        rep.peak_pages = std::max(rep.peak_pages, n_pages - kv.free_pages());
        const auto t_done = Clock::now();
        std::size_t at = 0;  // the next logits row
        std::vector<std::size_t> done;
        for (std::size_t i = 0; i < rows.size(); ++i) {
            if (!rows[i].logits) continue;
            Running& run = running[row_owner[i]];
            ServeResult& res = rep.results[run.index];
            const std::span<const float> row = std::span<const float>(logits).subspan(at++ * c.vocab_size, c.vocab_size);
            if (opt.keep_logits) res.logits.insert(res.logits.end(), row.begin(), row.end());
            const int token = run.sampler->sample(row);
            if (res.tokens.empty()) {
                res.first_token_step = step;
                res.first_token_ms = ms_between(arrived_at[run.index], t_done);
            }
            res.tokens.push_back(token);
            run.next = token;
            run.has_next = true;
            const bool stop = std::find(opt.stop_ids.begin(), opt.stop_ids.end(), token) != opt.stop_ids.end();
            if (stop || res.tokens.size() == requests[run.index].max_new_tokens) {
                res.stop_reason = stop ? fmt::format("stop token {}", token) : "max_new_tokens";
                res.finish_step = step;
                res.finish_ms = ms_between(arrived_at[run.index], t_done);
                done.push_back(row_owner[i]);
            }
        }
        // 4. the finished leave; their pages go back to the pool
        std::sort(done.rbegin(), done.rend());
        for (const std::size_t i : done) {
            kv.release(running[i].seq);
            reserved -= running[i].reserved;
            running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
            ++finished;
        }
        if (opt.check_invariants) kv.check_invariants();
        if (progress) {
            ServeProgress p;
            p.step = step;
            p.running = running.size();
            p.waiting = waiting.size();
            p.finished = finished;
            p.total = requests.size();
            p.rows = rows.size();
            for (const ServeResult& r : rep.results) p.new_tokens += r.tokens.size();
            p.pages_used = n_pages - kv.free_pages();
            p.n_pages = n_pages;
            p.seconds = ms_between(t_start, Clock::now()) / 1000.0;
            progress(p);
        }
    }
    rep.seconds = ms_between(t_start, Clock::now()) / 1000.0;
    for (std::size_t i = 0; i < requests.size(); ++i) {
        rep.prompt_tokens += requests[i].prompt.size();
        rep.new_tokens += rep.results[i].tokens.size();
    }
    return rep;
}

ServeResult run_alone(const Model& m, const ServeRequest& r, const std::vector<int>& stop_ids) {
    check_request(m.config, r.prompt, r.max_new_tokens);
    ServeResult res;
    Sampler sampler(r.sampling, m.config.vocab_size);
    KVCache cache(m.config.n_layers, r.prompt.size() + r.max_new_tokens, m.config.kv_dim());
    PrefillState ps(m.config, r.prompt.size());
    RunState s(m.config);
    std::span<const float> logits = prefill(m, r.prompt, cache, ps, s);
    while (true) {
        res.logits.insert(res.logits.end(), logits.begin(), logits.end());
        const int token = sampler.sample(logits);
        res.tokens.push_back(token);
        if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
            res.stop_reason = fmt::format("stop token {}", token);
            break;
        }
        if (res.tokens.size() == r.max_new_tokens) {
            res.stop_reason = "max_new_tokens";
            break;
        }
        logits = forward(m, token, cache.length(), cache, s);
    }
    return res;
}

}  // namespace lmlab
