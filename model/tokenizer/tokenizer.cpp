#include "model/tokenizer/tokenizer.h"

#include "model/model.h"  // ModelError
#include "model/tokenizer/utf8.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <queue>
#include <stdexcept>
#include <utility>

namespace lmlab {

namespace {

constexpr int kFirstRegularId = 3;  // ids 0, 1, 2 are <unk>, BOS, EOS
constexpr int kUnkId = 0;

// Value of one hexadecimal digit, or -1.
int hex_digit_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// Byte value of a byte piece "<0xNN>", or -1 when the piece is not one. Lower-case hex digits
// are accepted too, as llama2.c's sscanf("<0x%02hhX>") accepts them.
int byte_piece_value(std::string_view piece) {
    if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
    const int high = hex_digit_value(piece[3]);
    const int low = hex_digit_value(piece[4]);
    if (high < 0 || low < 0) return -1;
    return high * 16 + low;
}


// Reads a little-endian 32-bit value (the host is little-endian, as llama2.c assumes).
template <typename T>
T read_4_bytes(const std::vector<char>& data, std::size_t offset) {
    static_assert(sizeof(T) == 4);
    T value;
    std::memcpy(&value, data.data() + offset, 4);
    return value;
}

}  // namespace

Tokenizer::Tokenizer(std::vector<std::string> pieces, std::vector<float> scores)
    : pieces_(std::move(pieces)), scores_(std::move(scores)) {
    if (pieces_.size() != scores_.size()) {
        throw ModelError("Tokenizer: " + std::to_string(pieces_.size()) + " pieces but " +
                                 std::to_string(scores_.size()) + " scores; they must match one to one");
    }
    if (pieces_.size() < static_cast<std::size_t>(kFirstRegularId)) {
        throw ModelError("Tokenizer: vocabulary has " + std::to_string(pieces_.size()) +
                                 " pieces; it needs at least <unk>, <s> and </s> (ids 0, 1, 2)");
    }
    byte_token_ids_.fill(kUnkId);
    byte_value_of_id_.assign(pieces_.size(), -1);
    std::array<bool, 256> byte_seen{};
    for (std::size_t i = 0; i < pieces_.size(); ++i) {
        const int id = static_cast<int>(i);
        // A NaN score would make the merge order undefined.
        if (!std::isfinite(scores_[i])) {
            throw ModelError("Tokenizer: score of token " + std::to_string(id) + " ('" + pieces_[i] +
                                     "') is not a finite number");
        }
        if (id < kFirstRegularId) continue;  // control pieces never come from text
        const int byte = byte_piece_value(pieces_[i]);
        if (byte >= 0) {
            // SentencePiece types byte pieces BYTE, never matches them against text, and uses
            // them only for byte fallback. With a repeated byte piece the first one wins.
            byte_value_of_id_[i] = byte;
            const auto b = static_cast<std::size_t>(byte);
            if (!byte_seen[b]) {
                byte_seen[b] = true;
                byte_token_ids_[b] = id;
            }
            continue;
        }
        const auto [it, inserted] = text_piece_ids_.emplace(pieces_[i], id);
        if (!inserted) {
            throw ModelError("Tokenizer: piece '" + pieces_[i] + "' appears twice (ids " +
                                     std::to_string(it->second) + " and " + std::to_string(id) +
                                     "); a vocabulary must not repeat a piece");
        }
    }
}

Tokenizer Tokenizer::load_llama2c(const std::string& path, int vocab_size) {
    const std::string where = "tokenizer file '" + path + "'";
    if (vocab_size < 0) {
        throw ModelError(where + ": vocab_size " + std::to_string(vocab_size) +
                                 " must be positive (it comes from the model header), or 0 for every token in the file");
    }
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        throw ModelError("cannot open " + where +
                                 "; check the path (llama2.c models ship a tokenizer.bin next to them)");
    }
    // The files are small (the 32000-piece Llama 2 vocabulary is 434 KB): read all, then parse,
    // which makes exact truncation messages easy.
    const std::vector<char> data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (file.bad()) throw ModelError("error while reading " + where);

    const std::string redo = "; the file is damaged or is not a llama2.c tokenizer.bin — re-export it";
    if (data.size() < 4) {
        throw ModelError(where + ": " + std::to_string(data.size()) +
                                 " bytes, too short for the int32 max_token_length header" + redo);
    }
    const auto max_token_length = read_4_bytes<std::int32_t>(data, 0);
    if (max_token_length <= 0 || max_token_length > 4096) {
        throw ModelError(where + ": header max_token_length " + std::to_string(max_token_length) +
                                 " is not in 1..4096" + redo);
    }

    std::vector<std::string> pieces;
    std::vector<float> scores;
    pieces.reserve(static_cast<std::size_t>(vocab_size));
    scores.reserve(static_cast<std::size_t>(vocab_size));
    std::size_t offset = 4;
    const bool whole_file = vocab_size == 0;  // no model to say how many: read to the end
    for (int i = 0; whole_file ? offset < data.size() : i < vocab_size; ++i) {
        if (data.size() - offset < 8) {
            throw ModelError(
                where + ": truncated at token " + std::to_string(i) + " of " +
                (whole_file ? std::string("the file") : std::to_string(vocab_size)) +
                " (offset " + std::to_string(offset) + " of " + std::to_string(data.size()) +
                " bytes, the score and length need 8); either the file is incomplete or it belongs to a "
                "model with a smaller vocabulary — use the tokenizer that was exported with this model");
        }
        const auto score = read_4_bytes<float>(data, offset);
        const auto length = read_4_bytes<std::int32_t>(data, offset + 4);
        offset += 8;
        if (length < 0 || length > max_token_length) {
            throw ModelError(where + ": token " + std::to_string(i) + " has length " +
                                     std::to_string(length) + ", outside 0..max_token_length (" +
                                     std::to_string(max_token_length) + ")" + redo);
        }
        if (data.size() - offset < static_cast<std::size_t>(length)) {
            throw ModelError(where + ": truncated at token " + std::to_string(i) + " of " +
                                     std::to_string(vocab_size) + " (its text (" + std::to_string(length) +
                                     " bytes) runs past the end of the file)" + redo);
        }
        pieces.emplace_back(data.data() + offset, static_cast<std::size_t>(length));
        scores.push_back(score);
        offset += static_cast<std::size_t>(length);
    }
    try {
        return Tokenizer(std::move(pieces), std::move(scores));
    } catch (const std::runtime_error& e) {
        throw ModelError(where + ": " + e.what());
    }
}

int Tokenizer::vocab_size() const { return static_cast<int>(pieces_.size()); }

void Tokenizer::check_id(int id) const {
    if (id < 0 || id >= vocab_size()) {
        throw ModelError("token id " + std::to_string(id) + " is out of range for a vocabulary of " +
                                 std::to_string(vocab_size()) + " pieces (valid ids: 0.." +
                                 std::to_string(vocab_size() - 1) + ")");
    }
}

const std::string& Tokenizer::piece(int id) const {
    check_id(id);
    return pieces_[static_cast<std::size_t>(id)];
}

float Tokenizer::score(int id) const {
    check_id(id);
    return scores_[static_cast<std::size_t>(id)];
}

void Tokenizer::append_byte_tokens(std::string_view text, std::vector<int>& ids) const {
    for (const char c : text) ids.push_back(byte_token_ids_[static_cast<unsigned char>(c)]);
}

// How SentencePiece encodes, and so how this does (sentencepiece/src/normalizer.cc, bpe_model.cc
// and sentencepiece_processor.cc; the Llama 2 model has the "identity" normalizer):
// - Normalization only prepends the dummy-prefix '▁' and turns ' ' into '▁'. Our pieces already
//   use ' ', so the text is used as it is. Whitespace is neither collapsed nor split on: the
//   trainer splits words, but the encoder runs BPE over the whole text at once. Merges across
//   words can still happen when the vocabulary has such pieces (Llama 2 has runs of spaces).
// - BPE starts from one symbol per character, including characters that are not pieces, so
//   those could still merge into a longer piece. Symbols left at the end that are not pieces are
//   written as their UTF-8 bytes with the byte pieces (byte fallback).
// - A priority queue holds every adjacent pair whose concatenation is a piece, best score first,
//   ties broken by the smaller left position. Each step merges the globally best pair, which is
//   exactly llama2.c's "scan for the best pair, merge, repeat" loop, in O(n log n) instead of
//   O(n^2). Queue entries whose symbols have changed since they were pushed are skipped.
// SentencePiece replaces invalid UTF-8 with U+FFFD; llama2.c (and we) write each invalid byte as
// its byte token instead. Such bytes never merge.
std::vector<int> Tokenizer::encode(std::string_view text, bool add_bos) const {
    std::vector<int> ids;
    if (add_bos) ids.push_back(bos_id());
    if (text.empty()) return ids;

    std::string normalized;
    normalized.reserve(text.size() + 1);
    normalized += ' ';  // the dummy prefix
    normalized += text;

    // A symbol is a slice of `normalized`. Merging grows the left symbol and empties the right
    // one; prev/next link the symbols that are still alive.
    struct Symbol {
        std::size_t begin;
        std::size_t size;
        int prev;
        int next;
        bool frozen;  // an invalid UTF-8 byte: always its own byte token
    };
    std::vector<Symbol> symbols;
    std::size_t pos = 0;
    while (pos < normalized.size()) {
        const int length = utf8_sequence_length(normalized, pos);
        const bool invalid = length <= 0;
        const std::size_t size = invalid ? 1 : static_cast<std::size_t>(length);
        const int index = static_cast<int>(symbols.size());
        symbols.push_back(Symbol{pos, size, index - 1, -1, invalid});
        if (index > 0) symbols[static_cast<std::size_t>(index - 1)].next = index;
        pos += size;
    }

    struct Candidate {
        float score;
        int left;
        int right;
        std::size_t size;  // length of the merged piece, to recognise stale entries
    };
    // "a comes out after b": lower score, or the same score further right.
    auto comes_after = [](const Candidate& a, const Candidate& b) {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(comes_after)> queue(comes_after);

    auto add_candidate = [&](int left, int right) {
        if (left < 0 || right < 0) return;
        const Symbol& a = symbols[static_cast<std::size_t>(left)];
        const Symbol& b = symbols[static_cast<std::size_t>(right)];
        if (a.frozen || b.frozen) return;
        const std::string_view merged(normalized.data() + a.begin, a.size + b.size);
        const auto it = text_piece_ids_.find(merged);
        if (it == text_piece_ids_.end()) return;
        queue.push(Candidate{scores_[static_cast<std::size_t>(it->second)], left, right, merged.size()});
    };

    for (int i = 1; i < static_cast<int>(symbols.size()); ++i) add_candidate(i - 1, i);

    while (!queue.empty()) {
        const Candidate top = queue.top();
        queue.pop();
        Symbol& left = symbols[static_cast<std::size_t>(top.left)];
        Symbol& right = symbols[static_cast<std::size_t>(top.right)];
        // Symbols only grow, and only the left neighbour can swallow a symbol, so an entry whose
        // two symbols are alive and have the sizes they had when it was pushed is still valid.
        if (left.size == 0 || right.size == 0 || left.size + right.size != top.size) continue;
        left.size += right.size;
        left.next = right.next;
        if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = top.left;
        right.size = 0;
        add_candidate(left.prev, top.left);
        add_candidate(top.left, left.next);
    }

    for (int i = 0; i != -1; i = symbols[static_cast<std::size_t>(i)].next) {
        const Symbol& s = symbols[static_cast<std::size_t>(i)];
        const std::string_view text_of_symbol(normalized.data() + s.begin, s.size);
        const auto it = text_piece_ids_.find(text_of_symbol);
        if (it != text_piece_ids_.end()) {
            ids.push_back(it->second);
        } else {
            append_byte_tokens(text_of_symbol, ids);
        }
    }
    return ids;
}

std::string Tokenizer::decode_one(int prev_id, int id) const {
    check_id(id);
    if (id < kFirstRegularId) return {};  // <unk>, BOS and EOS have no text
    const int byte = byte_value_of_id_[static_cast<std::size_t>(id)];
    if (byte >= 0) return std::string(1, static_cast<char>(byte));
    const std::string& text = pieces_[static_cast<std::size_t>(id)];
    if (prev_id == bos_id() && !text.empty() && text[0] == ' ') return text.substr(1);
    return text;
}

std::string Tokenizer::decode(std::span<const int> ids) const {
    std::string text;
    int prev_id = bos_id();  // so the first piece loses its dummy-prefix space, as SentencePiece does
    for (const int id : ids) {
        text += decode_one(prev_id, id);
        prev_id = id;
    }
    return text;
}

StreamDecoder::StreamDecoder(const Tokenizer& tok, int prev_id) : tok_(&tok), prev_id_(prev_id) {}

std::string StreamDecoder::push(int id) {
    pending_ += tok_->decode_one(prev_id_, id);
    prev_id_ = id;
    return take_complete_utf8(pending_);
}

std::string StreamDecoder::flush() {
    return flush_incomplete_utf8(pending_);
}

}  // namespace lmlab
