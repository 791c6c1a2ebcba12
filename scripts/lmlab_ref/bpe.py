"""Reference byte-level BPE tokenizers (GPT-2 and Qwen) for lmlab's C++ BpeTokenizer.

It needs tiktoken 0.8.0 and Hugging Face tokenizers 0.20.3 (the .venv's), imported inside the
functions that use them. Nothing is ever downloaded: every tokenizer is built from the files in
../shared (tokenizers/gpt2/encoder.json + vocab.bpe, tokenizers/qwen/tokenizer.json).

Two independent references for GPT-2, which must agree id for id before anything is returned:
  - tiktoken, with an Encoding built offline from encoder.json (the mergeable ranks are the
    token bytes -> id; tiktoken merges the pair whose concatenation has the lowest rank);
  - HF tokenizers, with a BPE model read from encoder.json + vocab.bpe (merges by merge rank).
Qwen's reference is HF tokenizers with Qwen's own tokenizer.json (NFC, a Split regex, then
ByteLevel), which is what transformers uses for Qwen models.

Command line (writes the texts and ids as JSON for a C++ comparison driver, prints timings):
  cd scripts && ../.venv/bin/python -m lmlab_ref.bpe --dump /tmp/bpe_cases.json [--shared DIR]

Everything is deterministic: the same inputs give the same texts and ids on every run.
"""

import json
import os
import random
import struct
import sys
import time
import unicodedata

from lmlab_ref import common, tokenizers
from lmlab_ref.lmlab import default_shared_dir

# GPT-2's pre-tokenisation pattern (OpenAI's encoder.py, tiktoken's r50k_base/gpt2).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_END_OF_TEXT = "<|endoftext|>"
GPT2_END_OF_TEXT_ID = 50256
QWEN_VOCAB = 151665  # ids of Qwen's tokenizer (Qwen2.5's embedding is padded to 151936 rows)
LLAMA3_VOCAB = 128256  # ids of the Llama 3 tokenizer (128000 BPE tokens + 256 special)

# llm.c's gpt2_tokenizer.bin (train_gpt2.py write_tokenizer, llmc/tokenizer.h tokenizer_init).
LLMC_MAGIC = 20240328
LLMC_VERSION = 2
LLMC_HEADER_INTS = 256

# ---------------------------------------------------------------------------------------------
# Files


def gpt2_files(shared_dir: str) -> tuple[str, str]:
    """Paths of GPT-2's encoder.json and vocab.bpe under shared_dir."""
    return os.path.join(shared_dir, common.GPT2_ENCODER), os.path.join(shared_dir, common.GPT2_MERGES)


def qwen_file(shared_dir: str) -> str:
    """Path of Qwen's tokenizer.json under shared_dir."""
    return os.path.join(shared_dir, common.QWEN_TOKENIZER)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (OpenAI's encoder.py).

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, 0x7F-0xA0,
    0xAD) map to U+0100.. in byte order, so that every token is a printable string.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), 0x100))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# ---------------------------------------------------------------------------------------------
# Test texts

# Code-like text: indentation with spaces and tabs, operators, brackets, string escapes, CRLF.
CODE_SAMPLES = [
    '''#include <cstdio>
#include <vector>

// Sum of squares, the slow way.
int sum_of_squares(const std::vector<int>& xs) {
    int total = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
        total += xs[i] * xs[i];  // may overflow for |x| > 46340
    }
    return total;
}

int main(int argc, char** argv) {
    std::vector<int> xs{1, 2, 3, -4, 0x7f, 0b1010, 1'000'000};
    std::printf("%d\\n", sum_of_squares(xs));
    return argc > 1 ? 1 : 0;
}
''',
    '''def fibonacci(n: int) -> list[int]:
    """Return the first n Fibonacci numbers."""
    if n <= 0:
        return []
    out = [0, 1]
    while len(out) < n:
        out.append(out[-1] + out[-2])
    return out[:n]


class Matrix:
    def __init__(self, rows):
        self.rows = [list(r) for r in rows]

    def __matmul__(self, other):
        return Matrix([[sum(a * b for a, b in zip(r, c)) for c in zip(*other.rows)] for r in self.rows])

    def __repr__(self):
        return f"Matrix({self.rows!r})"


if __name__ == "__main__":
    print(fibonacci(20), Matrix([[1, 2], [3, 4]]) @ Matrix([[5], [6]]))
''',
    '''{
  "name": "lmlab",
  "version": "0.1.0",
  "dependencies": {"hdf5": ">=1.10", "gtest": "^1.12"},
  "matrix": [[1.5, -2.25e-3], [3.0E+10, null]],
  "escaped": "tab\\there \\"quoted\\" \\u00e9 \\\\ backslash",
  "empty": {}, "list": []
}
''',
    "#!/bin/sh\nset -eu\nfor f in *.txt; do\n\tif [ -s \"$f\" ]; then\n\t\tgrep -c 'don'\"'\"'t' \"$f\" || true\n\tfi\ndone\n"
    "echo \"${HOME:-/root}\" | sed -e 's/a/b/g' >> /tmp/out.log 2>&1 && exit 0\n",
    "SELECT u.id, COUNT(*) AS n\r\nFROM users u\r\n  LEFT JOIN orders o ON o.user_id = u.id\r\n"
    "WHERE u.created_at >= '2024-01-01' AND u.email LIKE '%@example.com'\r\nGROUP BY u.id HAVING n > 3;\r\n",
    "fn main() {\n    let v: Vec<u64> = (1..=10).map(|x| x * x).collect();\n    println!(\"{:?} {}\", v, v.iter().sum::<u64>());\n}\n"
    "<div class=\"x\"><a href=\"https://example.com/?q=1&amp;r=2#frag\">link</a>&nbsp;&lt;tag&gt;</div>\n",
]

CONTRACTIONS = [
    "don't DON'T Don't dOn'T",
    "It's IT'S It'S it'S",
    "they'll THEY'LL They'Ll",
    "I'd I'D we've WE'VE you're YOU'RE I'm I'M",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D",
    "rock'n'roll o'clock y'all ma'am 'tis '90s",
    "\u2019s typographic apostrophe: don\u2019t it\u2019s",
    "'\u017f long s and 'K kelvin: \u017f\u212a",  # characters that case-fold to s and k
]

NUMBERS = [
    "0", "1", "12", "123", "1234", "12345", "123456789012345678901234567890",
    "3.14159265358979323846 2.718281828459045 -0.000001 1e-10 6.022E23",
    "1,234,567.89 1.234.567,89 1 234 567",
    "+1 (555) 012-3456, 555.012.3456, +44 20 7946 0958, +49-30-901820",
    "2024-03-28T12:34:56.789Z 12:00 a.m. 31/12/1999",
    "v1.2.3-rc.4 192.168.0.1 0xDEADBEEF 0o777 0b1010",
    "\u0661\u0662\u0663 \u0967\u0968\u0969 \uff11\uff12\uff13 \u2460\u2461 \u00bd \u2153 \u2167 \U0001D7D9",
]

WHITESPACE = [
    "    ", "\t\t\t", "\n\n\n\n", " \t \n \r\n \t", "trailing   ", "trailing\t\n",
    "a  b   c    d     e", "tabs\tbetween\t\twords", "\n \n  \n   \n", "\r\r\n\n\r",
    "word\u00a0nbsp\u2003em\u3000ideographic\u202fnarrow", "\u2028\u2029\u0085\u000b\u000c",
    "\u180e mongolian vowel separator \u200b zero width \ufeff bom",
    "\x1c\x1d\x1e\x1f information separators",
    " " * 1000, "\n" * 300, "\t" * 200, " \n" * 150, "x" + " " * 517 + "y",
]

# Accented Latin written precomposed; decomposed copies (NFD) are added below.
ACCENTS = [
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m cr\u00e8me br\u00fbl\u00e9e fa\u00e7ade \u00fcber Stra\u00dfe",
    "Ti\u1ebfng Vi\u1ec7t c\u00f3 nhi\u1ec1u d\u1ea5u: \u0111\u01b0\u1eddng ph\u1ed1 H\u00e0 N\u1ed9i",
    "\u00c0 \u00c9 \u00ce \u00d5 \u00dc \u0106 \u0160 \u017d \u0141\u00f3d\u017a \u0158\u00ed\u010dany \u0151\u0171",
    "e\u0301 a\u0300 o\u0308 n\u0303 c\u0327 u\u0308\u0304 a\u0323\u0302 q\u0307\u0323",
    "\u0301 lone combining accent, \u0323\u0301 two of them, Z\u0351\u0352\u0353\u0354 zalgo",
    "\u1100\u1161\u11a8 hangul jamo (composes to \uac01)",
    "\u212b angstrom sign, \u2126 ohm sign, \u0958 devanagari qa, \ufb01 ligature",
]

SCRIPTS = [
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\u6771\u4eac\u306f\u5927\u304d\u3044\u3067\u3059\u3002",
    "\u4e2d\u6587\u5b57\u7b26\uff0c\u4f60\u597d\uff0c\u4e16\u754c\uff01\u6211\u559c\u6b22\u5403\u82f9\u679c\u3002",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4. \uc548\ub155\ud558\uc138\uc694!",
    "\u0627\u0644\u0644\u063a\u0629 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u062c\u0645\u064a\u0644\u0629\u060c \u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u061f",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd! \u05e2\u05d1\u05e8\u05d9\u05ea \u05e0\u05db\u05ea\u05d1\u05ea \u05de\u05d9\u05de\u05d9\u05df \u05dc\u05e9\u05de\u05d0\u05dc.",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e\u0964 \u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03ba\u03b5\u03af\u03bc\u03b5\u03bd\u03bf, \u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442, \u0423\u043a\u0440\u0430\u0457\u043d\u0441\u044c\u043a\u0430",
    "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8 \u0540\u0561\u0575\u0565\u0580\u0565\u0576 \u12a0\u121b\u122d\u129b \u13e3\u13b3\u13a9",
    "\U00020000\U0002a6d6 \U0001f600 \U00010348 gothic \U0001d11e music",
]

EMOJI = [
    "\U0001F600",
    "smile \U0001F600 thumbs \U0001F44D\U0001F3FD wave \U0001F44B\U0001F3FF",
    "family \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 and \U0001F469\u200d\u2764\ufe0f\u200d\U0001F48B\u200d\U0001F468",
    "flags \U0001F1EB\U0001F1F7\U0001F1EF\U0001F1F5\U0001F1FA\U0001F1F8 \U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",
    "\u2764\ufe0f \u2764 \u263a\ufe0f keycap 1\ufe0f\u20e3 #\ufe0f\u20e3 \U0001F9D1\U0001F3FD\u200d\U0001F4BB",
    "\U0001F999\U0001F999\U0001F999 llamas, \U0001F680 rockets!!! \U0001F525\U0001F525",
]


def _nfd(texts: list[str]) -> list[str]:
    return [unicodedata.normalize("NFD", t) for t in texts]


def _kjv_chunks(kjv_text: str, total_chars: int, stride: int) -> list[str]:
    """Slices of the KJV whose lengths cycle through 1..4000 and whose starts step by `stride`,
    so that chunks begin and end anywhere (mid-word, mid-line, on blank lines)."""
    chunks: list[str] = []
    if not kjv_text:
        return chunks
    total = 0
    i = 0
    while total < total_chars:
        length = 1 + (i * 997) % 4000
        start = (i * stride) % len(kjv_text)
        chunk = kjv_text[start : start + length]
        chunks.append(chunk)
        total += len(chunk)
        i += 1
    return chunks


def _mixed_texts(seed: int, count: int, extra_fragments: list[str]) -> list[str]:
    """Deterministic mixtures of every fragment kind joined by varied separators.

    random.Random(seed) gives the same sequence on every CPython 3 version; this is the bulk
    of the non-English coverage (scripts, emoji, digits and punctuation next to each other).
    """
    rng = random.Random(seed)
    fragments = (
        CONTRACTIONS + NUMBERS + ACCENTS + _nfd(ACCENTS) + SCRIPTS + EMOJI + [w for w in WHITESPACE if len(w) < 50]
        + extra_fragments
    )
    separators = [" ", "", "  ", "\n", "\t", ", ", ". ", "\r\n", " \n", "!? ", "...", "\u3001", "-", "'"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randrange(2, 12)):
            fragment = rng.choice(fragments)
            if len(fragment) > 40 and rng.random() < 0.5:
                start = rng.randrange(len(fragment))
                fragment = fragment[start : start + rng.randrange(1, 40)]
            parts.append(fragment)
            parts.append(rng.choice(separators))
        texts.append("".join(parts))
    return texts


def _common_texts(kjv_text: str, seed: int, extra_fragments: list[str]) -> list[str]:
    texts = list(tokenizers.EDGE_CASES)
    texts += ["", " ", "\n", " " * 1000, "\U0001F600", "\U0001F468\u200d\U0001F469\u200d\U0001F467"]
    texts += CONTRACTIONS + NUMBERS + WHITESPACE + ACCENTS + _nfd(ACCENTS) + SCRIPTS + EMOJI
    texts += CODE_SAMPLES
    code = "".join(CODE_SAMPLES)
    texts.append(code * 3)
    texts.append(code.replace("    ", "\t"))
    texts += [
        str(7**4000),  # a 3,381-digit run
        " ".join(str(11**k) for k in range(200)),
        "".join(f"{k}.{k * 37 % 1000:03d} " for k in range(500)),
        "The answer is 42.\n" + "9" * 5000 + "\nend",
    ]
    texts += _mixed_texts(seed, 600, extra_fragments)
    prose = kjv_text[:20000]
    texts.append(prose + "\n\n" + " ".join(SCRIPTS) + "\n" + " ".join(EMOJI) + "\n" + prose[:5000].upper())
    texts += _kjv_chunks(kjv_text, 200_000, 1_000_003 + seed)
    return texts


def gpt2_texts(kjv_text: str) -> list[str]:
    """About 410 KB of varied GPT-2 test texts (deterministic): tokenizers.EDGE_CASES,
    contractions, numbers, whitespace runs, accents (precomposed and NFD), many scripts, emoji
    (ZWJ, skin tones, flags), code, "<|endoftext|>" inside prose, random mixtures, KJV slices."""
    eot = [
        "Once upon a time<|endoftext|>The next story begins.",
        "<|endoftext|>",
        "<|endoftext|><|endoftext|> twice, and broken ones: <|endoftext| <|endoftext <endoftext|>",
        "text before <|endoftext|>",
    ]
    return _common_texts(kjv_text, 2, eot) + eot


def qwen_texts(kjv_text: str) -> list[str]:
    """The same mix for Qwen (about 420 KB), plus what matters for Qwen's tokenizer.json: text
    that NFC changes (decomposed accents, angstrom sign), long digit runs (Qwen splits digits one
    by one), newline and whitespace runs, case variants of contractions (its regex is (?i:...)),
    and special / added tokens inside text (recognised by HF's default)."""
    chat = [
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nHi 123456 h\u00e9llo \u4f60\u597d\n\n  x<|im_end|>",
        "<|endoftext|>text<|endoftext|>",
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
        "<|fim_prefix|>def f():<|fim_suffix|>\n    return 1<|fim_middle|>",
        "<|im_start|><|im_end|><|im_start|>",
        "not special: <|im_start <im_end|> <|IM_END|> < |im_end| > <|im_end|",
        "<|<|im_end|>|> nested, e\u0301<|im_end|>\u0301 accent around a special token",
        "<|vision_start|><|image_pad|><|vision_end|>Describe.",
        "DON'T It'S THEY'LL I'D don't it's",
        "\U0001F600<|im_end|>\U0001F600",
    ]
    return _common_texts(kjv_text, 3, chat) + chat


def llama3_texts(kjv_text: str) -> list[str]:
    """The same mix for Llama 3's tokenizer (about 420 KB), plus what matters for it: digit runs
    (split in threes, "1234567" -> 123 456 7, next to letters and separators), whitespace runs before
    words and newlines, contractions in every case ((?i:'s|'t|...) in its regex), and its special
    tokens inside text (recognised by HF's default): the chat template's header and end-of-turn
    tokens, BOS and EOS inside prose, reserved ones, broken and nested imitations."""
    special = [
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi 123456 h\u00e9llo<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "text<|end_of_text|>more<|begin_of_text|>",
        "<|eot_id|><|eot_id|> twice, <|eom_id|> <|python_tag|>print(1)<|eot_id|>",
        "<|reserved_special_token_0|> <|reserved_special_token_247|>x<|finetune_right_pad_id|>",
        "not special: <|eot_id <eot_id|> <|EOT_ID|> < |eot_id| > <|eot_id| <|start_header_id>",
        "<|<|eot_id|>|> nested, e\u0301<|eot_id|>\u0301 accent around a special token",
        "\U0001F600<|eot_id|>\U0001F600",
    ]
    digits = [
        "1234567 12345678 123456789 1 12 123 1234",
        "a1b22c333d4444e55555 x9999999y",
        "3.14159 2,718,281 10000000000 -42 +7 0.000001",
        "year 2024, 1999 and 100000 BC; 7 of 12345",
        "\u0661\u0662\u0663\u0664 \uff11\uff12\uff13\uff14 \u2460\u2461\u2462\u2463",
    ]
    spaces = ["  hello", "   world\n\n  x", "a \n\n\n b", "x\t\t  y", " \n ", "end   \n", "\n\n\n\nstart"]
    cases = ["DON'T Don't don't dOn'T", "IT'S It's it'S", "THEY'LL They'll", "I'D I'd WE'VE We've YOU'RE you're I'M i'm"]
    extra = special + digits + spaces + cases
    return _common_texts(kjv_text, 4, extra) + extra


def codepoint_sweep_texts(step: int = 1) -> list[str]:
    """Every `step`-th Unicode scalar value in small contexts, 256 code points per text.

    Meant for a one-off comparison of a C++ regex engine with the Rust ones (whitespace, letter
    and number classes, Unicode versions); the full sweep (step 1) is about 11 MB and takes
    tiktoken about 30 s (11 million characters, 24 MB of UTF-8), so it is not part of the
    fixture texts."""
    values = [c for c in range(0, 0x110000, step) if not 0xD800 <= c <= 0xDFFF]
    texts = []
    for i in range(0, len(values), 256):
        texts.append("".join(f"a{chr(c)}b {chr(c)}{chr(c)}1 {chr(c)}\n" for c in values[i : i + 256]))
    return texts


# ---------------------------------------------------------------------------------------------
# References


def gpt2_tiktoken(shared_dir: str):
    """A tiktoken Encoding built offline from encoder.json: mergeable_ranks maps each token's
    bytes (the bytes_to_unicode inverse of its string) to its id, which for GPT-2 is its rank."""
    import tiktoken

    encoder_json, _ = gpt2_files(shared_dir)
    with open(encoder_json, encoding="utf-8") as f:
        encoder = json.load(f)
    byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
    ranks = {bytes(byte_of[ch] for ch in token): i for token, i in encoder.items() if token != GPT2_END_OF_TEXT}
    return tiktoken.Encoding(
        name="gpt2_offline",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={GPT2_END_OF_TEXT: GPT2_END_OF_TEXT_ID},
    )


def gpt2_hf(shared_dir: str):
    """An HF tokenizers.Tokenizer read from encoder.json + vocab.bpe, configured as GPT-2's
    tokenizer.json is: ByteLevel pre-tokenizer (GPT-2's regex, no prefix space), ByteLevel
    decoder, "<|endoftext|>" a special added token."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    encoder_json, vocab_bpe = gpt2_files(shared_dir)
    tok = Tokenizer(models.BPE.from_file(encoder_json, vocab_bpe))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(GPT2_END_OF_TEXT, special=True, normalized=False)])
    return tok


def gpt2_reference_ids(texts: list[str], shared_dir: str, allow_special: bool = False) -> list[list[int]]:
    """GPT-2 ids of each text from tiktoken and from HF tokenizers; SystemExit if they differ.

    allow_special False (the default): "<|endoftext|>" in a text is plain text, as tiktoken's
    encode(t, disallowed_special=()) and HF's encode_special_tokens=True do. True: it becomes id
    50256 (tiktoken allowed_special="all", HF's default).
    """
    enc = gpt2_tiktoken(shared_dir)
    hf = gpt2_hf(shared_dir)
    hf.encode_special_tokens = not allow_special
    if allow_special:
        ids_tiktoken = enc.encode_batch(texts, allowed_special="all")
    else:
        ids_tiktoken = enc.encode_batch(texts, disallowed_special=())
    ids_hf = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    for n, (text, a, b) in enumerate(zip(texts, ids_tiktoken, ids_hf)):
        if a != b:
            k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise SystemExit(
                f"GPT-2 references disagree on text {n} ({text[:80]!r}...): first difference at id index {k}: "
                f"tiktoken {a[k : k + 5]} vs HF tokenizers {b[k : k + 5]} (lengths {len(a)} and {len(b)})"
            )
    return ids_tiktoken


def qwen_reference_ids(texts: list[str], shared_dir: str, allow_special: bool = True) -> list[list[int]]:
    """Qwen ids of each text from HF tokenizers with Qwen's tokenizer.json, no special tokens
    added. allow_special True (HF's default): added tokens in the text are recognised. False:
    encode_special_tokens=True, which makes tokens marked "special" plain text; HF still matches
    the non-special added tokens (<tool_call>, <|fim_prefix|>, ...)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(qwen_file(shared_dir))
    tok.encode_special_tokens = not allow_special
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def llama3_reference_ids(texts: list[str], shared_dir: str, allow_special: bool = True) -> list[list[int]]:
    """Llama 3 ids of each text from HF tokenizers with the Llama 3.1 tokenizer.json, no special
    tokens added (its post-processor's BOS is not part of a text's ids). allow_special as for Qwen."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(shared_dir, common.LLAMA3_TOKENIZER))
    tok.encode_special_tokens = not allow_special
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def llmc_tokenizer_bytes(shared_dir: str) -> bytes:
    """The bytes of llm.c's gpt2_tokenizer.bin (version 2, eot 50256) for GPT-2, exactly as
    llm.c's train_gpt2.py write_tokenizer() writes it: 256 int32 header (magic, version,
    vocab size, eot id, zeros), then per token a uint8 length and the token's raw bytes."""
    enc = gpt2_tiktoken(shared_dir)
    n = enc.max_token_value + 1
    header = [0] * LLMC_HEADER_INTS
    header[0:4] = [LLMC_MAGIC, LLMC_VERSION, n, enc.eot_token]
    out = [struct.pack(f"<{LLMC_HEADER_INTS}i", *header)]
    for i in range(n):
        b = enc.decode_single_token_bytes(i)
        if not 0 < len(b) < 256:
            raise SystemExit(f"token {i} has {len(b)} bytes; llm.c's format stores 1..255")
        out.append(struct.pack("<B", len(b)) + b)
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# Command line


def _timed(label: str, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    print(f"  {label}: {time.perf_counter() - start:.2f} s", file=sys.stderr)
    return result


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dump", required=True, help="JSON file to write texts and reference ids to")
    parser.add_argument("--shared", default=default_shared_dir())
    parser.add_argument("--sweep-step", type=int, default=0, help="also dump every Nth code point in context (0: none)")
    args = parser.parse_args()

    total_start = time.perf_counter()
    kjv = _timed("kjv_text", tokenizers.kjv_text)
    gpt2 = _timed("gpt2_texts", gpt2_texts, kjv)
    qwen = _timed("qwen_texts", qwen_texts, kjv)
    special_gpt2 = [t for t in gpt2 if "<|" in t]
    special_qwen = [t for t in qwen if "<" in t]
    out = {
        "gpt2": {"texts": gpt2, "ids": _timed("gpt2_reference_ids", gpt2_reference_ids, gpt2, args.shared)},
        "gpt2_allow_special": {
            "texts": special_gpt2,
            "ids": _timed("gpt2_reference_ids(allow_special)", gpt2_reference_ids, special_gpt2, args.shared, True),
        },
        "qwen": {"texts": qwen, "ids": _timed("qwen_reference_ids", qwen_reference_ids, qwen, args.shared)},
        "qwen_no_special": {
            "texts": special_qwen,
            "ids": _timed("qwen_reference_ids(no special)", qwen_reference_ids, special_qwen, args.shared, False),
        },
    }
    llmc = _timed("llmc_tokenizer_bytes", llmc_tokenizer_bytes, args.shared)
    llmc_path = os.path.splitext(args.dump)[0] + ".gpt2_tokenizer.bin"
    with open(llmc_path, "wb") as f:
        f.write(llmc)
    if args.sweep_step > 0:
        sweep = codepoint_sweep_texts(args.sweep_step)
        out["sweep_gpt2"] = {"texts": sweep, "ids": _timed("sweep gpt2", gpt2_reference_ids, sweep, args.shared)}
        out["sweep_qwen"] = {"texts": sweep, "ids": _timed("sweep qwen", qwen_reference_ids, sweep, args.shared)}
    with open(args.dump, "w", encoding="utf-8") as f:
        json.dump(out, f)
    for name, entry in out.items():
        size = sum(len(t.encode("utf-8")) for t in entry["texts"])
        print(f"{name}: {len(entry['texts'])} texts, {size} bytes, {sum(map(len, entry['ids']))} ids", file=sys.stderr)
    print(f"total {time.perf_counter() - total_start:.2f} s; wrote {args.dump} and {llmc_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
