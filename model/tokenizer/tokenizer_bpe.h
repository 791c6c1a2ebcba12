// Byte-level BPE tokenizer, as GPT-2, tiktoken and Hugging Face `tokenizers` do it (GPT-2, Qwen,
// Llama 3 and most current open models), plus llm.c's decode-only vocabulary file.
//
// How a text becomes ids (encode):
//   1. Added tokens ("<|im_start|>", "<|endoftext|>", ...) are cut out of the raw text first and
//      become their ids directly; they are never split or normalised.
//   2. Each remaining stretch is normalised (Unicode NFC for Qwen; nothing for GPT-2).
//   3. Pre-tokenisation: a regex (PCRE2) cuts it into pieces — words with their leading space,
//      runs of digits, punctuation, whitespace. BPE never merges across two pieces.
//      Analogy: like splitting a log line into fields before you intern each field.
//   4. Each piece's UTF-8 bytes start as one symbol per byte (the 256 byte tokens, so any byte
//      string can be encoded: no <unk>), then the merge list is applied: repeatedly join the
//      adjacent pair with the lowest merge rank (earliest in the list) until no pair has a rank.
//      Analogy: a dictionary compressor whose dictionary was learnt offline, applied greedily in
//      the order it was learnt.
// Vocabulary files write each token's bytes as text through GPT-2's bytes_to_unicode table
// (byte 0x20 ' ' is "Ġ", 0x0A '\n' is "Ċ", printable Latin-1 is itself) so that JSON can hold
// them; this class stores and returns the raw bytes.
//
// Decoding concatenates the tokens' raw bytes. A token may end in the middle of a UTF-8
// character (emoji and CJK are often split over 2-4 byte tokens), so printing token by token
// needs BpeStreamDecoder.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/model.h"  // ModelError

namespace lmlab {

// Every error of this tokenizer is a ModelError (the model layer's one error type: a bad tokenizer
// file is a bad model input like any other): unreadable or inconsistent files (the message names
// the file, what was expected and what was found), invalid UTF-8 input, out-of-range ids.

class BpeTokenizer {
public:
    // OpenAI's GPT-2 files: encoder.json (token string -> id) and vocab.bpe (a "#version" line,
    // then one merge "left right" per line, in rank order). Pre-tokenised with GPT-2's regex;
    // "<|endoftext|>" (50256) is the special token.
    static BpeTokenizer load_gpt2(const std::string& encoder_json_path, const std::string& vocab_bpe_path);

    // A Hugging Face tokenizer.json whose model is byte-level BPE. Accepted (anything else is
    // refused with an error naming the field and its value, rather than encoding differently):
    //   normalizer     null, {"type":"NFC"}, or a Sequence of NFC only
    //   pre_tokenizer  ByteLevel (add_prefix_space false; use_regex true = GPT-2's regex), or
    //                  Sequence[Split{Regex or String, behavior Isolated, invert false},
    //                           ByteLevel{add_prefix_space false, use_regex false}]  (Qwen, Llama 3)
    //   decoder        ByteLevel
    //   model          BPE; merges as "a b" strings or ["a","b"] pairs; ignore_merges honoured;
    //                  no dropout, byte_fallback, continuing_subword_prefix or end_of_word_suffix
    //   added_tokens   any (special or not); lstrip, rstrip and single_word must be false
    //   post_processor the special tokens a TemplateProcessing (alone or in a Sequence) puts before
    //                  a single sequence become prompt_prefix() (Llama 3: <|begin_of_text|>); encode()
    //                  never adds them. Truncation and padding are ignored.
    static BpeTokenizer load_hf_json(const std::string& tokenizer_json_path);

    // llm.c's gpt2_tokenizer.bin: 256 little-endian uint32 (magic 20240328, version 1 or 2,
    // vocab_size, eot id for version 2 — version 1 means 50256), then per token a uint8 length
    // (1..255) and that many raw bytes. There are no merges in it, so such a tokenizer can only
    // decode; encode() throws.
    static BpeTokenizer load_llmc(const std::string& gpt2_tokenizer_bin_path);

    // A vocabulary given as lists, as a GGUF file holds it (tokenizer.ggml.tokens, .merges,
    // .token_type; llama.cpp's tokenizer.ggml.model "gpt2"): tokens in GPT-2's byte-to-unicode form
    // (added tokens as their raw text), merges "left right" in rank order, token type 3 (control)
    // an added special token and 4 (user-defined) an added one. pre is llama.cpp's name of the
    // pre-tokenizer (tokenizer.ggml.pre): "gpt-2" and "default" (GPT-2's regex), "qwen2" (Qwen2's
    // Split regex, NFC), "llama-bpe" (Llama 3's regex, ignore_merges); any other is refused by name,
    // never guessed (a wrong regex encodes differently). `where` names the file in messages.
    static BpeTokenizer from_lists(const std::vector<std::string>& tokens, const std::vector<std::string>& merges,
                                   const std::vector<double>& token_types, const std::string& pre, const std::string& where);

    BpeTokenizer(BpeTokenizer&&) noexcept;
    BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
    ~BpeTokenizer();

    // Text -> ids, no BOS/EOS added. allow_special true: added tokens in the text become their
    // ids (HF's default; tiktoken's allowed_special="all"). false: tokens marked special are
    // encoded as plain text, so user input cannot inject "<|im_end|>" (tiktoken's
    // disallowed_special=(); HF's encode_special_tokens=True, which — like this — still matches
    // added tokens that are not marked special, e.g. Qwen's "<tool_call>").
    // Throws ModelError on invalid UTF-8 (naming the byte offset), or when loaded by
    // load_llmc. Thread-safe (const, no shared mutable state); O(n log n) in the text length.
    std::vector<int> encode(std::string_view text, bool allow_special) const;

    // Ids -> the concatenation of the tokens' raw bytes, special tokens included (their text).
    // The result may be invalid UTF-8 where the ids cut a character. Throws on an unknown id.
    std::string decode(std::span<const int> ids) const;

    // Largest id + 1, added tokens included (Qwen: 151669; GPT-2: 50257).
    int vocab_size() const { return static_cast<int>(pieces_.size()); }
    // Raw bytes of one token (for --pieces display). Throws on an unknown id.
    std::string piece(int id) const;
    // Id of the token whose text (raw bytes) is token_text; added tokens first. E.g.
    // token_id("<|im_end|>") == 151645 for Qwen. Vocabulary strings that are not written in
    // GPT-2's byte table (unreachable by encoding) are not found.
    std::optional<int> token_id(std::string_view token_text) const;
    // True for added tokens marked special (and llm.c's eot token). False for unknown ids.
    bool is_special(int id) const;
    // False when loaded from llm.c's file (no merges, decode only).
    bool can_encode() const { return can_encode_; }
    // The end-of-text id when the file names one: "<|endoftext|>" for GPT-2 and tokenizer.json
    // files that have it, the header's eot for llm.c.
    std::optional<int> eot_id() const { return eot_id_; }
    // The ids tokenizer.json's post-processor puts before a text (Llama 3: [128000]); empty: none.
    const std::vector<int>& prompt_prefix() const { return prompt_prefix_; }

private:
    BpeTokenizer();

    struct Regex;  // a compiled PCRE2 pattern (tokenizer_bpe.cpp)

    // Hash that accepts std::string_view, so lookups do not build a std::string.
    struct StringHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    using StringMap = std::unordered_map<std::string, int, StringHash, std::equal_to<>>;

    struct AddedToken {
        std::string content;  // raw text, matched exactly
        int id;
        bool special;
        bool normalized;  // matched in the normalised text instead of the raw text (HF's flag)
    };
    struct Merge {
        std::uint32_t rank;  // position in the merge list: lower merges first
        int merged_id;
    };

    // Throws the unknown-id error.
    void check_id(int id) const;
    // Assigns id to raw bytes with its Kind; throws on a duplicate id. `where` names the file.
    void set_piece(int id, std::string bytes, const std::string& where, std::uint8_t kind);
    void add_merge(int left, int right, int merged, const std::string& where, const std::string& what);
    void finish_vocab(const std::string& where);

    // Encodes a stretch with no added tokens of the given kind left: normalise, split, BPE.
    void encode_text(std::string_view text, bool normalized_pass, bool allow_special, std::vector<int>& ids,
                     std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>>& cache) const;
    // Cuts the added tokens out of text (leftmost-longest, as HF's Aho-Corasick does);
    // stretches between them go to encode_text.
    void split_added(std::string_view text, bool normalized_pass, bool allow_special, std::vector<int>& ids,
                     std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>>& cache) const;
    // BPE of one pre-token (raw bytes); appends its ids.
    void bpe(std::string_view piece, std::vector<int>& ids) const;

    std::vector<std::string> pieces_;   // [vocab_size] raw bytes of each id
    std::vector<std::uint8_t> kind_;    // [vocab_size] Kind (tokenizer_bpe.cpp): unused, regular, added, special, other
    StringMap regular_ids_;             // raw bytes -> id of the BPE vocabulary (not added tokens)
    std::array<int, 256> byte_ids_{};   // id of each single-byte token, -1 when the vocab lacks it
    // (left id, right id) packed in 64 bits -> rank and result.
    std::unordered_map<std::uint64_t, Merge> merges_;
    std::vector<AddedToken> added_;
    std::array<bool, 256> added_first_byte_{};  // some added token starts with this byte
    std::unique_ptr<Regex> split_;      // null: each stretch is one pre-token
    bool nfc_ = false;
    bool ignore_merges_ = false;        // HF: a pre-token that is itself in the vocab is not merged
    bool can_encode_ = true;
    std::optional<int> eot_id_;
    std::vector<int> prompt_prefix_;
};

// Streaming decode for generation: push ids one by one and get back text that is safe to print
// now. Bytes are held back until they form a complete UTF-8 character; bytes that can never
// become valid UTF-8 are replaced by U+FFFD each, so everything returned is valid UTF-8. For
// ids whose decode() is valid UTF-8, the pushes plus flush() concatenate to decode(ids).
class BpeStreamDecoder {
public:
    // The tokenizer must outlive the decoder.
    explicit BpeStreamDecoder(const BpeTokenizer& tok) : tok_(&tok) {}
    // Throws ModelError on an unknown id (and the pending bytes are kept).
    std::string push(int id);
    // The held-back bytes of an unfinished character, each replaced by U+FFFD; then empty.
    std::string flush();

private:
    const BpeTokenizer* tok_;
    std::string pending_;  // bytes of an unfinished UTF-8 sequence
};

}  // namespace lmlab
