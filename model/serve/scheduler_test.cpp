// Continuous batching's invariant: every request's tokens and logits are bit for bit what it gets
// running alone, whatever the arrivals, the chunk size, the page size and the pool's size.
#include "model/testing/run_alone.h"
#include "model/serve/scheduler.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fmt/format.h>
#include <vector>

#include "model/session.h"
#include "model/testing/test_model.h"

namespace lmlab {

namespace {

using test::expect_error;

bool same_bits(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// 10 requests: prompt lengths 1..23, arrivals spread over steps 0..12, greedy and seeded sampling.
std::vector<ServeRequest> requests(const Config& c) {
    std::vector<ServeRequest> rs;
    const std::size_t lengths[] = {5, 23, 1, 12, 7, 17, 3, 9, 14, 2};
    const std::size_t arrivals[] = {0, 0, 1, 2, 2, 5, 6, 9, 12, 12};
    for (std::size_t i = 0; i < 10; ++i) {
        ServeRequest r;
        r.id = "r" + std::to_string(i);
        for (std::size_t t = 0; t < lengths[i]; ++t) r.prompt.push_back(static_cast<int>((i * 13 + t * 7 + 1) % c.vocab_size));
        r.max_new_tokens = 4 + (i * 5) % 11;
        r.arrival_step = arrivals[i];
        if (i % 3 == 2) {  // sampled: its own seed, so its draws must not depend on the others
            r.sampling.temperature = 0.9f;
            r.sampling.seed = 100 + i;
        }
        rs.push_back(r);
    }
    return rs;
}

void expect_same_as_alone(const Model& m, const ServeOptions& opt, const std::string& what) {
    const auto rs = requests(m.config);
    const ServeReport rep = serve(m, rs, opt);
    ASSERT_EQ(rep.results.size(), rs.size());
    for (std::size_t i = 0; i < rs.size(); ++i) {
        Session session(m);  // the tokens as Session::generate gives them, the logits of the same run
        Sampler sampler(rs[i].sampling, m.config.vocab_size);
        const std::vector<int> tokens = session.generate(rs[i].prompt, rs[i].max_new_tokens, sampler, opt.stop_ids).tokens;
        const ServeResult a = run_alone(m, rs[i], opt.stop_ids);
        EXPECT_EQ(a.tokens, tokens);
        EXPECT_EQ(rep.results[i].tokens, a.tokens) << what << ", request " << rs[i].id;
        EXPECT_TRUE(same_bits(rep.results[i].logits, a.logits)) << what << ", request " << rs[i].id;
        EXPECT_GE(rep.results[i].first_token_step, rs[i].arrival_step);
        EXPECT_GE(rep.results[i].finish_step, rep.results[i].first_token_step);
    }
}

Config with_context(Config c, std::size_t n) {
    c.max_seq_len = n;
    return c;
}

// Options with every request's logits kept and the paged cache's invariants checked after every step.
ServeOptions checked_options(std::size_t chunk, std::size_t page_size, std::size_t max_running, std::size_t n_pages) {
    ServeOptions opt;
    opt.keep_logits = true;
    opt.check_invariants = true;
    opt.chunk = chunk;
    opt.page_size = page_size;
    opt.max_running = max_running;
    opt.n_pages = n_pages;
    return opt;
}

// Nothing left behind: no page held or reserved, no live sequence.
void expect_pool_empty(const Scheduler& sched) {
    EXPECT_EQ(sched.pages_used(), 0u);
    EXPECT_EQ(sched.pages_reserved(), 0u);
    EXPECT_EQ(sched.cache().live_sequences(), 0u);
}

}  // namespace

TEST(Scheduler, EveryRequestGetsWhatItGetsAlone) {
    const ServeOptions opt = checked_options(5, 4, 4, 0);  // chunks of 5 split most prompts; 0: serve()'s default pool
    for (const Config& c : {with_context(test::tiny_config(), 48), with_context(test::tiny_gpt2_config(), 48)}) {
        const Model m = test::make_model(c);
        expect_same_as_alone(m, opt, arch_name(c.arch));
    }
    for (const bool qwen : {false, true}) {  // mixtures of experts: each row its own experts
        const Model moe = test::make_model(with_context(test::tiny_moe_config(qwen), 48));
        expect_same_as_alone(moe, opt, qwen ? "qwen2_moe" : "mixtral");
    }
    Config q = with_context(test::tiny_config(), 48);
    q.dim = 8;
    q.ffn_dim = 16;
    const Model m8 = quantize_model(test::make_model(q), 4);  // int8: project_rows runs the int8 matvec per row
    expect_same_as_alone(m8, opt, "int8 llama");
}

TEST(Scheduler, AnyChunkPageAndPoolSizeGivesTheSameOutputs) {
    const Model m = test::make_model(with_context(test::tiny_config(), 48));
    for (const std::size_t chunk : {1, 3, 64})
        for (const std::size_t page_size : {1, 7, 32})
            for (const std::size_t max_running : {1, 3, 10}) {
                ServeOptions opt = checked_options(chunk, page_size, max_running, 0);
                opt.stop_ids = {2};
                expect_same_as_alone(m, opt, fmt::format("chunk {} page {} running {}", chunk, page_size, max_running));
            }
}

TEST(Scheduler, AFullPoolMakesNewcomersWait) {
    const Model m = test::make_model(with_context(test::tiny_config(), 48));
    // 5 pages of 8 = 40 positions: the longest request (23 + 8) fits, never two of the long ones at once
    const ServeOptions opt = checked_options(32, 8, 10, 5);
    expect_same_as_alone(m, opt, "5 pages");
    const auto rs = requests(m.config);
    const ServeReport rep = serve(m, rs, opt);
    EXPECT_LE(rep.peak_pages, 5u);
    // the default pool: the max_running largest requests at once (pages of 8: r1 = 23 + 9 and
    // r8 = 14 + 11 -> 4 pages each, then r3 = 12 + 8 -> 3; at most 3 running -> 11 pages)
    ServeOptions dflt = opt;
    dflt.n_pages = 0;
    dflt.max_running = 3;
    EXPECT_EQ(serve(m, rs, dflt).n_pages, 11u);
    // r1 (23 + 9 tokens: 4 pages) could not start beside r0 (5 + 4: 2 pages): it waited for r0 to finish
    EXPECT_GT(rep.results[1].admitted_step, rs[1].arrival_step);
    EXPECT_GE(rep.results[1].admitted_step, rep.results[0].finish_step);
}

TEST(Scheduler, BadRequestsAreRefusedBeforeAnythingRuns) {
    const Model m = test::make_model(with_context(test::tiny_config(), 16));
    ServeOptions opt;
    const auto one = [&](std::vector<int> prompt, std::size_t n) {
        ServeRequest r{"bad", std::move(prompt), n, 0, {}};
        serve(m, {r}, opt);
    };
    expect_error<ModelError>([&] { one({}, 3); }, {"request 'bad'", "empty"});
    expect_error<ModelError>([&] { one({1, 9}, 3); }, {"request 'bad'", "9"});
    expect_error<ModelError>([&] { one({1, 2, 3}, 14); }, {"request 'bad'", "16"});
    expect_error<ModelError>([&] { one({1}, 0); }, {"request 'bad'", "max_tokens is 0"});
    opt.n_pages = 1;
    opt.page_size = 4;
    expect_error<ModelError>([&] { one({1, 2, 3}, 3); }, {"request 'bad'", "need 2 pages of 4", "the pool has 1"});
    opt.chunk = 0;
    expect_error<ModelError>([&] { one({1}, 1); }, {"chunk 0"});
}

// The stateful scheduler that serve() and lmlab serve are built on: requests submitted between
// any two steps, cancelled while waiting or running, each told its tokens as they come.
TEST(Scheduler, SubmittedBetweenStepsEachGetsWhatItGetsAlone) {
    const Model m = test::make_model(with_context(test::tiny_config(), 48));
    Scheduler sched(m, checked_options(4, 4, 3, 20));
    const auto rs = requests(m.config);
    std::vector<ServeResult> got(rs.size());
    std::vector<std::vector<int>> streamed(rs.size());  // the tokens as the updates told them
    std::vector<int> finishes(rs.size(), 0);
    std::size_t next = 0;
    for (std::size_t round = 0; next < rs.size() || !sched.idle(); ++round) {
        if (next < rs.size() && round % 2 == 0) {  // one newcomer every other step, while others run
            const std::size_t i = next++;
            sched.submit(rs[i], [&, i](const Scheduler::Update& u) {
                streamed[i].push_back(u.result.tokens.back());
                EXPECT_EQ(u.logits.size(), m.config.vocab_size);
                if (u.finished) {
                    got[i] = u.result;
                    ++finishes[i];
                }
            });
        }
        sched.step();
        ASSERT_LT(round, 1000u);
    }
    for (std::size_t i = 0; i < rs.size(); ++i) {
        const ServeResult alone = run_alone(m, rs[i]);
        EXPECT_EQ(finishes[i], 1) << rs[i].id;
        EXPECT_EQ(got[i].tokens, alone.tokens) << rs[i].id;
        EXPECT_EQ(streamed[i], alone.tokens) << rs[i].id;
        EXPECT_TRUE(same_bits(got[i].logits, alone.logits)) << rs[i].id;
    }
    expect_pool_empty(sched);
}

TEST(Scheduler, CancelFreesThePagesAndChangesNoOtherToken) {
    const Model m = test::make_model(with_context(test::tiny_config(), 48));
    Scheduler sched(m, checked_options(6, 4, 3, 24));
    const auto rs = requests(m.config);
    std::vector<ServeResult> got(rs.size());
    std::vector<std::size_t> updates(rs.size(), 0), handles;
    for (std::size_t i = 0; i < rs.size(); ++i)
        handles.push_back(sched.submit(rs[i], [&, i](const Scheduler::Update& u) {
            ++updates[i];
            if (u.finished) got[i] = u.result;
        }));
    sched.step();  // r0 (5 prompt tokens, 4 new) has its first token after this step, its last after the 4th
    sched.step();
    ASSERT_EQ(sched.running(), 3u);
    const std::size_t before = sched.pages_used();
    ASSERT_GT(updates[0], 0u);  // r0 (5 prompt tokens) is decoding: cancel it mid-generation
    const std::size_t r0_seen = updates[0];
    EXPECT_TRUE(sched.cancel(handles[0]));
    EXPECT_LT(sched.pages_used(), before);  // its pages are back at once, not at the next step
    EXPECT_EQ(sched.running(), 2u);
    EXPECT_TRUE(sched.cancel(handles[9]));   // still waiting: it leaves the queue
    EXPECT_FALSE(sched.cancel(handles[9]));  // twice: no longer live
    EXPECT_FALSE(sched.cancel(12345));       // never submitted
    sched.cache().check_invariants();
    while (sched.step()) {
    }
    EXPECT_EQ(updates[0], r0_seen);  // nothing after the cancel
    EXPECT_EQ(updates[9], 0u);
    for (std::size_t i = 1; i < 9; ++i) {
        const ServeResult alone = run_alone(m, rs[i]);
        EXPECT_EQ(got[i].tokens, alone.tokens) << rs[i].id;
        EXPECT_TRUE(same_bits(got[i].logits, alone.logits)) << rs[i].id;
    }
    EXPECT_FALSE(sched.cancel(handles[1]));  // finished: no longer live
    expect_pool_empty(sched);
    EXPECT_FALSE(sched.step());  // idle: nothing runs
}

TEST(Scheduler, RefusesBadRequestsAndBadSkipsByName) {
    const Model m = test::make_model(with_context(test::tiny_config(), 16));
    ServeOptions opt;
    opt.n_pages = 2;
    opt.page_size = 4;
    Scheduler sched(m, opt);
    expect_error<ModelError>([&] { sched.submit(ServeRequest{"long", {1, 2, 3}, 6, 0, {}}); },
                             {"request 'long'", "need 3 pages of 4", "the pool has 2"});
    expect_error<ModelError>([&] { sched.submit(ServeRequest{"big id", {1, 99}, 1, 0, {}}); }, {"request 'big id'", "99"});
    EXPECT_TRUE(sched.idle());  // refused requests never queue
    sched.submit(ServeRequest{"ok", {1, 2}, 2, 0, {}});
    expect_error<ModelError>([&] { sched.skip_to(10); }, {"skip_to(10)", "1 waiting"});
    while (sched.step()) {
    }
    expect_error<ModelError>([&] { sched.skip_to(0); }, {"only forward"});
    sched.skip_to(10);
    EXPECT_EQ(sched.next_step(), 10u);
    opt.n_pages = 0;
    expect_error<ModelError>([&] { Scheduler none(m, opt); }, {"pages 0"});
}

}  // namespace lmlab
