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
                               [&](const BpeTokenizer& t) { return t.encode(text, allow_special); }},
                      impl_);
}

std::vector<int> TextTokenizer::encode(std::string_view text, bool allow_special) const {
    return std::visit(Overload{[&](const Tokenizer& t) { return t.encode(text, /*add_bos=*/false); },
                               [&](const BpeTokenizer& t) { return t.encode(text, allow_special); }},
                      impl_);
}

std::vector<int> TextTokenizer::encode_chat(std::string_view user_text) const {
    const auto* bpe = std::get_if<BpeTokenizer>(&impl_);
    const auto start = bpe ? bpe->token_id("<|im_start|>") : std::nullopt;
    const auto end = bpe ? bpe->token_id("<|im_end|>") : std::nullopt;
    if (!start || !end)
        throw ModelError("--chat needs a ChatML vocabulary (Qwen's: <|im_start|> and <|im_end|>); this tokenizer has none");
    // the user's text is plain text: a "<|im_end|>" typed by the user must not end the turn
    std::vector<int> ids = {*start};
    for (int id : bpe->encode("user\n", false)) ids.push_back(id);
    for (int id : bpe->encode(user_text, false)) ids.push_back(id);
    ids.push_back(*end);
    for (int id : bpe->encode("\n", false)) ids.push_back(id);
    ids.push_back(*start);
    for (int id : bpe->encode("assistant\n", false)) ids.push_back(id);
    return ids;
}

std::string TextTokenizer::decode(std::span<const int> ids) const {
    return std::visit([&](const auto& t) { return t.decode(ids); }, impl_);
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
                                   for (const char* s : {"<|endoftext|>", "<|im_end|>"})
                                       if (const auto id = t.token_id(s)) stops.push_back(*id);
                                   return stops;
                               }},
                      impl_);
}

TextTokenizer::Stream::Stream(const TextTokenizer& tok, int prev_id)
    : impl_(std::visit(Overload{[&](const Tokenizer& t) -> std::variant<StreamDecoder, BpeStreamDecoder> {
                                    return StreamDecoder(t, prev_id);
                                },
                                [](const BpeTokenizer& t) -> std::variant<StreamDecoder, BpeStreamDecoder> {
                                    return BpeStreamDecoder(t);
                                }},
                       tok.impl_)) {}

std::string TextTokenizer::Stream::push(int id) {
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
    if (ext == ".h5" || ext == ".hdf5") {
        Vocabulary v = load_vocabulary_hdf5(path);
        return TextTokenizer(Tokenizer(std::move(v.pieces), std::move(v.scores)));
    }
    if (first_uint32(path) == 20240328) return TextTokenizer(BpeTokenizer::load_llmc(path));  // llm.c's magic
    return TextTokenizer(Tokenizer::load_llama2c(path, vocab_size));
}

std::optional<TextTokenizer> find_tokenizer(const Model& m, const std::string& tokenizer_path) {
    const int vocab = static_cast<int>(m.config.vocab_size);
    if (!tokenizer_path.empty()) return load_tokenizer(tokenizer_path, vocab);
    if (m.vocabulary) return TextTokenizer(Tokenizer(m.vocabulary->pieces, m.vocabulary->scores));
    if (fs::is_directory(m.source)) return tokenizer_in_dir(m.source);
    const fs::path dir = fs::path(m.source).parent_path();
    // where each checkpoint format's own tool keeps the vocabulary: llm.c's gpt2_tokenizer.bin,
    // llama2.c's tok<vocab>.bin (its tokenizer.py export) or tokenizer.bin
    const std::vector<fs::path> beside = m.format == "llm.c"
        ? std::vector<fs::path>{dir / "gpt2_tokenizer.bin"}
        : std::vector<fs::path>{dir / ("tok" + std::to_string(vocab) + ".bin"), dir / "tokenizer.bin"};
    for (const fs::path& candidate : beside)
        if (fs::exists(candidate)) return load_tokenizer(candidate.string(), vocab);
    return std::nullopt;
}

std::vector<int> generation_stop_ids(const Model& m, const TextTokenizer* tok) {
    std::vector<int> stops = tok ? tok->stop_ids() : std::vector<int>{};
    stops.insert(stops.end(), m.eos_token_ids.begin(), m.eos_token_ids.end());
    return stops;
}

}  // namespace lmlab
