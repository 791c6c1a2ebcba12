// UTF-8 validation shared by the tokenizers and the CLI.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace lmlab {

// Length of the UTF-8 sequence starting at text[pos]:
//   > 0  a complete, valid code point of that many bytes;
//     0  a valid start that the end of the text cuts short (more bytes may still come);
//    -1  invalid (bad lead byte, bad continuation byte, overlong form, surrogate, > U+10FFFF).
// The ranges are those of the Unicode standard's table of well-formed UTF-8 byte sequences.
inline int utf8_sequence_length(std::string_view text, std::size_t pos) {
    const auto lead = static_cast<unsigned char>(text[pos]);
    std::size_t length = 0;
    unsigned char second_min = 0x80;  // allowed range of the second byte
    unsigned char second_max = 0xBF;
    if (lead <= 0x7F) {
        return 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead == 0xE0) {
        length = 3;
        second_min = 0xA0;  // no overlong forms
    } else if (lead == 0xED) {
        length = 3;
        second_max = 0x9F;  // no UTF-16 surrogates
    } else if (lead >= 0xE1 && lead <= 0xEF) {
        length = 3;
    } else if (lead == 0xF0) {
        length = 4;
        second_min = 0x90;  // no overlong forms
    } else if (lead >= 0xF1 && lead <= 0xF3) {
        length = 4;
    } else if (lead == 0xF4) {
        length = 4;
        second_max = 0x8F;  // nothing above U+10FFFF
    } else {
        return -1;  // continuation byte, 0xC0, 0xC1 or 0xF5..0xFF
    }
    for (std::size_t i = 1; i < length; ++i) {
        if (pos + i >= text.size()) return 0;
        const auto byte = static_cast<unsigned char>(text[pos + i]);
        const unsigned char min = (i == 1) ? second_min : 0x80;
        const unsigned char max = (i == 1) ? second_max : 0xBF;
        if (byte < min || byte > max) return -1;
    }
    return static_cast<int>(length);
}

// The text with every byte that is not part of valid UTF-8 written as "\xNN" (for showing a
// token's bytes: a byte-level token may hold half of a character).
inline std::string utf8_escaped(std::string_view text) {
    static const char* const hex = "0123456789ABCDEF";
    std::string out;
    for (std::size_t pos = 0; pos < text.size();) {
        const int n = utf8_sequence_length(text, pos);
        if (n > 0) {
            out.append(text.substr(pos, static_cast<std::size_t>(n)));
            pos += static_cast<std::size_t>(n);
        } else {
            const auto b = static_cast<unsigned char>(text[pos++]);
            out += "\\x";
            out += hex[b >> 4];
            out += hex[b & 15];
        }
    }
    return out;
}

inline constexpr const char* kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

// Streaming decode's buffer: removes from `pending` and returns every complete character; bytes
// that can never start or continue one become U+FFFD; a valid but unfinished sequence at the end
// stays in `pending`, since the next token may complete it.
inline std::string take_complete_utf8(std::string& pending) {
    std::string ready;
    std::size_t pos = 0;
    while (pos < pending.size()) {
        const int length = utf8_sequence_length(pending, pos);
        if (length == 0) break;
        if (length < 0) {
            ready += kReplacementCharacter;
            pos += 1;
        } else {
            ready.append(pending, pos, static_cast<std::size_t>(length));
            pos += static_cast<std::size_t>(length);
        }
    }
    pending.erase(0, pos);
    return ready;
}

// The end of a stream: each held-back byte (it never completed a character) as U+FFFD.
inline std::string flush_incomplete_utf8(std::string& pending) {
    std::string rest;
    for (std::size_t i = 0; i < pending.size(); ++i) rest += kReplacementCharacter;
    pending.clear();
    return rest;
}

}  // namespace lmlab
