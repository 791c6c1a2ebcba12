// Tests of the byte-level BPE tokenizer. Expected ids are worked out by hand for the tiny
// vocabularies written here, and come from the references for the real files in shared/
// (tiktoken 0.8.0 and HF tokenizers 0.20.3, via scripts/tokenizer_bpe_ref.py; Qwen's README),
// never from this implementation.
#include "model/tokenizer/tokenizer_bpe.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include <unistd.h>  // getpid

#include "model/testing/test_shared.h"

namespace {

using lmlab::BpeStreamDecoder;
using lmlab::BpeTokenizer;
using lmlab::ModelError;
using lmlab::test::shared_dir;
using Json = nlohmann::json;
using Ids = std::vector<int>;

// ---------------------------------------------------------------------------------------------
// Helpers

// A temporary file name, unique per process: ctest -j runs the tests of this file as separate
// processes at the same time, and they must not overwrite each other's files.
std::string temp_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() /
            ("lmlab_tokenizer_bpe_test_" + std::to_string(::getpid()) + "_" + name))
        .string();
}

// Files written by the tests; removed when the test program ends.
std::vector<std::string>& written_files() {
    static std::vector<std::string> files;
    return files;
}

class RemoveWrittenFiles : public ::testing::Environment {
public:
    void TearDown() override {
        for (const std::string& path : written_files()) std::filesystem::remove(path);
    }
};
[[maybe_unused]] const auto* const kRemoveWrittenFiles = ::testing::AddGlobalTestEnvironment(new RemoveWrittenFiles);

void write_file(const std::string& path, const std::string& content) {
    written_files().push_back(path);
    std::ofstream out(path, std::ios::binary);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    ASSERT_TRUE(out.good()) << path;
}

// Runs fn, expects a ModelError whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> parts) {
    try {
        fn();
        ADD_FAILURE() << "no ModelError thrown; expected one mentioning '" << *parts.begin() << "'";
    } catch (const ModelError& e) {
        const std::string message = e.what();
        for (const std::string& part : parts) {
            EXPECT_NE(message.find(part), std::string::npos) << "message: " << message << "\nlacks: " << part;
        }
    }
}

// GPT-2's bytes_to_unicode, written again here from its definition (OpenAI's encoder.py):
// printable Latin-1 bytes stand for themselves, the other 68 bytes become U+0100.. in order.
std::string byte_char(unsigned b) {
    unsigned extra = 0;
    unsigned code = 0;
    for (unsigned x = 0; x <= b; ++x) {
        const bool printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
        code = printable ? x : 256 + extra++;
    }
    if (code < 0x80) return std::string(1, static_cast<char>(code));
    return {static_cast<char>(0xC0 | (code >> 6)), static_cast<char>(0x80 | (code & 0x3F))};
}

// A byte string written as a vocabulary string.
std::string vocab_text(const std::string& bytes) {
    std::string out;
    for (const char c : bytes) out += byte_char(static_cast<unsigned char>(c));
    return out;
}

// The tiny vocabulary: ids 0..255 are the byte tokens in byte order (id == byte value), then
// one token per merge, in rank order, then the special token. Chosen so that:
//   "b c" outranks "a b"           -> "abc" is a + bc, not ab + c (merge order, not left to right)
//   "a a", then "aa aa"            -> "aaaaa" is aaaa + a (overlapping pairs, stale candidates)
//   "o Ġ" exists                   -> "o " stays o + ' ' (no merge across pre-tokens)
//   "1 2" exists                   -> "12" is one token under GPT-2's regex, two under Qwen's
//   "ð \x9F" (bytes F0 9F)         -> an emoji is one merged token and two byte tokens
const std::vector<std::pair<std::string, std::string>>& tiny_merges() {
    static const std::vector<std::pair<std::string, std::string>> merges = {
        {"b", "c"},                                  // 256 "bc"
        {"a", "b"},                                  // 257 "ab"
        {"a", "a"},                                  // 258 "aa"
        {"aa", "aa"},                                // 259 "aaaa"
        {"h", "e"},                                  // 260 "he"
        {"l", "l"},                                  // 261 "ll"
        {"he", "ll"},                                // 262 "hell"
        {"hell", "o"},                               // 263 "hello"
        {vocab_text(" "), "hello"},                  // 264 " hello"
        {"o", vocab_text(" ")},                      // 265 "o "
        {"1", "2"},                                  // 266 "12"
        {vocab_text("\xF0"), vocab_text("\x9F")},    // 267 "\xF0\x9F"
    };
    return merges;
}
constexpr int kEot = 268;          // "<|endoftext|>"
constexpr int kImEnd = 269;        // "<|im_end|>" (tokenizer.json only, special)
constexpr int kToolCall = 270;     // "<tool_call>" (tokenizer.json only, not special)
constexpr int kAbc = 271;          // "abc": in the vocabulary, but no merge makes it
constexpr int kImPrefix = 272;     // "<|im" (tokenizer.json only, not special): a prefix of "<|im_end|>"

Json tiny_vocab_json() {
    Json vocab = Json::object();
    for (unsigned b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
    int id = 256;
    for (const auto& [left, right] : tiny_merges()) vocab[left + right] = id++;
    return vocab;
}

// encoder.json + vocab.bpe of the tiny vocabulary; returns the two paths.
std::pair<std::string, std::string> write_tiny_gpt2(const std::string& name) {
    Json vocab = tiny_vocab_json();
    vocab["<|endoftext|>"] = kEot;
    std::string merges = "#version: 0.2\n";
    for (const auto& [left, right] : tiny_merges()) merges += left + " " + right + "\n";
    const std::string encoder_path = temp_path(name + "_encoder.json");
    const std::string merges_path = temp_path(name + "_vocab.bpe");
    write_file(encoder_path, vocab.dump());
    write_file(merges_path, merges);
    return {encoder_path, merges_path};
}

const char* const kQwenPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

Json byte_level(bool use_regex) {
    return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", use_regex}};
}

// A Qwen-style tokenizer.json of the tiny vocabulary: NFC, Split + ByteLevel, merges as pairs,
// "<|endoftext|>" and "<|im_end|>" special added tokens, "<tool_call>" and "<|im" non-special.
Json tiny_hf_json() {
    Json vocab = tiny_vocab_json();
    vocab["abc"] = kAbc;
    Json merges = Json::array();
    for (const auto& [left, right] : tiny_merges()) merges.push_back({left, right});
    const auto added = [](int id, const char* content, bool special) {
        return Json{{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
                    {"rstrip", false},   {"normalized", false}, {"special", special}};
    };
    return Json{
        {"version", "1.0"},
        {"truncation", nullptr},
        {"padding", nullptr},
        {"added_tokens",
         {added(kEot, "<|endoftext|>", true), added(kImEnd, "<|im_end|>", true), added(kToolCall, "<tool_call>", false),
          added(kImPrefix, "<|im", false)}},
        {"normalizer", {{"type", "NFC"}}},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", kQwenPattern}}}, {"behavior", "Isolated"}, {"invert", false}},
            byte_level(false)}}}},
        {"post_processor", byte_level(false)},
        {"decoder", byte_level(false)},
        {"model",
         {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", ""},
          {"end_of_word_suffix", ""},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"ignore_merges", false},
          {"vocab", vocab},
          {"merges", merges}}},
    };
}

BpeTokenizer load_json(const Json& json, const std::string& name) {
    const std::string path = temp_path(name + "_tokenizer.json");
    write_file(path, json.dump());
    return BpeTokenizer::load_hf_json(path);
}

// llm.c's gpt2_tokenizer.bin for the given token bytes.
std::string llmc_file(const std::vector<std::string>& tokens, std::uint32_t version, std::uint32_t eot,
                      std::uint32_t magic = 20240328) {
    std::vector<std::uint32_t> header(256, 0);
    header[0] = magic;
    header[1] = version;
    header[2] = static_cast<std::uint32_t>(tokens.size());
    header[3] = version == 2 ? eot : 0;
    std::string data(reinterpret_cast<const char*>(header.data()), header.size() * 4);
    for (const std::string& t : tokens) {
        data += static_cast<char>(t.size());
        data += t;
    }
    return data;
}

// The bytes of every token of the tiny GPT-2 vocabulary, by id.
std::vector<std::string> tiny_token_bytes() {
    std::vector<std::string> tokens;
    for (unsigned b = 0; b < 256; ++b) tokens.emplace_back(1, static_cast<char>(b));
    for (const char* t : {"bc", "ab", "aa", "aaaa", "he", "ll", "hell", "hello", " hello", "o ", "12", "\xF0\x9F"}) {
        tokens.emplace_back(t);
    }
    tokens.emplace_back("<|endoftext|>");
    return tokens;
}

bool valid_utf8_or_empty(const std::string& s) {
    // Decoding then re-checking with the tokenizer's own validation would be circular; a
    // compact independent check of the well-formed byte ranges instead.
    std::size_t i = 0;
    while (i < s.size()) {
        const auto b = static_cast<unsigned char>(s[i]);
        std::size_t n = b < 0x80 ? 1 : (b >= 0xC2 && b <= 0xDF) ? 2 : (b >= 0xE0 && b <= 0xEF) ? 3 : (b >= 0xF0 && b <= 0xF4) ? 4 : 0;
        if (n == 0 || i + n > s.size()) return false;
        for (std::size_t k = 1; k < n; ++k) {
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
        }
        i += n;
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// Tiny vocabulary, GPT-2 files

class TinyGpt2 : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        const auto [encoder, merges] = write_tiny_gpt2("tiny");
        tok_ = new BpeTokenizer(BpeTokenizer::load_gpt2(encoder, merges));
    }
    static void TearDownTestSuite() {
        delete tok_;
        tok_ = nullptr;
    }
    static BpeTokenizer* tok_;
};
BpeTokenizer* TinyGpt2::tok_ = nullptr;

TEST_F(TinyGpt2, VocabularyAndLookups) {
    const BpeTokenizer& tok = *tok_;
    EXPECT_EQ(tok.vocab_size(), 269);
    EXPECT_TRUE(tok.can_encode());
    EXPECT_EQ(tok.piece(32), " ");  // raw bytes, not "Ġ"
    EXPECT_EQ(tok.piece(264), " hello");
    EXPECT_EQ(tok.piece(267), "\xF0\x9F");
    EXPECT_EQ(tok.token_id("<|endoftext|>"), kEot);
    EXPECT_EQ(tok.token_id(" hello"), 264);
    EXPECT_EQ(tok.token_id("nope"), std::nullopt);
    EXPECT_TRUE(tok.is_special(kEot));
    EXPECT_FALSE(tok.is_special(264));
    EXPECT_FALSE(tok.is_special(-1));
    EXPECT_FALSE(tok.is_special(100000));
    EXPECT_EQ(tok.eot_id(), kEot);
}

TEST_F(TinyGpt2, MergesApplyByRankNotLeftToRight) {
    const BpeTokenizer& tok = *tok_;
    EXPECT_EQ(tok.encode("abc", false), (Ids{'a', 256}));  // "b c" (rank 0) beats "a b" (rank 1)
    EXPECT_EQ(tok.encode("ab", false), (Ids{257}));
    EXPECT_EQ(tok.encode("aaa", false), (Ids{258, 'a'}));  // leftmost pair first on equal rank
    EXPECT_EQ(tok.encode("aaaa", false), (Ids{259}));
    EXPECT_EQ(tok.encode("aaaaa", false), (Ids{259, 'a'}));
    EXPECT_EQ(tok.encode("hello", false), (Ids{263}));
    EXPECT_EQ(tok.encode("hello hello", false), (Ids{263, 264}));
    EXPECT_EQ(tok.encode("12", false), (Ids{266}));  // GPT-2's regex keeps digit runs together
    EXPECT_EQ(tok.encode("", false), Ids{});
}

TEST_F(TinyGpt2, NoMergeAcrossPreTokens) {
    const BpeTokenizer& tok = *tok_;
    // "o " would be token 265, but GPT-2's regex makes "o" and " " separate pieces.
    EXPECT_EQ(tok.encode("o ", false), (Ids{'o', ' '}));
    // Runs of spaces: the last space goes with the next word ("\s+(?!\S)").
    EXPECT_EQ(tok.encode("  hello", false), (Ids{' ', 264}));
}

TEST_F(TinyGpt2, ByteFallbackThroughByteTokens) {
    const BpeTokenizer& tok = *tok_;
    EXPECT_EQ(tok.encode("\xC3\xA9", false), (Ids{0xC3, 0xA9}));                 // é: no merge, two byte tokens
    EXPECT_EQ(tok.encode("\xF0\x9F\xA6\x99", false), (Ids{267, 0xA6, 0x99}));   // 🦙: F0 9F merged
    EXPECT_EQ(tok.encode(std::string("a\0b", 3), false), (Ids{'a', 0, 'b'}));  // NUL is a byte like any other
    EXPECT_EQ(tok.decode(Ids{267, 0xA6, 0x99}), "\xF0\x9F\xA6\x99");
    EXPECT_EQ(tok.decode(Ids{267}), "\xF0\x9F");  // raw bytes, even half a character
}

TEST_F(TinyGpt2, SpecialTokenAllowedOrNot) {
    const BpeTokenizer& tok = *tok_;
    EXPECT_EQ(tok.encode("x<|endoftext|>y", true), (Ids{'x', kEot, 'y'}));
    Ids plain = {'x'};
    for (const char c : std::string("<|endoftext|>y")) plain.push_back(static_cast<unsigned char>(c));
    EXPECT_EQ(tok.encode("x<|endoftext|>y", false), plain);
    EXPECT_EQ(tok.decode(Ids{'x', kEot, 'y'}), "x<|endoftext|>y");
}

TEST_F(TinyGpt2, StreamDecodeHoldsBackSplitCharacters) {
    const BpeTokenizer& tok = *tok_;
    BpeStreamDecoder stream(tok);
    EXPECT_EQ(stream.push('a'), "a");
    EXPECT_EQ(stream.push(267), "");  // F0 9F: first half of 🦙
    EXPECT_EQ(stream.push(0xA6), "");
    EXPECT_EQ(stream.push(0x99), "\xF0\x9F\xA6\x99");
    EXPECT_EQ(stream.push(264), " hello");
    EXPECT_EQ(stream.flush(), "");
    // An unfinished character at the end: each held byte becomes U+FFFD.
    EXPECT_EQ(stream.push(267), "");
    EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
    // A byte that can never be valid UTF-8 is replaced at once.
    EXPECT_EQ(stream.push(0xFF), "\xEF\xBF\xBD");
    // A character cut short by a new lead byte: the stale byte is replaced, the new one held.
    EXPECT_EQ(stream.push(0xC3), "");
    EXPECT_EQ(stream.push(267), "\xEF\xBF\xBD");
    EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_F(TinyGpt2, InvalidUtf8NamesTheOffset) {
    const BpeTokenizer& tok = *tok_;
    expect_error([&] { tok.encode("ab\xFF" "cd", false); }, {"not valid UTF-8", "0xFF", "byte offset 2"});
    expect_error([&] { tok.encode("abc\xE2\x82", false); }, {"truncated", "byte offset 3"});
    expect_error([&] { tok.encode("\xED\xA0\x80", false); }, {"byte offset 0"});  // UTF-16 surrogate
    expect_error([&] { tok.encode("\xC0\xAF", false); }, {"byte offset 0"});      // overlong '/'
}

TEST_F(TinyGpt2, UnknownIdNamesIdAndVocabSize) {
    const BpeTokenizer& tok = *tok_;
    expect_error([&] { tok.decode(Ids{'a', 269}); }, {"token id 269", "269 tokens"});
    expect_error([&] { tok.decode(Ids{-1}); }, {"token id -1"});
    expect_error([&] { tok.piece(5000); }, {"token id 5000"});
    BpeStreamDecoder stream(tok);
    expect_error([&] { stream.push(100000); }, {"token id 100000"});
}

TEST_F(TinyGpt2, RoundTripAnyUtf8) {
    const BpeTokenizer& tok = *tok_;
    for (const std::string text : {"hello world", "  \t\n\r\n x", "caf\xC3\xA9 \xE4\xB8\xAD\xF0\x9F\xA6\x99",
                                   "don't DON'T 12345 3.14", "<|endoftext|><|endoftext"}) {
        EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
        EXPECT_EQ(tok.decode(tok.encode(text, true)), text);
    }
}

TEST(BpeTokenizerGpt2Files, Errors) {
    // (no structured binding: the lambdas below capture these, which clang before 16 refuses)
    const auto files = write_tiny_gpt2("errors");
    const auto& encoder = files.first;
    const auto& merges = files.second;
    expect_error([&] { BpeTokenizer::load_gpt2(temp_path("missing.json"), merges); },
                 {"missing.json", "cannot open"});
    expect_error([&] { BpeTokenizer::load_gpt2(encoder, temp_path("missing.bpe")); }, {"missing.bpe", "cannot open"});

    const std::string bad = temp_path("bad_encoder.json");
    write_file(bad, "{\"a\": 0, ");
    expect_error([&] { BpeTokenizer::load_gpt2(bad, merges); }, {"bad_encoder.json", "expected JSON"});
    write_file(bad, R"({"a": 8E888})");  // a number past double's range: nlohmann throws out_of_range, not parse_error
    expect_error([&] { BpeTokenizer::load_gpt2(bad, merges); }, {"bad_encoder.json", "expected JSON", "number overflow"});
    write_file(bad, std::string(200000, '[') + std::string(200000, ']'));  // dump() in a message would overflow the stack
    expect_error([&] { BpeTokenizer::load_gpt2(bad, merges); }, {"bad_encoder.json", "nested deeper than 64 levels"});
    write_file(bad, "[1, 2]");
    expect_error([&] { BpeTokenizer::load_gpt2(bad, merges); }, {"expected a JSON object", "[1,2]"});
    write_file(bad, R"({"a": 0, "b": 0})");
    expect_error([&] { BpeTokenizer::load_gpt2(bad, merges); }, {"id 0 is given to two tokens"});
    write_file(bad, R"({"a": -1})");
    expect_error([&] { BpeTokenizer::load_gpt2(bad, merges); }, {"token 'a'", "id -1 is out of range"});
    write_file(bad, R"({"a": "zero"})");
    expect_error([&] { BpeTokenizer::load_gpt2(bad, merges); }, {"token 'a'", "expected an integer id", "\"zero\""});

    const std::string bad_merges = temp_path("bad_vocab.bpe");
    write_file(bad_merges, "#version: 0.2\na b\nq zz\n");
    expect_error([&] { BpeTokenizer::load_gpt2(encoder, bad_merges); },
                 {"bad_vocab.bpe", "line 3", "'zz' is not in the vocabulary"});
    write_file(bad_merges, "#version: 0.2\na c\n");  // both parts exist, "ac" does not
    expect_error([&] { BpeTokenizer::load_gpt2(encoder, bad_merges); }, {"line 2", "'ac' is not in the vocabulary"});
    write_file(bad_merges, "#version: 0.2\nabc\n");
    expect_error([&] { BpeTokenizer::load_gpt2(encoder, bad_merges); }, {"line 2", "expected a merge"});
    write_file(bad_merges, "#version: 0.2\na b\na b\n");
    expect_error([&] { BpeTokenizer::load_gpt2(encoder, bad_merges); }, {"line 3", "repeats merge 0"});
}

// ---------------------------------------------------------------------------------------------
// Tiny vocabulary, tokenizer.json

TEST(BpeTokenizerHfJson, QwenStylePipeline) {
    const BpeTokenizer tok = load_json(tiny_hf_json(), "qwen_style");
    EXPECT_EQ(tok.vocab_size(), 273);
    EXPECT_EQ(tok.encode("12", true), (Ids{'1', '2'}));  // Qwen's regex: one digit per piece
    EXPECT_EQ(tok.encode("abc", true), (Ids{'a', 256}));
    // NFC: e + U+0301 becomes é (C3 A9) before BPE.
    EXPECT_EQ(tok.encode("e\xCC\x81", true), (Ids{0xC3, 0xA9}));
    EXPECT_EQ(tok.encode("\xC3\xA9", true), (Ids{0xC3, 0xA9}));
    // Added tokens are cut out of the raw text first, so NFC cannot join across them.
    EXPECT_EQ(tok.encode("e<|im_end|>\xCC\x81", true), (Ids{'e', kImEnd, 0xCC, 0x81}));
    // Special tokens only when allowed; the non-special "<tool_call>" always (as HF does).
    EXPECT_EQ(tok.encode("x<|im_end|>y<tool_call>", true), (Ids{'x', kImEnd, 'y', kToolCall}));
    Ids plain = {'x'};
    for (const char c : std::string("<|im_end|>y")) plain.push_back(static_cast<unsigned char>(c));
    plain.push_back(kToolCall);
    EXPECT_EQ(tok.encode("x<|im_end|>y<tool_call>", false), plain);
    EXPECT_EQ(tok.encode("<|endoftext|><|endoftext|>", true), (Ids{kEot, kEot}));
    // Leftmost-longest: "<|im_end|>" wins over its prefix "<|im". Not allowed, its text stays
    // plain and the search resumes after it, so "<|im" is not found inside it (HF does the same);
    // elsewhere "<|im" is an added token either way.
    EXPECT_EQ(tok.encode("<|im_end|><|im_", true), (Ids{kImEnd, kImPrefix, '_'}));
    Ids im_end_plain;
    for (const char c : std::string("<|im_end|>")) im_end_plain.push_back(static_cast<unsigned char>(c));
    Ids expected = im_end_plain;
    expected.insert(expected.end(), {kImPrefix, '_'});
    EXPECT_EQ(tok.encode("<|im_end|><|im_", false), expected);
    EXPECT_TRUE(tok.is_special(kImEnd));
    EXPECT_FALSE(tok.is_special(kToolCall));
    EXPECT_EQ(tok.token_id("<tool_call>"), kToolCall);
    EXPECT_EQ(tok.piece(kImEnd), "<|im_end|>");
    EXPECT_EQ(tok.decode(Ids{kImEnd, 264}), "<|im_end|> hello");
    EXPECT_EQ(tok.eot_id(), kEot);
}

TEST(BpeTokenizerHfJson, MergesAsStringsOrPairsAgree) {
    Json json = tiny_hf_json();
    Json strings = Json::array();
    for (const auto& [left, right] : tiny_merges()) strings.push_back(left + " " + right);
    json["model"]["merges"] = strings;
    const BpeTokenizer a = load_json(json, "merge_strings");
    const BpeTokenizer b = load_json(tiny_hf_json(), "merge_pairs");
    for (const std::string text : {"abc aaaaa hello hello", "\xF0\x9F\xA6\x99 o  12"}) {
        EXPECT_EQ(a.encode(text, true), b.encode(text, true));
    }
    EXPECT_EQ(a.encode("aaaaa", true), (Ids{259, 'a'}));
}

TEST(BpeTokenizerHfJson, IgnoreMerges) {
    Json json = tiny_hf_json();
    EXPECT_EQ(load_json(json, "merges_used").encode("abc", true), (Ids{'a', 256}));
    json["model"]["ignore_merges"] = true;  // Llama 3: a piece that is a token is taken whole
    EXPECT_EQ(load_json(json, "merges_ignored").encode("abc", true), (Ids{kAbc}));
}

TEST(BpeTokenizerHfJson, VocabStringOutsideTheByteTable) {
    Json json = tiny_hf_json();
    json["model"]["vocab"]["\xE4\xB8\xAD"] = 273;  // "中" written as itself, not as bytes "ä¸Ń"
    json["model"]["ignore_merges"] = true;
    const BpeTokenizer tok = load_json(json, "outside_table");
    EXPECT_EQ(tok.decode(Ids{273}), "\xE4\xB8\xAD");  // HF's ByteLevel decoder falls back to the UTF-8
    EXPECT_EQ(tok.encode("\xE4\xB8\xAD", true), (Ids{0xE4, 0xB8, 0xAD}));  // never produced by encoding
    EXPECT_EQ(tok.token_id("\xE4\xB8\xAD"), std::nullopt);
}

TEST(BpeTokenizerHfJson, GptStyleByteLevelRegexAndNoNormalizer) {
    Json json = tiny_hf_json();
    json["pre_tokenizer"] = byte_level(true);
    json["normalizer"] = nullptr;
    const BpeTokenizer tok = load_json(json, "gpt_style");
    EXPECT_EQ(tok.encode("12", true), (Ids{266}));
    EXPECT_EQ(tok.encode("e\xCC\x81", true), (Ids{'e', 0xCC, 0x81}));  // no NFC
    json["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
    EXPECT_EQ(load_json(json, "nfc_sequence").encode("e\xCC\x81", true), (Ids{0xC3, 0xA9}));
}

TEST(BpeTokenizerHfJson, RefusesWhatItDoesNotImplement) {
    const std::string missing = temp_path("missing_tokenizer.json");
    expect_error([&] { BpeTokenizer::load_hf_json(missing); }, {"missing_tokenizer.json", "cannot open"});
    const std::string bad = temp_path("bad_tokenizer.json");
    write_file(bad, "{\"model\": ");
    expect_error([&] { BpeTokenizer::load_hf_json(bad); }, {"bad_tokenizer.json", "expected JSON"});

    struct Case {
        const char* name;
        std::function<void(Json&)> change;
        std::vector<std::string> message;
    };
    const std::vector<Case> cases = {
        {"unigram", [](Json& j) { j["model"]["type"] = "Unigram"; }, {"model.type is Unigram"}},
        {"whitespace", [](Json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, {"pre_tokenizer is", "Whitespace"}},
        {"prefix_space",
         [](Json& j) { j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; },
         {"pre_tokenizer.pretokenizers[1].add_prefix_space is true"}},
        {"prefix_space_plain",
         [](Json& j) {
             j["pre_tokenizer"] = byte_level(true);
             j["pre_tokenizer"]["add_prefix_space"] = true;
         },
         {"pre_tokenizer.add_prefix_space is true"}},
        {"nfkc", [](Json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, {"normalizer is", "NFKC"}},
        {"lowercase_seq",
         [](Json& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}}; },
         {"normalizer is", "Lowercase"}},
        {"removed",
         [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
         {"behavior is \"Removed\""}},
        {"invert", [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; }, {"invert is true"}},
        {"bad_regex",
         [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; },
         {"(unclosed", "does not compile"}},
        {"decoder", [](Json& j) { j["decoder"] = nullptr; }, {"decoder is null"}},
        {"byte_fallback", [](Json& j) { j["model"]["byte_fallback"] = true; }, {"model.byte_fallback is true"}},
        {"merge_part", [](Json& j) { j["model"]["merges"].push_back({"a", "zz"}); }, {"model.merges[12]", "'zz' is not in model.vocab"}},
        {"merge_shape", [](Json& j) { j["model"]["merges"].push_back(42); }, {"model.merges[12]", "expected"}},
        {"dup_id", [](Json& j) { j["model"]["vocab"]["dup"] = 97; }, {"id 97 is given to two tokens"}},
        {"id_range", [](Json& j) { j["model"]["vocab"]["big"] = 1LL << 40; }, {"model.vocab['big']", "out of range"}},
        {"lstrip", [](Json& j) { j["added_tokens"][0]["lstrip"] = true; }, {"lstrip true is not supported"}},
        {"added_clash", [](Json& j) { j["added_tokens"][1]["id"] = 97; }, {"id 97 is given to two tokens"}},
        {"no_model", [](Json& j) { j.erase("model"); }, {"\"model\""}},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        Json json = tiny_hf_json();
        c.change(json);
        const std::string path = temp_path(std::string("refuse_") + c.name + ".json");
        write_file(path, json.dump());
        try {
            BpeTokenizer::load_hf_json(path);
            ADD_FAILURE() << "accepted";
        } catch (const ModelError& e) {
            const std::string message = e.what();
            EXPECT_NE(message.find(path), std::string::npos) << message;
            for (const std::string& part : c.message) {
                EXPECT_NE(message.find(part), std::string::npos) << "message: " << message << "\nlacks: " << part;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// llm.c's tokenizer file

TEST(BpeTokenizerLlmc, DecodesButCannotEncode) {
    const std::string path = temp_path("llmc_good.bin");
    write_file(path, llmc_file(tiny_token_bytes(), 2, kEot));
    const BpeTokenizer tok = BpeTokenizer::load_llmc(path);
    EXPECT_EQ(tok.vocab_size(), 269);
    EXPECT_FALSE(tok.can_encode());
    EXPECT_EQ(tok.decode(Ids{'x', 264, 267, 0xA6, 0x99}), "x hello\xF0\x9F\xA6\x99");
    EXPECT_EQ(tok.eot_id(), kEot);
    EXPECT_TRUE(tok.is_special(kEot));
    EXPECT_EQ(tok.token_id("<|endoftext|>"), kEot);
    expect_error([&] { tok.encode("hi", false); }, {"llm.c", "encoder.json", "tokenizer.json"});
    // The GPT-2 files give the same pieces.
    const auto [encoder, merges] = write_tiny_gpt2("llmc_cmp");
    const BpeTokenizer gpt2 = BpeTokenizer::load_gpt2(encoder, merges);
    for (int id = 0; id < gpt2.vocab_size(); ++id) EXPECT_EQ(tok.piece(id), gpt2.piece(id)) << id;
}

TEST(BpeTokenizerLlmc, Errors) {
    const std::string path = temp_path("llmc_bad.bin");
    const std::string good = llmc_file(tiny_token_bytes(), 2, kEot);
    const auto load = [&] { BpeTokenizer::load_llmc(path); };

    expect_error([&] { BpeTokenizer::load_llmc(temp_path("llmc_missing.bin")); }, {"llmc_missing.bin", "cannot open"});
    write_file(path, good.substr(0, good.size() - 5));
    expect_error(load, {"llmc_bad.bin", "truncated", "token 268 of 269"});
    write_file(path, good.substr(0, 1024 + 10));
    expect_error(load, {"truncated"});
    write_file(path, good.substr(0, 100));
    expect_error(load, {"header of 256 uint32", "100 bytes"});
    write_file(path, llmc_file(tiny_token_bytes(), 2, kEot, 12345));
    expect_error(load, {"expected magic 20240328, found 12345"});
    write_file(path, llmc_file(tiny_token_bytes(), 3, kEot));
    expect_error(load, {"expected version 1 or 2, found 3"});
    write_file(path, llmc_file(tiny_token_bytes(), 1, 0));
    expect_error(load, {"version 1", "vocab_size 269", "50257"});
    write_file(path, llmc_file(tiny_token_bytes(), 2, 269));
    expect_error(load, {"eot token 269"});
    std::vector<std::string> empty_token = tiny_token_bytes();
    empty_token[5].clear();
    write_file(path, llmc_file(empty_token, 2, kEot));
    expect_error(load, {"token 5", "length 0"});
}

// ---------------------------------------------------------------------------------------------
// Real vocabularies in shared/ (skipped without them)

#define SHARED_FILE_OR_SKIP(var, relative)                                                                   \
    const std::string var = shared_dir() + "/" + (relative);                                                 \
    if (!std::filesystem::exists(var)) {                                                                     \
        GTEST_SKIP() << var << " not found; set LMLAB_SHARED to the shared/ directory to run this test";     \
    }

// Texts for round trips on the real vocabularies.
const std::vector<std::string>& round_trip_texts() {
    static const std::vector<std::string> texts = {
        "Hello world",
        "",
        " ",
        "\n",
        "   three leading spaces and trailing   ",
        "tabs\tand\r\nwindows\n\n\nlines",
        "don't DON'T It'S they'll I'd",
        "caf\xC3\xA9 na\xC3\xAFve",
        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xE4\xB8\xAD\xE6\x96\x87 \xD8\xA7\xD9\x84\xD8\xB9\xD8\xB1\xD8\xA8\xD9\x8A\xD8\xA9",
        "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 \xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
        "123456789012345678901234567890 3.14159 +1 (555) 012-3456",
        std::string(1000, ' '),
        std::string("nul\0byte", 8),
    };
    return texts;
}

// About 1 MB of mixed text, for speed and long-input checks.
std::string megabyte_text() {
    std::string text;
    for (int i = 0; text.size() < 1'000'000; ++i) {
        text += "Verse " + std::to_string(i) + ": In the beginning   was the caf\xC3\xA9 \xE4\xB8\xAD\xF0\x9F\xA6\x99 don't\n";
    }
    return text;
}

TEST(BpeTokenizerShared, Gpt2MatchesTiktoken) {
    SHARED_FILE_OR_SKIP(encoder, "tokenizers/gpt2/encoder.json");
    SHARED_FILE_OR_SKIP(merges, "tokenizers/gpt2/vocab.bpe");
    const BpeTokenizer tok = BpeTokenizer::load_gpt2(encoder, merges);
    EXPECT_EQ(tok.vocab_size(), 50257);
    EXPECT_EQ(tok.token_id("<|endoftext|>"), 50256);
    EXPECT_EQ(tok.eot_id(), 50256);
    EXPECT_TRUE(tok.is_special(50256));
    EXPECT_EQ(tok.piece(220), " ");
    EXPECT_EQ(tok.piece(198), "\n");
    // Ids from tiktoken 0.8.0 (an Encoding built from these files; HF tokenizers 0.20.3 agrees),
    // special tokens not allowed unless stated.
    const std::vector<std::pair<std::string, Ids>> cases = {
        {"Hello world", {15496, 995}},
        {" Hello world", {18435, 995}},
        {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}},
        {"Once upon a time<|endoftext|>The end", {7454, 2402, 257, 640, 27, 91, 437, 1659, 5239, 91, 29, 464, 886}},
        {"don't DON'T It'S they'll I'd", {9099, 470, 23917, 6, 51, 632, 6, 50, 484, 1183, 314, 1549}},
        {"\xF0\x9F\xA6\x99 llama", {8582, 99, 247, 32660, 1689}},
        {"   3.14159  \n\n  x", {220, 220, 513, 13, 1415, 19707, 220, 220, 628, 220, 2124}},
        {"caf\xC3\xA9 cafe\xCC\x81", {66, 1878, 2634, 26725, 136, 223}},  // no NFC in GPT-2
        {"12345678901234567890", {10163, 2231, 3134, 4531, 486, 1954, 2231, 30924, 3829}},
        {"\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C", {19526, 254, 25001, 121, 171, 120, 234, 10310, 244, 45911, 234}},
        {"\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",
         {41840, 101, 447, 235, 41840, 102, 447, 235, 41840, 100}},
        // U+180E is not whitespace for the references (PCRE2's plain \s would say it is).
        {"\xE1\xA0\x8E\xE3\x80\x80 \t\r\n", {157, 254, 236, 5099, 222, 220, 197, 201, 198}},
    };
    for (const auto& [text, ids] : cases) {
        EXPECT_EQ(tok.encode(text, false), ids) << "text: " << text;
        EXPECT_EQ(tok.decode(ids), text);
    }
    // tiktoken allowed_special="all".
    EXPECT_EQ(tok.encode("<|endoftext|>", true), (Ids{50256}));
    EXPECT_EQ(tok.encode("Once upon a time<|endoftext|>The end", true), (Ids{7454, 2402, 257, 640, 50256, 464, 886}));

    // 🦙 is three tokens (F0 9F, A6, 99): printable only once the last one arrives.
    BpeStreamDecoder stream(tok);
    EXPECT_EQ(stream.push(8582), "");
    EXPECT_EQ(stream.push(99), "");
    EXPECT_EQ(stream.push(247), "\xF0\x9F\xA6\x99");
    EXPECT_EQ(stream.push(32660), " ll");
    EXPECT_EQ(stream.flush(), "");

    for (const std::string& text : round_trip_texts()) EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
}

TEST(BpeTokenizerShared, Gpt2LongInputsAreFast) {
    SHARED_FILE_OR_SKIP(encoder, "tokenizers/gpt2/encoder.json");
    SHARED_FILE_OR_SKIP(merges, "tokenizers/gpt2/vocab.bpe");
    const BpeTokenizer tok = BpeTokenizer::load_gpt2(encoder, merges);
    const std::string text = megabyte_text();
    const auto start = std::chrono::steady_clock::now();
    const Ids ids = tok.encode(text, false);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(tok.decode(ids), text);
    // About 0.1 s at -O2; a quadratic merge loop or regex restart would take minutes. The bound is
    // loose so that debug and sanitizer builds pass.
    EXPECT_LT(seconds, 20.0) << ids.size() << " ids";
    // Single huge pre-tokens: 200,000 spaces, digits, letters (one regex match, one BPE each).
    for (const char c : {' ', '7', 'x'}) {
        const std::string run(200'000, c);
        EXPECT_EQ(tok.decode(tok.encode(run + "!", false)), run + "!");
    }
}

TEST(BpeTokenizerShared, Llama3KnownEncodingsAndThePostProcessorsBos) {
    SHARED_FILE_OR_SKIP(path, "tokenizers/llama3/tokenizer.json");
    const BpeTokenizer tok = BpeTokenizer::load_hf_json(path);
    EXPECT_EQ(tok.vocab_size(), 128256);
    // shared/tokenizers/llama3/README.md: digits in runs of three, no BOS from encode() itself
    EXPECT_EQ(tok.encode("Hello world", true), (Ids{9906, 1917}));
    EXPECT_EQ(tok.encode(" Hello world", true), (Ids{22691, 1917}));
    EXPECT_EQ(tok.encode("The capital of France is", true), (Ids{791, 6864, 315, 9822, 374}));
    EXPECT_EQ(tok.encode("1234567", true), (Ids{4513, 10961, 22}));
    // the post-processor (Sequence[ByteLevel, TemplateProcessing]) puts <|begin_of_text|> first
    EXPECT_EQ(tok.prompt_prefix(), (Ids{128000}));
}

TEST(BpeTokenizerShared, QwenMatchesHfTokenizers) {
    SHARED_FILE_OR_SKIP(path, "tokenizers/qwen/tokenizer.json");
    const BpeTokenizer tok = BpeTokenizer::load_hf_json(path);
    EXPECT_EQ(tok.vocab_size(), 151669);
    EXPECT_EQ(tok.token_id("<|endoftext|>"), 151643);
    EXPECT_EQ(tok.token_id("<|im_start|>"), 151644);
    EXPECT_EQ(tok.token_id("<|im_end|>"), 151645);
    EXPECT_TRUE(tok.is_special(151645));
    EXPECT_FALSE(tok.is_special(151657));  // <tool_call> is an added token, not special
    EXPECT_FALSE(tok.is_special(9707));
    EXPECT_EQ(tok.eot_id(), 151643);

    // Known encodings from shared/tokenizers/qwen/README.md.
    EXPECT_EQ(tok.encode("Hello world", true), (Ids{9707, 1879}));
    EXPECT_EQ(tok.encode(" Hello world", true), (Ids{21927, 1879}));
    const std::string chat = "<|im_start|>user\nHi 123456 h\xC3\xA9llo \xE4\xBD\xA0\xE5\xA5\xBD\n\n  x<|im_end|>";
    EXPECT_EQ(tok.encode(chat, true), (Ids{151644, 872, 198, 13048, 220, 16, 17, 18, 19, 20, 21, 305, 18503, 385, 220,
                                           108386, 271, 220, 856, 151645}));
    // From HF tokenizers 0.20.3 (Tokenizer.from_file, add_special_tokens=False).
    EXPECT_EQ(tok.encode("caf\xC3\xA9", true), (Ids{924, 58858}));
    EXPECT_EQ(tok.encode("cafe\xCC\x81", true), (Ids{924, 58858}));  // NFC first
    EXPECT_EQ(tok.encode("DON'T It'S don't", true), (Ids{84641, 17323, 1084, 13272, 1513, 944}));
    EXPECT_EQ(tok.encode("\xF0\x9F\xA6\x99 llama", true), (Ids{149955, 93676}));
    EXPECT_EQ(tok.encode("<|im_start|>a<tool_call>b<|im_end|>", true), (Ids{151644, 64, 151657, 65, 151645}));
    EXPECT_EQ(tok.encode("\xE1\xA0\x8E\xE3\x80\x80 \t\r\n x", true), (Ids{123970, 236, 22441, 220, 4474, 856}));
    // HF with encode_special_tokens=True: special tokens are text, <tool_call> still matched.
    EXPECT_EQ(tok.encode(chat, false),
              (Ids{27, 91, 318, 4906, 91, 29, 872, 198, 13048, 220, 16, 17, 18, 19, 20, 21, 305, 18503, 385, 220,
                   108386, 271, 220, 856, 27, 91, 318, 6213, 91, 29}));
    EXPECT_EQ(tok.encode("<|im_start|>a<tool_call>b<|im_end|>", false),
              (Ids{27, 91, 318, 4906, 91, 29, 64, 151657, 65, 27, 91, 318, 6213, 91, 29}));

    for (const std::string& text : round_trip_texts()) EXPECT_EQ(tok.decode(tok.encode(text, true)), text);
    const std::string text = megabyte_text();
    EXPECT_EQ(tok.decode(tok.encode(text, true)), text);

    // Streaming the pieces of a mixed text gives valid UTF-8 at every step and the whole text.
    const std::string mixed = "\xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 \xF0\x9F\x87\xAB\xF0\x9F\x87\xB7";
    BpeStreamDecoder stream(tok);
    std::string streamed;
    for (const int id : tok.encode(mixed, true)) {
        const std::string out = stream.push(id);
        EXPECT_TRUE(valid_utf8_or_empty(out));
        streamed += out;
    }
    streamed += stream.flush();
    EXPECT_EQ(streamed, mixed);
}

TEST(BpeTokenizerShared, LlmcFileOfGpt2) {
    SHARED_FILE_OR_SKIP(encoder, "tokenizers/gpt2/encoder.json");
    SHARED_FILE_OR_SKIP(merges, "tokenizers/gpt2/vocab.bpe");
    const BpeTokenizer gpt2 = BpeTokenizer::load_gpt2(encoder, merges);
    // Written as llm.c's write_tokenizer does (version 2, eot 50256): the full-size format.
    std::vector<std::string> tokens;
    for (int id = 0; id < gpt2.vocab_size(); ++id) tokens.push_back(gpt2.piece(id));
    const std::string path = temp_path("llmc_gpt2.bin");
    write_file(path, llmc_file(tokens, 2, 50256));
    const BpeTokenizer llmc = BpeTokenizer::load_llmc(path);
    EXPECT_EQ(llmc.vocab_size(), 50257);
    EXPECT_EQ(llmc.eot_id(), 50256);
    const Ids ids = gpt2.encode("Hello world \xF0\x9F\xA6\x99<|endoftext|>", true);
    EXPECT_EQ(llmc.decode(ids), gpt2.decode(ids));
    // Version 1 (no eot field) is GPT-2's 50257 tokens with eot 50256.
    write_file(path, llmc_file(tokens, 1, 0));
    EXPECT_EQ(BpeTokenizer::load_llmc(path).eot_id(), 50256);
}

}  // namespace
