// Text <-> token ids for whichever tokenizer a model comes with:
//   - SentencePiece-style BPE with scores (LLaMA, llama2.c's tokenizer.bin, our HDF5 vocabularies): Tokenizer
//   - byte-level BPE with a merge list (GPT-2's encoder.json + vocab.bpe, Hugging Face tokenizer.json,
//     llm.c's decode-only gpt2_tokenizer.bin): BpeTokenizer
// One small wrapper over the two (a variant, not a class hierarchy) so that `lmlab generate`,
// `lmlab tokenize` and the tokenizer stages do not care which one they hold.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "model/model.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/tokenizer_bpe.h"

namespace lmlab {

class TextTokenizer {
public:
    explicit TextTokenizer(Tokenizer t) : impl_(std::move(t)) {}
    explicit TextTokenizer(BpeTokenizer t) : impl_(std::move(t)) {}

    // A prompt as the model saw such text in training: SentencePiece vocabularies start with BOS
    // (id 1); GPT-2 has no BOS (Hugging Face's GPT-2 adds nothing). allow_special: byte-level BPE
    // recognises "<|endoftext|>" and other special tokens in the text (else they are plain text).
    std::vector<int> encode_prompt(std::string_view text, bool allow_special) const;
    // Exactly the text's ids, no BOS (what the golden fixtures hold); allow_special as above.
    std::vector<int> encode(std::string_view text, bool allow_special = false) const;
    // The ChatML prompt of one user turn (Qwen's chat template, tokenizer_config.json):
    //   <|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n
    // Throws ModelError when the vocabulary has no <|im_start|> / <|im_end|>.
    std::vector<int> encode_chat(std::string_view user_text) const;
    std::string decode(std::span<const int> ids) const;
    std::string piece(int id) const;  // one token's text (raw bytes for byte-level BPE)
    int vocab_size() const;
    // The ids that end a generation: EOS and BOS (llama2.c's end-of-story marker), or GPT-2's
    // <|endoftext|>, and Qwen's <|im_end|> (the end of a chat turn) when the vocabulary has it.
    std::vector<int> stop_ids() const;
    bool is_byte_level() const { return std::holds_alternative<BpeTokenizer>(impl_); }

    // Streaming decode: text safe to print as ids arrive (held back until it is valid UTF-8).
    class Stream {
    public:
        // prev_id: the token before the first pushed one (SentencePiece drops a leading space after BOS only).
        Stream(const TextTokenizer& tok, int prev_id);
        std::string push(int id);
        std::string flush();

    private:
        std::variant<StreamDecoder, BpeStreamDecoder> impl_;
    };

private:
    std::variant<Tokenizer, BpeTokenizer> impl_;
};

// Loads a tokenizer by what `path` is:
//   a directory           tokenizer.json, or vocab.json + merges.txt (Hugging Face), or encoder.json + vocab.bpe (OpenAI)
//   *.json                a Hugging Face tokenizer.json
//   *.h5 / *.hdf5         the vocabulary stored in an lmlab model file
//   a file starting with llm.c's tokenizer magic (20240328): llm.c's gpt2_tokenizer.bin (decode only)
//   anything else         a llama2.c tokenizer.bin (vocab_size tokens; 0: as many as the file holds)
// Throws ModelError naming the path and what was expected there.
TextTokenizer load_tokenizer(const std::string& path, int vocab_size = 0);

// The tokenizer that comes with a model: --tokenizer when given; else the vocabulary stored in an
// HDF5 model file; else the tokenizer files in a Hugging Face model directory; else, beside a
// checkpoint file, llama2.c's tok<vocab>.bin / tokenizer.bin or llm.c's gpt2_tokenizer.bin.
// nullopt when none is found.
std::optional<TextTokenizer> find_tokenizer(const Model& m, const std::string& tokenizer_path);

// The ids that end a generation of model m: the tokenizer's stop ids (tok may be null) and
// config.json's eos_token_id (Model::eos_token_ids).
std::vector<int> generation_stop_ids(const Model& m, const TextTokenizer* tok);

}  // namespace lmlab
