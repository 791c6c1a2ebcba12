// Text <-> token ids for whichever tokenizer a model comes with:
//   - SentencePiece-style BPE with scores (LLaMA, llama2.c's tokenizer.bin, our HDF5 vocabularies): Tokenizer
//   - byte-level BPE with a merge list (GPT-2's encoder.json + vocab.bpe, Hugging Face tokenizer.json,
//     llm.c's decode-only gpt2_tokenizer.bin): BpeTokenizer
// One small wrapper over the two (a variant, not a class hierarchy) so that `lmlab generate`,
// `lmlab tokenize` and the tokenizer stages do not care which one they hold.
#pragma once

#include <optional>
#include <span>
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
    // (id 1); GPT-2 has no BOS (Hugging Face's GPT-2 adds nothing); a byte-level vocabulary whose
    // file says to add one (set_prompt_bos) starts with it. allow_special: byte-level BPE
    // recognises "<|endoftext|>" and other special tokens in the text (else they are plain text).
    std::vector<int> encode_prompt(std::string_view text, bool allow_special) const;
    // The id a byte-level vocabulary puts before a prompt (a GGUF file's add_bos_token and
    // bos_token_id); by default none.
    void set_prompt_bos(int id) { prompt_bos_ = id; }
    // Exactly the text's ids, no BOS (what the golden fixtures hold); allow_special as above.
    std::vector<int> encode(std::string_view text, bool allow_special = false) const;
    // The prompt of a conversation in the vocabulary's chat template, as Hugging Face's
    // apply_chat_template(messages, add_generation_prompt=True) renders it with that template's
    // tokenizer_config.json (this engine does not run Jinja: it writes these two), for what
    // chat_refusal lets through:
    //   ChatML   (Qwen: ../shared/tokenizers/qwen, the one the Qwen2 test model carries) each message
    //            <|im_start|>{role}\n{content}<|im_end|>\n, then <|im_start|>assistant\n. No system
    //            message is added when none is given (Qwen2-Instruct's own template adds "You are a
    //            helpful assistant."; the Qwen2.5/3 template here does not).
    //   Llama 3  <|begin_of_text|>, each message <|start_header_id|>{role}<|end_header_id|>\n\n{content,
    //            trimmed}<|eot_id|>, then <|start_header_id|>assistant<|end_header_id|>\n\n (the answer
    //            ends with <|eot_id|>).
    // The special tokens are the template's only: a "<|im_end|>" or "<|eot_id|>" typed in a content
    // stays plain text (transformers would make it the special token and let a user end a turn). Each
    // span between two special tokens is encoded whole, as Hugging Face splits the rendered text at
    // its special tokens ("user\n\nHi" in ChatML: one "\n\n\n" token, not "\n" then "\n\n").
    // Throws ModelError when the vocabulary has neither template's tokens, or naming the message
    // chat_refusal objects to.
    struct ChatMessage {
        std::string role, content;
    };
    std::vector<int> encode_chat(std::span<const ChatMessage> messages) const;
    std::vector<int> encode_chat(std::string_view user_text) const;  // one user turn (generate --chat)
    // Why encode_chat cannot render a conversation as the templates would, or nullopt: no messages; a
    // role other than system, user, assistant ("tool": no tool calling); an assistant message last
    // (Qwen's template would render it as an open reasoning turn to continue); an assistant content
    // with "</think>" (Qwen's template cuts reasoning traces out by rules this engine does not follow).
    struct ChatRefusal {
        std::size_t index;  // of the message
        std::string field;  // "role" or "content" ("" when there is no message)
        std::string why;
    };
    static std::optional<ChatRefusal> chat_refusal(std::span<const ChatMessage> messages);
    // The one rule by which every command turns ids into text: the text of `ids` as they continue
    // `context` (the tokens before them; empty: the start of a text). SentencePiece drops a piece's
    // leading space (its word-boundary marker) only at the start of a text or right after BOS, so
    // "In the beginning" keeps its spaces and a continuation keeps the space before its first word;
    // byte-level BPE is the plain concatenation of the tokens' bytes. Bytes that never complete a
    // UTF-8 character become U+FFFD; an id past the tokenizer's vocabulary (a padded embedding's
    // row) is written "<id N>". decode(prompt + new) == decode(prompt) + decode(new, prompt) whenever
    // the prompt ends on a whole character.
    std::string decode(std::span<const int> ids, std::span<const int> context = {}) const;
    std::string piece(int id) const;  // one token's text (raw bytes for byte-level BPE)
    int vocab_size() const;
    // The ids that end a generation: EOS and BOS (llama2.c's end-of-story marker), or GPT-2's
    // <|endoftext|>, Qwen's <|im_end|> and Llama 3's <|end_of_text|> and <|eot_id|> (the end of a
    // chat turn) when the vocabulary has them.
    std::vector<int> stop_ids() const;
    bool is_byte_level() const { return std::holds_alternative<BpeTokenizer>(impl_); }

    // Streaming decode (decode()'s rule, as ids arrive): text safe to print now, bytes held back
    // until they form valid UTF-8. context: the tokens before the first pushed one.
    class Stream {
    public:
        Stream(const TextTokenizer& tok, std::span<const int> context);
        std::string push(int id);
        std::string flush();

    private:
        const TextTokenizer* tok_;
        std::variant<StreamDecoder, BpeStreamDecoder> impl_;
    };

private:
    std::variant<Tokenizer, BpeTokenizer> impl_;
    std::optional<int> prompt_bos_;
};

// Loads a tokenizer by what `path` is:
//   a directory           tokenizer.json, or vocab.json + merges.txt (Hugging Face), or encoder.json + vocab.bpe (OpenAI)
//   *.json                a Hugging Face tokenizer.json
//   *.h5 / *.hdf5         the vocabulary stored in an lmlab model file
//   *.gguf                the tokenizer in a GGUF file's metadata (load_tokenizer_gguf)
//   *.model               refused: SentencePiece's protobuf, not read here (its tokenizer.bin is)
//   a file starting with llm.c's tokenizer magic (20240328): llm.c's gpt2_tokenizer.bin (decode only)
//   anything else         a llama2.c tokenizer.bin (vocab_size tokens; 0: as many as the file holds)
// Throws ModelError naming the path and what was expected there.
TextTokenizer load_tokenizer(const std::string& path, int vocab_size = 0);

// The tokenizer stored in a GGUF file's metadata (tokenizer.ggml.*): model "llama" (SentencePiece
// pieces and scores, byte fallback; BOS 1 and EOS 2, as this engine's SentencePiece tokenizer has
// them) or "gpt2" (byte-level BPE with its merges, the pre-tokenizer named by tokenizer.ggml.pre);
// any other model or pre-tokenizer is refused by name. Throws ModelError naming the file and key.
TextTokenizer load_tokenizer_gguf(const std::string& path);

// The tokenizer that comes with a model: --tokenizer when given; else the vocabulary stored in an
// HDF5 model file; else the tokenizer files in a Hugging Face model directory; else, beside a
// checkpoint file, llama2.c's tok<vocab>.bin / tokenizer.bin or llm.c's gpt2_tokenizer.bin.
// nullopt when none is found. Every id of the file is read (a llama2.c tokenizer.bin is not cut to
// the model's vocabulary): check_tokenizer_fits says whether it belongs to the model.
std::optional<TextTokenizer> find_tokenizer(const Model& m, const std::string& tokenizer_path);

// Does tok belong to model m? (`what` names the tokenizer in messages.) Throws ModelError, with both
// numbers, when the tokenizer has more ids than the model has embedding rows (those ids would index
// past the model), when a SentencePiece vocabulary has fewer (llama2.c's files match the model
// exactly), or when an end-of-sequence id the model names (config.json) is not one of its ids.
// A byte-level vocabulary smaller than the embedding is a padded embedding (Qwen: 151936 rows for
// 151665 ids): allowed; the returned note says so ("" when the sizes match).
std::string check_tokenizer_fits(const Model& m, const TextTokenizer& tok, const std::string& what);

// The ids that end a generation of model m: the tokenizer's stop ids (tok may be null) and
// config.json's eos_token_id (Model::eos_token_ids).
std::vector<int> generation_stop_ids(const Model& m, const TextTokenizer* tok);

}  // namespace lmlab
