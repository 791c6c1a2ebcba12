// Tokenizer stages: encode each case's text with our tokenizer and compare the ids with
// the reference's (SentencePiece, tiktoken + HF tokenizers), exactly. The text is stored as raw bytes (uint8) so any byte string fits.
#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <map>
#include <memory>

#include "model/model.h"
#include "model/tokenizer/text_tokenizer.h"
#include "harness/stages/stages.h"

namespace lmlab {

namespace {

// The running stage's tokenizer (its table row names it; the runner resolved the path), loaded once.
// A llama2.c tokenizer.bin has no vocabulary size of its own: the fixture's vocab_size says it.
const TextTokenizer& stage_tokenizer(const Fixture& fx, const StageEnv& env) {
    static std::map<std::string, std::unique_ptr<TextTokenizer>> loaded;
    auto& slot = loaded[env.model];
    if (!slot) {
        const auto vs = fx.numbers.find("vocab_size");
        if (vs == fx.numbers.end()) throw HarnessError(fx.path + ": root attribute 'vocab_size' is missing. " + regenerate_hint(fx.path));
        slot = std::make_unique<TextTokenizer>(load_tokenizer(env.model, static_cast<int>(vs->second)));
    }
    return *slot;
}

// "…<piece>|<piece>[<piece>]<piece>…" around index i, for showing a mismatch in context.
std::string pieces_around(const TextTokenizer& tok, const std::vector<int>& ids, std::size_t i) {
    std::string s;
    const std::size_t from = i >= 3 ? i - 3 : 0, to = std::min(ids.size(), i + 4);
    for (std::size_t k = from; k < to; ++k) {
        const std::string p = (ids[k] >= 0 && ids[k] < tok.vocab_size()) ? tok.piece(ids[k]) : "?";
        s += k == i ? "[" + p + "]" : p;
        if (k + 1 < to) s += "|";
    }
    return fmt::format("{}{}{}", from > 0 ? "…" : "", s, to < ids.size() ? "…" : "");
}

}  // namespace

std::vector<StageOutput> stage_tokenizer(const Fixture& fx, const Case& c, const StageEnv& env) {
    const TextTokenizer& tok = stage_tokenizer(fx, env);
    const auto& bytes = c.input("text", {Case::kAnyDim});
    std::string text;
    for (float b : bytes.data) text += static_cast<char>(static_cast<unsigned char>(b));
    const auto golden_it = c.outputs.find("ids");
    if (golden_it == c.outputs.end())
        throw HarnessError(c.file + ": dataset /" + c.name + "/outputs/ids is missing");
    std::vector<int> expected;
    for (float f : golden_it->second.data) expected.push_back(static_cast<int>(f));

    const auto allow = fx.numbers.find("allow_special");  // Qwen's reference recognises added tokens
    // mode (absent: "text"): the text's ids; "prompt": as `lmlab generate` makes a prompt of it (BOS
    // from the post-processor); "chat": one user turn in the vocabulary's chat template (--chat)
    const auto mode = c.strings.find("mode");
    const std::string how = mode == c.strings.end() ? "text" : mode->second;
    if (how != "text" && how != "prompt" && how != "chat")
        throw HarnessError(c.file + ": /" + c.name + " mode is '" + how + "', expected text, prompt or chat");
    const bool special = allow != fx.numbers.end() && allow->second != 0;
    const std::vector<int> ours = how == "chat" ? tok.encode_chat(text)
                                  : how == "prompt" ? tok.encode_prompt(text, special)
                                                    : tok.encode(text, special);
    // Same length as the golden ids so the comparison counts matches; extra or missing ids show as -1.
    std::vector<float> values(expected.size(), -1.0f);
    for (std::size_t i = 0; i < std::min(ours.size(), expected.size()); ++i) values[i] = static_cast<float>(ours[i]);

    std::string note;
    std::size_t first = 0;
    while (first < std::min(ours.size(), expected.size()) && ours[first] == expected[first]) ++first;
    if (first < std::max(ours.size(), expected.size())) {
        note = fmt::format("ours: {} ids, reference: {}. First difference at id {}:\n  ours:      {}\n"
                           "  reference: {}",
                           ours.size(), expected.size(), first, pieces_around(tok, ours, first),
                           pieces_around(tok, expected, first));
    }
    // n_ids catches a length difference that the padded/truncated ids alone would hide
    return {{"ids", "ids", values, note}, {"n_ids", "n_ids", {static_cast<float>(ours.size())}, note}};
}

}  // namespace lmlab
