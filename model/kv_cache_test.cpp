// Tests of the KV cache: its append-only invariants, the layout of its views, reset and truncate.
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <vector>

#include "model/testing/test_model.h"

namespace lmlab {

namespace {

using test::expect_error;

// A row whose values tell where it was written: layer*100 + pos*10 + element (+ 0.5 for values).
std::vector<float> row(std::size_t layer, std::size_t pos, std::size_t kv_dim, float extra = 0.0f) {
    std::vector<float> r(kv_dim);
    for (std::size_t i = 0; i < kv_dim; ++i) r[i] = static_cast<float>(layer * 100 + pos * 10 + i) + extra;
    return r;
}

void append_row(KVCache& c, std::size_t layer, std::size_t pos) {
    c.append(layer, pos, row(layer, pos, c.kv_dim()), row(layer, pos, c.kv_dim(), 0.5f));
}

}  // namespace

TEST(KVCache, StartsEmpty) {
    // a new cache holds nothing and reports the shape it was built with
    const KVCache c(2, 4, 3);
    EXPECT_EQ(c.n_layers(), 2u);
    EXPECT_EQ(c.max_seq_len(), 4u);
    EXPECT_EQ(c.kv_dim(), 3u);
    EXPECT_EQ(c.length(), 0u);
    EXPECT_EQ(c.length(0), 0u);
    EXPECT_EQ(c.length(1), 0u);
    EXPECT_TRUE(c.keys(0).empty());
    EXPECT_TRUE(c.values(1).empty());
}

TEST(KVCache, ViewsHoldExactlyWhatWasAppendedPerLayer) {
    // keys(l)/values(l) are [length, kv_dim] row-major, and one layer's rows never leak into another
    KVCache c(2, 4, 3);
    for (std::size_t pos = 0; pos < 3; ++pos) append_row(c, 0, pos);
    for (std::size_t pos = 0; pos < 2; ++pos) append_row(c, 1, pos);

    const auto k0 = c.keys(0), v0 = c.values(0), k1 = c.keys(1), v1 = c.values(1);
    ASSERT_EQ(k0.size(), 9u);
    ASSERT_EQ(v0.size(), 9u);
    ASSERT_EQ(k1.size(), 6u);
    ASSERT_EQ(v1.size(), 6u);
    // layer 0, position 2, element 1 sits at index 2*3 + 1 and was written as 0*100 + 2*10 + 1
    EXPECT_EQ(k0[7], 21.0f);
    EXPECT_EQ(v0[7], 21.5f);
    // layer 1, position 1, element 2: index 5, value 100 + 10 + 2
    EXPECT_EQ(k1[5], 112.0f);
    EXPECT_EQ(v1[5], 112.5f);
    const std::vector<float> expect_k1 = {100, 101, 102, 110, 111, 112};
    EXPECT_EQ(std::vector<float>(k1.begin(), k1.end()), expect_k1);
    const std::vector<float> expect_v0 = {0.5f, 1.5f, 2.5f, 10.5f, 11.5f, 12.5f, 20.5f, 21.5f, 22.5f};
    EXPECT_EQ(std::vector<float>(v0.begin(), v0.end()), expect_v0);
}

TEST(KVCache, LengthIsTheMinimumOverLayers) {
    // a token counts as cached only once every layer holds it
    KVCache c(3, 4, 2);
    append_row(c, 0, 0);
    append_row(c, 0, 1);
    append_row(c, 2, 0);
    EXPECT_EQ(c.length(0), 2u);
    EXPECT_EQ(c.length(1), 0u);
    EXPECT_EQ(c.length(2), 1u);
    EXPECT_EQ(c.length(), 0u);
    append_row(c, 1, 0);
    EXPECT_EQ(c.length(), 1u);
    append_row(c, 1, 1);
    append_row(c, 2, 1);
    EXPECT_EQ(c.length(), 2u);
}

TEST(KVCache, AppendWithAGapThrowsNamingThePositions) {
    // a skipped position would leave an uninitialised row that attention would read
    KVCache c(1, 8, 2);
    append_row(c, 0, 0);
    expect_error<ModelError>([&] { append_row(c, 0, 3); }, {"position 1", "not 3"});
    EXPECT_EQ(c.length(0), 1u);
}

TEST(KVCache, AppendOverAnExistingPositionThrows) {
    // re-appending position 0 would silently replace a row other tokens already attended to
    KVCache c(2, 8, 2);
    append_row(c, 1, 0);
    append_row(c, 1, 1);
    expect_error<ModelError>([&] { append_row(c, 1, 0); }, {"layer 1", "position 2", "not 0"});
    EXPECT_EQ(c.length(1), 2u);
    EXPECT_EQ(c.keys(1)[0], 100.0f);  // the stored row is untouched
}

TEST(KVCache, AppendPastTheContextThrowsNamingMaxSeqLen) {
    // the context is full: a clear error instead of a write past the buffer
    KVCache c(1, 3, 2);
    for (std::size_t pos = 0; pos < 3; ++pos) append_row(c, 0, pos);
    EXPECT_EQ(c.length(), 3u);
    expect_error<ModelError>([&] { append_row(c, 0, 3); }, {"position 3", "max_seq_len", "3 positions"});
    EXPECT_EQ(c.length(), 3u);
}

TEST(KVCache, AppendOfTheWrongSizeThrows) {
    // a k or v of the wrong width would shift every later row of the layer
    KVCache c(1, 4, 3);
    const std::vector<float> good(3, 1.0f), short_row(2, 1.0f), long_row(4, 1.0f);
    expect_error<ModelError>([&] { c.append(0, 0, short_row, good); }, {"2/3", "kv_dim 3"});
    expect_error<ModelError>([&] { c.append(0, 0, good, long_row); }, {"3/4", "kv_dim 3"});
    EXPECT_EQ(c.length(0), 0u);
    c.append(0, 0, good, good);  // the failed attempts did not advance the layer
    EXPECT_EQ(c.length(0), 1u);
}

TEST(KVCache, AppendToALayerOutOfRangeThrows) {
    KVCache c(2, 4, 2);
    expect_error<ModelError>([&] { append_row(c, 2, 0); }, {"layer 2", "2 layers"});
}

TEST(KVCache, ResetEmptiesButKeepsCapacity) {
    // a new sequence starts at position 0 and can use the full context again
    KVCache c(2, 3, 2);
    for (std::size_t l = 0; l < 2; ++l)
        for (std::size_t pos = 0; pos < 3; ++pos) append_row(c, l, pos);
    c.reset();
    EXPECT_EQ(c.length(), 0u);
    EXPECT_EQ(c.length(1), 0u);
    EXPECT_TRUE(c.keys(0).empty());
    EXPECT_EQ(c.max_seq_len(), 3u);
    EXPECT_EQ(c.kv_dim(), 2u);
    // position 1 is a gap again after the reset
    EXPECT_THROW(append_row(c, 0, 1), ModelError);
    const std::vector<float> k = {7, 8}, v = {9, 10};
    for (std::size_t pos = 0; pos < 3; ++pos) c.append(0, pos, k, v);
    EXPECT_EQ(c.length(0), 3u);
    // the views show the new rows, not the old ones
    EXPECT_EQ(std::vector<float>(c.keys(0).begin(), c.keys(0).end()), (std::vector<float>{7, 8, 7, 8, 7, 8}));
    EXPECT_EQ(std::vector<float>(c.values(0).begin(), c.values(0).end()), (std::vector<float>{9, 10, 9, 10, 9, 10}));
    EXPECT_THROW(c.append(0, 3, k, v), ModelError);
}

TEST(KVCache, TruncateRollsEveryLayerBackAndKeepsTheRowsBefore) {
    // speculative decoding's rollback: rows [0, length) stay as they were, later appends continue at length
    KVCache c(2, 6, 2);
    for (std::size_t l = 0; l < 2; ++l)
        for (std::size_t pos = 0; pos < 5; ++pos) append_row(c, l, pos);
    c.truncate(2);
    EXPECT_EQ(c.length(), 2u);
    EXPECT_EQ(c.length(0), 2u);
    EXPECT_EQ(c.length(1), 2u);
    EXPECT_EQ(std::vector<float>(c.keys(1).begin(), c.keys(1).end()), (std::vector<float>{100, 101, 110, 111}));
    EXPECT_EQ(std::vector<float>(c.values(0).begin(), c.values(0).end()), (std::vector<float>{0.5f, 1.5f, 10.5f, 11.5f}));
    // the next append is at position 2 again (3 would be a gap), and it replaces the old row 2
    EXPECT_THROW(append_row(c, 0, 3), ModelError);
    const std::vector<float> k = {-1, -2}, v = {-3, -4};
    c.append(0, 2, k, v);
    EXPECT_EQ(c.keys(0)[4], -1.0f);
    EXPECT_EQ(c.values(0)[5], -4.0f);
    // layer 0 holds 3 now, layer 1 still 2: truncate(2) brings every layer to the same length
    c.truncate(2);
    EXPECT_EQ(c.length(0), 2u);
    EXPECT_EQ(c.length(1), 2u);
    // truncate to 0 empties it, like reset()
    c.truncate(0);
    EXPECT_EQ(c.length(), 0u);
    EXPECT_TRUE(c.keys(0).empty());
}

TEST(KVCache, TruncateBeyondTheLengthThrowsAndChangesNothing) {
    // truncate never grows the cache: that would expose rows that were never appended
    KVCache c(2, 6, 2);
    for (std::size_t pos = 0; pos < 3; ++pos) append_row(c, 0, pos);
    for (std::size_t pos = 0; pos < 2; ++pos) append_row(c, 1, pos);
    expect_error<ModelError>([&] { c.truncate(3); }, {"truncate to 3", "layer 1", "only 2"});
    expect_error<ModelError>([&] { c.truncate(7); }, {"truncate to 7", "layer 0", "only 3"});
    EXPECT_EQ(c.length(0), 3u);
    EXPECT_EQ(c.length(1), 2u);
}

// ---- Sliding windows: a ring of window + max_rows - 1 rows per windowed layer ------------------------

namespace {
// 3 layers, kv_dim 2, context 40; layers 1 and 2 (Qwen2's max_window_layers 1) a window of 4
Config windowed() {
    Config c = test::tiny_config();
    c.arch = Arch::Qwen2;
    c.qkv_bias = true;
    c.rope_style = RopeStyle::RotateHalf;
    c.n_layers = 3;
    c.max_seq_len = 40;
    c.sliding_window = 4;
    c.window_from_layer = 1;
    return c;
}
}  // namespace

TEST(KVCache, AWindowedLayerKeepsARingOfItsWindowAndTheRowsOfOneForward) {
    const Config c = windowed();
    const KVCache decode(c, 40), chunks(c, 40, 3), few(c, 5, 3);
    EXPECT_EQ(decode.ring(0), 40u);  // below max_window_layers: every position
    EXPECT_EQ(decode.ring(1), 4u);   // decode appends one row: exactly the window
    EXPECT_EQ(chunks.ring(2), 6u);   // 4 + 3 - 1: the rows of a 3-row forward before they attend
    EXPECT_EQ(few.ring(1), 5u);      // never more than the positions asked for
    EXPECT_EQ(decode.window(0), 0u);
    EXPECT_EQ(decode.window(2), 4u);
    // memory: every position of layer 0, 4 of layers 1 and 2 (keys and values, float32)
    EXPECT_EQ(decode.bytes(), (40u + 4u + 4u) * c.kv_dim() * 2 * sizeof(float));
}

TEST(KVCache, ARingOverwritesItsOldestPositionsAndKnowsWhichItHolds) {
    KVCache cache(windowed(), 40);
    for (std::size_t pos = 0; pos < 11; ++pos) append_row(cache, 1, pos);  // positions 0..10 in a ring of 4
    EXPECT_EQ(cache.length(1), 11u);
    EXPECT_EQ(cache.held_from(1), 7u);
    ASSERT_EQ(cache.keys(1).size(), 4u * cache.kv_dim());
    for (std::size_t pos = 7; pos < 11; ++pos)  // position p in row p % 4
        EXPECT_EQ(cache.keys(1)[(pos % 4) * cache.kv_dim()], static_cast<float>(100 + pos * 10));
    // rolling back within the ring's spare rows is fine; past what it overwrote is refused
    KVCache chunks(windowed(), 40, 3);  // ring of 6: two rows to spare
    for (std::size_t l = 0; l < 3; ++l)
        for (std::size_t pos = 0; pos < 11; ++pos) append_row(chunks, l, pos);
    EXPECT_EQ(chunks.held_from(1), 5u);
    expect_error<ModelError>([&] { chunks.truncate(7); }, {"layer 1", "overwritten position 4", "fewer than 3"});
    EXPECT_EQ(chunks.length(), 11u);  // a refused truncate changes nothing
    chunks.truncate(8);  // the next query at 8 reads 5..8: all held
    EXPECT_EQ(chunks.length(), 8u);
    append_row(chunks, 1, 8);
    EXPECT_EQ(chunks.keys(1)[(8 % 6) * chunks.kv_dim()], 180.0f);
}

TEST(KVCache, ReserveGrowsAndKeepsWhatIsHeld) {
    // a session sizes its cache to the request; feeding past it grows it (geometrically), rows intact
    const Config c = windowed();
    KVCache cache(c, 2);
    for (std::size_t l = 0; l < 3; ++l)
        for (std::size_t pos = 0; pos < 2; ++pos) append_row(cache, l, pos);
    expect_error<ModelError>([&] { append_row(cache, 0, 2); }, {"beyond the context of 2"});
    cache.reserve(3);
    EXPECT_EQ(cache.max_seq_len(), 4u);  // doubled
    EXPECT_EQ(cache.ring(1), 4u);
    for (std::size_t l = 0; l < 3; ++l)
        for (std::size_t pos = 2; pos < 4; ++pos) append_row(cache, l, pos);
    cache.reserve(30);
    for (std::size_t l = 0; l < 3; ++l)
        for (std::size_t pos = 4; pos < 9; ++pos) append_row(cache, l, pos);
    for (std::size_t pos = 0; pos < 9; ++pos) EXPECT_EQ(cache.keys(0)[pos * 2], static_cast<float>(pos * 10));
    for (std::size_t pos = 5; pos < 9; ++pos) EXPECT_EQ(cache.keys(2)[(pos % 4) * 2], static_cast<float>(200 + pos * 10));
    expect_error<ModelError>([&] { cache.reserve(41); }, {"41 positions", "context is 40"});
}

}  // namespace lmlab
