// The stage table's own invariants: every gate a stage requires is provided by some stage (else a
// broken kernel would not block a family that uses it), ids are unique, every level is known.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>

#include "harness/runner.h"
#include "harness/stages/stages.h"

namespace lmlab {

TEST(StageTable, EveryRequiredGateIsProvided) {
    std::set<std::string> provided;
    for (const Stage& s : stages())
        for (const std::string& g : stage_provides(s)) provided.insert(g);
    for (const Stage& s : stages())
        for (const std::string& g : stage_requires(s))
            EXPECT_TRUE(provided.count(g)) << s.id << " requires '" << g << "', which no stage provides "
                                           << "(a kernel row must name every family that calls it)";
}

TEST(StageTable, IdsAreUniqueAndLevelsKnown) {
    std::set<std::string> ids;
    for (const Stage& s : stages()) {
        EXPECT_TRUE(ids.insert(s.id).second) << "duplicate stage id " << s.id;
        EXPECT_NE(std::find(levels().begin(), levels().end(), s.level), levels().end()) << s.id;
        EXPECT_EQ(find_stage(s.id), &s);
    }
}

// lmlab check hashes the files of the stages it runs (golden_files_read of selected_stages), not
// every fixture: the selection must be run_stages' own, and the files must include each stage's
// fixture and its model under the golden dir.
TEST(StageTable, CheckHashesTheFilesOfTheStagesItRuns) {
    RunOptions one;
    one.stage_glob = "kernel.add";
    const auto add = selected_stages(one);
    ASSERT_EQ(add.size(), 1u);
    EXPECT_EQ(golden_files_read(add), std::set<std::string>{add[0]->fixture});

    RunOptions q8;  // an int8 model made from a golden file: the file without "#q8_0"
    q8.stage_glob = "generation.q8_0.cost";
    const auto cost = selected_stages(q8);
    ASSERT_EQ(cost.size(), 1u);
    EXPECT_EQ(golden_files_read(cost), (std::set<std::string>{cost[0]->fixture, "models/tiny-llama.h5"}));

    RunOptions shared;  // a model under ../shared is not the golden dir's
    shared.stage_glob = "generation.q8_0.cost.stories260k";
    const auto s260k = selected_stages(shared);
    ASSERT_EQ(s260k.size(), 1u);
    EXPECT_EQ(golden_files_read(s260k), std::set<std::string>{s260k[0]->fixture});

    RunOptions all;  // every stage, in level order; --except and --level narrow it
    const auto every = selected_stages(all);
    EXPECT_EQ(every.size(), stages().size());
    const auto files = golden_files_read(every);
    for (const Stage& s : stages()) EXPECT_TRUE(files.contains(s.fixture)) << s.id;
    all.level = "kernel";
    const auto kernels = selected_stages(all);
    EXPECT_TRUE(std::find(kernels.begin(), kernels.end(), add[0]) != kernels.end());
    EXPECT_TRUE(std::all_of(kernels.begin(), kernels.end(), [](const Stage* s) { return std::string(s->level) == "kernel"; }));
    all.except_globs = {"kernel.a*"};
    const auto but_a = selected_stages(all);
    EXPECT_TRUE(std::find(but_a.begin(), but_a.end(), add[0]) == but_a.end());
    EXPECT_LT(but_a.size(), kernels.size());
}

TEST(StageTable, GatingIsPerFamily) {
    // GELU is GPT-2's: a failing gelu kernel must not block a LLaMA stage, and must block GPT-2's
    const Stage* gelu = find_stage("kernel.gelu_tanh");
    const Stage* llama_block = find_stage("layer.block");
    const Stage* gpt2_block = find_stage("layer.block.gpt2");
    ASSERT_TRUE(gelu && llama_block && gpt2_block);
    const auto provides = stage_provides(*gelu);
    auto needs = [&](const Stage& s) {
        const auto req = stage_requires(s);
        return std::any_of(provides.begin(), provides.end(),
                           [&](const std::string& g) { return std::find(req.begin(), req.end(), g) != req.end(); });
    };
    EXPECT_FALSE(needs(*llama_block));
    EXPECT_TRUE(needs(*gpt2_block));
}

TEST(StageTable, ConformanceStagesGateNoFamily) {
    // ONNX's cases test our conventions against an outside suite: a skipped or failing ONNX case says
    // nothing about a family's own path, which its kernel.* stages gate. So a conformance stage
    // provides no gate and needs none.
    std::size_t n = 0;
    for (const Stage& s : stages()) {
        if (std::string(s.id).rfind("conformance.", 0) != 0) continue;
        ++n;
        EXPECT_STREQ(s.level, "kernel") << s.id;
        EXPECT_TRUE(stage_provides(s).empty()) << s.id << " must not gate a family";
        EXPECT_TRUE(stage_requires(s).empty()) << s.id;
    }
    EXPECT_EQ(n, 9u) << "one stage per ONNX operator: softmax, layer/rms normalization, gelu, matmul, rotary "
                        "embedding, attention, sigmoid, argmax";
}

}  // namespace lmlab
