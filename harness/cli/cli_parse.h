// What the CLI parses itself (everything else is CLI11's): a list of token ids given on the command line.
#pragma once

#include <string>
#include <vector>

namespace lmlab {

// "1,403,407" (spaces around an id allowed) -> {1, 403, 407}. Throws std::invalid_argument naming the
// item for anything else: an empty list, an empty item, "1 403" (not one integer), a value outside int.
// Range against a vocabulary is the caller's check (check_request).
std::vector<int> parse_ids(const std::string& text);

}  // namespace lmlab
