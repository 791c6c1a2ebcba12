// SentencePiece-compatible BPE tokenizer with byte fallback, in llama2.c's vocabulary format.
//
// The vocabulary is a list of pieces with float scores. Pieces write the word-boundary marker as a
// plain ' ' where SentencePiece writes U+2581 '▁'. Ids 0, 1 and 2 are <unk>, BOS and EOS; the 256
// byte pieces "<0x00>".."<0xFF>" are found by their text, wherever they sit in the vocabulary.
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lmlab {

class Tokenizer {
public:
    // Build from pieces and scores (same length). Throws ModelError on inconsistent input:
    // different lengths, fewer than 3 pieces, a non-finite score, or the same piece text twice
    // among the pieces that text can be encoded to (the lookup would be ambiguous).
    Tokenizer(std::vector<std::string> pieces, std::vector<float> scores);

    // llama2.c tokenizer.bin: int32 max_token_length, then per token: float32 score, int32 len,
    // len bytes (little-endian). vocab_size comes from the model; bytes after the last token are
    // ignored, as llama2.c does. Throws ModelError naming the file and what is wrong.
    static Tokenizer load_llama2c(const std::string& path, int vocab_size);

    int vocab_size() const;
    // Throws ModelError naming the id and the vocabulary size when id is out of range.
    const std::string& piece(int id) const;
    float score(int id) const;
    int bos_id() const { return 1; }
    int eos_id() const { return 2; }

    // Encode exactly as SentencePiece's BPE model does (see tokenizer.cpp for the details):
    // optional BOS, a dummy-prefix ' ' when the text is non-empty, one symbol per UTF-8 code point
    // (one per byte of invalid UTF-8), then merge the adjacent pair whose concatenation is a piece
    // with the highest score (ties: leftmost) until no pair is a piece. Symbols that are not
    // pieces become byte tokens. Special pieces (ids 0..2) and byte pieces are never matched
    // against the text ("<s>" in the text is three characters). O(n log n), so whole books can be
    // encoded in one call.
    std::vector<int> encode(std::string_view text, bool add_bos) const;

    // Concatenate the pieces: byte pieces give their raw byte, ids 0..2 give nothing, and the
    // leading ' ' (the dummy prefix) of a piece is dropped when it starts the sequence or directly
    // follows BOS. So decode(encode(t, b)) == t for any byte string t whenever ' ' is a piece
    // (it is in every real vocabulary). Throws on an out-of-range id.
    std::string decode(std::span<const int> ids) const;

    // Text of one token given the previous one (llama2.c's decode(prev, token)): the leading ' '
    // is dropped when prev_id is BOS. prev_id is only compared with BOS, so -1 means "none".
    std::string decode_one(int prev_id, int id) const;

private:
    // Hash that accepts std::string_view, so encode can look up slices of the text without
    // building a std::string for every candidate pair.
    struct StringHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };

    // Throws the out-of-range error when id is not a valid token id.
    void check_id(int id) const;
    // Appends the byte tokens of every byte of text (unk when a byte piece is missing).
    void append_byte_tokens(std::string_view text, std::vector<int>& ids) const;

    std::vector<std::string> pieces_;
    std::vector<float> scores_;
    // Pieces that text may be encoded to: everything except ids 0..2 and byte pieces.
    std::unordered_map<std::string, int, StringHash, std::equal_to<>> text_piece_ids_;
    // Token id of "<0xNN>" for each byte value; <unk> (0) when the vocabulary lacks that piece.
    std::array<int, 256> byte_token_ids_{};
    // For each id: the byte value of a byte piece, or -1 for any other piece.
    std::vector<int> byte_value_of_id_;
};

// Streaming decode for generation: push ids one by one and get back text that is safe to print
// now. Bytes from byte tokens are held back until they form complete, valid UTF-8; invalid bytes
// are replaced by U+FFFD each, so everything returned is valid UTF-8. Pushing every id of a
// sequence and then calling flush() gives the same text as Tokenizer::decode when that text is
// valid UTF-8.
class StreamDecoder {
public:
    // The tokenizer must outlive the decoder.
    // prev_id: the token before the first one pushed. BOS (the default) drops the first piece's
    // dummy-prefix space; after a prompt, pass the prompt's last id so that the space between
    // the prompt and the first new word is kept.
    explicit StreamDecoder(const Tokenizer& tok, int prev_id = 1);
    // Throws ModelError on an out-of-range id.
    std::string push(int id);
    // Returns the held-back bytes, each replaced by U+FFFD (they never completed a character).
    std::string flush();

private:
    const Tokenizer* tok_;
    int prev_id_;          // starts as BOS so the first piece loses its dummy-prefix space
    std::string pending_;  // bytes of an unfinished UTF-8 sequence
};

}  // namespace lmlab
