// Tests of the SentencePiece-compatible BPE tokenizer. Expected ids come from the READMEs in
// shared/ and from SentencePiece itself (python3-sentencepiece with
// shared/tokenizers/llama2/tokenizer.model), never from this implementation.
#include "model/load/load.h"
#include "model/tokenizer/text_tokenizer.h"
#include "model/tokenizer/tokenizer.h"

#include "model/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "model/testing/test_shared.h"

namespace {

using lmlab::StreamDecoder;
using lmlab::Tokenizer;

using lmlab::test::shared_dir;

const char* const kStoriesTokenizer = "models/stories260K/tok512.bin";
const char* const kLlama2Tokenizer = "tokenizers/llama2/tokenizer.bin";

// Skips the calling test when a shared file is missing (the test is about real data we lack).
#define LOAD_SHARED_OR_SKIP(var, relative_path, vocab)                                                \
    const std::string var##_path = shared_dir() + "/" + (relative_path);                                \
    if (!std::filesystem::exists(var##_path)) {                                                         \
        GTEST_SKIP() << var##_path << " not found; set LMLAB_SHARED to the shared/ directory to run this"; \
    }                                                                                                   \
    const Tokenizer var = Tokenizer::load_llama2c(var##_path, (vocab))

// Id of the byte piece "<0xNN>" in a vocabulary, found by its text.
int byte_token(const Tokenizer& tok, unsigned byte) {
    char text[8];
    std::snprintf(text, sizeof text, "<0x%02X>", byte);
    for (int id = 0; id < tok.vocab_size(); ++id) {
        if (tok.piece(id) == text) return id;
    }
    ADD_FAILURE() << "no byte piece " << text;
    return -1;
}

bool is_byte_piece(const std::string& piece) {
    return piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece[5] == '>';
}

// Texts that must survive decode(encode(t)) unchanged.
const std::vector<std::string>& round_trip_texts() {
    static const std::vector<std::string> texts = {
        "Once upon a time, there was a little girl.",
        "x",
        " ",
        "   three leading spaces",
        "trailing spaces   ",
        "runs    of     spaces\tand\ttabs",
        "line one\nline two\n\n\nafter blank lines\r\nwindows line\n",
        "\n",
        "caf\xC3\xA9 na\xC3\xAFve r\xC3\xA9sum\xC3\xA9 \xC3\x85ngstr\xC3\xB6m",                       // accents
        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87 \xE4\xB8\xAD\xE6\x96\x87",         // 日本語の文 中文
        "emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD family \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9",  // 😀👍🏽 👨‍👩
        "\xF0\x9F\xA6\x99 llama",                                                                  // 🦙
        "digits 0123456789 and 3.14159",
        "<s> </s> <unk> <0x41> look like special pieces",
        "\xF4\x8F\xBF\xBF max code point, \xEF\xBF\xBD replacement char",                          // U+10FFFF, U+FFFD
    };
    return texts;
}

// Writes a llama2.c tokenizer.bin for the given pieces (scores 0, -1, -2, ...).
void write_llama2c_file(const std::string& path, const std::vector<std::string>& pieces, std::int32_t max_len) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(&max_len), 4);
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        const float score = -static_cast<float>(i);
        const auto len = static_cast<std::int32_t>(pieces[i].size());
        out.write(reinterpret_cast<const char*>(&score), 4);
        out.write(reinterpret_cast<const char*>(&len), 4);
        out.write(pieces[i].data(), len);
    }
}

std::string temp_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("lmlab_tokenizer_test_" + name)).string();
}

// A hand-built vocabulary: specials, all 256 byte pieces (ids 3..258, as in the shared
// vocabularies), then the given normal pieces with their scores.
Tokenizer tiny_vocab(const std::vector<std::pair<std::string, float>>& normal) {
    std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0.0f, 0.0f, 0.0f};
    for (unsigned b = 0; b < 256; ++b) {
        char text[8];
        std::snprintf(text, sizeof text, "<0x%02X>", b);
        pieces.emplace_back(text);
        scores.push_back(0.0f);
    }
    for (const auto& [piece, score] : normal) {
        pieces.push_back(piece);
        scores.push_back(score);
    }
    return Tokenizer(pieces, scores);
}

// Id of a normal piece in a tiny vocabulary.
int id_of(const Tokenizer& tok, const std::string& piece) {
    for (int id = 259; id < tok.vocab_size(); ++id) {
        if (tok.piece(id) == piece) return id;
    }
    ADD_FAILURE() << "no piece '" << piece << "'";
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Known encodings of the shared vocabularies.

TEST(TokenizerShared, Stories260KKnownPrompt) {
    LOAD_SHARED_OR_SKIP(tok, kStoriesTokenizer, 512);
    EXPECT_EQ(tok.vocab_size(), 512);
    EXPECT_EQ(tok.encode("Once upon a time", true), (std::vector<int>{1, 403, 407, 261, 378}));
    EXPECT_EQ(tok.encode("Once upon a time", false), (std::vector<int>{403, 407, 261, 378}));
    EXPECT_EQ(tok.piece(403), " Once");
}

TEST(TokenizerShared, Llama2KnownEncodingsFromReadme) {
    LOAD_SHARED_OR_SKIP(tok, kLlama2Tokenizer, 32000);
    const std::vector<std::pair<std::string, std::vector<int>>> cases = {
        {"", {1}},
        {"I believe the meaning of life is", {1, 306, 4658, 278, 6593, 310, 2834, 338}},
        {"Simply put, the theory of relativity states that ",
         {1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871}},
        {"A brief message congratulating the team on the launch:\n\n        Hi everyone,\n\n        I just ",
         {1, 319, 11473, 2643, 378, 629, 271, 18099, 278, 3815, 373, 278, 6826, 29901, 13, 13, 4706, 6324,
          14332, 29892, 13, 13, 4706, 306, 925, 29871}},
        {"Translate English to French:\n\n        sea otter => loutre de mer\n        peppermint => menthe "
         "poivr\xC3\xA9" "e\n        plush girafe => girafe peluche\n        cheese =>",
         {1,   4103, 9632, 4223, 304,  5176, 29901, 13,  13,   4706, 7205, 4932, 357,   1149, 301,  449, 276,
          316, 2778, 13,   4706, 1236, 407,  837,   524, 1149, 6042, 354,  772,  440,  29878, 1318, 13,   4706,
          715, 1878, 330,  3055, 1725, 1149, 330,   3055, 1725, 4639, 28754, 13,  4706, 923,  968,  1149}},
    };
    for (const auto& [text, ids] : cases) {
        EXPECT_EQ(tok.encode(text, true), ids) << "text: " << text;
        EXPECT_EQ(tok.decode(ids), text);
    }
}

// Encodings produced by SentencePiece with tokenizer.model (ids without BOS).
TEST(TokenizerShared, Llama2MatchesSentencePiece) {
    LOAD_SHARED_OR_SKIP(tok, kLlama2Tokenizer, 32000);
    // 🦙 is not a piece: SentencePiece writes its four UTF-8 bytes as byte tokens.
    EXPECT_EQ(tok.encode("\xF0\x9F\xA6\x99 llama", false), (std::vector<int>{29871, 243, 162, 169, 156, 11148, 3304}));
    EXPECT_EQ(tok.encode("\xE4\xB8\xAD\xE6\x96\x87", false), (std::vector<int>{29871, 30275, 30333}));  // 中文
    EXPECT_EQ(tok.encode("caf\xC3\xA9", false), (std::vector<int>{274, 28059}));
    // Whitespace is not collapsed and runs of spaces merge into the Llama 2 space pieces.
    EXPECT_EQ(tok.encode("  two  spaces", false), (std::vector<int>{259, 1023, 29871, 8162}));
    // Text that looks like control or byte pieces is encoded as ordinary characters.
    EXPECT_EQ(tok.encode("<s></s><unk><0x41>", false),
              (std::vector<int>{529, 29879, 2565, 29879, 5299, 2960, 5299, 29900, 29916, 29946, 29896, 29958}));
}

TEST(TokenizerShared, RoundTripBothVocabularies) {
    LOAD_SHARED_OR_SKIP(stories, kStoriesTokenizer, 512);
    LOAD_SHARED_OR_SKIP(llama2, kLlama2Tokenizer, 32000);
    for (const Tokenizer* tok : {&stories, &llama2}) {
        for (const std::string& text : round_trip_texts()) {
            const std::vector<int> with_bos = tok->encode(text, true);
            ASSERT_FALSE(with_bos.empty());
            EXPECT_EQ(with_bos[0], 1);
            for (std::size_t i = 1; i < with_bos.size(); ++i) {
                EXPECT_GE(with_bos[i], 3) << "special id produced from text: " << text;
            }
            EXPECT_EQ(tok->decode(with_bos), text) << "vocab " << tok->vocab_size();
            EXPECT_EQ(tok->decode(tok->encode(text, false)), text) << "vocab " << tok->vocab_size();
        }
    }
}

TEST(TokenizerShared, LongTextRoundTrip) {
    LOAD_SHARED_OR_SKIP(tok, kLlama2Tokenizer, 32000);
    // About 300 KB: a quadratic merge loop would take minutes here.
    std::string text;
    for (int i = 0; text.size() < 300000; ++i) {
        text += "Verse " + std::to_string(i) + ": In the beginning   was the caf\xC3\xA9 \xE4\xB8\xAD\xF0\x9F\xA6\x99\n";
    }
    const std::vector<int> ids = tok.encode(text, true);
    EXPECT_LT(ids.size(), text.size() / 2);
    EXPECT_EQ(tok.decode(ids), text);
}

TEST(TokenizerShared, InvalidUtf8BecomesByteTokens) {
    LOAD_SHARED_OR_SKIP(tok, kLlama2Tokenizer, 32000);
    // A lone 0xFF after "a": " a" is piece 263, byte 0xFF is piece 258.
    EXPECT_EQ(tok.encode("a\xFF", false), (std::vector<int>{263, 258}));
    EXPECT_EQ(byte_token(tok, 0xFF), 258);
    const std::vector<std::string> invalid = {
        "\xFF",
        "a\x80z",                  // lone continuation byte
        "\xC0\xAF",                // overlong '/'
        "\xED\xA0\x80",            // UTF-16 surrogate
        "\xF4\x90\x80\x80",        // above U+10FFFF
        "cut \xE4\xB8",            // 中 without its last byte, at the end
        "cut \xE4\xB8 in middle",  // ... and in the middle
    };
    for (const std::string& text : invalid) {
        const std::vector<int> ids = tok.encode(text, true);
        EXPECT_EQ(tok.decode(ids), text);
        int byte_tokens = 0;
        for (const int id : ids) byte_tokens += is_byte_piece(tok.piece(id)) ? 1 : 0;
        int high_bytes = 0;
        for (const char c : text) high_bytes += (static_cast<unsigned char>(c) >= 0x80) ? 1 : 0;
        EXPECT_EQ(byte_tokens, high_bytes) << "each invalid byte is one byte token";
    }
    const std::vector<int> cut = tok.encode("\xE4\xB8", false);
    EXPECT_EQ(cut, (std::vector<int>{29871, byte_token(tok, 0xE4), byte_token(tok, 0xB8)}));
}

// ---------------------------------------------------------------------------------------------
// Errors.

TEST(ModelErrors, OutOfRangeIdNamesTheId) {
    const Tokenizer tok = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}});
    const std::vector<int> bad = {id_of(tok, "a"), 12345};
    try {
        (void)tok.decode(bad);
        FAIL() << "decode accepted id 12345";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("12345"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("261"), std::string::npos) << "names the vocab size: " << e.what();
    }
    EXPECT_THROW((void)tok.piece(-1), std::runtime_error);
    EXPECT_THROW((void)tok.score(261), std::runtime_error);
    EXPECT_THROW((void)tok.decode_one(1, -7), std::runtime_error);
    StreamDecoder stream(tok);
    EXPECT_THROW((void)stream.push(261), std::runtime_error);
}

TEST(ModelErrors, InconsistentConstructorInput) {
    EXPECT_THROW(Tokenizer({"<unk>", "<s>", "</s>", "a"}, {0.0f, 0.0f, 0.0f}), std::runtime_error);
    EXPECT_THROW(Tokenizer({"<unk>", "<s>"}, {0.0f, 0.0f}), std::runtime_error);
    EXPECT_THROW(Tokenizer({"<unk>", "<s>", "</s>", "a", "a"}, {0.0f, 0.0f, 0.0f, -1.0f, -2.0f}), std::runtime_error);
    EXPECT_THROW(Tokenizer({"<unk>", "<s>", "</s>", "a"}, {0.0f, 0.0f, 0.0f, std::nanf("")}), std::runtime_error);
}

// Expects load_llama2c to throw a message containing every one of `parts`.
void expect_load_error(const std::string& path, int vocab_size, const std::vector<std::string>& parts) {
    try {
        (void)Tokenizer::load_llama2c(path, vocab_size);
        ADD_FAILURE() << "loading " << path << " did not throw";
    } catch (const std::runtime_error& e) {
        for (const std::string& part : parts) {
            EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "missing '" << part << "' in: " << e.what();
        }
    }
}

TEST(ModelErrors, BadTokenizerFiles) {
    const std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n", "a", "b", " ab"};
    const std::string good = temp_path("good.bin");
    write_llama2c_file(good, pieces, 6);
    const Tokenizer tok = Tokenizer::load_llama2c(good, 6);
    EXPECT_EQ(tok.vocab_size(), 6);
    EXPECT_EQ(tok.piece(5), " ab");
    EXPECT_EQ(tok.score(5), -5.0f);
    // Bytes after the model's vocab_size tokens are ignored, as llama2.c does.
    EXPECT_EQ(Tokenizer::load_llama2c(good, 4).vocab_size(), 4);

    // The model expects more tokens than the file has.
    expect_load_error(good, 7, {good, "truncated at token 6"});

    // Drop the last 12 bytes: all of token 5 (" ab": 4 + 4 + 3 bytes) and the text byte of token 4.
    std::string bytes;
    {
        std::ifstream in(good, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    const std::string cut = temp_path("cut.bin");
    std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 12));
    expect_load_error(cut, 6, {cut, "truncated at token 4", "text (1 bytes)"});

    const std::string tiny = temp_path("tiny.bin");
    std::ofstream(tiny, std::ios::binary).write("\x01", 1);
    expect_load_error(tiny, 6, {tiny, "max_token_length"});

    write_llama2c_file(temp_path("negative.bin"), pieces, 6);
    {
        // Overwrite the length of token 0 (bytes 8..11) with -5.
        std::fstream patch(temp_path("negative.bin"), std::ios::binary | std::ios::in | std::ios::out);
        const std::int32_t negative = -5;
        patch.seekp(8);
        patch.write(reinterpret_cast<const char*>(&negative), 4);
    }
    expect_load_error(temp_path("negative.bin"), 6, {temp_path("negative.bin"), "token 0 has length -5"});

    // A piece longer than the header's max_token_length is a corrupt file.
    const std::string too_long = temp_path("too_long.bin");
    write_llama2c_file(too_long, pieces, 5);
    expect_load_error(too_long, 6, {too_long, "token 2 has length 6"});

    const std::string missing = temp_path("does_not_exist.bin");
    std::filesystem::remove(missing);
    expect_load_error(missing, 6, {missing, "cannot open"});

    // SentencePiece's own .model file (a protobuf) is named for what it is, not called damaged
    const std::string spm = temp_path("tokenizer.model");
    std::ofstream(spm, std::ios::binary).write("\x0a\x0b\x0a\x05<unk>", 9);
    try {
        (void)lmlab::load_tokenizer(spm);
        ADD_FAILURE() << "a .model file loaded";
    } catch (const lmlab::ModelError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(spm + ": a SentencePiece model"), std::string::npos) << what;
        EXPECT_NE(what.find("tokenizer.bin"), std::string::npos) << what;  // what to pass instead
        EXPECT_EQ(what.find("damaged"), std::string::npos) << what;
    }
    std::filesystem::remove(spm);

    for (const std::string& path : {good, cut, tiny, temp_path("negative.bin"), too_long}) {
        std::filesystem::remove(path);
    }
}

// ---------------------------------------------------------------------------------------------
// Merge rules on a hand-built vocabulary. The expected pieces were checked against SentencePiece
// (the same vocabularies built with scripts/tokenizer_ref.py spm_from_llama2c).

TEST(TokenizerMerge, HigherScoreWinsOverLeftmost) {
    const Tokenizer tok = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}, {"b", -3.0f}, {"c", -4.0f},
                                      {"ab", -20.0f}, {"bc", -10.0f}});
    // "ab" is further left but "bc" scores higher, so "bc" is merged and "ab" can no longer be.
    EXPECT_EQ(tok.encode("abc", false), (std::vector<int>{id_of(tok, " "), id_of(tok, "a"), id_of(tok, "bc")}));

    const Tokenizer swapped = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}, {"b", -3.0f}, {"c", -4.0f},
                                          {"ab", -10.0f}, {"bc", -20.0f}});
    EXPECT_EQ(swapped.encode("abc", false),
              (std::vector<int>{id_of(swapped, " "), id_of(swapped, "ab"), id_of(swapped, "c")}));
}

TEST(TokenizerMerge, EqualScoresMergeLeftmostFirst) {
    const Tokenizer tok = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}, {"b", -3.0f}, {"c", -4.0f},
                                      {"ab", -10.0f}, {"bc", -10.0f}, {"aa", -10.0f}});
    EXPECT_EQ(tok.encode("abc", false), (std::vector<int>{id_of(tok, " "), id_of(tok, "ab"), id_of(tok, "c")}));
    EXPECT_EQ(tok.encode("aaa", false), (std::vector<int>{id_of(tok, " "), id_of(tok, "aa"), id_of(tok, "a")}));
}

TEST(TokenizerMerge, MergesChainAndIncludeTheDummyPrefix) {
    const Tokenizer tok = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}, {"b", -3.0f}, {"c", -4.0f},
                                      {" a", -5.0f}, {"ab", -6.0f}, {" ab", -7.0f}, {" abc", -8.0f}});
    // " a" (-5) beats "ab" (-6); then " a"+"b" = " ab", then " ab"+"c" = " abc".
    EXPECT_EQ(tok.encode("abc", true), (std::vector<int>{1, id_of(tok, " abc")}));
    EXPECT_EQ(tok.encode("ab ab", false), (std::vector<int>{id_of(tok, " ab"), id_of(tok, " ab")}));
    EXPECT_EQ(tok.encode("", true), (std::vector<int>{1}));
    EXPECT_EQ(tok.encode("", false), (std::vector<int>{}));
}

TEST(TokenizerMerge, ByteFallbackAndSpecialsNeverFromText) {
    const Tokenizer tok = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}, {"<", -3.0f}, {"s", -4.0f}, {">", -5.0f},
                                      {"<s", -6.0f}, {"a\xC3\xA9", -7.0f}});
    // é (C3 A9) is not a piece: its two bytes become byte tokens 3+0xC3 and 3+0xA9.
    EXPECT_EQ(tok.encode("\xC3\xA9" "a", false), (std::vector<int>{id_of(tok, " "), 3 + 0xC3, 3 + 0xA9, id_of(tok, "a")}));
    // As in SentencePiece, a character that is not a piece still merges into a piece that has it.
    EXPECT_EQ(tok.encode("a\xC3\xA9", false), (std::vector<int>{id_of(tok, " "), id_of(tok, "a\xC3\xA9")}));
    // "<s>" in the text is three characters, never BOS (id 1); "<0x41>" is not byte token 'A'.
    EXPECT_EQ(tok.encode("<s>", false), (std::vector<int>{id_of(tok, " "), id_of(tok, "<s"), id_of(tok, ">")}));
    const std::vector<int> looks_like_byte = tok.encode("<0x41>", false);
    EXPECT_EQ(looks_like_byte.size(), 7u);  // " ", "<", then '0' 'x' '4' '1' as byte tokens, ">"
    EXPECT_EQ(looks_like_byte[2], 3 + '0');
    EXPECT_EQ(tok.decode(looks_like_byte), "<0x41>");
}

TEST(TokenizerDecode, DummyPrefixSpaceAndSpecials) {
    const Tokenizer tok = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}, {" a", -3.0f}});
    const int space_a = id_of(tok, " a");
    EXPECT_EQ(tok.decode(std::vector<int>{1, space_a, space_a, 2}), "a a");
    EXPECT_EQ(tok.decode(std::vector<int>{space_a, space_a}), "a a");  // sequence start counts as BOS
    EXPECT_EQ(tok.decode(std::vector<int>{0, space_a}), " a");          // after <unk>: keep the space
    EXPECT_EQ(tok.decode_one(1, space_a), "a");
    EXPECT_EQ(tok.decode_one(space_a, space_a), " a");
    EXPECT_EQ(tok.decode_one(-1, space_a), " a");
    EXPECT_EQ(tok.decode_one(space_a, 3 + 0x41), "A");
    EXPECT_EQ(tok.decode_one(1, 1), "");
    EXPECT_EQ(tok.decode_one(1, 2), "");
}

// ---------------------------------------------------------------------------------------------
// Streaming decode.

TEST(StreamDecoder, HoldsBackSplitCharacterUntilComplete) {
    const Tokenizer tok = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}, {" a", -3.0f}, {"b", -4.0f}});
    StreamDecoder stream(tok);
    EXPECT_EQ(stream.push(1), "");
    EXPECT_EQ(stream.push(id_of(tok, " a")), "a");
    EXPECT_EQ(stream.push(3 + 0xE4), "");  // 中 = E4 B8 AD
    EXPECT_EQ(stream.push(3 + 0xB8), "");
    EXPECT_EQ(stream.push(3 + 0xAD), "\xE4\xB8\xAD");
    EXPECT_EQ(stream.push(id_of(tok, "b")), "b");
    EXPECT_EQ(stream.push(3 + 0xF0), "");  // 🦙 = F0 9F A6 99
    EXPECT_EQ(stream.push(3 + 0x9F), "");
    EXPECT_EQ(stream.push(3 + 0xA6), "");
    EXPECT_EQ(stream.push(3 + 0x99), "\xF0\x9F\xA6\x99");
    EXPECT_EQ(stream.flush(), "");
}

TEST(StreamDecoder, InvalidAndIncompleteBytesBecomeReplacementCharacters) {
    const Tokenizer tok = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}});
    const std::string fffd = "\xEF\xBF\xBD";
    StreamDecoder stream(tok);
    EXPECT_EQ(stream.push(3 + 0xFF), fffd);                  // can never start a character
    EXPECT_EQ(stream.push(3 + 0xE4), "");                    // may start 中 ...
    EXPECT_EQ(stream.push(id_of(tok, "a")), fffd + "a");     // ... but "a" ends it
    EXPECT_EQ(stream.push(3 + 0xE4), "");
    EXPECT_EQ(stream.push(3 + 0xB8), "");
    EXPECT_EQ(stream.flush(), fffd + fffd);                  // incomplete at the end: one per byte
    EXPECT_EQ(stream.flush(), "");
}

TEST(StreamDecoder, MatchesDecodeOnRealVocabulary) {
    LOAD_SHARED_OR_SKIP(tok, kLlama2Tokenizer, 32000);
    for (const std::string& text : round_trip_texts()) {
        const std::vector<int> ids = tok.encode(text, true);
        StreamDecoder stream(tok);
        std::string streamed;
        for (const int id : ids) streamed += stream.push(id);
        streamed += stream.flush();
        EXPECT_EQ(streamed, tok.decode(ids));
        EXPECT_EQ(streamed, text);
    }
}

}  // namespace

TEST(StreamDecoder, AfterAPromptKeepsTheSpaceBeforeTheFirstNewWord) {
    // Generation streams only the new tokens: started after the prompt's last id (not after BOS),
    // the dummy-prefix rule must not eat the space of " a".
    const Tokenizer tok = tiny_vocab({{" ", -1.0f}, {"a", -2.0f}, {" a", -3.0f}, {"b", -4.0f}});
    StreamDecoder after_prompt(tok, id_of(tok, "b"));
    EXPECT_EQ(after_prompt.push(id_of(tok, " a")), " a");
    StreamDecoder after_bos(tok);
    EXPECT_EQ(after_bos.push(id_of(tok, " a")), "a");
}

// ---------------------------------------------------------------------------------------------
// The default model's own vocabulary (16384 SentencePiece pieces trained on the KJV Bible),
// stored in golden/models/tiny-llama.h5 by the build: the round trip holds without ../shared.

TEST(TokenizerDefaultVocab, RoundTripAndNoSpecialIdsFromText) {
    const std::string path = std::string(LMLAB_SOURCE_DIR) + "/golden/models/tiny-llama.h5";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not found: build the `golden` target first";
    lmlab::Vocabulary v = lmlab::load_vocabulary_hdf5(path);
    const Tokenizer tok(std::move(v.pieces), std::move(v.scores));
    ASSERT_EQ(tok.vocab_size(), 16384);
    for (const std::string& text : round_trip_texts()) {
        const std::vector<int> ids = tok.encode(text, true);
        for (std::size_t i = 1; i < ids.size(); ++i) EXPECT_GE(ids[i], 3) << "special id produced from text: " << text;
        EXPECT_EQ(tok.decode(ids), text);
    }
    // a frequent KJV word is a single piece after the dummy prefix: " the"
    const std::vector<int> the = tok.encode("the", false);
    ASSERT_EQ(the.size(), 1u);
    EXPECT_EQ(tok.piece(the[0]), " the");
}

// ---------------------------------------------------------------------------------------------
// The one decoding rule every command uses (TextTokenizer::decode with a context), on the three
// kinds: a SentencePiece vocabulary, GPT-2's byte-level BPE, Qwen's. Splitting a text anywhere, the
// continuation decoded after its context joins the decoded prefix into the whole text.

namespace {
void expect_continuations_join(const lmlab::TextTokenizer& tok, const std::vector<int>& ids, const std::string& kind) {
    const std::string whole = tok.decode(ids);
    std::size_t checked = 0;
    for (std::size_t cut = 1; cut < ids.size(); ++cut) {
        const std::span<const int> head = std::span<const int>(ids).first(cut), tail = std::span<const int>(ids).subspan(cut);
        const std::string prefix = tok.decode(head);
        if (whole.compare(0, prefix.size(), prefix) != 0) continue;  // a cut inside a character (U+FFFD on both sides)
        EXPECT_EQ(prefix + tok.decode(tail, head), whole) << kind << ", cut at " << cut;
        ++checked;
    }
    EXPECT_GT(checked, ids.size() / 2) << kind;
}
}  // namespace

TEST(TextDecode, SentencePieceSpacesAfterBosOnly) {
    const Tokenizer sp = tiny_vocab({{" ", -1.0f}, {"In", -2.0f}, {" In", -2.5f}, {" the", -3.0f}, {" beginning", -4.0f}});
    const lmlab::TextTokenizer tok(sp);
    const std::vector<int> ids = {1, id_of(sp, " In"), id_of(sp, " the"), id_of(sp, " beginning")};
    EXPECT_EQ(tok.decode(ids), "In the beginning");             // after BOS: no leading space
    EXPECT_EQ(tok.decode(std::span<const int>(ids).subspan(1)), "In the beginning");  // the start of a text: neither
    EXPECT_EQ(tok.decode(std::span<const int>(ids).subspan(2), std::span<const int>(ids).first(2)),
              " the beginning");                                // a continuation keeps its first space
    expect_continuations_join(tok, ids, "sentencepiece");
    // an id past the vocabulary (a padded embedding's row) prints as <id N>, in place
    const std::vector<int> padded = {id_of(sp, " the"), sp.vocab_size() + 7};
    EXPECT_EQ(tok.decode(padded), "the<id " + std::to_string(sp.vocab_size() + 7) + ">");
}

TEST(TextDecode, ByteLevelContinuationsJoin) {
    for (const char* rel : {"tokenizers/gpt2", "tokenizers/qwen/tokenizer.json"}) {
        const std::string path = shared_dir() + "/" + rel;
        if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not found; set LMLAB_SHARED to run this";
        const lmlab::TextTokenizer tok = lmlab::load_tokenizer(path);
        const std::string text = "Hello, my name is Ada. 你好 — it's 2024!";
        const std::vector<int> ids = tok.encode(text);
        EXPECT_EQ(tok.decode(ids), text) << rel;
        expect_continuations_join(tok, ids, rel);
    }
}

TEST(TextPrompt, Llama3PromptAndChatAsTransformersMakesThem) {
    // ids from transformers 4.46.3 (tokenizer(text), apply_chat_template(add_generation_prompt=True))
    // with ../shared/tokenizers/llama3; the tokenizer.llama3 stage checks many more texts
    const std::string path = shared_dir() + "/tokenizers/llama3/tokenizer.json";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not found; set LMLAB_SHARED to run this";
    const lmlab::TextTokenizer tok = lmlab::load_tokenizer(path);
    EXPECT_EQ(tok.encode_prompt("Hello world", false), (std::vector<int>{128000, 9906, 1917}));
    EXPECT_EQ(tok.encode_chat("Hello world"),
              (std::vector<int>{128000, 128006, 882, 128007, 271, 9906, 1917, 128009, 128006, 78191, 128007, 271}));
    // the template trims the user's text (Jinja's trim: Python's str.strip())
    EXPECT_EQ(tok.encode_prompt("  Hi there \n", false), (std::vector<int>{128000, 220, 21694, 1070, 720}));
    EXPECT_EQ(tok.encode_chat("  Hi there \n"),
              (std::vector<int>{128000, 128006, 882, 128007, 271, 13347, 1070, 128009, 128006, 78191, 128007, 271}));
    EXPECT_EQ(tok.encode_chat("\u3000Hi there\u2028\t"), tok.encode_chat("Hi there"));
    // a chat turn ends at <|eot_id|>; a text at <|end_of_text|>
    const std::vector<int> stops = tok.stop_ids();
    EXPECT_NE(std::find(stops.begin(), stops.end(), 128009), stops.end());
    EXPECT_NE(std::find(stops.begin(), stops.end(), 128001), stops.end());
    // a "<|eot_id|>" the user types stays text in lmlab's chat prompt
    const std::vector<int> typed = tok.encode_chat("a<|eot_id|>b");
    EXPECT_EQ(std::count(typed.begin(), typed.end(), 128009), 1);
    // a conversation (lmlab serve's /v1/chat/completions): each message trimmed, BOS once
    const std::vector<lmlab::TextTokenizer::ChatMessage> conversation = {
        {"system", " Be brief. "}, {"user", "Hello world"}, {"assistant", "Hi!\n"}, {"user", "2024?"}};
    EXPECT_EQ(tok.encode_chat(conversation),
              (std::vector<int>{128000, 128006, 9125, 128007, 271, 3513, 10015, 13, 128009, 128006, 882, 128007,
                                271, 9906, 1917, 128009, 128006, 78191, 128007, 271, 13347, 0, 128009, 128006,
                                882, 128007, 271, 2366, 19, 30, 128009, 128006, 78191, 128007, 271}));
}
