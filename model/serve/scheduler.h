// Continuous batching with chunked prefill: many requests share one model, one paged KV cache and
// one batched forward per step (Yu et al. 2022, Orca; vLLM's scheduler; Agrawal et al. 2024,
// Sarathi, for chunked prefill).
//
// Every step:
//   1. admit: waiting requests (submitted before the step; serve() submits each at the start of
//      its arrival_step) join, first come first served, while fewer than max_running run and the pool can hold the newcomer's whole
//      prompt + max_new_tokens (admission reserves the worst case, so a running sequence never
//      finds the pool empty mid-generation: a full pool is a documented wait at the door, never a
//      failure or an eviction);
//   2. build one batch: one decode row for every running sequence that has its next token, then
//      prompt tokens of sequences still in their prompt, at most `chunk` of them in all (a long
//      prompt is split over several steps, so it never stalls the others' decoding for long);
//   3. one forward_batch over all rows (model/serve/batch.h); every sequence whose last row had logits
//      samples its next token with its own sampler (its own seed: the draws of one request never
//      depend on the others);
//   4. finished requests (max_new_tokens, or a stop id) leave and their pages return to the pool;
//      so do cancelled ones, between steps (a server's client that went away).
// Invariant (the stage generation.serve_batch, and model/serve/scheduler_test.cpp): every request's tokens
// and logits are the ones it gets running alone (Session::generate): batching, chunking and paging
// change when a token is computed, never what it is.
// Analogy: a web server's event loop. Requests arrive at any time; each tick serves a slice of
// every open connection instead of one connection start to finish.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/forward.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/serve/batch.h"
#include "model/serve/paged_kv.h"

namespace lmlab {

struct ServeRequest {
    std::string id;              // as the requests file names it (or its line number)
    std::vector<int> prompt;     // token ids
    std::size_t max_new_tokens = 0;
    std::size_t arrival_step = 0;  // the step at which it is submitted
    SamplerConfig sampling;        // temperature 0: greedy; else seeded sampling (sampler.h)
    std::string source = {};       // where it was read ("requests.jsonl:3"), named in error messages
};

struct ServeOptions {
    std::size_t chunk = 32;        // at most this many prompt tokens per step (chunked prefill)
    std::size_t max_running = 8;   // sequences in the batch at once
    std::size_t page_size = 16;    // positions per KV page
    std::size_t n_pages = 0;       // pages in the pool; 0: enough for the max_running largest requests at once
    std::vector<int> stop_ids;     // ends a request (included in its tokens), as Session::generate
    bool keep_logits = false;      // keep every request's logits row per new token (tests and the stage)
    bool check_invariants = false; // PagedKVCache::check_invariants() after every step (tests, the stage)
};

struct ServeResult {
    std::vector<int> tokens;           // the new tokens (a stop id, when hit, included last)
    std::string stop_reason;           // "max_new_tokens" or "stop token <id>"
    std::size_t admitted_step = 0, first_token_step = 0, finish_step = 0;
    double first_token_ms = 0, finish_ms = 0;  // wall time from the start of its arrival step
    std::vector<float> logits;         // keep_logits: [tokens.size(), vocab]
};

struct ServeProgress {
    std::size_t step = 0, running = 0, waiting = 0, finished = 0, total = 0;
    std::size_t rows = 0;              // rows of this step's batch
    std::size_t new_tokens = 0;        // generated so far, all requests
    std::size_t pages_used = 0, n_pages = 0;
    double seconds = 0;                // since the start
};

struct ServeReport {
    std::vector<ServeResult> results;  // in request order
    std::size_t steps = 0;             // steps that ran a batch
    std::size_t prompt_tokens = 0, new_tokens = 0;
    std::size_t max_rows = 0, peak_pages = 0, n_pages = 0, page_size = 0;
    double seconds = 0;
};

// The scheduler between steps: requests come in (submit) and leave (cancel, or finished) at any
// time, and every step() serves all that run. serve() below feeds it a fixed list by arrival step;
// lmlab serve (harness/cli/serve_http.cpp) feeds it from HTTP requests, on a thread of its own.
// Not thread-safe: one thread submits, cancels and steps (the HTTP server's scheduler thread).
class Scheduler {
public:
    // What a request's owner is told, on the thread that runs step(), for every token of it:
    // `result` so far (the new token last), `logits` the row it was sampled from ([vocab], valid
    // during the call only), `finished` when it was the last (result.stop_reason says why; the
    // request's pages are returned right after). The callback must not throw and should not
    // wait: every running request waits for it.
    struct Update {
        std::size_t handle = 0;
        const ServeResult& result;
        std::span<const float> logits;
        bool finished = false;
    };
    using OnUpdate = std::function<void(const Update&)>;

    // opt.n_pages must be set (serve() sizes a default pool from its requests; a server cannot).
    // Throws ModelError for options of 0 and for a pool past 16 GiB, before allocating it.
    Scheduler(const Model& m, const ServeOptions& opt);

    // ModelError naming the request (r.id, r.source) when it can never run: an empty prompt, an id
    // outside the vocabulary, prompt + max_new_tokens past the context, more pages than the whole
    // pool, max_new_tokens 0, a bad sampler setting. submit() makes the same check.
    void check(const ServeRequest& r) const;
    // Queues a request (it waits until a step admits it); returns its handle.
    std::size_t submit(ServeRequest r, OnUpdate on_update = {});
    // Drops a request between steps: a waiting one leaves the queue, a running one's pages go back
    // to the pool now. No update is sent. False when the handle is not live (finished, cancelled
    // or unknown).
    bool cancel(std::size_t handle);
    // One step (admit, batch, forward, sample, release the finished). False when nothing ran: no
    // request is live (the step's number is not used).
    bool step();

    // Nothing waits or runs: the next step is numbered `step` (serve()'s arrivals skip the idle
    // steps between them). ModelError when a request is live or `step` is in the past.
    void skip_to(std::size_t step);

    std::size_t next_step() const { return step_; }
    std::size_t running() const { return running_.size(); }
    std::size_t waiting() const { return waiting_.size(); }
    bool idle() const { return running_.empty() && waiting_.empty(); }
    std::size_t n_pages() const { return kv_.n_pages(); }
    std::size_t pages_used() const { return kv_.n_pages() - kv_.free_pages(); }
    std::size_t pages_reserved() const { return reserved_; }  // by admission: prompt + max_new_tokens of each running request
    std::size_t rows_last_step() const { return rows_.size(); }
    // Since construction: steps that ran a batch, tokens generated, the largest batch and page use.
    std::size_t steps_run() const { return steps_run_; }
    std::size_t new_tokens() const { return new_tokens_; }
    std::size_t max_rows() const { return max_rows_; }
    std::size_t peak_pages() const { return peak_pages_; }
    const PagedKVCache& cache() const { return kv_; }

private:
    using Clock = std::chrono::steady_clock;
    // A request from submit() until it finishes or is cancelled.
    struct Live {
        std::size_t handle = 0;
        ServeRequest request;
        ServeResult result;
        OnUpdate on_update;
        Clock::time_point submitted;
        // while running: its sequence in the paged cache, prompt tokens already in it, its pending token
        std::size_t seq = 0, fed = 0;
        bool has_next = false;
        int next = 0;
        std::unique_ptr<Sampler> sampler;
    };
    std::size_t pages_needed(const ServeRequest& r) const;  // what admission reserves: prompt + max_new_tokens
    void finish(std::size_t i);                             // running_[i] leaves; its pages go back

    const Model& m_;
    ServeOptions opt_;
    PagedKVCache kv_;
    RunState s_;                    // batch buffers: max_running decode rows + a chunk of prompt rows
    std::deque<Live> waiting_;      // first come, first served
    std::vector<Live> running_;
    std::vector<BatchRow> rows_;    // this step's rows; rows_[i] belongs to running_[row_owner_[i]]
    std::vector<std::size_t> row_owner_;
    std::vector<float> logits_;     // [rows with logits, vocab]
    std::size_t step_ = 0, next_handle_ = 0, reserved_ = 0;
    std::size_t steps_run_ = 0, new_tokens_ = 0, max_rows_ = 0, peak_pages_ = 0;
};

// Checks every request first (ModelError naming the request: an empty prompt, an id outside the
// vocabulary, prompt + max_new_tokens past the context, more pages than the whole pool, a bad
// sampler setting, options of 0, a pool too large to allocate), then serves them all: each is
// submitted to a Scheduler at the start of its arrival_step. progress (optional) sees every step
// that ran a batch.
ServeReport serve(const Model& m, const std::vector<ServeRequest>& requests, const ServeOptions& opt,
                  const std::function<void(const ServeProgress&)>& progress = {});

}  // namespace lmlab
