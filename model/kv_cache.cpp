#include "model/kv_cache.h"

#include <algorithm>
#include <string>

namespace lmlab {

KVCache::KVCache(std::size_t n_layers, std::size_t max_seq_len, std::size_t kv_dim)
    : max_seq_len_(max_seq_len), kv_dim_(kv_dim), lengths_(n_layers, 0),
      keys_(n_layers * max_seq_len * kv_dim), values_(n_layers * max_seq_len * kv_dim) {}

void KVCache::check_layer(std::size_t layer) const {
    if (layer >= lengths_.size())
        throw ModelError("KV cache: layer " + std::to_string(layer) + " out of range (" +
                           std::to_string(lengths_.size()) + " layers)");
}

void KVCache::append(std::size_t layer, std::size_t pos, std::span<const float> k, std::span<const float> v) {
    check_layer(layer);
    if (pos >= max_seq_len_)
        throw ModelError("KV cache: position " + std::to_string(pos) + " is beyond the context of " +
                           std::to_string(max_seq_len_) + " positions (max_seq_len); start a new sequence");
    if (pos != lengths_[layer])
        throw ModelError("KV cache: layer " + std::to_string(layer) + " holds " + std::to_string(lengths_[layer]) +
                           " positions, so the next append must be at position " + std::to_string(lengths_[layer]) +
                           ", not " + std::to_string(pos));
    write_row(layer, pos, k, v);
    ++lengths_[layer];
}

void KVCache::write_row(std::size_t layer, std::size_t pos, std::span<const float> k, std::span<const float> v) {
    if (k.size() != kv_dim_ || v.size() != kv_dim_)
        throw ModelError("KV cache: k/v of " + std::to_string(k.size()) + "/" + std::to_string(v.size()) +
                           " elements, expected kv_dim " + std::to_string(kv_dim_));
    std::copy(k.begin(), k.end(), keys_.begin() + static_cast<std::ptrdiff_t>(offset(layer, pos)));
    std::copy(v.begin(), v.end(), values_.begin() + static_cast<std::ptrdiff_t>(offset(layer, pos)));
}

std::span<const float> KVCache::keys(std::size_t layer) const {
    check_layer(layer);
    return std::span<const float>(keys_).subspan(offset(layer, 0), lengths_[layer] * kv_dim_);
}

std::span<const float> KVCache::values(std::size_t layer) const {
    check_layer(layer);
    return std::span<const float>(values_).subspan(offset(layer, 0), lengths_[layer] * kv_dim_);
}

std::size_t KVCache::length(std::size_t layer) const {
    check_layer(layer);
    return lengths_[layer];
}

std::size_t KVCache::length() const { return *std::min_element(lengths_.begin(), lengths_.end()); }

void KVCache::reset() { std::fill(lengths_.begin(), lengths_.end(), 0); }

void KVCache::truncate(std::size_t length) {
    // checked for every layer first: a refused truncate changes nothing
    for (std::size_t l = 0; l < lengths_.size(); ++l)
        if (length > lengths_[l])
            throw ModelError("KV cache: cannot truncate to " + std::to_string(length) + " positions: layer " +
                             std::to_string(l) + " holds only " + std::to_string(lengths_[l]) +
                             " (truncate only rolls back; append to grow)");
    std::fill(lengths_.begin(), lengths_.end(), length);
}

}  // namespace lmlab
