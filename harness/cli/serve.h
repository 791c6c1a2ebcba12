// lmlab serve-batch: many requests through the continuous-batching scheduler (model/scheduler.h).
//
// The requests file is JSON Lines, one request per line (blank lines and lines starting with '#'
// are skipped):
//   {"id": "a", "prompt": "Once upon a time", "max_tokens": 32, "arrival_step": 0,
//    "temperature": 0.8, "top_k": 0, "top_p": 0.9, "seed": 7}
// "prompt" is text (encoded with the model's tokenizer, with BOS as generate does) or
// "prompt_ids" a list of ids; "max_tokens" is required; the rest are optional (id: "line N",
// arrival_step 0, greedy). Any other key is an error (a typo must not silently mean a default).
#pragma once

#include <string>
#include <vector>

#include "model/serve/scheduler.h"
#include "model/tokenizer/text_tokenizer.h"

namespace lmlab {

struct ServeArgs {
    std::string model_path, requests_path, tokenizer_path, out_path;
    ServeOptions options;
    bool sequential = false;  // run the same requests one after another (Session::generate), for comparison
    bool quiet = false;       // no progress line
};

// Parses the requests file (ModelError naming file:line and the key for anything wrong).
// tok may be null when every request gives prompt_ids.
std::vector<ServeRequest> read_requests(const std::string& path, const TextTokenizer* tok);

int cmd_serve_batch(const ServeArgs& a);

}  // namespace lmlab
