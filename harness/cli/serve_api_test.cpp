// lmlab serve's API pieces without a socket (harness/cli/serve_api.h): the defaults a request gets,
// the text cut at stop strings as tokens arrive, log-probabilities by hand. The HTTP side, every
// refusal and the answers against the request alone are in serve_test.py (ctest -L serve).
#include "harness/cli/serve_api.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "model/testing/test_model.h"
#include "model/testing/test_shared.h"

namespace lmlab {

namespace {

// Qwen's tokenizer from ../shared (ChatML, byte-level BPE), or nullptr to skip.
const TextTokenizer* qwen() {
    static const std::optional<TextTokenizer> tok = []() -> std::optional<TextTokenizer> {
        const std::string path = test::shared_dir() + "/tokenizers/qwen/tokenizer.json";
        if (!std::filesystem::exists(path)) return std::nullopt;
        return load_tokenizer(path);
    }();
    return tok ? &*tok : nullptr;
}

Config qwen_config(std::size_t context) {
    Config c = Config::of(Arch::Qwen2);
    c.vocab_size = 151936;
    c.max_seq_len = context;
    return c;
}

}  // namespace

TEST(ServeApi, DefaultsFollowOpenAIAndTheContext) {
    if (!qwen()) GTEST_SKIP() << "needs ../shared/tokenizers/qwen (set LMLAB_SHARED)";
    const Config c = qwen_config(20);
    const ApiContext ctx{c, *qwen(), "tiny-qwen2", 4, 100};
    const CompletionRequest r = parse_completion_request(Endpoint::Completions, R"({"prompt": "Hello"})", ctx, 77);
    EXPECT_EQ(r.prompt, qwen()->encode_prompt("Hello", false));
    EXPECT_EQ(r.max_tokens, 16u);  // OpenAI's default for completions
    EXPECT_EQ(r.sampling.temperature, 1.0f);
    EXPECT_EQ(r.sampling.seed, 77u);  // the server's fresh seed
    EXPECT_FALSE(r.stream);
    const CompletionRequest chat = parse_completion_request(
        Endpoint::Chat, R"({"messages": [{"role": "user", "content": "Hi"}], "seed": 5, "temperature": null})", ctx, 77);
    EXPECT_EQ(chat.prompt, qwen()->encode_chat("Hi"));
    EXPECT_EQ(chat.max_tokens, 20 - chat.prompt.size());  // chat: the rest of the context
    EXPECT_EQ(chat.sampling.seed, 5u);
    EXPECT_EQ(chat.sampling.temperature, 1.0f);  // null: the default
    // a long prompt: the default shrinks to the room left; an explicit max_tokens past it is refused by name
    const std::string body = R"({"prompt": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]})";
    EXPECT_EQ(parse_completion_request(Endpoint::Completions, body, ctx, 1).max_tokens, 5u);
    test::expect_error<ApiError>(
        [&] { parse_completion_request(Endpoint::Completions, R"({"prompt": [1, 2], "max_tokens": 19})", ctx, 1); },
        {"max_tokens is 19", "room for 18"});
    const ApiContext small_pool{c, *qwen(), "tiny-qwen2", 4, 2};
    test::expect_error<ApiError>(
        [&] { parse_completion_request(Endpoint::Completions, R"({"prompt": [1, 2], "max_tokens": 7})", small_pool, 1); },
        {"need 3 KV pages of 4", "has 2", "--kv-pages"});
    try {
        parse_completion_request(Endpoint::Completions, R"({"prompt": "a", "model": "other"})", ctx, 1);
        FAIL() << "another model's name was accepted";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.status, 404);
        EXPECT_EQ(e.body()["error"]["param"], "model");
        EXPECT_EQ(e.body()["error"]["code"], "model_not_found");
    }
}

TEST(ServeApi, ChatIsHuggingFacesChatTemplate) {
    if (!qwen()) GTEST_SKIP() << "needs ../shared/tokenizers/qwen (set LMLAB_SHARED)";
    const Config c = qwen_config(100);
    const ApiContext ctx{c, *qwen(), "tiny-qwen2", 4, 100};
    // From transformers 4.46.3: AutoTokenizer.from_pretrained(golden/models/tiny-qwen2) (Qwen's
    // tokenizer_config.json) .apply_chat_template(messages, add_generation_prompt=True); the same
    // comparison, live, for more conversations: serve_test.py's Chat. "user\n\n\nleading": 1406 is
    // "\n\n\n", one token (the role and the content are one span of text).
    const char* body = R"({"messages": [
        {"role": "user", "content": "\n\nleading newlines and trailing spaces  "},
        {"role": "assistant", "content": " a space first\n"}, {"role": "system", "content": "a late system turn"},
        {"role": "user", "content": ""}]})";
    EXPECT_EQ(parse_completion_request(Endpoint::Chat, body, ctx, 1).prompt,
              (std::vector<int>{151644, 872, 1406, 20654, 501, 7969, 323, 27748, 12621, 256, 151645, 198, 151644, 77091,
                                198, 264, 3550, 1156, 198, 151645, 198, 151644, 8948, 198, 64, 3309, 1849, 2484, 151645, 198,
                                151644, 872, 198, 151645, 198, 151644, 77091, 198}));
    test::expect_error<ApiError>(
        [&] {
            parse_completion_request(Endpoint::Chat, R"({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]})", ctx, 1);
        },
        {"'messages[1].role'", "'tool' is not supported", "no tool calling"});
    test::expect_error<ApiError>(
        [&] {
            parse_completion_request(Endpoint::Chat, R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})", ctx, 1);
        },
        {"'messages[1].role'", "continuing an assistant message"});
    test::expect_error<ApiError>([&] { parse_completion_request(Endpoint::Chat, R"({"messages": []})", ctx, 1); },
                                 {"'messages' is empty"});
}

TEST(ServeApi, TextStopsBeforeTheFirstStopStringAndNeverShowsItsStart) {
    if (!qwen()) GTEST_SKIP() << "needs ../shared/tokenizers/qwen (set LMLAB_SHARED)";
    const TextTokenizer& tok = *qwen();
    const std::vector<int> prompt = tok.encode("Story:");
    const std::vector<int> ids = tok.encode(" Hello world. The end is near. The end.");
    TextOutput out(tok, prompt, {"The end", "never"}, {});
    std::string sent;
    std::size_t pushed = 0;
    for (const int id : ids) {
        sent += out.push(id);
        ++pushed;
        EXPECT_EQ(sent.find("The"), std::string::npos) << "the start of a stop string was sent: " << sent;
        if (out.stopped()) break;
    }
    sent += out.finish();
    EXPECT_TRUE(out.stopped());
    EXPECT_EQ(sent, " Hello world. ");
    EXPECT_EQ(out.tokens(), pushed);  // the token that completed "The end" is the last counted
    EXPECT_LT(pushed, ids.size());
    EXPECT_EQ(out.push(ids.back()), "");  // nothing after the stop

    // no stop string: the pushes and finish() are decode(ids, prompt) (decode's one rule); a stop id ends the text
    TextOutput plain(tok, prompt, {}, std::vector<int>{151643});
    std::string all;
    for (const int id : ids) all += plain.push(id);
    all += plain.push(151643);
    all += plain.finish();
    EXPECT_EQ(all, tok.decode(ids, prompt));
    EXPECT_EQ(plain.tokens(), ids.size() + 1);
    EXPECT_FALSE(plain.stopped());
}

TEST(ServeApi, LogprobsAreTheLogSoftmaxOfTheLogits) {
    const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
    const double lse = std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0));
    const TokenLogprobs lp = token_logprobs(logits, 2, 3);
    EXPECT_NEAR(lp.logprob, 2.0 - lse, 1e-6);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].first, 1);  // a tie: the lower id first
    EXPECT_EQ(lp.top[1].first, 3);
    EXPECT_EQ(lp.top[2].first, 2);
    EXPECT_NEAR(lp.top[0].second, 3.0 - lse, 1e-6);
    EXPECT_TRUE(token_logprobs(logits, 0, 0).top.empty());
}

// Both bounds hold for JSON's unsigned integers (0 and up) as for negative ones: "max_tokens": 0 once
// passed serve-batch's check of 1 to 2^24 because only the upper bound was compared for them.
TEST(ServeApi, IntegerRangeChecksBothBoundsOfUnsignedValues) {
    const auto j = [](const char* text) { return nlohmann::json::parse(text); };
    EXPECT_FALSE(json_integer_in(j("0"), 1, 16));
    EXPECT_TRUE(json_integer_in(j("1"), 1, 16));
    EXPECT_TRUE(json_integer_in(j("16"), 1, 16));
    EXPECT_FALSE(json_integer_in(j("17"), 1, 16));
    EXPECT_FALSE(json_integer_in(j("-1"), 0, 16));
    EXPECT_TRUE(json_integer_in(j("-1"), -5, 16));
    EXPECT_TRUE(json_integer_in(j("3"), -5, 16));
    EXPECT_FALSE(json_integer_in(j("18446744073709551615"), 0, INT64_MAX));  // past int64: not wrapped to -1
    EXPECT_FALSE(json_integer_in(j("2"), -5, -1));
}

}  // namespace lmlab
