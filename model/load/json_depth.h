// One rule for every JSON file lmlab reads (config.json, safetensors headers and indexes,
// tokenizer.json, encoder.json): at most 64 levels of nesting. nlohmann parses deep nesting
// iteratively, but dump() (which our error messages use to show a value) recurses, and 200000
// nested '[' overflow the stack. Real files nest about 6 levels.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "model/model.h"

namespace lmlab {

inline constexpr int kMaxJsonDepth = 64;

// Call from a nlohmann parser callback with its depth: throws ModelError "<where>: JSON nested deeper
// than 64 levels" past the limit.
inline void check_json_depth(int depth, const std::string& where) {
    if (depth > kMaxJsonDepth)
        throw ModelError(where + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
}

// The parser callback that applies it: nlohmann::json::parse(input, json_depth_limit(where)).
inline nlohmann::json::parser_callback_t json_depth_limit(std::string where) {
    return [where = std::move(where)](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
        check_json_depth(depth, where);
        return true;
    };
}

}  // namespace lmlab
