// The paged KV cache: many sequences' keys and values in one pool of fixed-size pages (vLLM's
// PagedAttention, Kwon et al. 2023).
//
// Why: a contiguous cache (kv_cache.h) reserves max_seq_len positions per sequence up front. With
// many sequences of unknown final length, most of that sits empty. Here a sequence takes one page
// of page_size positions at a time, when its length crosses a page boundary, and gives every page
// back when it finishes: memory follows the tokens actually held.
// Analogy: virtual memory. A sequence's positions are its virtual addresses, the page table maps
// them to physical pages anywhere in the pool, and the free list is the allocator's.
//
// Layout: keys[layer][page][row in page][kv_dim] (values alike), all preallocated: the pool never
// grows and the per-step loop never allocates. Position t of a sequence is row t % page_size of
// page table[t / page_size] in every layer (one table serves all layers).
//
// Sliding windows (Mistral; model/kv_cache.h): when every layer has a window, a position more than
// W - 1 behind the sequence's next query is never read again, so slide() gives back the pages that
// hold only such positions (forward_batch calls it after each step). The table keeps their slots,
// marked kNoPage, so position t still lives in page table[t / page_size]. A sequence then holds at
// most ~(W + rows of a step) / page_size + 1 pages however long it grows. (A page serves every layer:
// a model with a layer of full attention, e.g. Qwen2 below max_window_layers, keeps them all.)
//
// Invariants (check_invariants() verifies all of them, the tests after every operation):
//   - no page belongs to two live sequences, and a page is either owned or on the free list;
//   - a sequence's table covers exactly its context: ceil(length / page_size) entries, length being
//     what its first layer holds (the layers fill in order within a step); its first `dropped`
//     entries are kNoPage (given back), every later one a page it owns, and no page a query can
//     still read has been given back;
//   - a finished (released) sequence's pages are back on the free list; truncate() returns the
//     pages past the new length;
//   - append() keeps kv_cache.h's rules per layer: position == that layer's length, no gaps;
//   - running out of pages is a ModelError naming the numbers, never an overwrite.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "model/model.h"  // ModelError

namespace lmlab {

class PagedKVCache {
public:
    // n_pages pages of page_size positions for n_layers layers of kv_dim. windows: each layer's sliding
    // window (Config::window; empty: none). Throws ModelError for a zero size.
    PagedKVCache(std::size_t n_layers, std::size_t kv_dim, std::size_t page_size, std::size_t n_pages,
                 std::vector<std::size_t> windows = {});
    // The cache of a model: its layers, kv_dim and windows.
    PagedKVCache(const Config& c, std::size_t page_size, std::size_t n_pages);

    static constexpr std::uint32_t kNoPage = UINT32_MAX;  // a table slot whose page was given back (slide)

    // A new empty sequence whose prompt has prompt_length tokens (dynamic RoPE scaling rotates its rows
    // for it: model/kv_cache.h's set_prompt_length); returns its id (ids of released sequences are reused).
    std::size_t add_sequence(std::size_t prompt_length = 0);
    std::size_t prompt_length(std::size_t seq) const;
    // Gives back the pages of `seq` that no query can read any more: those wholly before
    // length - W + 1, W the smallest window over the layers (none when a layer has no window).
    // Call it between steps, never while a step's rows still attend.
    void slide(std::size_t seq);
    std::size_t window(std::size_t layer) const { return windows_.empty() ? 0 : windows_[layer]; }
    // The window every layer has (the smallest; 0 when some layer sees every position): what slide() uses.
    std::size_t common_window() const { return common_window_; }
    // Gives every page of `seq` back to the free list; the id becomes free.
    void release(std::size_t seq);
    // Back to `length` positions (speculative decoding's rollback): the pages past it are returned.
    void truncate(std::size_t seq, std::size_t length);

    // Stores k and v ([kv_dim] each) of `layer` at `pos` of `seq`. pos must equal length(seq, layer);
    // the first layer takes a page off the free list when pos starts a new page (ModelError when
    // none is free), later layers write into the pages it took.
    void append(std::size_t seq, std::size_t layer, std::size_t pos, std::span<const float> k,
                std::span<const float> v);

    std::size_t length(std::size_t seq) const;  // positions held by every layer
    std::size_t length(std::size_t seq, std::size_t layer) const;
    std::span<const std::uint32_t> page_table(std::size_t seq) const;  // logical page -> physical page (kNoPage: given back)
    std::size_t pages_held(std::size_t seq) const;  // pages it owns (its table less the given-back slots)

    // One layer's whole pool, [n_pages * page_size, kv_dim]: attention_paged reads it through a table.
    std::span<const float> layer_keys(std::size_t layer) const;
    std::span<const float> layer_values(std::size_t layer) const;

    std::size_t page_size() const { return page_size_; }
    std::size_t n_pages() const { return n_pages_; }
    std::size_t free_pages() const { return free_.size(); }
    std::size_t live_sequences() const;
    std::size_t kv_dim() const { return kv_dim_; }
    std::size_t n_layers() const { return n_layers_; }
    // Pages a sequence of n positions holds: ceil(n / page_size).
    std::size_t pages_for(std::size_t n_positions) const { return (n_positions + page_size_ - 1) / page_size_; }

    // Throws ModelError describing the first broken invariant (see above).
    void check_invariants() const;

private:
    struct Sequence {
        bool live = false;
        std::vector<std::uint32_t> pages;   // the page table
        std::vector<std::size_t> lengths;   // per layer
        std::size_t dropped = 0;            // leading table slots given back (kNoPage)
        std::size_t prompt_length = 0;
    };
    std::size_t n_layers_, kv_dim_, page_size_, n_pages_;
    std::vector<std::size_t> windows_;    // per layer (empty: none)
    std::size_t common_window_ = 0;
    std::vector<float> keys_, values_;    // [n_layers, n_pages, page_size, kv_dim]
    std::vector<std::uint32_t> free_;     // the free list (a stack: the last page returned is reused first)
    std::vector<Sequence> seqs_;
    const Sequence& live(std::size_t seq) const;  // ModelError for an unknown or released id
    Sequence& live(std::size_t seq);
};

}  // namespace lmlab
