// config.json (transformers' format) with typed, named accessors: what a family's from_hf reads
// (model/families/*.cpp) and what model/load/hf.cpp opens. Every wrong or missing field is a
// ModelError naming the file, the field and the value found.
#pragma once

#include <climits>
#include <cstdint>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/model.h"

namespace lmlab {

class ConfigJson {
public:
    ConfigJson(nlohmann::json j, std::string path) : j_(std::move(j)), path_(std::move(path)) {}
    const std::string& path() const { return path_; }
    bool has(const char* field) const { return j_.contains(field) && !j_[field].is_null(); }
    bool present(const char* field) const { return j_.contains(field); }  // even when null
    std::string dump(const char* field) const { return has(field) ? j_[field].dump() : "null"; }  // for messages
    const nlohmann::json& raw(const char* field) const { return j_[field]; }  // (after has())

    // A required positive integer. (We do not fall back on transformers' defaults for dimensions:
    // every config.json transformers writes has them, and a guessed n_head would load silently.)
    std::size_t size(const char* field) const {
        if (!has(field)) throw ModelError(fmt::format("{}: field '{}' is missing (expected a positive integer)", path_, field));
        const nlohmann::json& v = j_[field];
        if (!v.is_number_unsigned() || v.get<std::uint64_t>() == 0)
            throw ModelError(fmt::format("{}: field '{}' is {}, expected a positive integer", path_, field, v.dump()));
        return static_cast<std::size_t>(v.get<std::uint64_t>());
    }
    double number(const char* field, double fallback) const {
        if (!has(field)) return fallback;
        const nlohmann::json& v = j_[field];
        if (!v.is_number()) throw ModelError(fmt::format("{}: field '{}' is {}, expected a number", path_, field, v.dump()));
        return v.get<double>();
    }
    bool boolean(const char* field, bool fallback) const {
        if (!has(field)) return fallback;
        const nlohmann::json& v = j_[field];
        if (!v.is_boolean()) throw ModelError(fmt::format("{}: field '{}' is {}, expected true or false", path_, field, v.dump()));
        return v.get<bool>();
    }
    std::string text(const char* field, const char* fallback) const {
        if (!has(field)) {
            if (fallback) return fallback;
            throw ModelError(fmt::format("{}: field '{}' is missing", path_, field));
        }
        const nlohmann::json& v = j_[field];
        if (!v.is_string()) throw ModelError(fmt::format("{}: field '{}' is {}, expected a string", path_, field, v.dump()));
        return v.get<std::string>();
    }
    // Token ids: absent or null -> none; one id or a list of ids (Llama 3 lists several).
    std::vector<int> token_ids(const char* field) const {
        std::vector<int> ids;
        if (!has(field)) return ids;
        const nlohmann::json& v = j_[field];
        for (const nlohmann::json& id : v.is_array() ? v : nlohmann::json::array({v})) {
            if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() > INT32_MAX)
                throw ModelError(fmt::format("{}: field '{}' is {}, expected a token id or a list of them", path_, field, v.dump()));
            ids.push_back(static_cast<int>(id.get<std::int64_t>()));
        }
        return ids;
    }
    // A boolean field that must keep the value our forward implements.
    void require(const char* field, bool fallback, bool wanted, const char* why) const {
        const bool v = boolean(field, fallback);
        if (v != wanted)
            throw ModelError(fmt::format("{}: {} is {}: {}; this engine implements only {} = {}", path_, field, v, why, field,
                                         wanted));
    }

private:
    nlohmann::json j_;
    std::string path_;
};

}  // namespace lmlab
