#include "model/serve/batch.h"

#include <algorithm>
#include <map>
#include <fmt/format.h>

namespace lmlab {

namespace {
// The rows of a step: each its own sequence and position in the paged cache.
class PagedRows final : public RowCache {
public:
    PagedRows(PagedKVCache& kv, std::span<const BatchRow> rows, std::size_t head_dim)
        : kv_(kv), rows_(rows), head_dim_(head_dim) {}
    std::size_t pos(std::size_t row) const override { return rows_[row].pos; }
    std::size_t seq_len(std::size_t row) const override {
        return std::max(kv_.prompt_length(rows_[row].seq), rows_[row].pos + 1);
    }
    void append(std::size_t layer, std::size_t row, std::span<const float> k, std::span<const float> v) override {
        kv_.append(rows_[row].seq, layer, rows_[row].pos, k, v);
    }
    void attend(std::size_t layer, std::size_t row, std::size_t kv_head, std::span<const float> q,
                std::span<float> out, std::span<float>) const override {
        // over positions 0 .. pos of this row's sequence only (under a sliding window W, its last W):
        // the other sequences' pages are never read
        const std::size_t n_pos = rows_[row].pos + 1, window = kv_.window(layer);
        attention_paged(q, kv_.layer_keys(layer).subspan(kv_head * head_dim_), kv_.layer_values(layer).subspan(kv_head * head_dim_),
                        kv_.page_table(rows_[row].seq), kv_.page_size(), n_pos, kv_.kv_dim(), out,
                        window && n_pos > window ? n_pos - window : 0);
    }

private:
    PagedKVCache& kv_;
    std::span<const BatchRow> rows_;
    std::size_t head_dim_;
};

void check_rows(const Model& m, std::span<const BatchRow> rows, const PagedKVCache& kv, const RunState& s) {
    const Config& c = m.config;
    if (kernel_path() != KernelPath::Fast)
        throw ModelError("batched forward: runs the fast kernels only (paged attention is attention_tiled's arithmetic; "
                         "the plain path has no paged kernel). Drop --plain");
    if (rows.empty()) throw ModelError("batched forward: no rows");
    if (rows.size() > s.max_rows)
        throw ModelError(fmt::format("batched forward: {} rows, but the batch buffers hold {}", rows.size(), s.max_rows));
    std::map<std::size_t, std::size_t> next;  // sequence -> the position its next row must have
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const BatchRow& r = rows[i];
        auto [it, fresh] = next.try_emplace(r.seq, 0);
        if (fresh) it->second = kv.length(r.seq);  // (ModelError for a sequence that is not live)
        if (r.pos != it->second)
            throw ModelError(fmt::format("batched forward: row {} of sequence {} is at position {}, but the sequence "
                                         "continues at position {}", i, r.seq, r.pos, it->second));
        if (r.pos >= c.max_seq_len)
            throw ModelError(fmt::format("batched forward: row {} of sequence {}: position {} is beyond the context of "
                                         "{} (max_seq_len)", i, r.seq, r.pos, c.max_seq_len));
        if (r.token < 0 || static_cast<std::size_t>(r.token) >= c.vocab_size)
            throw ModelError(fmt::format("batched forward: row {}: token id {} is outside the vocabulary [0, {}) of {}", i,
                                         r.token, c.vocab_size, m.source));
        ++it->second;
    }
    std::size_t new_pages = 0;
    for (const auto& [seq, length] : next) new_pages += kv.pages_for(length) - kv.page_table(seq).size();
    if (new_pages > kv.free_pages())
        throw ModelError(fmt::format("paged KV cache: out of pages: this step needs {} new pages of {} positions but {} "
                                     "of {} are free. Give the pool more pages or run fewer sequences at once",
                                     new_pages, kv.page_size(), kv.free_pages(), kv.n_pages()));
}
}  // namespace

void forward_batch(const Model& m, std::span<const BatchRow> rows, PagedKVCache& kv, RunState& s,
                   std::vector<float>& logits) {
    check_rows(m, rows, kv, s);
    std::vector<int> tokens(rows.size());
    for (std::size_t t = 0; t < rows.size(); ++t) tokens[t] = rows[t].token;
    PagedRows paged(kv, rows, m.config.head_dim());
    forward_rows(m, tokens, paged, s);
    // every row has attended in every layer: pages out of every later query's window go back
    for (const BatchRow& r : rows) kv.slide(r.seq);  // (once per sequence would do; a second call frees nothing)
    // the classifier for the rows that want logits, all at once: it is the largest matrix of a small
    // model (16 MB of the tiny LLaMA's 42), read once per step instead of once per sequence
    std::vector<std::size_t> wanted;
    for (std::size_t t = 0; t < rows.size(); ++t)
        if (rows[t].logits) wanted.push_back(t);
    logits.resize(wanted.size() * m.config.vocab_size);
    head(m, wanted, s, logits);
}

}  // namespace lmlab
