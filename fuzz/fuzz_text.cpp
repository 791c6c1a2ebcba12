// Encoding and decoding arbitrary bytes with a real tokenizer (model/tokenizer/tokenizer.cpp,
// model/tokenizer/tokenizer_bpe.cpp, model/tokenizer/text_tokenizer.cpp), compiled once per tokenizer with
// LMLAB_TEXT_TOKENIZER = the path under ../shared:
//   fuzz_text_llama2  tokenizers/llama2/tokenizer.bin   (SentencePiece-style BPE with byte fallback)
//   fuzz_text_gpt2    tokenizers/gpt2                   (byte-level BPE, encoder.json + vocab.bpe)
//   fuzz_text_qwen    tokenizers/qwen/tokenizer.json    (byte-level BPE, NFC, added tokens)
// First byte: bit 0 = allow_special, bit 1 = decode mode (the rest read as little-endian int32 ids,
// streamed through the decoder as `lmlab generate` does). Invariants checked besides "no crash":
//   - text that encodes decodes back to itself (GPT-2: exactly; Qwen: NFC applies, so re-encoding the
//     decoded text gives the same ids; llama2: the same up to the leading space SentencePiece adds);
//   - every id decodes or is refused with ModelError (an id outside the vocabulary), never read past it.
#include <cstdio>
#include <cstring>
#include <optional>

#include "fuzz/fuzz.h"
#include "model/tokenizer/text_tokenizer.h"
#include "model/tokenizer/utf8.h"

namespace {

std::optional<lmlab::TextTokenizer> g_tok;

bool valid_utf8(std::string_view text) {
    for (std::size_t i = 0; i < text.size();) {
        const int n = lmlab::utf8_sequence_length(text, i);
        if (n <= 0) return false;
        i += static_cast<std::size_t>(n);
    }
    return true;
}

[[noreturn]] void finding(const char* what, std::string_view text) {
    std::fprintf(stderr, "fuzz_text: %s for the %zu-byte text:\n", what, text.size());
    for (unsigned char c : text) std::fprintf(stderr, "\\x%02x", c);
    std::fprintf(stderr, "\n");
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const std::string path = lmlab::fuzz::shared_dir() + "/" LMLAB_TEXT_TOKENIZER;
    if (!std::filesystem::exists(path)) {
        std::fprintf(stderr, "SKIPPED: %s not found (the shared data folder; set LMLAB_SHARED)\n", path.c_str());
        return 1;  // replay: skip; libFuzzer ignores the value, and the first input then aborts below
    }
    g_tok = lmlab::load_tokenizer(path);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (!g_tok) std::abort();  // no tokenizer: see LLVMFuzzerInitialize
    if (size == 0) return 0;
    const lmlab::TextTokenizer& tok = *g_tok;
    const bool allow_special = data[0] & 1;
    const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
    if (data[0] & 2) {  // decode arbitrary ids, whole and streamed
        std::vector<int> ids(text.size() / 4);
        if (!ids.empty()) std::memcpy(ids.data(), text.data(), ids.size() * 4);
        try {
            (void)tok.decode(ids);
        } catch (const lmlab::ModelError&) {
        }
        try {
            lmlab::TextTokenizer::Stream stream(tok, std::span<const int>(ids).first(ids.empty() ? 0 : 1));
            for (int id : ids) (void)stream.push(id);
            (void)stream.flush();
        } catch (const lmlab::ModelError&) {
        }
        return 0;
    }
    std::vector<int> ids;
    try {
        ids = tok.encode(text, allow_special);
    } catch (const lmlab::ModelError&) {
        if (valid_utf8(text)) finding("valid UTF-8 refused by encode", text);
        return 0;  // invalid UTF-8 is refused by byte-level BPE, by name
    }
    for (int id : ids)
        if (id < 0 || id >= tok.vocab_size()) finding("encode returned an id outside the vocabulary", text);
    const std::string back = tok.decode(ids);
    if (!tok.is_byte_level()) return 0;  // llama2: byte fallback round-trips, but the dummy prefix space varies
    if (std::string_view(LMLAB_TEXT_TOKENIZER).find("qwen") == std::string_view::npos) {
        if (back != text) finding("decode(encode(text)) != text", text);
    } else if (tok.encode(back, allow_special) != ids) {
        finding("encode(decode(encode(text))) != encode(text)", text);
    }
    return 0;
}
