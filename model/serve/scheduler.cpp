#include "model/serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <fmt/format.h>
#include <memory>
#include <numeric>

#include "model/serve/batch.h"
#include "model/session.h"  // check_request

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
    std::unique_ptr<Sampler> sampler;
};

// The pages admission reserves for a request: its whole prompt + max_new_tokens (the worst case).
// Under a sliding window W on every layer (Config::window), pages out of the window go back after
// each step, so a sequence never holds more than the pages of W - 1 old positions plus a step's new
// rows (at most `chunk`): any n consecutive positions lie on at most ceil(n / page_size) + 1 pages.
std::size_t pages_needed(const ServeRequest& r, std::size_t page_size, std::size_t window, std::size_t chunk) {
    const std::size_t all = (r.prompt.size() + r.max_new_tokens + page_size - 1) / page_size;
    if (window == 0) return all;
    return std::min(all, (window - 1 + chunk + page_size - 1) / page_size + 1);
}

// The window every layer of c has (0: some layer sees every position), what the paged cache frees by.
std::size_t common_window(const Config& c) {
    std::size_t w = c.n_layers ? c.window(0) : 0;
    for (std::size_t l = 0; l < c.n_layers; ++l) w = c.window(l) ? std::min(w, c.window(l)) : 0;
    return w;
}

// What the request is called in messages: its id, and where it was read when known.
std::string who(const ServeRequest& r) {
    return r.source.empty() ? fmt::format("request '{}'", r.id) : fmt::format("request '{}' ({})", r.id, r.source);
}

// Pages the pool needs for the max_running largest requests at once: the most that can ever be
// reserved together (admission reserves prompt + max_new_tokens).
std::size_t default_pages(const std::vector<ServeRequest>& requests, const ServeOptions& opt, std::size_t window) {
    std::vector<std::size_t> need;
    for (const ServeRequest& r : requests) need.push_back(pages_needed(r, opt.page_size, window, opt.chunk));
    std::sort(need.rbegin(), need.rend());
    std::size_t n = 0;
    for (std::size_t i = 0; i < need.size() && i < opt.max_running; ++i) n += need[i];
    return std::max<std::size_t>(n, 1);
}

constexpr double kMaxPoolBytes = 16.0 * (1ull << 30);  // a pool past this is refused before allocating

void check_requests(const Config& c, const std::vector<ServeRequest>& requests, const ServeOptions& opt,
                    std::size_t n_pages) {
    for (const ServeRequest& r : requests) {
        if (r.max_new_tokens == 0) throw ModelError(who(r) + ": max_tokens is 0; ask for at least one token");
        try {
            check_request(c, r.prompt, r.max_new_tokens);
            r.sampling.validate();
        } catch (const std::exception& e) {
            throw ModelError(who(r) + ": " + e.what());
        }
        const std::size_t need = pages_needed(r, opt.page_size, common_window(c), opt.chunk);
        if (need > n_pages)
            throw ModelError(fmt::format("{}: {} prompt + {} new tokens need {} pages of {} positions, but the pool has "
                                         "{}; give it more pages", who(r), r.prompt.size(), r.max_new_tokens, need,
                                         opt.page_size, n_pages));
    }
    const double bytes = 2.0 * 4.0 * static_cast<double>(c.n_layers) * static_cast<double>(n_pages) *
                         static_cast<double>(opt.page_size) * static_cast<double>(c.kv_dim());
    if (bytes > kMaxPoolBytes)
        throw ModelError(fmt::format("serve: a KV pool of {} pages of {} positions would take {:.1f} GB (keys and values "
                                     "of {} layers x kv_dim {} in float32), more than the {:.1f} GB (16 GiB) allowed; lower "
                                     "--kv-pages or --page-size",
                                     n_pages, opt.page_size, bytes / 1e9, c.n_layers, c.kv_dim(), kMaxPoolBytes / 1e9));
}
}  // namespace

ServeReport serve(const Model& m, const std::vector<ServeRequest>& requests, const ServeOptions& opt,
                  const std::function<void(const ServeProgress&)>& progress) {
    const Config& c = m.config;
    if (opt.chunk == 0 || opt.max_running == 0 || opt.page_size == 0)
        throw ModelError(fmt::format("serve: chunk {}, max_running {}, page_size {}: each must be at least 1", opt.chunk,
                                     opt.max_running, opt.page_size));
    const std::size_t window = common_window(c);
    const std::size_t n_pages = opt.n_pages ? opt.n_pages : default_pages(requests, opt, window);
    check_requests(c, requests, opt, n_pages);

    PagedKVCache kv(c, opt.page_size, n_pages);
    // a step's rows: one decode row per running sequence + at most a chunk of prompt tokens (which
    // may span several prompts, so never more than all of them)
    std::size_t prompt_tokens = 0;
    for (const ServeRequest& r : requests) prompt_tokens += r.prompt.size();
    RunState s(c, std::min(opt.max_running, requests.size()) + std::min(opt.chunk, prompt_tokens));
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
    std::vector<std::size_t> done;  // indices into running of the requests a step finished
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
            const std::size_t need = pages_needed(r, opt.page_size, window, opt.chunk);
            if (reserved + need > n_pages) break;
            Running run;
            run.index = waiting.front();
            run.seq = kv.add_sequence(r.prompt.size());
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
        forward_batch(m, rows, kv, s, logits);
        if (opt.check_invariants) kv.check_invariants();
        ++rep.steps;
        rep.max_rows = std::max(rep.max_rows, rows.size());
        rep.peak_pages = std::max(rep.peak_pages, n_pages - kv.free_pages());
        const auto t_done = Clock::now();
        std::size_t at = 0;  // the next logits row
        done.clear();
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
                res.stop_reason = stop ? fmt::format("stop token {}", token)
                                      : length_stop_reason(c, requests[run.index].prompt.size(), res.tokens.size());
                res.finish_step = step;
                res.finish_ms = ms_between(arrived_at[run.index], t_done);
                done.push_back(row_owner[i]);
            }
        }
        // 4. the finished leave; their pages go back to the pool
        std::sort(done.rbegin(), done.rend());
        for (const std::size_t i : done) {
            kv.release(running[i].seq);
            reserved -= pages_needed(requests[running[i].index], opt.page_size, window, opt.chunk);  // what its admission reserved
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

}  // namespace lmlab
