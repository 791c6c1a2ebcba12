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

// The pages admission reserves for a request: its whole prompt + max_new_tokens (the worst case).
// Under a sliding window W on every layer (Config::window), pages out of the window go back after
// each step, so a sequence never holds more than the pages of W - 1 old positions plus a step's new
// rows (at most `chunk`): any n consecutive positions lie on at most ceil(n / page_size) + 1 pages.
std::size_t pages_for(const ServeRequest& r, std::size_t page_size, std::size_t window, std::size_t chunk) {
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
    for (const ServeRequest& r : requests) need.push_back(pages_for(r, opt.page_size, window, opt.chunk));
    std::sort(need.rbegin(), need.rend());
    std::size_t n = 0;
    for (std::size_t i = 0; i < need.size() && i < opt.max_running; ++i) n += need[i];
    return std::max<std::size_t>(n, 1);
}

// Everything about a request but the pool: ModelError naming it.
void check_against_model(const Config& c, const ServeRequest& r) {
    if (r.max_new_tokens == 0) throw ModelError(who(r) + ": max_tokens is 0; ask for at least one token");
    try {
        check_request(c, r.prompt, r.max_new_tokens);
        r.sampling.validate();
    } catch (const std::exception& e) {
        throw ModelError(who(r) + ": " + e.what());
    }
}

constexpr double kMaxPoolBytes = 16.0 * (1ull << 30);  // a pool past this is refused before allocating

// The options, then the pool's size, before anything is allocated.
const ServeOptions& checked(const Config& c, const ServeOptions& opt) {
    if (opt.chunk == 0 || opt.max_running == 0 || opt.page_size == 0 || opt.n_pages == 0)
        throw ModelError(fmt::format("serve: chunk {}, max_running {}, page_size {}, pages {}: each must be at least 1",
                                     opt.chunk, opt.max_running, opt.page_size, opt.n_pages));
    const double bytes = 2.0 * 4.0 * static_cast<double>(c.n_layers) * static_cast<double>(opt.n_pages) *
                         static_cast<double>(opt.page_size) * static_cast<double>(c.kv_dim());
    if (bytes > kMaxPoolBytes)
        throw ModelError(fmt::format("serve: a KV pool of {} pages of {} positions would take {:.1f} GB (keys and values "
                                     "of {} layers x kv_dim {} in float32), more than the {:.1f} GB (16 GiB) allowed; lower "
                                     "--kv-pages or --page-size",
                                     opt.n_pages, opt.page_size, bytes / 1e9, c.n_layers, c.kv_dim(), kMaxPoolBytes / 1e9));
    return opt;
}
}  // namespace

Scheduler::Scheduler(const Model& m, const ServeOptions& opt)
    : m_(m),
      opt_(checked(m.config, opt)),
      kv_(m.config, opt.page_size, opt.n_pages),  // (a windowed layer's pages go back as they leave the window)
      // a step's rows: one decode row per running sequence + at most a chunk of prompt tokens
      s_(m.config, opt.max_running + opt.chunk) {}

std::size_t Scheduler::pages_needed(const ServeRequest& r) const {
    return pages_for(r, opt_.page_size, common_window(m_.config), opt_.chunk);
}

void Scheduler::check(const ServeRequest& r) const {
    check_against_model(m_.config, r);
    const std::size_t need = pages_needed(r);
    if (need > kv_.n_pages())
        throw ModelError(fmt::format("{}: {} prompt + {} new tokens need {} pages of {} positions, but the pool has "
                                     "{}; give it more pages", who(r), r.prompt.size(), r.max_new_tokens, need,
                                     opt_.page_size, kv_.n_pages()));
}

std::size_t Scheduler::submit(ServeRequest r, OnUpdate on_update) {
    check(r);
    Live live;
    live.handle = next_handle_++;
    live.request = std::move(r);
    live.on_update = std::move(on_update);
    live.submitted = Clock::now();
    waiting_.push_back(std::move(live));
    return waiting_.back().handle;
}

bool Scheduler::cancel(std::size_t handle) {
    const auto same = [&](const Live& l) { return l.handle == handle; };
    if (auto w = std::find_if(waiting_.begin(), waiting_.end(), same); w != waiting_.end()) {
        waiting_.erase(w);
        return true;
    }
    if (auto r = std::find_if(running_.begin(), running_.end(), same); r != running_.end()) {
        finish(static_cast<std::size_t>(r - running_.begin()));
        return true;
    }
    return false;
}

void Scheduler::finish(std::size_t i) {
    kv_.release(running_[i].seq);
    reserved_ -= pages_needed(running_[i].request);  // what its admission reserved
    running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
}

void Scheduler::skip_to(std::size_t step) {
    if (!idle() || step < step_)
        throw ModelError(fmt::format("scheduler: skip_to({}) at step {} with {} running and {} waiting: only an idle "
                                     "scheduler skips, and only forward", step, step_, running_.size(), waiting_.size()));
    step_ = step;
}

bool Scheduler::step() {
    if (idle()) return false;
    const Config& c = m_.config;
    const std::size_t step = step_++;
    // 1. admit, in order, while there is room (a request that does not fit waits, and so do those behind it)
    while (!waiting_.empty() && running_.size() < opt_.max_running) {
        const std::size_t need = pages_needed(waiting_.front().request);
        if (reserved_ + need > kv_.n_pages()) break;
        Live run = std::move(waiting_.front());
        waiting_.pop_front();
        run.seq = kv_.add_sequence(run.request.prompt.size());  // (dynamic RoPE rotates the prompt's rows for its length)
        run.sampler = std::make_unique<Sampler>(run.request.sampling, c.vocab_size);
        run.result.admitted_step = step;
        reserved_ += need;
        running_.push_back(std::move(run));
    }
    // 2. the batch: decode rows first, then at most `chunk` prompt tokens
    rows_.clear();
    row_owner_.clear();
    for (std::size_t i = 0; i < running_.size(); ++i) {
        const Live& run = running_[i];
        if (!run.has_next) continue;
        rows_.push_back({run.seq, run.next, kv_.length(run.seq), true});
        row_owner_.push_back(i);
    }
    std::size_t budget = opt_.chunk;
    for (std::size_t i = 0; i < running_.size() && budget > 0; ++i) {
        Live& run = running_[i];
        const std::vector<int>& prompt = run.request.prompt;
        if (run.fed == prompt.size()) continue;
        const std::size_t n = std::min(budget, prompt.size() - run.fed), pos0 = kv_.length(run.seq);
        for (std::size_t t = 0; t < n; ++t) {
            // only the prompt's last token needs logits: they choose the first new token
            rows_.push_back({run.seq, prompt[run.fed + t], pos0 + t, run.fed + t + 1 == prompt.size()});
            row_owner_.push_back(i);
        }
        run.fed += n;
        budget -= n;
    }
    if (rows_.empty()) return false;  // all waiting for pages held by nobody: cannot happen (check() bounds a request by the pool)
    // 3. one forward over every row
    forward_batch(m_, rows_, kv_, s_, logits_);
    if (opt_.check_invariants) kv_.check_invariants();
    ++steps_run_;
    max_rows_ = std::max(max_rows_, rows_.size());
    peak_pages_ = std::max(peak_pages_, pages_used());
    const auto t_done = Clock::now();
    std::size_t at = 0;  // the next logits row
    std::vector<std::size_t> done;  // indices into running_ of the requests this step finished
    for (std::size_t i = 0; i < rows_.size(); ++i) {
        if (!rows_[i].logits) continue;
        Live& run = running_[row_owner_[i]];
        ServeResult& res = run.result;
        const std::span<const float> row = std::span<const float>(logits_).subspan(at++ * c.vocab_size, c.vocab_size);
        if (opt_.keep_logits) res.logits.insert(res.logits.end(), row.begin(), row.end());
        const int token = run.sampler->sample(row);
        if (res.tokens.empty()) {
            res.first_token_step = step;
            res.first_token_ms = ms_between(run.submitted, t_done);
        }
        res.tokens.push_back(token);
        ++new_tokens_;
        run.next = token;
        run.has_next = true;
        const bool stop = std::find(opt_.stop_ids.begin(), opt_.stop_ids.end(), token) != opt_.stop_ids.end();
        const bool last = stop || res.tokens.size() == run.request.max_new_tokens;
        if (last) {
            res.stop_reason = stop ? fmt::format("stop token {}", token)
                                   : length_stop_reason(c, run.request.prompt.size(), res.tokens.size());
            res.finish_step = step;
            res.finish_ms = ms_between(run.submitted, t_done);
            done.push_back(row_owner_[i]);
        }
        if (run.on_update) run.on_update({run.handle, res, row, last});
    }
    // 4. the finished leave; their pages go back to the pool
    std::sort(done.rbegin(), done.rend());
    for (const std::size_t i : done) finish(i);
    if (opt_.check_invariants) kv_.check_invariants();
    return true;
}

ServeReport serve(const Model& m, const std::vector<ServeRequest>& requests, const ServeOptions& opt,
                  const std::function<void(const ServeProgress&)>& progress) {
    if (opt.page_size == 0)  // (before default_pages divides by it; the Scheduler checks the others)
        throw ModelError(fmt::format("serve: chunk {}, max_running {}, page_size {}: each must be at least 1", opt.chunk,
                                     opt.max_running, opt.page_size));
    // every request before any runs (and before the default pool is sized from them)
    for (const ServeRequest& r : requests) check_against_model(m.config, r);
    ServeOptions o = opt;
    if (o.n_pages == 0) o.n_pages = default_pages(requests, o, common_window(m.config));
    Scheduler sched(m, o);
    for (const ServeRequest& r : requests) sched.check(r);  // against the pool

    ServeReport rep;
    rep.results.resize(requests.size());
    rep.n_pages = o.n_pages;
    rep.page_size = o.page_size;
    // request indices by arrival step, then file order (first come, first served)
    std::vector<std::size_t> order(requests.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return requests[a].arrival_step < requests[b].arrival_step; });
    std::size_t next = 0, finished = 0;
    const auto t_start = Clock::now();
    while (finished < requests.size()) {
        if (sched.idle())  // skip ahead to the next arrival
            sched.skip_to(std::max(sched.next_step(), requests[order[next]].arrival_step));
        for (; next < order.size() && requests[order[next]].arrival_step <= sched.next_step(); ++next) {
            const std::size_t i = order[next];
            sched.submit(requests[i], [&rep, &finished, i](const Scheduler::Update& u) {
                if (!u.finished) return;
                rep.results[i] = u.result;
                ++finished;
            });
        }
        const std::size_t step = sched.next_step();
        if (!sched.step() || !progress) continue;
        ServeProgress p;
        p.step = step;
        p.running = sched.running();
        p.waiting = sched.waiting() + (order.size() - next);
        p.finished = finished;
        p.total = requests.size();
        p.rows = sched.rows_last_step();
        p.new_tokens = sched.new_tokens();
        p.pages_used = sched.pages_used();
        p.n_pages = sched.n_pages();
        p.seconds = ms_between(t_start, Clock::now()) / 1000.0;
        progress(p);
    }
    rep.seconds = ms_between(t_start, Clock::now()) / 1000.0;
    rep.steps = sched.steps_run();
    rep.max_rows = sched.max_rows();
    rep.peak_pages = sched.peak_pages();
    for (std::size_t i = 0; i < requests.size(); ++i) {
        rep.prompt_tokens += requests[i].prompt.size();
        rep.new_tokens += rep.results[i].tokens.size();
    }
    return rep;
}

}  // namespace lmlab
