// lmlab serve-batch's requests file (harness/cli/serve.h: JSON Lines) and what the scheduler does with
// what it accepts. The input is the file; the requests it parses (prompt_ids only: there is no
// tokenizer here, so a text prompt must be refused cleanly) are then served on a tiny in-memory
// LLaMA (vocabulary 64, context 48) with a small pool, so that admission waits, chunking and page
// reuse are all reached. Accepted outcome besides success: ModelError. Checked after serving: every
// request got between 1 and max_tokens tokens, every id is in the vocabulary.
#include <cstdlib>

#include "fuzz/fuzz.h"
#include "model/serve/scheduler.h"
#include "model/tensors.h"
#include "harness/cli/options.h"
#include "harness/cli/serve.h"

namespace {

const lmlab::Model& tiny_model() {
    static const lmlab::Model m = [] {
        lmlab::Config c = lmlab::Config::of(lmlab::Arch::Llama);
        c.dim = 8;
        c.n_layers = 1;
        c.n_heads = 2;
        c.n_kv_heads = 1;
        c.ffn_dim = 8;
        c.vocab_size = 64;
        c.max_seq_len = 48;
        lmlab::Model model;
        model.config = c;
        model.source = "fuzz model (in memory)";
        std::uint32_t state = 1;
        for (const lmlab::BoundTensor& t : lmlab::bind_tensors(model)) {
            t.dst->resize(lmlab::numel(t.shape));
            for (float& v : *t.dst) {
                state = state * 1664525u + 1013904223u;
                v = static_cast<float>(state >> 8) / 16777216.0f - 0.5f;
            }
        }
        return model;
    }();
    return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string path = lmlab::fuzz::write_file("requests.jsonl", std::string_view(reinterpret_cast<const char*>(data), size));
    std::vector<lmlab::ServeRequest> requests;
    try {
        requests = lmlab::read_requests(path, nullptr).requests;  // (the refused lines are not served)
    } catch (const lmlab::UsageError&) {  // no request line at all
        return 0;
    }
    if (requests.size() > 64) return 0;  // keep one input's work bounded
    lmlab::ServeOptions opt;
    opt.chunk = 5;
    opt.page_size = 4;
    opt.max_running = 3;
    opt.n_pages = 14;  // 56 positions: a full context fits, two long requests do not
    opt.check_invariants = true;
    opt.stop_ids = {2};
    try {
        const lmlab::ServeReport rep = lmlab::serve(tiny_model(), requests, opt);
        for (std::size_t i = 0; i < requests.size(); ++i) {
            const auto& tokens = rep.results[i].tokens;
            if (tokens.empty() || tokens.size() > requests[i].max_new_tokens) std::abort();
            for (const int t : tokens)
                if (t < 0 || t >= 64) std::abort();
        }
    } catch (const lmlab::ModelError&) {
    }
    return 0;
}
