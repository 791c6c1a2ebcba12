// One request alone: Session::generate (the prompt through prefill, then one token at a time on the
// contiguous cache), with every step's logits: what serve() must reproduce bit for bit. The baseline
// of the serving tests, the serving stages and the serving benchmark (not part of the engine).
#pragma once

#include <vector>

#include "model/serve/scheduler.h"
#include "model/session.h"

namespace lmlab {

inline ServeResult run_alone(const Model& m, const ServeRequest& r, const std::vector<int>& stop_ids = {}) {
    ServeResult res;
    Session session(m);
    Sampler sampler(r.sampling, m.config.vocab_size);
    GenerationResult g = session.generate(r.prompt, r.max_new_tokens, sampler, stop_ids, {}, &res.logits);
    res.tokens = std::move(g.tokens);
    res.stop_reason = std::move(g.stop_reason);
    return res;
}

}  // namespace lmlab
