#include "model/serve/paged_kv.h"

#include <algorithm>
#include <fmt/format.h>
#include <utility>

namespace lmlab {

PagedKVCache::PagedKVCache(std::size_t n_layers, std::size_t kv_dim, std::size_t page_size, std::size_t n_pages,
                           std::vector<std::size_t> windows)
    : n_layers_(n_layers), kv_dim_(kv_dim), page_size_(page_size), n_pages_(n_pages), windows_(std::move(windows)) {
    if (!windows_.empty() && windows_.size() != n_layers)
        throw ModelError(fmt::format("paged KV cache: {} windows for {} layers", windows_.size(), n_layers));
    if (!windows_.empty() && std::find(windows_.begin(), windows_.end(), std::size_t{0}) == windows_.end())
        common_window_ = *std::min_element(windows_.begin(), windows_.end());
    if (n_layers == 0 || kv_dim == 0 || page_size == 0 || n_pages == 0)
        throw ModelError(fmt::format("paged KV cache: {} layers, kv_dim {}, {} pages of {} positions: every size "
                                     "must be at least 1",
                                     n_layers, kv_dim, n_pages, page_size));
    if (n_pages > UINT32_MAX) throw ModelError(fmt::format("paged KV cache: {} pages, at most {}", n_pages, UINT32_MAX));
    keys_.resize(n_layers * n_pages * page_size * kv_dim);
    values_.resize(keys_.size());
    free_.resize(n_pages);
    // popped from the back: page 0 is handed out first
    for (std::size_t i = 0; i < n_pages; ++i) free_[i] = static_cast<std::uint32_t>(n_pages - 1 - i);
}

namespace {
std::vector<std::size_t> layer_windows(const Config& c) {
    std::vector<std::size_t> w(c.n_layers);
    for (std::size_t l = 0; l < c.n_layers; ++l) w[l] = c.window(l);
    return w;
}
}  // namespace

PagedKVCache::PagedKVCache(const Config& c, std::size_t page_size, std::size_t n_pages)
    : PagedKVCache(c.n_layers, c.kv_dim(), page_size, n_pages, layer_windows(c)) {}

const PagedKVCache::Sequence& PagedKVCache::live(std::size_t seq) const {
    if (seq >= seqs_.size() || !seqs_[seq].live)
        throw ModelError(fmt::format("paged KV cache: sequence {} is not live (never added, or already released)", seq));
    return seqs_[seq];
}
PagedKVCache::Sequence& PagedKVCache::live(std::size_t seq) {
    return const_cast<Sequence&>(std::as_const(*this).live(seq));
}

std::size_t PagedKVCache::add_sequence(std::size_t prompt_length) {
    std::size_t id = 0;
    while (id < seqs_.size() && seqs_[id].live) ++id;
    if (id == seqs_.size()) seqs_.emplace_back();
    seqs_[id] = Sequence{true, {}, std::vector<std::size_t>(n_layers_, 0), 0, prompt_length};
    return id;
}

std::size_t PagedKVCache::prompt_length(std::size_t seq) const { return live(seq).prompt_length; }

void PagedKVCache::release(std::size_t seq) {
    Sequence& s = live(seq);
    for (auto p = s.pages.rbegin(); p != s.pages.rend(); ++p)
        if (*p != kNoPage) free_.push_back(*p);
    s = Sequence{};
}

void PagedKVCache::slide(std::size_t seq) {
    Sequence& s = live(seq);
    if (common_window_ == 0) return;
    const std::size_t length = this->length(seq);
    // the next query (at position `length`) reads from length - W + 1 on; every later one from further on
    const std::size_t first_read = length + 1 > common_window_ ? length + 1 - common_window_ : 0;
    for (; s.dropped < s.pages.size() && (s.dropped + 1) * page_size_ <= first_read; ++s.dropped) {
        free_.push_back(s.pages[s.dropped]);
        s.pages[s.dropped] = kNoPage;
    }
}

void PagedKVCache::truncate(std::size_t seq, std::size_t length) {
    Sequence& s = live(seq);
    if (length > this->length(seq))
        throw ModelError(fmt::format("paged KV cache: truncate sequence {} to {} positions, but it holds {}", seq, length,
                                     this->length(seq)));
    const std::size_t first_read = common_window_ && length + 1 > common_window_ ? length + 1 - common_window_ : 0;
    if (s.dropped * page_size_ > first_read)
        throw ModelError(fmt::format("paged KV cache: truncate sequence {} to {} positions: the window of its next query "
                                     "starts at position {}, whose page was already given back",
                                     seq, length, first_read));
    for (std::size_t& l : s.lengths) l = std::min(l, length);
    while (s.pages.size() > pages_for(length)) {
        free_.push_back(s.pages.back());
        s.pages.pop_back();
    }
}

void PagedKVCache::append(std::size_t seq, std::size_t layer, std::size_t pos, std::span<const float> k,
                          std::span<const float> v) {
    Sequence& s = live(seq);
    if (layer >= n_layers_) throw ModelError(fmt::format("paged KV cache: layer {} out of range ({} layers)", layer, n_layers_));
    if (k.size() != kv_dim_ || v.size() != kv_dim_)
        throw ModelError(fmt::format("paged KV cache: k/v of {}/{} elements, expected kv_dim {}", k.size(), v.size(), kv_dim_));
    if (pos != s.lengths[layer])
        throw ModelError(fmt::format("paged KV cache: sequence {} layer {} holds {} positions, so the next append must "
                                     "be at position {}, not {}",
                                     seq, layer, s.lengths[layer], s.lengths[layer], pos));
    if (pos == s.pages.size() * page_size_) {  // a new page
        if (layer != 0)
            throw ModelError(fmt::format("paged KV cache: sequence {} layer {} appends position {} before layer 0 did",
                                         seq, layer, pos));
        if (free_.empty())
            throw ModelError(fmt::format("paged KV cache: out of pages: all {} pages of {} positions are held by {} "
                                         "sequences, and sequence {} needs one for position {}. Give the pool more "
                                         "pages or run fewer sequences at once",
                                         n_pages_, page_size_, live_sequences(), seq, pos));
        s.pages.push_back(free_.back());
        free_.pop_back();
    }
    const std::size_t row = (layer * n_pages_ + s.pages[pos / page_size_]) * page_size_ + pos % page_size_;
    std::copy(k.begin(), k.end(), keys_.begin() + static_cast<std::ptrdiff_t>(row * kv_dim_));
    std::copy(v.begin(), v.end(), values_.begin() + static_cast<std::ptrdiff_t>(row * kv_dim_));
    ++s.lengths[layer];
}

std::size_t PagedKVCache::length(std::size_t seq) const {
    const Sequence& s = live(seq);
    return *std::min_element(s.lengths.begin(), s.lengths.end());
}

std::size_t PagedKVCache::length(std::size_t seq, std::size_t layer) const {
    const Sequence& s = live(seq);
    if (layer >= n_layers_) throw ModelError(fmt::format("paged KV cache: layer {} out of range ({} layers)", layer, n_layers_));
    return s.lengths[layer];
}

std::span<const std::uint32_t> PagedKVCache::page_table(std::size_t seq) const { return live(seq).pages; }

std::size_t PagedKVCache::pages_held(std::size_t seq) const {
    const Sequence& s = live(seq);
    return s.pages.size() - s.dropped;
}

std::span<const float> PagedKVCache::layer_keys(std::size_t layer) const {
    const std::size_t n = n_pages_ * page_size_ * kv_dim_;
    return std::span<const float>(keys_).subspan(layer * n, n);
}

std::span<const float> PagedKVCache::layer_values(std::size_t layer) const {
    const std::size_t n = n_pages_ * page_size_ * kv_dim_;
    return std::span<const float>(values_).subspan(layer * n, n);
}

std::size_t PagedKVCache::live_sequences() const {
    return static_cast<std::size_t>(std::count_if(seqs_.begin(), seqs_.end(), [](const Sequence& s) { return s.live; }));
}

void PagedKVCache::check_invariants() const {
    // owner of every page: -1 free, else the sequence; each page must be claimed exactly once
    std::vector<long> owner(n_pages_, -2);  // -2: nobody has claimed it yet
    const auto claim = [&](std::uint32_t page, long by) {
        if (page >= n_pages_) throw ModelError(fmt::format("paged KV cache invariant: page {} of {} does not exist", page, n_pages_));
        if (owner[page] != -2)
            throw ModelError(fmt::format("paged KV cache invariant: page {} is held by {} and by {}", page,
                                         owner[page] < 0 ? "the free list" : fmt::format("sequence {}", owner[page]),
                                         by < 0 ? "the free list" : fmt::format("sequence {}", by)));
        owner[page] = by;
    };
    for (const std::uint32_t p : free_) claim(p, -1);
    for (std::size_t i = 0; i < seqs_.size(); ++i) {
        const Sequence& s = seqs_[i];
        if (!s.live) {
            if (!s.pages.empty())
                throw ModelError(fmt::format("paged KV cache invariant: released sequence {} still holds {} pages", i, s.pages.size()));
            continue;
        }
        for (std::size_t j = 0; j < s.pages.size(); ++j) {
            if ((j < s.dropped) != (s.pages[j] == kNoPage))
                throw ModelError(fmt::format("paged KV cache invariant: sequence {} gave back its first {} pages, but "
                                             "table slot {} is {}",
                                             i, s.dropped, j, s.pages[j] == kNoPage ? "empty" : "a page"));
            if (j >= s.dropped) claim(s.pages[j], static_cast<long>(i));
        }
        const std::size_t first = s.lengths[0];
        // positions a query can still read (the next one reads from first - W + 1) keep their pages
        const std::size_t first_read = common_window_ && first + 1 > common_window_ ? first + 1 - common_window_ : 0;
        if (s.dropped * page_size_ > first_read)
            throw ModelError(fmt::format("paged KV cache invariant: sequence {} gave back {} pages, but its next query "
                                         "reads from position {} (page {})",
                                         i, s.dropped, first_read, first_read / page_size_));
        for (std::size_t l = 1; l < n_layers_; ++l)
            if (s.lengths[l] > first)
                throw ModelError(fmt::format("paged KV cache invariant: sequence {} layer {} holds {} positions, more than "
                                             "layer 0's {}", i, l, s.lengths[l], first));
        if (s.pages.size() != pages_for(first))
            throw ModelError(fmt::format("paged KV cache invariant: sequence {} holds {} positions in {} pages; {} pages "
                                         "of {} cover exactly that",
                                         i, first, s.pages.size(), pages_for(first), page_size_));
    }
    const auto lost = std::find(owner.begin(), owner.end(), -2);
    if (lost != owner.end())
        throw ModelError(fmt::format("paged KV cache invariant: page {} is neither free nor held by a sequence (leaked)",
                                     lost - owner.begin()));
}

}  // namespace lmlab
