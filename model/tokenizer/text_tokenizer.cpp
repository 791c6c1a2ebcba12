#include "model/load/gguf.h"
#include "model/load/load.h"
#include "model/tokenizer/text_tokenizer.h"

#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

namespace lmlab {

namespace fs = std::filesystem;

// std::visit over the two kinds with one lambda per kind.
template <class... F>
struct Overload : F... {
    using F::operator()...;
};
template <class... F>
Overload(F...) -> Overload<F...>;

std::vector<int> TextTokenizer::encode_prompt(std::string_view text, bool allow_special) const {
    return std::visit(Overload{[&](const Tokenizer& t) { return t.encode(text, /*add_bos=*/true); },
                               [&](const BpeTokenizer& t) {
                                   std::vector<int> ids = t.encode(text, allow_special);
                                   // a GGUF file's BOS, else what tokenizer.json's post-processor puts first
                                   if (prompt_bos_) ids.insert(ids.begin(), *prompt_bos_);
                                   else ids.insert(ids.begin(), t.prompt_prefix().begin(), t.prompt_prefix().end());
                                   return ids;
                               }},
                      impl_);
}

std::vector<int> TextTokenizer::encode(std::string_view text, bool allow_special) const {
    return std::visit(Overload{[&](const Tokenizer& t) { return t.encode(text, /*add_bos=*/false); },
                               [&](const BpeTokenizer& t) { return t.encode(text, allow_special); }},
                      impl_);
}

namespace {
// Python's str.strip() (Jinja's trim filter): every character str.isspace() calls whitespace, at
// both ends: ASCII \t \n \v \f \r, \x1c-\x1f and space, and U+0085, U+00A0, U+1680, U+2000-U+200A,
// U+2028, U+2029, U+202F, U+205F, U+3000.
std::string_view python_strip(std::string_view s) {
    const auto space_at = [](std::string_view t, std::size_t i) -> std::size_t {  // its length in bytes, 0: not a space
        const auto c = static_cast<unsigned char>(t[i]);
        if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
        if (c == 0xC2 && i + 1 < t.size() && (t[i + 1] == '\x85' || t[i + 1] == '\xA0')) return 2;
        if ((c == 0xE1 || c == 0xE2 || c == 0xE3) && i + 2 < t.size()) {
            const auto b = static_cast<unsigned char>(t[i + 1]), d = static_cast<unsigned char>(t[i + 2]);
            const unsigned cp = ((c & 0x0Fu) << 12) | ((b & 0x3Fu) << 6) | (d & 0x3Fu);
            if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
                cp == 0x205F || cp == 0x3000)
                return 3;
        }
        return 0;
    };
    std::size_t n;
    while (!s.empty() && (n = space_at(s, 0)) > 0) s.remove_prefix(n);
    for (bool trimmed = true; trimmed && !s.empty();) {  // from the end: try the 1-, 2- and 3-byte spaces
        trimmed = false;
        for (std::size_t len = 1; len <= 3 && len <= s.size(); ++len)
            if (space_at(s, s.size() - len) == len) {
                s.remove_suffix(len);
                trimmed = true;
                break;
            }
    }
    return s;
}
}  // namespace

std::optional<TextTokenizer::ChatRefusal> TextTokenizer::chat_refusal(std::span<const ChatMessage> messages) {
    if (messages.empty()) return ChatRefusal{0, "", "no messages: give at least one"};
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (m.role != "system" && m.role != "user" && m.role != "assistant")
            return ChatRefusal{i, "role", fmt::format("role '{}' is not supported: system, user and assistant are{}", m.role,
                                                      m.role == "tool" ? " (no tool calling)" : "")};
        if (m.role == "assistant" && m.content.find("</think>") != std::string::npos)
            return ChatRefusal{i, "content", "an assistant message with a reasoning trace ('</think>') is not supported: "
                                             "give the answer's text only"};
    }
    if (messages.back().role == "assistant")
        return ChatRefusal{messages.size() - 1, "role", "the last message is the assistant's: continuing an assistant "
                                                        "message is not supported; end with a user (or system) message"};
    return std::nullopt;
}

std::vector<int> TextTokenizer::encode_chat(std::span<const ChatMessage> messages) const {
    const auto* bpe = std::get_if<BpeTokenizer>(&impl_);
    const auto id = [&](const char* token) { return bpe ? bpe->token_id(token) : std::nullopt; };
    const auto header = id("<|start_header_id|>"), header_end = id("<|end_header_id|>"), eot = id("<|eot_id|>"),
               bos = id("<|begin_of_text|>");
    const bool llama3 = header && header_end && eot && bos;
    const auto start = id("<|im_start|>"), end = id("<|im_end|>");
    if (!llama3 && !(start && end))
        throw ModelError("--chat needs a chat vocabulary: ChatML (Qwen's <|im_start|> and <|im_end|>) or Llama 3's "
                         "(<|start_header_id|>, <|end_header_id|>, <|eot_id|>); this tokenizer has neither: drop --chat and give the "
                         "text to continue with --prompt (a base model continues text; it was not trained on turns)");
    if (const auto r = chat_refusal(messages))
        throw ModelError(r->field.empty() ? r->why : fmt::format("messages[{}].{}: {}", r->index, r->field, r->why));
    // the contents are plain text: a "<|im_end|>" or "<|eot_id|>" typed in one must not end the turn;
    // each call is one span of text between two special tokens
    std::vector<int> ids;
    const auto text = [&](std::string_view t) {
        for (int i : bpe->encode(t, false)) ids.push_back(i);
    };
    if (llama3) {
        ids.push_back(*bos);
        for (const ChatMessage& m : messages) {
            ids.push_back(*header);
            text(m.role);
            ids.push_back(*header_end);
            text("\n\n" + std::string(python_strip(m.content)));
            ids.push_back(*eot);
        }
        ids.push_back(*header);
        text("assistant");
        ids.push_back(*header_end);
        text("\n\n");
        return ids;
    }
    for (const ChatMessage& m : messages) {
        ids.push_back(*start);
        text(m.role + "\n" + m.content);
        ids.push_back(*end);
        text("\n");
    }
    ids.push_back(*start);
    text("assistant\n");
    return ids;
}

std::vector<int> TextTokenizer::encode_chat(std::string_view user_text) const {
    const ChatMessage m{"user", std::string(user_text)};
    return encode_chat(std::span<const ChatMessage>(&m, 1));
}

std::string TextTokenizer::decode(std::span<const int> ids, std::span<const int> context) const {
    Stream s(*this, context);
    std::string text;
    for (int id : ids) text += s.push(id);
    return text + s.flush();
}

std::string TextTokenizer::piece(int id) const {
    return std::visit([&](const auto& t) { return std::string(t.piece(id)); }, impl_);
}

int TextTokenizer::vocab_size() const {
    return std::visit([](const auto& t) { return t.vocab_size(); }, impl_);
}

std::vector<int> TextTokenizer::stop_ids() const {
    return std::visit(Overload{[](const Tokenizer& t) { return std::vector<int>{t.bos_id(), t.eos_id()}; },
                               [](const BpeTokenizer& t) {
                                   std::vector<int> stops;
                                   for (const char* s : {"<|endoftext|>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>"})
                                       if (const auto id = t.token_id(s)) stops.push_back(*id);
                                   return stops;
                               }},
                      impl_);
}

TextTokenizer::Stream::Stream(const TextTokenizer& tok, std::span<const int> context)
    : tok_(&tok),
      impl_(std::visit(Overload{[&](const Tokenizer& t) -> std::variant<StreamDecoder, BpeStreamDecoder> {
                                    // the start of a text behaves as right after BOS: no leading space
                                    return StreamDecoder(t, context.empty() ? t.bos_id() : context.back());
                                },
                                [](const BpeTokenizer& t) -> std::variant<StreamDecoder, BpeStreamDecoder> {
                                    return BpeStreamDecoder(t);
                                }},
                       tok.impl_)) {}

std::string TextTokenizer::Stream::push(int id) {
    if (id >= 0 && id >= tok_->vocab_size()) {  // a padded embedding's row: no text; what is pending comes first
        std::string text = flush();
        return text + fmt::format("<id {}>", id);
    }
    return std::visit([&](auto& d) { return d.push(id); }, impl_);
}

std::string TextTokenizer::Stream::flush() {
    return std::visit([](auto& d) { return d.flush(); }, impl_);
}

namespace {

std::uint32_t first_uint32(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::uint32_t v = 0;
    if (!in.read(reinterpret_cast<char*>(&v), sizeof v)) return 0;
    return v;
}

// The tokenizer files of a directory, if any: tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe.
std::optional<TextTokenizer> tokenizer_in_dir(const fs::path& dir) {
    if (fs::exists(dir / "tokenizer.json")) return TextTokenizer(BpeTokenizer::load_hf_json((dir / "tokenizer.json").string()));
    if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt"))
        return TextTokenizer(BpeTokenizer::load_gpt2((dir / "vocab.json").string(), (dir / "merges.txt").string()));
    if (fs::exists(dir / "encoder.json") && fs::exists(dir / "vocab.bpe"))
        return TextTokenizer(BpeTokenizer::load_gpt2((dir / "encoder.json").string(), (dir / "vocab.bpe").string()));
    return std::nullopt;
}

}  // namespace

TextTokenizer load_tokenizer(const std::string& path, int vocab_size) {
    if (fs::is_directory(path)) {
        if (auto t = tokenizer_in_dir(path)) return std::move(*t);
        throw ModelError(path + ": no tokenizer here; expected tokenizer.json, vocab.json + merges.txt, or "
                         "encoder.json + vocab.bpe");
    }
    if (!fs::exists(path)) throw ModelError(path + ": no such tokenizer file or directory");
    const std::string ext = fs::path(path).extension().string();
    if (ext == ".json") return TextTokenizer(BpeTokenizer::load_hf_json(path));
    if (ext == ".gguf") return load_tokenizer_gguf(path);
    // SentencePiece's own file (a protobuf): read as a llama2.c tokenizer.bin it would be "damaged"
    if (ext == ".model")
        throw ModelError(path + ": a SentencePiece model (.model, a protobuf), which lmlab does not read. Pass the "
                         "llama2.c tokenizer.bin made from it (llama2.c's tokenizer.py writes one; it often sits "
                         "beside the .model file), a Hugging Face tokenizer.json, or a GGUF file");
    if (ext == ".h5" || ext == ".hdf5") {
        Vocabulary v = load_vocabulary_hdf5(path);
        return TextTokenizer(Tokenizer(std::move(v.pieces), std::move(v.scores)));
    }
    if (first_uint32(path) == 20240328) return TextTokenizer(BpeTokenizer::load_llmc(path));  // llm.c's magic
    return TextTokenizer(Tokenizer::load_llama2c(path, vocab_size));
}

TextTokenizer load_tokenizer_gguf(const std::string& path) {
    const GgufFile f = GgufFile::open(path);
    const std::string model = f.text("tokenizer.ggml.model");
    const std::vector<std::string>& tokens = f.strings("tokenizer.ggml.tokens");
    if (model == "llama") {  // SentencePiece: "▁" (U+2581) marks a word boundary; this engine writes it as ' '
        std::vector<std::string> pieces;
        pieces.reserve(tokens.size());
        for (std::string t : tokens) {
            for (std::size_t at = t.find("\u2581"); at != std::string::npos; at = t.find("\u2581", at + 1)) t.replace(at, 3, " ");
            pieces.push_back(std::move(t));
        }
        std::vector<double> scores = f.numbers("tokenizer.ggml.scores");
        if (scores.size() != pieces.size())
            throw ModelError(fmt::format("{}: tokenizer.ggml.scores has {} entries for {} tokens", path, scores.size(),
                                         pieces.size()));
        for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"}) {
            const std::uint64_t want = std::string(key).find("bos") != std::string::npos ? 1 : 2;
            if (f.has(key) && f.uint(key) != want)
                throw ModelError(fmt::format("{}: {} is {}; this engine's SentencePiece tokenizer has BOS 1 and EOS 2", path,
                                             key, f.uint(key)));
        }
        return TextTokenizer(Tokenizer(std::move(pieces), std::vector<float>(scores.begin(), scores.end())));
    }
    if (model == "gpt2") {
        const std::string pre = f.has("tokenizer.ggml.pre") ? f.text("tokenizer.ggml.pre") : "default";
        const std::vector<double> types = f.has("tokenizer.ggml.token_type") ? f.numbers("tokenizer.ggml.token_type")
                                                                             : std::vector<double>{};
        TextTokenizer tok(BpeTokenizer::from_lists(tokens, f.strings("tokenizer.ggml.merges"), types, pre,
                                                   "tokenizer in " + path));
        if (f.boolean_or("tokenizer.ggml.add_bos_token", false))
            tok.set_prompt_bos(static_cast<int>(f.uint("tokenizer.ggml.bos_token_id")));
        return tok;
    }
    throw ModelError(fmt::format("{}: tokenizer.ggml.model is '{}'; this engine reads 'llama' (SentencePiece) and 'gpt2' "
                                 "(byte-level BPE) tokenizers",
                                 path, model));
}

std::optional<TextTokenizer> find_tokenizer(const Model& m, const std::string& tokenizer_path) {
    const int vocab = static_cast<int>(m.config.vocab_size);
    if (!tokenizer_path.empty()) return load_tokenizer(tokenizer_path, 0);
    if (m.vocabulary) return TextTokenizer(Tokenizer(m.vocabulary->pieces, m.vocabulary->scores));
    if (m.format == "gguf") return load_tokenizer_gguf(m.source);  // its own metadata
    if (fs::is_directory(m.source)) return tokenizer_in_dir(m.source);
    const fs::path dir = fs::path(m.source).parent_path();
    // where each checkpoint format's own tool keeps the vocabulary: llm.c's gpt2_tokenizer.bin,
    // llama2.c's tok<vocab>.bin (its tokenizer.py export) or tokenizer.bin
    const std::vector<fs::path> beside = m.format == "llm.c"
        ? std::vector<fs::path>{dir / "gpt2_tokenizer.bin"}
        : std::vector<fs::path>{dir / ("tok" + std::to_string(vocab) + ".bin"), dir / "tokenizer.bin"};
    for (const fs::path& candidate : beside)
        if (fs::exists(candidate)) return load_tokenizer(candidate.string(), 0);
    return std::nullopt;
}

std::string check_tokenizer_fits(const Model& m, const TextTokenizer& tok, const std::string& what) {
    const std::size_t ids = static_cast<std::size_t>(tok.vocab_size()), rows = m.config.vocab_size;
    if (ids > rows)
        throw ModelError(fmt::format("{} has {} ids but the model {} has {} embedding rows: ids {}..{} would index past "
                                     "the model, so the tokenizer does not belong to it. Pass the model's own tokenizer "
                                     "(--tokenizer PATH)",
                                     what, ids, m.source, rows, rows, ids - 1));
    for (int eos : m.eos_token_ids)
        if (eos < 0 || static_cast<std::size_t>(eos) >= ids)
            throw ModelError(fmt::format("the model {} ends text with id {} (config.json eos_token_id) but {} has only {} "
                                         "ids: the tokenizer does not belong to the model. Pass its own tokenizer "
                                         "(--tokenizer PATH)",
                                         m.source, eos, what, ids));
    if (ids == rows) return "";
    if (!tok.is_byte_level())
        throw ModelError(fmt::format("{} has {} pieces but the model {} has {} embedding rows: a SentencePiece "
                                     "vocabulary (llama2.c's tokenizer.bin) matches its model exactly, so the tokenizer "
                                     "does not belong to it. Pass the model's own tokenizer (--tokenizer PATH)",
                                     what, ids, m.source, rows));
    return fmt::format("the model has {} embedding rows and {} has {} ids: rows {}..{} are padding (a padded embedding, "
                       "as Qwen's); an id there has no text and prints as <id N>",
                       rows, what, ids, ids, rows - 1);
}

std::vector<int> generation_stop_ids(const Model& m, const TextTokenizer* tok) {
    std::vector<int> stops = tok ? tok->stop_ids() : std::vector<int>{};
    stops.insert(stops.end(), m.eos_token_ids.begin(), m.eos_token_ids.end());
    return stops;
}

}  // namespace lmlab
