// The requests file of lmlab serve-batch (JSON Lines; its format is at the top of serve.cpp).
#pragma once

#include <string>
#include <vector>

#include "model/serve/scheduler.h"
#include "model/tokenizer/text_tokenizer.h"

namespace lmlab {

// The requests of a file, and the lines refused (each message names file:line and what is wrong):
// malformed JSON, an unknown or missing key, a value of the wrong type or range, an id given twice.
struct RequestFile {
    std::vector<ServeRequest> requests;
    std::vector<std::string> refused;
};
// UsageError when the file cannot be read or holds no request line at all.
RequestFile read_requests(const std::string& path, const TextTokenizer* tok);

}  // namespace lmlab
