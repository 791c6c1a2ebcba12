// The paged KV cache's bookkeeping (page table, free list, ownership) and its arithmetic: one
// sequence through forward_batch on the paged cache gives the bits of forward() on the contiguous one.
#include "model/serve/paged_kv.h"

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <vector>

#include "model/serve/batch.h"
#include "model/testing/test_model.h"

namespace lmlab {

namespace {

using test::expect_error;

std::vector<float> row(std::size_t kv_dim, float value) { return std::vector<float>(kv_dim, value); }

// Appends positions [from, to) of `seq` to every layer; k = pos + seq/100, v = -k (each row recognisable).
void fill(PagedKVCache& kv, std::size_t seq, std::size_t from, std::size_t to) {
    for (std::size_t l = 0; l < kv.n_layers(); ++l)
        for (std::size_t p = from; p < to; ++p) {
            const float x = static_cast<float>(p) + static_cast<float>(seq) / 100.0f + static_cast<float>(l) * 1000.0f;
            kv.append(seq, l, p, row(kv.kv_dim(), x), row(kv.kv_dim(), -x));
        }
}

// The row of (seq, layer, pos), read back through the page table.
float key_at(const PagedKVCache& kv, std::size_t seq, std::size_t layer, std::size_t pos) {
    const auto table = kv.page_table(seq);
    return kv.layer_keys(layer)[(table[pos / kv.page_size()] * kv.page_size() + pos % kv.page_size()) * kv.kv_dim()];
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(PagedKV, PagesAreTakenAtPageBoundariesAndCoverExactlyTheContext) {
    PagedKVCache kv(2, 3, 4, 8);
    const std::size_t a = kv.add_sequence(), b = kv.add_sequence();
    EXPECT_EQ(kv.page_table(a).size(), 0u);
    fill(kv, a, 0, 1);
    EXPECT_EQ(kv.page_table(a).size(), 1u);
    fill(kv, b, 0, 5);
    fill(kv, a, 1, 9);
    kv.check_invariants();
    EXPECT_EQ(kv.page_table(a).size(), 3u);  // 9 positions in pages of 4
    EXPECT_EQ(kv.page_table(b).size(), 2u);
    EXPECT_EQ(kv.free_pages(), 3u);
    std::set<std::uint32_t> pages(kv.page_table(a).begin(), kv.page_table(a).end());
    pages.insert(kv.page_table(b).begin(), kv.page_table(b).end());
    EXPECT_EQ(pages.size(), 5u);  // no page in two sequences
    for (std::size_t p = 0; p < 9; ++p) EXPECT_EQ(key_at(kv, a, 1, p), static_cast<float>(p) + 1000.0f);
    for (std::size_t p = 0; p < 5; ++p) EXPECT_EQ(key_at(kv, b, 0, p), static_cast<float>(p) + 0.01f);
}

TEST(PagedKV, ReleaseAndTruncateReturnPages) {
    PagedKVCache kv(1, 2, 4, 6);
    const std::size_t a = kv.add_sequence(), b = kv.add_sequence();
    fill(kv, a, 0, 10);  // 3 pages
    fill(kv, b, 0, 4);   // 1 page
    kv.truncate(a, 5);   // back to 2 pages
    kv.check_invariants();
    EXPECT_EQ(kv.length(a), 5u);
    EXPECT_EQ(kv.page_table(a).size(), 2u);
    EXPECT_EQ(kv.free_pages(), 3u);
    fill(kv, a, 5, 6);  // continues at 5 after the rollback
    EXPECT_EQ(key_at(kv, a, 0, 5), 5.0f);
    kv.release(b);
    kv.check_invariants();
    EXPECT_EQ(kv.free_pages(), 4u);
    EXPECT_EQ(kv.live_sequences(), 1u);
    const std::size_t c = kv.add_sequence();  // b's id is reused, its page too
    EXPECT_EQ(c, b);
    fill(kv, c, 0, 16);
    kv.check_invariants();
    EXPECT_EQ(kv.free_pages(), 0u);
    kv.truncate(a, 0);
    kv.release(c);
    kv.check_invariants();
    EXPECT_EQ(kv.free_pages(), 6u);
    expect_error<ModelError>([&] { kv.truncate(a, 1); }, {"truncate sequence 0 to 1", "holds 0"});
}

TEST(PagedKV, RunningOutOfPagesIsAClearErrorAndChangesNothing) {
    PagedKVCache kv(2, 2, 2, 3);
    const std::size_t a = kv.add_sequence(), b = kv.add_sequence();
    fill(kv, a, 0, 4);
    fill(kv, b, 0, 2);
    expect_error<ModelError>([&] { fill(kv, b, 2, 3); },
                             {"out of pages", "all 3 pages of 2 positions", "2 sequences", "sequence 1", "position 2"});
    kv.check_invariants();
    EXPECT_EQ(kv.length(b), 2u);
    kv.release(a);  // pages back: b continues
    fill(kv, b, 2, 3);
    kv.check_invariants();
}

TEST(PagedKV, AppendKeepsTheContiguousCachesRules) {
    PagedKVCache kv(2, 2, 4, 4);
    const std::size_t a = kv.add_sequence();
    expect_error<ModelError>([&] { kv.append(a, 0, 1, row(2, 0), row(2, 0)); }, {"next append must be at position 0, not 1"});
    expect_error<ModelError>([&] { kv.append(a, 1, 0, row(2, 0), row(2, 0)); }, {"layer 1 appends position 0 before layer 0"});
    expect_error<ModelError>([&] { kv.append(a, 2, 0, row(2, 0), row(2, 0)); }, {"layer 2 out of range (2 layers)"});
    expect_error<ModelError>([&] { kv.append(a, 0, 0, row(3, 0), row(2, 0)); }, {"expected kv_dim 2"});
    expect_error<ModelError>([&] { kv.append(7, 0, 0, row(2, 0), row(2, 0)); }, {"sequence 7 is not live"});
    kv.release(a);
    expect_error<ModelError>([&] { kv.length(a); }, {"sequence 0 is not live"});
    expect_error<ModelError>([] { PagedKVCache(2, 2, 0, 4); }, {"4 pages of 0 positions", "at least 1"});
    kv.check_invariants();
}

// One sequence: forward_batch on the paged cache, a chunk at a time, against forward() on the
// contiguous cache, for page sizes below, at and above the 32-position attention tile.
TEST(PagedKV, PagedLogitsAreBitIdenticalToContiguous) {
    for (Config c : {test::tiny_config(), test::tiny_gpt2_config()}) {
        c.max_seq_len = 80;
        const Model m = test::make_model(c);
        std::vector<int> tokens(70);
        for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 7 + 3) % c.vocab_size);
        KVCache cache(c.n_layers, c.max_seq_len, c.kv_dim());
        RunState s(c);
        std::vector<float> expected;
        for (std::size_t p = 0; p < tokens.size(); ++p) {
            const auto l = forward(m, tokens[p], p, cache, s);
            expected.insert(expected.end(), l.begin(), l.end());
        }
        for (const std::size_t page_size : {1, 5, 16, 32, 64}) {
            PagedKVCache kv(c.n_layers, c.kv_dim(), page_size, 2 + 80 / page_size);
            kv.add_sequence();  // a neighbour holding pages, so the sequence's pages are not 0, 1, 2, ...
            fill(kv, 0, 0, 3);
            const std::size_t seq = kv.add_sequence();
            RunState ps(c, 9);
            std::vector<float> got, logits;
            for (std::size_t p0 = 0; p0 < tokens.size(); p0 += 9) {
                std::vector<BatchRow> rows;
                for (std::size_t p = p0; p < std::min(tokens.size(), p0 + 9); ++p) rows.push_back({seq, tokens[p], p, true});
                forward_batch(m, rows, kv, ps, logits);
                got.insert(got.end(), logits.begin(), logits.end());
            }
            kv.check_invariants();
            EXPECT_TRUE(same_bits(got, expected)) << arch_name(c.arch) << ", page size " << page_size;
        }
    }
}

TEST(PagedKV, ForwardBatchChecksEverythingBeforeWriting) {
    Config c = test::tiny_config();
    const Model m = test::make_model(c);
    PagedKVCache kv(c.n_layers, c.kv_dim(), 2, 2);
    const std::size_t a = kv.add_sequence();
    RunState ps(c, 8);
    std::vector<float> logits;
    const auto run = [&](std::vector<BatchRow> rows) { forward_batch(m, rows, kv, ps, logits); };
    expect_error<ModelError>([&] { run({{a, 1, 1, true}}); }, {"row 0 of sequence 0 is at position 1", "continues at position 0"});
    expect_error<ModelError>([&] { run({{a, 9, 0, true}}); }, {"token id 9", "[0, 5)"});
    expect_error<ModelError>([&] { run({{a, 1, 0, false}, {a, 2, 1, false}, {a, 3, 2, false}, {a, 1, 3, false}, {a, 1, 4, true}}); },
                             {"needs 3 new pages", "2 of 2 are free"});
    expect_error<ModelError>([&] { run({{3, 1, 0, true}}); }, {"sequence 3 is not live"});
    EXPECT_EQ(kv.length(a), 0u);  // nothing was written
    kv.check_invariants();
    set_kernel_path(KernelPath::Plain);
    expect_error<ModelError>([&] { run({{a, 1, 0, true}}); }, {"fast kernels only"});
    set_kernel_path(KernelPath::Fast);
}

TEST(PagedKV, ASlidingWindowGivesBackThePagesOutOfItAndOnlyThose) {
    // every layer a window of 5, pages of 2: after 11 positions the next query reads 7..11, so pages
    // 0..2 (positions 0..5) go back; page 3 holds 6 (unread) and 7: it stays
    PagedKVCache kv(2, 2, 2, 8, {5, 5});
    EXPECT_EQ(kv.common_window(), 5u);
    const std::size_t a = kv.add_sequence(11);
    EXPECT_EQ(kv.prompt_length(a), 11u);
    fill(kv, a, 0, 11);
    EXPECT_EQ(kv.pages_held(a), 6u);
    kv.slide(a);
    kv.check_invariants();
    EXPECT_EQ(kv.pages_held(a), 3u);
    EXPECT_EQ(kv.free_pages(), 5u);
    const auto table = kv.page_table(a);
    ASSERT_EQ(table.size(), 6u);  // slots kept: position t still in page table[t / 2]
    for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(table[i], PagedKVCache::kNoPage);
    for (std::size_t p = 6; p < 11; ++p) EXPECT_EQ(key_at(kv, a, 1, p), static_cast<float>(p) + 1000.0f);
    kv.slide(a);  // nothing more to give back
    EXPECT_EQ(kv.pages_held(a), 3u);
    // a rollback whose next query would read a page given back is refused; one inside the window is fine
    expect_error<ModelError>([&] { kv.truncate(a, 8); }, {"truncate sequence 0 to 8", "position 4", "given back"});
    kv.truncate(a, 10);
    kv.check_invariants();
    kv.release(a);
    kv.check_invariants();
    EXPECT_EQ(kv.free_pages(), 8u);  // only the pages it still held went back, each once
}

TEST(PagedKV, ALayerWithoutAWindowKeepsEveryPage) {
    // Qwen2 below max_window_layers: layer 0 reads every position, so no page can go
    PagedKVCache kv(2, 2, 2, 8, {0, 5});
    EXPECT_EQ(kv.common_window(), 0u);
    const std::size_t a = kv.add_sequence();
    fill(kv, a, 0, 11);
    kv.slide(a);
    EXPECT_EQ(kv.pages_held(a), 6u);
}

TEST(PagedKV, AWindowOfTwoKeepsOnePageAndNoRollbackReachesBehindIt) {
    // window 2, pages of 2: after 9 positions the next query reads 8..9, so pages 0..3 go back
    PagedKVCache loose(1, 2, 2, 8, {2});
    const std::size_t a = loose.add_sequence();
    fill(loose, a, 0, 9);
    loose.slide(a);  // the next query reads 8..9: pages 0..3 go back
    EXPECT_EQ(loose.pages_held(a), 1u);
    loose.check_invariants();
    loose.truncate(a, 9);  // (no change: allowed)
    expect_error<ModelError>([&] { loose.truncate(a, 6); }, {"given back"});
}

}  // namespace lmlab
