"""The SentencePiece reference (Debian's python3-sentencepiece), which lmlab's C++ tokenizer
(model/tokenizer/tokenizer.cpp) is checked against, and the King James Bible it learns from:
  - the Bible text (Debian's bible-kjv) as a deterministic training corpus,
  - the default SentencePiece BPE vocabulary trained on it (the tiny LLaMA's),
  - SentencePiece models <-> llama2.c vocabularies (pieces + scores; tokenizer.bin files),
  - the tokenizer test texts (EDGE_CASES: the byte-level BPE tests use them too) encoded by SentencePiece.

Everything here is deterministic: the same inputs give the same bytes on every run. No module
beyond sentencepiece and the standard library is needed (the model protobuf is written by hand in
spm_from_llama2c, so python3-protobuf is not required).
"""

import io
import struct
import subprocess

import sentencepiece as spm

# The Bible as `bible` prints it by default ("pretty-printing"): book and chapter headings,
# blank lines, verse numbers indented, lines broken between words at 79 columns. That gives the
# corpus leading spaces, runs of spaces, blank lines and digits. "-l 79" is explicit because
# the default width comes from $COLUMNS; the reference range spans the whole book; stdin is
# /dev/null because `bible` turns interactive when it reads a terminal.
BIBLE_COMMAND = ["bible", "-l", "79", "Gen1:1-Rev22:21"]

SPACE_SYMBOL = "\u2581"  # SentencePiece's '▁', a plain ' ' in llama2.c vocabularies

# SentencePiece piece types (sentencepiece_model.proto, ModelProto.SentencePiece.Type).
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def kjv_text() -> str:
    """The whole King James Bible (about 4.3 MB, ASCII) from Debian's bible-kjv package."""
    result = subprocess.run(BIBLE_COMMAND, stdin=subprocess.DEVNULL, capture_output=True, check=True)
    return result.stdout.decode("utf-8")


def train_default_vocab(text: str, vocab_size: int = 16384) -> bytes:
    """Train a SentencePiece BPE model on `text`; return the serialized ModelProto.

    Every option that changes encoding is chosen so that SentencePiece encodes exactly like
    lmlab's C++ tokenizer (llama2.c's merge rule): BPE (not unigram), byte fallback instead of
    <unk>, the identity normalizer (no NFKC), whitespace kept as it is, a dummy-prefix space,
    no user-defined symbols. split_digits and allow_whitespace_only_pieces, as for Llama 2, only
    shape what is learnt: numbers are spelt digit by digit, and runs of spaces (the verse
    indentation) can become pieces. character_coverage 1.0 keeps every character of the (ASCII)
    corpus in the vocabulary. One thread and the whole corpus (no sampling) make training
    deterministic; it takes about 2 s on the full Bible. Lines are the training sentences, so
    '\\n' itself is not a piece and encodes as byte token <0x0A>, as in Llama 2.
    """
    sentences = text.split("\n")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        input_sentence_size=0,
        num_threads=1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    return model.getvalue()


def _processor(model_bytes: bytes) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=model_bytes)


def spm_vocab(model_bytes: bytes) -> tuple[list[str], list[float]]:
    """Pieces and scores of a SentencePiece model in llama2.c's convention.

    As llama2.c's tokenizer.py export does: '▁' becomes ' ', byte pieces stay '<0xNN>', and
    BOS/EOS become '\\n<s>\\n' and '\\n</s>\\n' (so a tokenizer.bin written from this is
    byte-identical to llama2.c's own export).
    """
    sp = _processor(model_bytes)
    pieces, scores = [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if i == sp.bos_id():
            piece = "\n<s>\n"
        elif i == sp.eos_id():
            piece = "\n</s>\n"
        pieces.append(piece.replace(SPACE_SYMBOL, " "))
        scores.append(sp.get_score(i))
    return pieces, scores


def spm_from_llama2c(pieces: list[str], scores: list[float]) -> bytes:
    """A SentencePiece BPE ModelProto for a llama2.c vocabulary, so SentencePiece can serve as
    the reference for it too (e.g. stories260K's tok512.bin).

    Id 0 is <unk>, 1 and 2 are BOS/EOS, pieces '<0xNN>' are byte pieces, all others normal with
    ' ' turned back into '▁'. The normalizer is the identity with a dummy prefix and no
    whitespace removal, which is what llama2.c assumes. The protobuf is written by hand (field
    numbers from sentencepiece_model.proto) to avoid depending on python3-protobuf.
    """
    if len(pieces) != len(scores):
        raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
    model = b""
    for i, (piece, score) in enumerate(zip(pieces, scores)):
        if i == 0:
            text, kind = "<unk>", UNKNOWN
        elif i == 1:
            text, kind = "<s>", CONTROL
        elif i == 2:
            text, kind = "</s>", CONTROL
        elif _is_byte_piece(piece):
            text, kind = piece.upper().replace("<0X", "<0x"), BYTE
        else:
            text, kind = piece.replace(" ", SPACE_SYMBOL), NORMAL
        sentence_piece = _string_field(1, text) + _float_field(2, score) + _varint_field(3, kind)
        model += _bytes_field(1, sentence_piece)  # ModelProto.pieces
    trainer_spec = (
        _varint_field(3, 2)  # model_type = BPE
        + _varint_field(4, len(pieces))  # vocab_size
        + _varint_field(35, 1)  # byte_fallback
        + _varint_field(40, 0)  # unk_id
        + _varint_field(41, 1)  # bos_id
        + _varint_field(42, 2)  # eos_id
        + _varint_field(43, -1)  # pad_id (none)
    )
    normalizer_spec = (
        _string_field(1, "identity")  # name
        + _varint_field(3, 1)  # add_dummy_prefix
        + _varint_field(4, 0)  # remove_extra_whitespaces (the default is true)
        + _varint_field(5, 1)  # escape_whitespaces
    )
    model += _bytes_field(2, trainer_spec) + _bytes_field(3, normalizer_spec)
    _processor(model)  # fails loudly if SentencePiece cannot load what we wrote
    return model


def _is_byte_piece(piece: str) -> bool:
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">") and all(
        c in "0123456789abcdefABCDEF" for c in piece[3:5]
    )


# Minimal protobuf wire format: a field is a varint key (number << 3 | wire type), then a varint
# (type 0), 4 little-endian bytes (type 5), or a varint length and that many bytes (type 2).
def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # negative int32 values are sent as 10-byte two's complement
    out = b""
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out += bytes([low | 0x80])
        else:
            return out + bytes([low])


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3 | 0) + _varint(value)


def _float_field(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _string_field(number: int, text: str) -> bytes:
    return _bytes_field(number, text.encode("utf-8"))


# Hand-written texts for the edges of the algorithm. Python strings cannot hold invalid UTF-8
# (the C++ tests cover that); the unusual code points stand in for odd input: noncharacters
# U+FDD0, U+FFFE, U+FFFF, U+10FFFF, private use U+E000, U+F8FF, U+F0000, unassigned U+0378,
# U+0530, controls U+0000, U+0001, U+001B, U+007F, U+0085 (C1 NEL), U+2028/U+2029 separators,
# U+FEFF (BOM), U+200B/U+200D (zero width), U+00A0 and U+3000 (non-ASCII spaces), a combining
# accent with no base, and U+FFFD. U+2581 '▁' is left out on purpose: SentencePiece cannot tell
# it from a space (it is its escaped space), so it is not a tokenizer test, it is a known
# ambiguity of the SentencePiece format.
EDGE_CASES = [
    "",
    " ",
    "  ",
    "a",
    " a",
    "a ",
    "   leading spaces",
    "trailing spaces   ",
    "repeated     spaces   inside  text",
    "\t",
    "tab\tseparated\tvalues\t\t",
    "\n",
    "\n\n",
    "line one\nline two\n\n\nafter blank lines\n",
    " \n \n  \n",
    "windows\r\nline\r\nends",
    "        eight spaces then text",
    " " * 100 + "after a hundred spaces",
    "0123456789",
    "In 1611, 31102 verses; 3.14159 and 2,000,000.",
    "Genesis 1:1 and Revelation 22:21",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m cr\u00e8me br\u00fbl\u00e9e",
    "e\u0301 (e + combining acute) vs \u00e9",
    "\u0301 combining accent with no base",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u4e2d\u6587\u5b57\u7b26 \u4e2d\u6587",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0420\u0443\u0441\u0441\u043a\u0438\u0439",
    "\u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "emoji \U0001F600\U0001F44D\U0001F3FD family \U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F999",
    "\U0001F1EB\U0001F1F7 flag, \u2764\ufe0f heart",
    "<s> </s> <unk> <0x41> <0xFF> <pad> look like special pieces",
    "\ufdd0\ufffe\uffff\U0010ffff noncharacters",
    "\ue000\uf8ff\U000f0000 private use",
    "\u0378\u0530 unassigned",
    "\x00\x01\x1b\x7f\x85 controls",
    "\u2028line separator\u2029paragraph separator",
    "\ufeffBOM at start",
    "zero\u200bwidth\u200djoiner",
    "non\u00a0breaking\u3000ideographic space",
    "\ufffd replacement character",
    "a" * 1000,
    "ab" * 500,
    "!!!???...;;;:::---___***",
    "~`@#$%^&*()[]{}<>|\\/\"'",
]


def tokenizer_cases(text: str) -> list[str]:
    """About 300 KB of test texts: the edge cases above, then chunks of `text`.

    Chunk lengths cycle through 1..4000 characters and starts step through the corpus by a
    fixed stride, so chunks begin and end anywhere: mid-word, mid-line, on blank lines. The last
    case is one 100,000-character slice, to test one long encode.
    """
    cases = list(EDGE_CASES)
    if not text:
        return cases
    total = 0
    i = 0
    while total < 200_000:
        length = 1 + (i * 997) % 4000
        start = (i * 1_000_003) % len(text)
        chunk = text[start : start + length]
        cases.append(chunk)
        total += len(chunk)
        i += 1
    middle = len(text) // 2
    cases.append(text[middle : middle + 100_000])
    return cases


def spm_encode(model_bytes: bytes, texts: list[str]) -> list[list[int]]:
    """SentencePiece's ids for each text, without BOS."""
    sp = _processor(model_bytes)
    return [sp.encode(t) for t in texts]


def read_llama2c_vocab(path, vocab_size):
    """A llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score, int32 len, bytes.
    Returns (pieces, scores)."""
    with open(path, "rb") as f:
        data = f.read()
    off, pieces, scores = 4, [], []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append(data[off:off + n].decode("utf-8"))
        scores.append(score)
        off += n
    return pieces, scores
