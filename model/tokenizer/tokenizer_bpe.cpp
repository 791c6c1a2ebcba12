#include "model/tokenizer/tokenizer_bpe.h"
#include "model/load/json_depth.h"
#include "model/tokenizer/utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <queue>
#include <utility>

namespace lmlab {

namespace {

using Json = nlohmann::json;

// GPT-2's pre-tokenisation regex (OpenAI's encoder.py; tiktoken's r50k_base; HF's ByteLevel
// pre-tokenizer with use_regex). Contractions, then letters, digits and other symbols each with
// at most one leading space, then whitespace: a run of spaces before a word leaves its last
// space to that word ("\s+(?!\S)").
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kEndOfText = "<|endoftext|>";
// The Split regexes of Qwen2's and Llama 3's tokenizer.json (pre_tokenizer.pretokenizers[0]): as
// GPT-2's, but contractions in either case, a letter run may take one leading non-letter, and digits
// come one at a time (Qwen2) or in runs of up to three (Llama 3). llama.cpp names them "qwen2" and
// "llama-bpe" in GGUF files (tokenizer.ggml.pre).
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr std::uint32_t kLlmcMagic = 20240328;
constexpr std::size_t kLlmcHeaderInts = 256;
constexpr int kLlmcVersion1Vocab = 50257;  // version 1 files are GPT-2's, eot 50256
constexpr int kMaxId = (1 << 24) - 1;      // ids above this are taken as a damaged file
constexpr std::size_t kMaxCachedPiece = 256;  // longer pre-tokens are rare; not worth caching


// What an id is. kOther: a vocabulary string with characters outside GPT-2's byte table; BPE
// can never produce it (merges only join byte-table strings), and it decodes to its own UTF-8,
// as HF's ByteLevel decoder does.
enum Kind : std::uint8_t { kUnused = 0, kRegular = 1, kAdded = 2, kSpecial = 3, kOther = 4 };

// ---- UTF-8 -----------------------------------------------------------------------------------


// Throws when text is not valid UTF-8, naming the offset of the first bad byte. Both references
// take Unicode strings (tiktoken: a Python str; HF: a Rust &str), so neither can be given
// invalid UTF-8, and NFC and the regex need code points.
void check_utf8(std::string_view text) {
    std::size_t pos = 0;
    while (pos < text.size()) {
        const int length = utf8_sequence_length(text, pos);
        if (length <= 0) {
            char byte[8];
            std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned>(static_cast<unsigned char>(text[pos])));
            throw ModelError("encode: the text is not valid UTF-8: " +
                                 std::string(length == 0 ? "truncated character" : "invalid byte") + " " + byte +
                                 " at byte offset " + std::to_string(pos) + " of " + std::to_string(text.size()) +
                                 "; convert or clean the input first (byte-level BPE takes Unicode text)");
        }
        pos += static_cast<std::size_t>(length);
    }
}

// Code point of the valid UTF-8 sequence of `length` bytes at text[pos].
char32_t decode_code_point(std::string_view text, std::size_t pos, int length) {
    const auto byte = [&](std::size_t i) { return static_cast<char32_t>(static_cast<unsigned char>(text[pos + i])); };
    switch (length) {
        case 1: return byte(0);
        case 2: return (byte(0) & 0x1F) << 6 | (byte(1) & 0x3F);
        case 3: return (byte(0) & 0x0F) << 12 | (byte(1) & 0x3F) << 6 | (byte(2) & 0x3F);
        default: return (byte(0) & 0x07) << 18 | (byte(1) & 0x3F) << 12 | (byte(2) & 0x3F) << 6 | (byte(3) & 0x3F);
    }
}

std::string hex_byte(unsigned char b) {
    char text[8];
    std::snprintf(text, sizeof text, "0x%02X", static_cast<unsigned>(b));
    return text;
}

// ---- GPT-2's byte <-> character table ----------------------------------------------------------

// bytes_to_unicode (OpenAI's encoder.py): the 188 printable Latin-1 bytes ('!'..'~', '¡'..'¬',
// '®'..'ÿ') stand for themselves; the other 68 (controls, space, 0x7F..0xA0, 0xAD) become
// U+0100.. in byte order, so ' ' is U+0120 'Ġ' and '\n' is U+010A 'Ċ'. Vocabulary files write
// token bytes through this table so that every token is printable text. All 256 characters are
// below U+0144, so the inverse is a small array.
struct ByteTable {
    std::array<char32_t, 256> char_of_byte{};
    std::array<int, 0x144> byte_of_char{};  // -1: not one of the 256 characters

    ByteTable() {
        byte_of_char.fill(-1);
        int extra = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
            char_of_byte[static_cast<std::size_t>(b)] = c;
            byte_of_char[c] = b;
        }
    }
};

const ByteTable& byte_table() {
    static const ByteTable table;
    return table;
}

// Raw bytes of a vocabulary string written through bytes_to_unicode, or nullopt when some
// character is not in the table (then HF's ByteLevel decoder uses the string's UTF-8 as is).
std::optional<std::string> unicode_to_bytes(std::string_view token) {
    const ByteTable& table = byte_table();
    std::string bytes;
    bytes.reserve(token.size());
    std::size_t pos = 0;
    while (pos < token.size()) {
        const int length = utf8_sequence_length(token, pos);
        if (length <= 0) return std::nullopt;
        const char32_t c = decode_code_point(token, pos, length);
        if (c >= table.byte_of_char.size() || table.byte_of_char[c] < 0) return std::nullopt;
        bytes += static_cast<char>(table.byte_of_char[c]);
        pos += static_cast<std::size_t>(length);
    }
    return bytes;
}

// The vocabulary string (bytes_to_unicode form) of raw bytes, for error messages.
std::string bytes_to_unicode_text(std::string_view bytes) {
    std::string out;
    for (const char ch : bytes) {
        const char32_t c = byte_table().char_of_byte[static_cast<unsigned char>(ch)];
        if (c < 0x80) {
            out += static_cast<char>(c);
        } else {  // all table characters are below U+0800: two UTF-8 bytes
            out += static_cast<char>(0xC0 | (c >> 6));
            out += static_cast<char>(0x80 | (c & 0x3F));
        }
    }
    return out;
}

// ---- Files -------------------------------------------------------------------------------------

std::string where_of(const std::string& path) { return "tokenizer file '" + path + "'"; }

[[noreturn]] void fail(const std::string& where, const std::string& message) {
    throw ModelError(where + ": " + message);
}

std::string read_file(const std::string& path, const std::string& hint) {
    std::ifstream file(path, std::ios::binary);
    if (!file) fail(where_of(path), "cannot open it; " + hint);
    std::string data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (file.bad()) fail(where_of(path), "read error");
    return data;
}

Json parse_json(const std::string& path, const std::string& hint) {
    const std::string text = read_file(path, hint);
    try {
        return Json::parse(text, json_depth_limit(where_of(path)));
    } catch (const Json::exception& e) {  // a syntax error, or a number past double's range (1e999)
        fail(where_of(path), std::string("expected JSON, found an error (") + e.what() + ")");
    }
}

// A short, printable excerpt of a JSON value for error messages.
std::string show(const Json& value) {
    std::string text = value.dump();
    if (text.size() > 80) text = text.substr(0, 77) + "...";
    return text;
}

// The integer id in a JSON value, or throws naming `what`.
int json_id(const Json& value, const std::string& where, const std::string& what) {
    if (!value.is_number_integer()) fail(where, what + ": expected an integer id, found " + show(value));
    const auto id = value.get<std::int64_t>();
    if (id < 0 || id > kMaxId) {
        fail(where, what + ": id " + std::to_string(id) + " is out of range (0.." + std::to_string(kMaxId) + ")");
    }
    return static_cast<int>(id);
}

std::string json_type(const Json& object) {
    if (!object.is_object()) return object.is_null() ? "null" : show(object);
    const auto it = object.find("type");
    if (it == object.end() || !it->is_string()) return show(object);
    return it->get<std::string>();
}

bool json_bool(const Json& object, const char* key, bool default_value, const std::string& where,
               const std::string& what) {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return default_value;
    if (!it->is_boolean()) fail(where, what + "." + key + ": expected true or false, found " + show(*it));
    return it->get<bool>();
}

// Unicode NFC (canonical composition: "e" + U+0301 -> "é"). utf8proc_map with an explicit length
// is utf8proc_NFC without its NUL-terminated input, so text containing U+0000 is kept whole.
std::string nfc(std::string_view text) {
    if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
        return std::string(text);  // ASCII is always NFC; skips the copy through utf8proc
    }
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t length =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                     &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (length < 0) {
        throw ModelError(std::string("encode: NFC normalisation failed: ") + utf8proc_errmsg(length));
    }
    std::string result(reinterpret_cast<const char*>(out), static_cast<std::size_t>(length));
    std::free(out);
    return result;
}

// The pattern PCRE2 must compile to match as the Rust engines do. The only difference in the
// syntax these tokenizers use is \s: in Oniguruma (HF) and Rust's regex crate (tiktoken) it is
// the Unicode White_Space property, while PCRE2's UCP \s also matches U+180E MONGOLIAN VOWEL
// SEPARATOR (a format character since Unicode 6.3, kept in PCRE2's \h for Perl compatibility).
// So \s and \S become \p{White_Space} and \P{White_Space}, which also work inside [...].
// Everything else is copied: other escapes as pairs (so "\\s" stays a backslash and an 's'),
// and \Q...\E quoted text verbatim.
std::string pcre2_pattern(std::string_view pattern) {
    std::string out;
    out.reserve(pattern.size() + 32);
    std::size_t i = 0;
    while (i < pattern.size()) {
        if (pattern[i] != '\\' || i + 1 == pattern.size()) {
            out += pattern[i++];
            continue;
        }
        const char next = pattern[i + 1];
        if (next == 's') {
            out += "\\p{White_Space}";
        } else if (next == 'S') {
            out += "\\P{White_Space}";
        } else if (next == 'Q') {
            const std::size_t end = pattern.find("\\E", i + 2);
            const std::size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
            out.append(pattern.substr(i, stop - i));
            i = stop;
            continue;
        } else {
            out += pattern.substr(i, 2);
        }
        i += 2;
    }
    return out;
}

}  // namespace

// ---- Regex (PCRE2) -----------------------------------------------------------------------------

// A compiled pre-tokenisation pattern. PCRE2_UTF makes it work on code points and PCRE2_UCP
// makes \s, \d, \w and case folding Unicode-aware, as in the Rust engines the references use
// (Oniguruma in HF tokenizers, fancy-regex in tiktoken). Compiled once; matching only reads it,
// so one tokenizer can encode from several threads.
struct BpeTokenizer::Regex {
    pcre2_code* code = nullptr;
    std::string pattern;

    // literal: the pattern is plain text to split on (HF's {"String": ...} pattern).
    Regex(std::string_view pattern_text, bool literal, const std::string& where) : pattern(pattern_text) {
        const std::string compiled = literal ? pattern : pcre2_pattern(pattern);
        int error = 0;
        PCRE2_SIZE error_offset = 0;
        const std::uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0u);
        code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(), options, &error,
                             &error_offset, nullptr);
        if (code == nullptr) {
            PCRE2_UCHAR message[256];
            pcre2_get_error_message(error, message, sizeof message);
            fail(where, "pre-tokenizer regex '" + pattern + "' (for PCRE2: '" + compiled + "') does not compile: " +
                            reinterpret_cast<const char*>(message) + " at offset " + std::to_string(error_offset));
        }
        // JIT makes matching several times faster; where it is unavailable the interpreter runs.
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    }
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;
    ~Regex() { pcre2_code_free(code); }

    // Split with HF's "Isolated" behaviour: every match is a piece, and so is every stretch
    // between matches. Empty matches are skipped (the search moves on one character), as the
    // Rust engines' find_iter does. text must be valid UTF-8 (checked once by encode).
    template <typename Emit>
    void split(std::string_view text, Emit&& emit) const {
        struct MatchData {
            pcre2_match_data* data;
            pcre2_match_context* context = nullptr;
            pcre2_jit_stack* stack = nullptr;
            ~MatchData() {
                pcre2_match_data_free(data);
                pcre2_match_context_free(context);
                pcre2_jit_stack_free(stack);
            }
        } match{pcre2_match_data_create_from_pattern(code, nullptr)};
        if (match.data == nullptr) throw std::bad_alloc();
        const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
        std::size_t offset = 0;    // where the next search starts
        std::size_t emitted = 0;   // end of the text handed out so far
        while (offset <= text.size()) {
            // PCRE2_NO_UTF_CHECK: otherwise every call re-validates the whole subject, which
            // makes splitting quadratic in the text length.
            int rc = pcre2_match(code, subject, text.size(), offset, PCRE2_NO_UTF_CHECK, match.data, match.context);
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT && match.stack == nullptr) {
                // The default 32 KiB JIT stack can be too small for long backtracking runs;
                // retry once with up to 64 MiB.
                match.context = pcre2_match_context_create(nullptr);
                match.stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
                if (match.context == nullptr || match.stack == nullptr) throw std::bad_alloc();
                pcre2_jit_stack_assign(match.context, nullptr, match.stack);
                rc = pcre2_match(code, subject, text.size(), offset, PCRE2_NO_UTF_CHECK, match.data, match.context);
            }
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR message[256];
                pcre2_get_error_message(rc, message, sizeof message);
                throw ModelError("encode: pre-tokenizer regex '" + pattern + "' failed at byte offset " +
                                     std::to_string(offset) + ": " + reinterpret_cast<const char*>(message));
            }
            const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.data);
            const std::size_t start = ovector[0];
            const std::size_t end = ovector[1];
            if (start == end) {
                if (end >= text.size()) break;
                offset = end + static_cast<std::size_t>(std::max(1, utf8_sequence_length(text, end)));
                continue;
            }
            if (start > emitted) emit(text.substr(emitted, start - emitted));
            emit(text.substr(start, end - start));
            emitted = end;
            offset = end;
        }
        if (emitted < text.size()) emit(text.substr(emitted));
    }
};

// ---- Construction ------------------------------------------------------------------------------

BpeTokenizer::BpeTokenizer() { byte_ids_.fill(-1); }
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

void BpeTokenizer::set_piece(int id, std::string bytes, const std::string& where, std::uint8_t kind) {
    const auto index = static_cast<std::size_t>(id);
    if (index >= pieces_.size()) {
        pieces_.resize(index + 1);
        kind_.resize(index + 1, kUnused);
    }
    if (kind_[index] != kUnused) {
        fail(where, "id " + std::to_string(id) + " is given to two tokens ('" + pieces_[index] + "' and '" + bytes +
                        "'); every id must name one token");
    }
    pieces_[index] = std::move(bytes);
    kind_[index] = kind;
}

void BpeTokenizer::add_merge(int left, int right, int merged, const std::string& where, const std::string& what) {
    const std::uint64_t key = static_cast<std::uint64_t>(left) << 32 | static_cast<std::uint32_t>(right);
    const auto rank = static_cast<std::uint32_t>(merges_.size());
    const auto [it, inserted] = merges_.emplace(key, Merge{rank, merged});
    if (!inserted) {
        fail(where, what + " repeats merge " + std::to_string(it->second.rank) +
                        " (the same pair twice would make its rank ambiguous)");
    }
}

// Indexes built once every token is known: the single-byte tokens and the regular pieces.
void BpeTokenizer::finish_vocab(const std::string& where) {
    for (std::size_t id = 0; id < pieces_.size(); ++id) {
        if (kind_[id] != kRegular) continue;  // BPE and byte lookups see the model's vocabulary only
        // Byte-table strings map one to one to bytes; in llm.c's file a repeated piece is
        // possible, and then the first id wins (encoding never uses that file).
        regular_ids_.emplace(pieces_[id], static_cast<int>(id));
    }
    for (int b = 0; b < 256; ++b) {
        const auto it = regular_ids_.find(std::string(1, static_cast<char>(b)));
        byte_ids_[static_cast<std::size_t>(b)] = it == regular_ids_.end() ? -1 : it->second;
    }
    for (const AddedToken& token : added_) {
        if (token.content.empty()) fail(where, "added token " + std::to_string(token.id) + " has empty content");
        added_first_byte_[static_cast<unsigned char>(token.content[0])] = true;
        if (token.special) kind_[static_cast<std::size_t>(token.id)] = kSpecial;
        else kind_[static_cast<std::size_t>(token.id)] = kAdded;
        pieces_[static_cast<std::size_t>(token.id)] = token.content;
    }
    if (const auto it = regular_ids_.find(kEndOfText); it != regular_ids_.end()) eot_id_ = it->second;
    for (const AddedToken& token : added_) {
        if (token.content == kEndOfText) eot_id_ = token.id;
    }
}

BpeTokenizer BpeTokenizer::load_gpt2(const std::string& encoder_json_path, const std::string& vocab_bpe_path) {
    const std::string hint = "GPT-2's encoder.json and vocab.bpe are in shared/tokenizers/gpt2";
    const std::string encoder_where = where_of(encoder_json_path);
    const std::string merges_where = where_of(vocab_bpe_path);
    BpeTokenizer tok;

    const Json encoder = parse_json(encoder_json_path, hint);
    if (!encoder.is_object()) {
        fail(encoder_where, "expected a JSON object mapping token strings to ids, found " + show(encoder));
    }
    // Vocabulary strings (bytes_to_unicode form) -> id, to resolve the merges.
    std::unordered_map<std::string, int> ids;
    ids.reserve(encoder.size());
    for (const auto& [text, value] : encoder.items()) {
        const int id = json_id(value, encoder_where, "token '" + text + "'");
        const std::optional<std::string> bytes = unicode_to_bytes(text);
        tok.set_piece(id, bytes.value_or(text), encoder_where, bytes ? kRegular : kOther);
        ids.emplace(text, id);
    }

    const std::string merges = read_file(vocab_bpe_path, hint);
    std::size_t line_start = 0;
    for (int line_number = 1; line_start < merges.size(); ++line_number) {
        std::size_t line_end = merges.find('\n', line_start);
        if (line_end == std::string::npos) line_end = merges.size();
        std::string_view line(merges.data() + line_start, line_end - line_start);
        line_start = line_end + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        // "#version: 0.2" heads the file (HF skips any such line); blank lines carry nothing.
        if (line.empty() || line.starts_with("#version")) continue;
        const std::string what = "line " + std::to_string(line_number) + " ('" + std::string(line) + "')";
        const std::size_t space = line.find(' ');
        if (space == 0 || space == std::string_view::npos || space + 1 == line.size() ||
            line.find(' ', space + 1) != std::string_view::npos) {
            fail(merges_where, what + ": expected a merge 'left right' (two tokens and one space)");
        }
        const std::string left(line.substr(0, space));
        const std::string right(line.substr(space + 1));
        const auto find = [&](const std::string& part) {
            const auto it = ids.find(part);
            if (it == ids.end()) {
                fail(merges_where, what + ": '" + part + "' is not in the vocabulary of " + encoder_json_path +
                                       "; the two files must come from the same tokenizer");
            }
            return it->second;
        };
        // One at a time: the order of evaluation of function arguments is unspecified, and the
        // message should name the first missing part.
        const int left_id = find(left);
        const int right_id = find(right);
        tok.add_merge(left_id, right_id, find(left + right), merges_where, what);
    }

    if (const auto it = ids.find(std::string(kEndOfText)); it != ids.end()) {
        tok.added_.push_back(AddedToken{std::string(kEndOfText), it->second, true, false});
    }
    tok.split_ = std::make_unique<Regex>(kGpt2Pattern, false, encoder_where);
    tok.finish_vocab(encoder_where);
    return tok;
}

BpeTokenizer BpeTokenizer::from_lists(const std::vector<std::string>& tokens, const std::vector<std::string>& merges,
                                      const std::vector<double>& token_types, const std::string& pre,
                                      const std::string& where) {
    BpeTokenizer tok;
    if (pre == "gpt-2" || pre == "default") {
        tok.split_ = std::make_unique<Regex>(kGpt2Pattern, false, where);
    } else if (pre == "qwen2") {
        tok.split_ = std::make_unique<Regex>(kQwen2Pattern, false, where);
        tok.nfc_ = true;  // Qwen2's normalizer
    } else if (pre == "llama-bpe") {
        tok.split_ = std::make_unique<Regex>(kLlama3Pattern, false, where);
        tok.ignore_merges_ = true;  // Llama 3's tokenizer.json
    } else {
        fail(where, "tokenizer.ggml.pre is '" + pre + "': a pre-tokenizer this engine does not implement (known: gpt-2, "
                    "default, qwen2, llama-bpe); encoding with another would give other ids");
    }
    if (!token_types.empty() && token_types.size() != tokens.size())
        fail(where, "tokenizer.ggml.token_type has " + std::to_string(token_types.size()) + " entries for " +
                        std::to_string(tokens.size()) + " tokens");
    std::unordered_map<std::string, int> ids;  // vocabulary strings -> id, to resolve merges
    ids.reserve(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        const int id = static_cast<int>(i);
        const int type = token_types.empty() ? 1 : static_cast<int>(token_types[i]);
        if (type == 3 || type == 4) {  // control (special) and user-defined: added tokens, their raw text
            tok.set_piece(id, tokens[i], where, kAdded);
            tok.added_.push_back(AddedToken{tokens[i], id, type == 3, false});
        } else {
            const std::optional<std::string> bytes = unicode_to_bytes(tokens[i]);
            tok.set_piece(id, bytes.value_or(tokens[i]), where, bytes ? kRegular : kOther);
        }
        ids.emplace(tokens[i], id);
    }
    for (std::size_t i = 0; i < merges.size(); ++i) {
        const std::string& line = merges[i];
        const std::string what = "tokenizer.ggml.merges[" + std::to_string(i) + "] ('" + line + "')";
        const std::size_t space = line.find(' ');
        if (space == 0 || space == std::string::npos || space + 1 == line.size() ||
            line.find(' ', space + 1) != std::string::npos)
            fail(where, what + ": expected \"left right\" (two tokens and one space)");
        const auto find = [&](const std::string& part) {
            const auto it = ids.find(part);
            if (it == ids.end()) fail(where, what + ": '" + part + "' is not in tokenizer.ggml.tokens");
            return it->second;
        };
        const int left_id = find(line.substr(0, space));
        const int right_id = find(line.substr(space + 1));
        tok.add_merge(left_id, right_id, find(line.substr(0, space) + line.substr(space + 1)), where, what);
    }
    tok.finish_vocab(where);
    return tok;
}

BpeTokenizer BpeTokenizer::load_hf_json(const std::string& tokenizer_json_path) {
    const std::string where = where_of(tokenizer_json_path);
    const Json root = parse_json(tokenizer_json_path, "a Hugging Face tokenizer.json is expected");
    if (!root.is_object()) fail(where, "expected a JSON object (a tokenizer.json), found " + show(root));
    BpeTokenizer tok;

    // ---- model ----
    const auto model_it = root.find("model");
    if (model_it == root.end() || !model_it->is_object()) fail(where, "expected a \"model\" object, found none");
    const Json& model = *model_it;
    if (json_type(model) != "BPE") {
        fail(where, "model.type is " + json_type(model) + "; only \"BPE\" (byte-level BPE) is supported");
    }
    if (const auto it = model.find("dropout"); it != model.end() && !it->is_null() &&
                                               !(it->is_number() && it->get<double>() == 0.0)) {
        fail(where, "model.dropout is " + show(*it) + "; BPE dropout (random merges) is for training, expected null");
    }
    if (json_bool(model, "byte_fallback", false, where, "model")) {
        fail(where, "model.byte_fallback is true (SentencePiece-style <0x..> tokens); byte-level BPE needs false");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        const auto it = model.find(key);
        if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty())) {
            fail(where, std::string("model.") + key + " is " + show(*it) + "; byte-level BPE expects null or \"\"");
        }
    }
    tok.ignore_merges_ = json_bool(model, "ignore_merges", false, where, "model");

    const auto vocab_it = model.find("vocab");
    if (vocab_it == model.end() || !vocab_it->is_object()) {
        fail(where, "model.vocab: expected an object mapping token strings to ids, found " +
                        (vocab_it == model.end() ? std::string("nothing") : show(*vocab_it)));
    }
    std::unordered_map<std::string, int> ids;  // vocabulary strings -> id, to resolve merges
    ids.reserve(vocab_it->size());
    for (const auto& [text, value] : vocab_it->items()) {
        const int id = json_id(value, where, "model.vocab['" + text + "']");
        const std::optional<std::string> bytes = unicode_to_bytes(text);
        tok.set_piece(id, bytes.value_or(text), where, bytes ? kRegular : kOther);
        ids.emplace(text, id);
    }

    const auto merges_it = model.find("merges");
    if (merges_it == model.end() || !merges_it->is_array()) {
        fail(where, "model.merges: expected a list, found " +
                        (merges_it == model.end() ? std::string("nothing") : show(*merges_it)));
    }
    std::size_t index = 0;
    for (const Json& merge : *merges_it) {
        const std::string what = "model.merges[" + std::to_string(index++) + "] (" + show(merge) + ")";
        std::string left;
        std::string right;
        if (merge.is_string()) {  // older files: "left right"
            const std::string line = merge.get<std::string>();
            const std::size_t space = line.find(' ');
            if (space == 0 || space == std::string::npos || space + 1 == line.size() ||
                line.find(' ', space + 1) != std::string::npos) {
                fail(where, what + ": expected \"left right\" (two tokens and one space)");
            }
            left = line.substr(0, space);
            right = line.substr(space + 1);
        } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
            left = merge[0].get<std::string>();
            right = merge[1].get<std::string>();
        } else {
            fail(where, what + ": expected \"left right\" or [\"left\", \"right\"]");
        }
        const auto find = [&](const std::string& part) {
            const auto it = ids.find(part);
            if (it == ids.end()) fail(where, what + ": '" + part + "' is not in model.vocab");
            return it->second;
        };
        // One at a time: the order of evaluation of function arguments is unspecified, and the
        // message should name the first missing part.
        const int left_id = find(left);
        const int right_id = find(right);
        tok.add_merge(left_id, right_id, find(left + right), where, what);
    }

    // ---- added tokens ----
    if (const auto it = root.find("added_tokens"); it != root.end() && !it->is_null()) {
        if (!it->is_array()) fail(where, "added_tokens: expected a list, found " + show(*it));
        for (const Json& entry : *it) {
            const std::string what = "added_tokens entry " + show(entry);
            if (!entry.is_object() || !entry.contains("content") || !entry["content"].is_string()) {
                fail(where, what + ": expected an object with a string \"content\"");
            }
            const std::string content = entry["content"].get<std::string>();
            const int id = json_id(entry.contains("id") ? entry["id"] : Json(), where, what);
            for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
                if (json_bool(entry, flag, false, where, what)) {
                    fail(where, what + ": " + flag + " true is not supported (it changes the text around the token)");
                }
            }
            const bool special = json_bool(entry, "special", false, where, what);
            const bool normalized = json_bool(entry, "normalized", !special, where, what);
            if (const auto same = ids.find(content); same != ids.end()) {
                // GPT-2's "<|endoftext|>" is both a vocabulary entry and an added token.
                if (same->second != id) {
                    fail(where, what + ": model.vocab has '" + content + "' as id " + std::to_string(same->second) +
                                    ", the added token says " + std::to_string(id));
                }
            } else {
                tok.set_piece(id, content, where, kAdded);
            }
            tok.added_.push_back(AddedToken{content, id, special, normalized});
        }
    }

    // ---- normalizer ----
    const auto field = [&](const char* key) {
        const auto it = root.find(key);
        return it == root.end() ? Json() : *it;
    };
    const Json normalizer = field("normalizer");
    if (normalizer.is_null()) {
        tok.nfc_ = false;
    } else if (json_type(normalizer) == "NFC") {
        tok.nfc_ = true;
    } else if (json_type(normalizer) == "Sequence" && normalizer.contains("normalizers") &&
               normalizer["normalizers"].is_array() &&
               std::all_of(normalizer["normalizers"].begin(), normalizer["normalizers"].end(),
                           [](const Json& n) { return json_type(n) == "NFC"; })) {
        tok.nfc_ = !normalizer["normalizers"].empty();  // NFC twice is NFC
    } else {
        fail(where, "normalizer is " + show(normalizer) + "; supported: null, NFC, or a Sequence of NFC");
    }

    // ---- pre-tokenizer ----
    const Json pre = field("pre_tokenizer");
    const auto check_byte_level = [&](const Json& byte_level, const std::string& name, bool regex_allowed) {
        if (json_type(byte_level) != "ByteLevel") {
            fail(where, name + " is " + show(byte_level) + "; expected a ByteLevel pre-tokenizer");
        }
        const auto prefix = byte_level.find("add_prefix_space");
        if (prefix == byte_level.end() || !prefix->is_boolean() || prefix->get<bool>()) {
            fail(where, name + ".add_prefix_space is " +
                            (prefix == byte_level.end() ? std::string("missing") : show(*prefix)) +
                            "; only false is supported (true would put a space before every text)");
        }
        const bool use_regex = json_bool(byte_level, "use_regex", true, where, name);
        if (use_regex && !regex_allowed) {
            fail(where, name + ".use_regex is true after a Split; supported: false (the Split does the splitting)");
        }
        return use_regex;
    };
    if (json_type(pre) == "ByteLevel") {
        if (check_byte_level(pre, "pre_tokenizer", true)) tok.split_ = std::make_unique<Regex>(kGpt2Pattern, false, where);
    } else if (json_type(pre) == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array() &&
               pre["pretokenizers"].size() == 2 && json_type(pre["pretokenizers"][0]) == "Split") {
        const Json& split = pre["pretokenizers"][0];
        const std::string name = "pre_tokenizer.pretokenizers[0] (Split)";
        const Json behavior = split.contains("behavior") ? split["behavior"] : Json();
        if (behavior != "Isolated") {
            fail(where, name + ".behavior is " + show(behavior) + "; only \"Isolated\" is supported");
        }
        if (json_bool(split, "invert", false, where, name)) fail(where, name + ".invert is true; only false is supported");
        const Json pattern = split.contains("pattern") ? split["pattern"] : Json();
        if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
            tok.split_ = std::make_unique<Regex>(pattern["Regex"].get<std::string>(), false, where);
        } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
            tok.split_ = std::make_unique<Regex>(pattern["String"].get<std::string>(), true, where);
        } else {
            fail(where, name + ".pattern is " + show(pattern) + "; expected {\"Regex\": ...} or {\"String\": ...}");
        }
        check_byte_level(pre["pretokenizers"][1], "pre_tokenizer.pretokenizers[1]", false);
    } else {
        fail(where, "pre_tokenizer is " + show(pre) +
                        "; supported: ByteLevel, or Sequence[Split (Isolated), ByteLevel (use_regex false)]");
    }

    // ---- decoder ----
    const Json decoder = field("decoder");
    if (json_type(decoder) != "ByteLevel") {
        fail(where, "decoder is " + show(decoder) + "; expected ByteLevel (tokens are bytes written as characters)");
    }

    tok.finish_vocab(where);

    // ---- post_processor: the ids a TemplateProcessing puts before a single sequence ($A) are the
    // prompt's BOS (Llama 3: <|begin_of_text|>); encode() itself never adds them ----
    const auto post_it = root.find("post_processor");
    if (post_it != root.end() && post_it->is_object()) {
        std::vector<Json> processors = {*post_it};
        if (json_type(*post_it) == "Sequence" && post_it->contains("processors") && (*post_it)["processors"].is_array())
            processors.assign((*post_it)["processors"].begin(), (*post_it)["processors"].end());
        for (const Json& p : processors) {
            if (json_type(p) != "TemplateProcessing" || !p.contains("single") || !p["single"].is_array()) continue;
            for (const Json& piece : p["single"]) {
                if (piece.contains("Sequence")) break;  // $A: what comes after it is not a prefix
                if (!piece.contains("SpecialToken") || !piece["SpecialToken"].is_object() ||
                    !piece["SpecialToken"].contains("id") || !piece["SpecialToken"]["id"].is_string())
                    fail(where, "post_processor: a TemplateProcessing piece is " + show(piece) +
                                    "; expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}");
                const std::string name = piece["SpecialToken"]["id"].get<std::string>();
                const auto id = tok.token_id(name);
                if (!id) fail(where, "post_processor: the template's special token " + show(piece["SpecialToken"]["id"]) +
                                         " is not in the vocabulary");
                tok.prompt_prefix_.push_back(*id);
            }
        }
    }
    return tok;
}

BpeTokenizer BpeTokenizer::load_llmc(const std::string& gpt2_tokenizer_bin_path) {
    const std::string where = where_of(gpt2_tokenizer_bin_path);
    const std::string redo = "; the file is damaged or is not llm.c's gpt2_tokenizer.bin (train_gpt2.py writes it)";
    const std::string data = read_file(gpt2_tokenizer_bin_path, "llm.c's train_gpt2.py writes gpt2_tokenizer.bin");
    const std::size_t header_bytes = kLlmcHeaderInts * 4;
    if (data.size() < header_bytes) {
        fail(where, "expected a header of 256 uint32 (1024 bytes), found a file of " + std::to_string(data.size()) +
                        " bytes" + redo);
    }
    std::array<std::uint32_t, kLlmcHeaderInts> header{};
    std::memcpy(header.data(), data.data(), header_bytes);  // little-endian, as llm.c assumes
    if (header[0] != kLlmcMagic) {
        fail(where, "expected magic " + std::to_string(kLlmcMagic) + ", found " + std::to_string(header[0]) + redo);
    }
    const std::uint32_t version = header[1];
    const std::uint32_t vocab = header[2];
    std::uint32_t eot = 0;
    if (version == 1) {
        // Version 1 has no eot field; llm.c assumes GPT-2 (and asserts its vocabulary size).
        if (vocab != kLlmcVersion1Vocab) {
            fail(where, "version 1 file with vocab_size " + std::to_string(vocab) + ", expected " +
                            std::to_string(kLlmcVersion1Vocab) + " (GPT-2)" + redo);
        }
        eot = kLlmcVersion1Vocab - 1;
    } else if (version == 2) {
        eot = header[3];
    } else {
        fail(where, "expected version 1 or 2, found " + std::to_string(version) + redo);
    }
    if (vocab == 0 || vocab > static_cast<std::uint32_t>(kMaxId) + 1) {
        fail(where, "vocab_size " + std::to_string(vocab) + " is out of range (1.." + std::to_string(kMaxId + 1) + ")" + redo);
    }
    if (eot >= vocab) {
        fail(where, "eot token " + std::to_string(eot) + " is not below vocab_size " + std::to_string(vocab) + redo);
    }

    BpeTokenizer tok;
    tok.can_encode_ = false;
    std::size_t offset = header_bytes;
    for (std::uint32_t i = 0; i < vocab; ++i) {
        if (offset >= data.size()) {
            fail(where, "truncated: token " + std::to_string(i) + " of " + std::to_string(vocab) +
                            " starts at byte " + std::to_string(offset) + ", the end of the file" + redo);
        }
        const auto length = static_cast<unsigned char>(data[offset]);
        if (length == 0) {  // llm.c asserts every token has at least one byte
            fail(where, "token " + std::to_string(i) + " at byte " + std::to_string(offset) + " has length 0" + redo);
        }
        if (data.size() - offset - 1 < length) {
            fail(where, "truncated: token " + std::to_string(i) + " of " + std::to_string(vocab) + " needs " +
                            std::to_string(length) + " bytes after byte " + std::to_string(offset + 1) +
                            ", the file has " + std::to_string(data.size() - offset - 1) + redo);
        }
        tok.set_piece(static_cast<int>(i), data.substr(offset + 1, length), where, kRegular);
        offset += 1 + static_cast<std::size_t>(length);
    }
    // Bytes after the last token are ignored, as llm.c ignores them.
    tok.finish_vocab(where);
    tok.kind_[eot] = kSpecial;
    tok.eot_id_ = static_cast<int>(eot);
    return tok;
}

// ---- Encoding ----------------------------------------------------------------------------------

std::vector<int> BpeTokenizer::encode(std::string_view text, bool allow_special) const {
    if (!can_encode_) {
        throw ModelError(
            "encode: this tokenizer was loaded from llm.c's gpt2_tokenizer.bin, which has no merges and can only "
            "decode; to encode text, use GPT-2's encoder.json + vocab.bpe or a tokenizer.json (lmlab: --tokenizer DIR "
            "or --tokenizer tokenizer.json)");
    }
    check_utf8(text);
    std::vector<int> ids;
    ids.reserve(text.size() / 3);
    // Per call, so that encode stays const and thread-safe: pre-token bytes -> ids. Text repeats
    // the same words constantly, so most pre-tokens skip BPE.
    std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>> cache;
    split_added(text, false, allow_special, ids, cache);
    return ids;
}

// HF's order (AddedVocabulary::extract_and_normalize): first the added tokens that are not
// "normalized" are cut out of the raw text; each stretch between them is normalised, then the
// "normalized" added tokens are cut out of that; what remains is pre-tokenised and merged.
// Matching is leftmost-longest over all added tokens of the pass; with allow_special false a
// special token's match is dropped (its text stays plain text) and the search goes on after it,
// which is what HF's encode_special_tokens does with its Aho-Corasick matches.
void BpeTokenizer::split_added(std::string_view text, bool normalized_pass, bool allow_special, std::vector<int>& ids,
                               std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>>& cache) const {
    std::size_t plain_start = 0;  // start of the stretch not yet encoded
    std::size_t pos = 0;
    while (pos < text.size()) {
        if (!added_first_byte_[static_cast<unsigned char>(text[pos])]) {
            ++pos;
            continue;
        }
        const AddedToken* best = nullptr;
        for (const AddedToken& token : added_) {
            if (token.normalized != normalized_pass) continue;
            if (text.substr(pos).starts_with(token.content) &&
                (best == nullptr || token.content.size() > best->content.size())) {
                best = &token;
            }
        }
        if (best == nullptr) {
            ++pos;
            continue;
        }
        if (best->special && !allow_special) {
            pos += best->content.size();  // stays in the plain stretch
            continue;
        }
        encode_text(text.substr(plain_start, pos - plain_start), normalized_pass, allow_special, ids, cache);
        ids.push_back(best->id);
        pos += best->content.size();
        plain_start = pos;
    }
    encode_text(text.substr(plain_start), normalized_pass, allow_special, ids, cache);
}

void BpeTokenizer::encode_text(std::string_view text, bool normalized_pass, bool allow_special, std::vector<int>& ids,
                               std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>>& cache) const {
    if (text.empty()) return;
    if (!normalized_pass) {
        if (nfc_) {
            const std::string normalized = nfc(text);
            split_added(normalized, true, allow_special, ids, cache);
        } else {
            split_added(text, true, allow_special, ids, cache);
        }
        return;
    }
    const auto encode_piece = [&](std::string_view piece) {
        if (piece.size() > kMaxCachedPiece) {
            bpe(piece, ids);
            return;
        }
        auto it = cache.find(piece);
        if (it == cache.end()) {
            std::vector<int> piece_ids;
            bpe(piece, piece_ids);
            it = cache.emplace(std::string(piece), std::move(piece_ids)).first;
        }
        ids.insert(ids.end(), it->second.begin(), it->second.end());
    };
    if (split_) {
        split_->split(text, encode_piece);
    } else {
        encode_piece(text);
    }
}

// BPE of one pre-token, exactly as HF tokenizers' Word::merge_all: a doubly linked list of
// symbols (one per byte to start with) and a min-heap of candidate merges ordered by (rank,
// position). A popped candidate is applied only if its left symbol is still alive and the pair
// it now forms still merges into the same token; otherwise it is stale (one of its symbols has
// merged since it was pushed). After a merge, the two new pairs around the merged symbol are
// pushed. O(n log n) for a pre-token of n bytes (a 100,000-digit GPT-2 pre-token is one piece).
void BpeTokenizer::bpe(std::string_view piece, std::vector<int>& ids) const {
    if (piece.empty()) return;
    if (ignore_merges_) {
        if (const auto it = regular_ids_.find(piece); it != regular_ids_.end()) {
            ids.push_back(it->second);
            return;
        }
    }
    const std::size_t n = piece.size();
    struct Symbol {
        int id;
        int prev;
        int next;
        bool alive;
    };
    std::vector<Symbol> symbols(n);
    for (std::size_t i = 0; i < n; ++i) {
        const auto byte = static_cast<unsigned char>(piece[i]);
        const int id = byte_ids_[byte];
        if (id < 0) {
            throw ModelError("encode: byte " + hex_byte(byte) + " ('" + bytes_to_unicode_text(piece.substr(i, 1)) +
                                 "' in the vocabulary file) has no token in this vocabulary, so text containing it "
                                 "cannot be encoded");
        }
        symbols[i] = Symbol{id, static_cast<int>(i) - 1, i + 1 < n ? static_cast<int>(i) + 1 : -1, true};
    }
    if (n == 1) {
        ids.push_back(symbols[0].id);
        return;
    }

    const auto find_merge = [&](int left, int right) -> const Merge* {
        const auto it = merges_.find(static_cast<std::uint64_t>(left) << 32 | static_cast<std::uint32_t>(right));
        return it == merges_.end() ? nullptr : &it->second;
    };
    struct Candidate {
        std::uint32_t rank;
        int pos;
        int merged_id;
    };
    // "a comes out after b": higher rank, or the same rank further right.
    const auto comes_after = [](const Candidate& a, const Candidate& b) {
        return a.rank > b.rank || (a.rank == b.rank && a.pos > b.pos);
    };
    std::vector<Candidate> storage;
    storage.reserve(n);
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(comes_after)> queue(comes_after, std::move(storage));
    const auto push_pair = [&](int pos) {
        const Symbol& left = symbols[static_cast<std::size_t>(pos)];
        if (left.next < 0) return;
        if (const Merge* m = find_merge(left.id, symbols[static_cast<std::size_t>(left.next)].id)) {
            queue.push(Candidate{m->rank, pos, m->merged_id});
        }
    };
    for (std::size_t i = 0; i + 1 < n; ++i) push_pair(static_cast<int>(i));

    while (!queue.empty()) {
        const Candidate top = queue.top();
        queue.pop();
        Symbol& left = symbols[static_cast<std::size_t>(top.pos)];
        if (!left.alive || left.next < 0) continue;
        Symbol& right = symbols[static_cast<std::size_t>(left.next)];
        const Merge* m = find_merge(left.id, right.id);
        if (m == nullptr || m->merged_id != top.merged_id) continue;  // stale
        left.id = top.merged_id;
        right.alive = false;
        left.next = right.next;
        if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = top.pos;
        if (left.prev >= 0) push_pair(left.prev);
        push_pair(top.pos);
    }
    for (int i = 0; i >= 0; i = symbols[static_cast<std::size_t>(i)].next) {
        ids.push_back(symbols[static_cast<std::size_t>(i)].id);
    }
}

// ---- Decoding and lookups ----------------------------------------------------------------------

void BpeTokenizer::check_id(int id) const {
    if (id < 0 || id >= vocab_size()) {
        throw ModelError("token id " + std::to_string(id) + " is out of range for a vocabulary of " +
                             std::to_string(vocab_size()) + " tokens (valid ids: 0.." +
                             std::to_string(vocab_size() - 1) + ")");
    }
    if (kind_[static_cast<std::size_t>(id)] == kUnused) {
        throw ModelError("token id " + std::to_string(id) + " is not assigned to any token (a gap in the ids of a " +
                             std::to_string(vocab_size()) + "-token vocabulary)");
    }
}

std::string BpeTokenizer::decode(std::span<const int> ids) const {
    std::string text;
    for (const int id : ids) {
        check_id(id);
        text += pieces_[static_cast<std::size_t>(id)];
    }
    return text;
}

std::string BpeTokenizer::piece(int id) const {
    check_id(id);
    return pieces_[static_cast<std::size_t>(id)];
}

std::optional<int> BpeTokenizer::token_id(std::string_view token_text) const {
    for (const AddedToken& token : added_) {
        if (token.content == token_text) return token.id;
    }
    if (const auto it = regular_ids_.find(token_text); it != regular_ids_.end()) return it->second;
    return std::nullopt;
}

bool BpeTokenizer::is_special(int id) const {
    return id >= 0 && id < vocab_size() && kind_[static_cast<std::size_t>(id)] == kSpecial;
}

std::string BpeStreamDecoder::push(int id) {
    pending_ += tok_->piece(id);
    return take_complete_utf8(pending_);
}

std::string BpeStreamDecoder::flush() {
    return flush_incomplete_utf8(pending_);
}

}  // namespace lmlab
