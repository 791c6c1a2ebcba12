// int8 (Q8_0) in the harness: the "#q8_0" suffix of a stage's model, and measurements (numbers a
// stage reports instead of comparing) in report.json and report.md.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "harness/report/report.h"
#include "harness/stages/stages.h"

namespace lmlab {

TEST(ModelSpec, SuffixAsksForInt8OnLoad) {
    EXPECT_EQ(parse_model_spec("models/tiny-llama.h5").path, "models/tiny-llama.h5");
    EXPECT_EQ(parse_model_spec("models/tiny-llama.h5").q8_group, 0u);
    const ModelSpec a = parse_model_spec("/g/models/tiny-llama.h5#q8_0");
    EXPECT_EQ(a.path, "/g/models/tiny-llama.h5");
    EXPECT_EQ(a.q8_group, 64u);  // llama2.c's default
    EXPECT_EQ(parse_model_spec("shared:m.bin#q8_0,group=4").q8_group, 4u);
    EXPECT_EQ(parse_model_spec("shared:m.bin#q8_0,group=4").path, "shared:m.bin");
    // group 0 would read as "not quantized"; 20 digits would overflow stoul (std::out_of_range)
    for (const char* bad : {"m.bin#q4_0", "m.bin#q8_0,group=", "m.bin#q8_0,group=x", "m.bin#", "m.bin#q8_0,group=0",
                            "m.bin#q8_0,group=99999999999999999999"})
        EXPECT_THROW(parse_model_spec(bad), HarnessError) << bad;
}

TEST(ModelSpec, EveryStageModelParses) {
    for (const Stage& s : stages()) EXPECT_NO_THROW(parse_model_spec(s.model)) << s.id;
}

TEST(Measurements, GoToReportJsonAndATableInReportMd) {
    StageResult a, b;
    a.id = "generation.q8_0.cost";
    b.id = "generation.q8_0.cost.other";
    a.level = b.level = "generation";
    a.status = b.status = "pass";
    a.measurements = {{"weights int8 (MB)", 11.25, "weight_bytes()"}, {"max |int8 - float|", 0.5, "a | b"}};
    b.measurements = {{"weights int8 (MB)", 0.5, "weight_bytes()"}, {"max |int8 - float|", NAN, "a | b"}};
    const auto j = report_json({a, b}, RunMeta{});
    ASSERT_TRUE(j["stages"][0].contains("measurements"));
    EXPECT_EQ(j["stages"][0]["measurements"][0]["name"], "weights int8 (MB)");
    EXPECT_EQ(j["stages"][0]["measurements"][0]["value"], 11.25);
    EXPECT_EQ(j["stages"][1]["measurements"][1]["value"], "nan");  // JSON has no NaN
    const std::string md = report_markdown(j);
    // one table for both (the same measurement names), a column per stage, '|' escaped
    EXPECT_NE(md.find("| measurement | generation.q8_0.cost | generation.q8_0.cost.other | what it is |"), std::string::npos) << md;
    EXPECT_NE(md.find("| weights int8 (MB) | 11.25 | 0.5 | weight_bytes() |"), std::string::npos) << md;
    EXPECT_NE(md.find("| max \\|int8 - float\\| | 0.5 | nan | a \\| b |"), std::string::npos) << md;
}

}  // namespace lmlab
