// Continuous batching with chunked prefill: many requests share one model, one paged KV cache and
// one batched forward per step (Yu et al. 2022, Orca; vLLM's scheduler; Agrawal et al. 2024,
// Sarathi, for chunked prefill).
//
// Every step:
//   1. admit: waiting requests that have arrived (arrival_step <= step) join, first come first
//      served, while fewer than max_running run and the pool can hold the newcomer's whole
//      prompt + max_new_tokens (admission reserves the worst case, so a running sequence never
//      finds the pool empty mid-generation: a full pool is a documented wait at the door, never a
//      failure or an eviction);
//   2. build one batch: one decode row for every running sequence that has its next token, then
//      prompt tokens of sequences still in their prompt, at most `chunk` of them in all (a long
//      prompt is split over several steps, so it never stalls the others' decoding for long);
//   3. one forward_batch over all rows (model/serve/batch.h); every sequence whose last row had logits
//      samples its next token with its own sampler (its own seed: the draws of one request never
//      depend on the others);
//   4. finished requests (max_new_tokens, or a stop id) leave and their pages return to the pool.
// Invariant (the stage generation.serve_batch, and model/serve/scheduler_test.cpp): every request's tokens
// and logits are the ones it gets running alone (Session::generate): batching, chunking and paging
// change when a token is computed, never what it is.
// Analogy: a web server's event loop. Requests arrive at any time; each tick serves a slice of
// every open connection instead of one connection start to finish.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/sampler.h"

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

// Checks every request first (ModelError naming the request: an empty prompt, an id outside the
// vocabulary, prompt + max_new_tokens past the context, more pages than the whole pool, a bad
// sampler setting, options of 0, a pool too large to allocate), then serves them all. progress (optional) sees every step.
ServeReport serve(const Model& m, const std::vector<ServeRequest>& requests, const ServeOptions& opt,
                  const std::function<void(const ServeProgress&)>& progress = {});

}  // namespace lmlab
