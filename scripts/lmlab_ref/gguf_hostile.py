"""Hostile GGUF files, one per check of model/load/gguf.cpp's parser: each breaks exactly one rule of the
format (counts and lengths against the bytes left, value types, offsets inside the data section and
aligned, overlapping tensors, dims products that overflow, absurd header values, ...) in an otherwise
well-formed tiny file, built byte by byte here (the gguf package's writer would refuse to write them).

    python3 -m lmlab_ref.gguf_hostile DIR     writes DIR/<name>.gguf for each (fuzz/regressions/gguf/)

model/load/gguf_test.cpp replays every file of fuzz/regressions/gguf/ and expects a ModelError naming
the rule (its table of expected phrases is keyed by these names); the fuzz target fuzz_gguf replays
them under ctest too (fuzz.replay.gguf).
"""
import os
import struct
import sys

STRING, ARRAY, U32, U64, BOOL, F32 = 8, 9, 4, 10, 7, 6


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def kv(key, kind, value):
    """One metadata entry; value already encoded unless it is a str/int of a scalar kind."""
    if kind == STRING:
        body = s(value)
    elif kind == U32:
        body = struct.pack("<I", value)
    elif kind == U64:
        body = struct.pack("<Q", value)
    elif kind == BOOL:
        body = struct.pack("<B", value)
    elif kind == F32:
        body = struct.pack("<f", value)
    else:
        body = value
    return s(key) + struct.pack("<I", kind) + body


def tensor_info(name, dims, ggml_type, offset):
    return s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", ggml_type, offset)


def gguf(kvs, infos, data, version=3, n_tensors=None, n_kv=None, alignment=32, magic=b"GGUF"):
    head = magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    body += b"\0" * ((-len(body)) % alignment)
    return body + data


ARCH = kv("general.architecture", STRING, "llama")
T0 = tensor_info("token_embd.weight", [8, 4], 0, 0)  # F32 [4, 8]: 128 bytes
DATA = bytes(128)


def files():
    """{name: bytes}: every file breaks one rule."""
    ok = gguf([ARCH], [T0], DATA)
    out = {
        "truncated_header": ok[:20],
        "bad_magic": b"GGUG" + ok[4:],
        "version_1": gguf([ARCH], [T0], DATA, version=1),
        "kv_count_absurd": gguf([ARCH], [T0], DATA, n_kv=1 << 60),
        "tensor_count_absurd": gguf([ARCH], [T0], DATA, n_tensors=1 << 62),
        "key_length_past_end": ok[:24] + struct.pack("<Q", 1 << 40) + ok[32:],
        "string_value_past_end": gguf([s("general.architecture") + struct.pack("<I", STRING) + struct.pack("<Q", 1 << 33)
                                       + b"llama"], [T0], DATA),
        "array_count_past_end": gguf([ARCH, kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 1 << 50)
                                               + s("a"))], [T0], DATA),
        "array_of_u64_past_end": gguf([ARCH, kv("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", U64, 1 << 30))],
                                      [T0], DATA),
        "nested_arrays_deep": gguf([ARCH, kv("x", ARRAY, struct.pack("<IQ", ARRAY, 1) * 40 + struct.pack("<IQ", U32, 0))],
                                   [T0], DATA),
        "value_type_unknown": gguf([ARCH, kv("x", 99, b"")], [T0], DATA),
        "array_element_type_unknown": gguf([ARCH, kv("x", ARRAY, struct.pack("<IQ", 77, 1) + b"\0" * 8)], [T0], DATA),
        "bool_value_2": gguf([ARCH, kv("x", BOOL, 2)], [T0], DATA),
        "key_twice": gguf([ARCH, ARCH], [T0], DATA),
        "alignment_not_power_of_two": gguf([ARCH, kv("general.alignment", U32, 24)], [T0], DATA),
        "alignment_zero": gguf([ARCH, kv("general.alignment", U32, 0)], [T0], DATA),
        "n_dims_zero": gguf([ARCH], [tensor_info("token_embd.weight", [], 0, 0)], DATA),
        "n_dims_five": gguf([ARCH], [tensor_info("token_embd.weight", [1, 1, 1, 1, 1], 0, 0)], DATA),
        "dim_zero": gguf([ARCH], [tensor_info("token_embd.weight", [8, 0], 0, 0)], DATA),
        "dims_product_overflow": gguf([ARCH], [tensor_info("token_embd.weight", [1 << 40, 1 << 40, 1 << 40], 0, 0)], DATA),
        "dim_absurd": gguf([ARCH], [tensor_info("token_embd.weight", [1 << 63, 1], 0, 0)], DATA),
        "type_unsupported_iq2_xxs": gguf([ARCH], [tensor_info("token_embd.weight", [256, 1], 16, 0)], DATA),
        "type_unknown_id": gguf([ARCH], [tensor_info("token_embd.weight", [8, 4], 1000, 0)], DATA),
        "type_activation_only_q8_k": gguf([ARCH], [tensor_info("token_embd.weight", [256, 1], 15, 0)], bytes(292)),
        "row_not_whole_blocks": gguf([ARCH], [tensor_info("token_embd.weight", [33, 4], 8, 0)], DATA),
        "offset_unaligned": gguf([ARCH], [tensor_info("token_embd.weight", [8, 4], 0, 4)], DATA + bytes(32)),
        "tensor_past_data_section": gguf([ARCH], [tensor_info("token_embd.weight", [8, 4], 0, 64)], DATA),
        "offset_absurd": gguf([ARCH], [tensor_info("token_embd.weight", [8, 4], 0, (1 << 64) - 32)], DATA),
        "tensors_overlap": gguf([ARCH], [T0, tensor_info("output.weight", [8, 4], 0, 96)], DATA + bytes(128)),
        "tensor_twice": gguf([ARCH], [T0, tensor_info("token_embd.weight", [8, 4], 0, 128)], DATA + bytes(128)),
        "data_section_past_end": gguf([ARCH, kv("general.alignment", U32, 65536)], [T0], b"")[:300],
        "architecture_unknown": gguf([kv("general.architecture", STRING, "falcon")], [T0], DATA),
        "architecture_not_a_string": gguf([kv("general.architecture", U32, 7)], [T0], DATA),
    }
    return out


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "fuzz/regressions/gguf"
    os.makedirs(out, exist_ok=True)
    for name, data in files().items():
        with open(os.path.join(out, name + ".gguf"), "wb") as f:
            f.write(data)
    print(f"gguf_hostile: {len(files())} files in {out}")


if __name__ == "__main__":
    main()
