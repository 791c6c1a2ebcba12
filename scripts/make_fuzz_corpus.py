"""Seed corpora for the fuzz targets (fuzz/fuzz_*.cpp), made from real files: small models in every
checkpoint format (written by the same code the exporter uses, scripts/lmlab_ref: llama_ref / q8's
version-2 writer, transformers' save_pretrained, families/gpt2's llm.c writer), and small but consistent cuts of the real
tokenizers under ../shared (GPT-2's encoder.json + vocab.bpe, Qwen's tokenizer.json, llama2.c's
tok512.bin, llm.c's gpt2_tokenizer.bin). Small seeds keep each execution fast; libFuzzer mutates
from there.

    .venv/bin/python scripts/make_fuzz_corpus.py --out build/fuzz/corpus     (scripts/fuzz.sh calls it)

Input layouts (fuzz/fuzz.h Parts): several files in one input are each a 2-byte little-endian length
followed by the bytes, the last file taking the rest.
"""
import argparse
import hashlib
import io
import json
import os
import struct
import tempfile

from lmlab_ref import common  # noqa: F401 (first: it sets HF_HUB_OFFLINE, nothing is downloaded)
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from lmlab_ref import bpe, gguf_hostile, gguf_models, llama_ref, q8  # noqa: E402
from lmlab_ref.families import gpt2 as gpt2_family  # noqa: E402
from lmlab_ref.lmlab import default_shared_dir  # noqa: E402


def parts(*files):
    """fuzz.h's Parts layout."""
    out = b""
    for f in files[:-1]:
        assert len(f) < 65536
        out += struct.pack("<H", len(f)) + f
    return out + files[-1]


def put(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tiny_llama(seed, **kw):
    torch.manual_seed(seed)
    cfg = llama_ref.Config(**{"dim": 8, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 12, "vocab_size": 16,
                              "max_seq_len": 8, **kw})
    return llama_ref.Llama(cfg).eval()


def llama2c_bytes(model):
    """llama2.c's float32 format (what llama_ref.load_llama2c reads): 7 int32 (vocab negative when
    the classifier is not shared), then the weights layer-stacked, the freq_cis tables, the classifier."""
    c = model.cfg
    vocab = c.vocab_size if c.tied_embeddings else -c.vocab_size
    buf = io.BytesIO()
    buf.write(struct.pack("<7i", c.dim, c.ffn_dim, c.n_layers, c.n_heads, c.n_kv_heads, vocab, c.max_seq_len))

    def w(t):
        buf.write(t.detach().to(torch.float32).contiguous().numpy().tobytes())

    w(model.tok_embeddings.weight)
    for name in ["attention_norm.weight", "attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
                 "attention.wo.weight", "ffn_norm.weight", "feed_forward.w1.weight", "feed_forward.w2.weight",
                 "feed_forward.w3.weight"]:
        for layer in model.layers:
            w(layer.get_parameter(name))
    w(model.norm.weight)
    w(torch.zeros(c.max_seq_len * c.head_dim // 2))
    w(torch.zeros(c.max_seq_len * c.head_dim // 2))
    if not c.tied_embeddings:
        w(model.output.weight)
    return buf.getvalue()


def hf_seed(model):
    """Parts [config.json][index.json or empty][safetensors] of a save_pretrained directory."""
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d, safe_serialization=True)
        with open(os.path.join(d, "config.json"), "rb") as f:
            config = f.read()
        with open(os.path.join(d, "model.safetensors"), "rb") as f:
            weights = f.read()
    return config, weights


def bpe_subset(shared, n_merges=300):
    """The first n_merges merges of GPT-2's vocab.bpe with the encoder entries they need (the 256
    byte symbols, every merge result, <|endoftext|>), renumbered: a small but consistent vocabulary."""
    with open(os.path.join(shared, "tokenizers/gpt2/encoder.json"), encoding="utf-8") as f:
        encoder = json.load(f)
    with open(os.path.join(shared, "tokenizers/gpt2/vocab.bpe"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [l for l in lines[1:] if l][:n_merges]
    tokens = [t for t, i in sorted(encoder.items(), key=lambda kv: kv[1]) if i < 256]
    for m in merges:
        tokens.append(m.replace(" ", ""))
    tokens.append("<|endoftext|>")
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    return vocab, merges, lines[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default=default_shared_dir())
    args = ap.parse_args()
    out, shared = args.out, args.shared

    # checkpoints
    for i, kw in enumerate([{}, {"tied_embeddings": True}, {"n_layers": 2, "n_kv_heads": 2}]):
        m = tiny_llama(i, **kw)
        put(out, "llama2c", f"tiny{i}.bin", llama2c_bytes(m))
        with tempfile.TemporaryDirectory() as d:
            q8.write_version2(m, os.path.join(d, "q8.bin"), group_size=4)
            with open(os.path.join(d, "q8.bin"), "rb") as f:
                put(out, "llama2c_q8", f"tiny{i}.bin", f.read())
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                      attn_implementation="eager")).eval()
    put(out, "llmc", "tiny.bin", gpt2_family.llmc_checkpoint_bytes(gpt2))
    qwen2 = Qwen2ForCausalLM(Qwen2Config(vocab_size=16, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8,
                                         tie_word_embeddings=True)).eval()
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8)).eval()
    for name, model in [("gpt2", gpt2), ("qwen2", qwen2), ("llama", llama)]:
        config, weights = hf_seed(model)
        put(out, "hf_dir", f"{name}.bin", parts(config, b"", weights))
        index = json.dumps({"metadata": {"total_size": 0},
                            "weight_map": {k: "model-00001-of-00001.safetensors" for k in model.state_dict()}}).encode()
        put(out, "hf_dir", f"{name}-sharded.bin", parts(config, index, weights))

    # GGUF files: the tiny models above as llama.cpp's converter writes them (gguf_models.write), F32 and F16
    # (their rows of 8 are no whole Q8_0 block), the LLaMA one with a small SentencePiece-style vocabulary
    def spm_vocab(w):
        pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(10)] + ["\u2581a", "\u2581the", "b"]
        w.add_tokenizer_model("llama")
        w.add_token_list(pieces)
        w.add_token_scores([0.0] * 3 + [0.0] * 10 + [-1.0, -2.0, -3.0])
        w.add_token_types([2, 3, 3] + [6] * 10 + [1, 1, 1])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
    with tempfile.TemporaryDirectory() as d:
        for name, model in [("llama", llama), ("qwen2", qwen2), ("gpt2", gpt2)]:
            for qtype in ("f32", "f16"):
                p = os.path.join(d, f"{name}.{qtype}.gguf")
                gguf_models.write(p, name, model, qtype, spm_vocab if name == "llama" else None)
                with open(p, "rb") as f:
                    put(out, "gguf", f"{name}.{qtype}.gguf", f.read())
    for name, data in gguf_hostile.files().items():  # (also committed: fuzz/regressions/gguf/)
        put(out, "gguf", f"hostile-{name}.gguf", data)

    # HDF5 structure bytes: random seeds (the target's FuzzedDataProvider reads any bytes)
    g = torch.Generator().manual_seed(1)
    for i in range(4):
        put(out, "hdf5_model", f"random{i}.bin", bytes(torch.randint(0, 256, (512,), generator=g).tolist()))
        body = bytes(torch.randint(0, 256, (512,), generator=g).tolist())
        empty_sha = hashlib.sha256(b"").hexdigest()  # fuzz_fixture's exporter hash (no scripts)
        manifest = json.dumps({"format_version": 1, "exporter_sha256": empty_sha,
                               "files": {"kernel/f.h5": "0" * 64}}).encode()
        put(out, "fixture", f"random{i}.bin", parts(manifest, body))

    # the CLI's own parsers: first byte 1 = --prompt-ids, 0 = a stage table model field
    for i, (mode, text) in enumerate([(1, "1,403,407"), (1, " 1 , 2,3 "), (1, "2147483647,-1"), (0, "models/x.h5"),
                                      (0, "models/x.h5#q8_0"), (0, "shared:m.bin#q8_0,group=32")]):
        put(out, "cli", f"seed{i}.bin", bytes([mode]) + text.encode())

    # serve-batch's requests files (JSON Lines), served on fuzz_requests' tiny model (vocabulary 64, context 48)
    for i, text in enumerate([
            '{"id": "a", "prompt_ids": [1, 5, 9], "max_tokens": 4}\n{"prompt_ids": [1], "max_tokens": 20, "arrival_step": 2}\n',
            '# a comment\n\n{"prompt_ids": [1, 2, 3, 4, 5, 6, 7], "max_tokens": 40, "temperature": 0.8, "seed": 3}\n'
            '{"prompt_ids": [7, 7], "max_tokens": 30, "top_k": 5, "top_p": 0.5, "arrival_step": 1}\n',
            '{"prompt": "text needs a tokenizer", "max_tokens": 3}\n',
            '{"prompt_ids": [1, 2], "max_tokens": 3, "unknown": 1}\n']):
        put(out, "requests", f"seed{i}.jsonl", text.encode())

    # tokenizer files
    stories_tok = os.path.join(shared, "models/stories260K/tok512.bin")
    if os.path.exists(stories_tok):
        with open(stories_tok, "rb") as f:
            put(out, "tokenizer_llama2c", "tok512.bin", f.read())
    if os.path.exists(os.path.join(shared, "tokenizers/gpt2/encoder.json")):
        vocab, merges, version = bpe_subset(shared)
        enc = json.dumps(vocab, ensure_ascii=False).encode()
        merges_file = ("\n".join([version] + merges) + "\n").encode()
        put(out, "tokenizer_gpt2_files", "gpt2-300.bin", parts(enc, merges_file))
        put(out, "tokenizer_vocab_merges", "gpt2-300.bin", parts(enc, merges_file))
        llmc = bpe.llmc_tokenizer_bytes(shared)
        header = list(struct.unpack("<256i", llmc[:1024]))
        body, off, n = b"", 1024, 300
        for _ in range(n):
            body += llmc[off:off + 1 + llmc[off]]
            off += 1 + llmc[off]
        header[2], header[3] = n, n - 1
        put(out, "tokenizer_llmc", "gpt2-300.bin", struct.pack("<256i", *header)[4:] + body)  # the target adds the magic
        hf = {"version": "1.0", "added_tokens": [{"id": len(vocab) - 1, "content": "<|endoftext|>", "special": True,
                                                  "single_word": False, "lstrip": False, "rstrip": False,
                                                  "normalized": False}],
              "normalizer": None,
              "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
              "decoder": {"type": "ByteLevel"},
              "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
        put(out, "tokenizer_json", "gpt2-300.json", json.dumps(hf, ensure_ascii=False).encode())
    qwen = os.path.join(shared, "tokenizers/qwen/tokenizer.json")
    if os.path.exists(qwen):
        with open(qwen, encoding="utf-8") as f:
            q = json.load(f)
        keep = q["model"]["merges"][:300]
        pieces = [t for t, i in sorted(q["model"]["vocab"].items(), key=lambda kv: kv[1]) if i < 256]
        for m in keep:
            pieces.append("".join(m) if isinstance(m, list) else m.replace(" ", ""))
        q["model"]["vocab"] = {t: i for i, t in enumerate(dict.fromkeys(pieces))}
        q["model"]["merges"] = keep
        n = len(q["model"]["vocab"])
        q["added_tokens"] = [dict(t, id=n + k) for k, t in enumerate(q["added_tokens"][:4])]
        put(out, "tokenizer_json", "qwen-300.json", json.dumps(q, ensure_ascii=False).encode())

    # text for the encode/decode targets: first byte = mode (bit 0 allow_special, bit 1 decode ids)
    texts = ["Hello, world!", "Once upon a time, there was a little girl named Lily.",
             "  leading spaces and\ttabs\nand newlines\r\n", "café naïve 日本語 한국어 🤖🎉", "<|endoftext|> and <|im_start|>user",
             "12345 3.14159 1e-9", "\u0301 combining accent, e\u0301 vs \u00e9", "a" * 200]
    for target in ("text_llama2", "text_gpt2", "text_qwen"):
        for i, t in enumerate(texts):
            put(out, target, f"text{i}.bin", bytes([i & 1]) + t.encode())
        put(out, target, "ids.bin", bytes([2]) + struct.pack("<8i", 0, 1, 2, 300, 1000, 31999, 50256, 151643))
    print(f"make_fuzz_corpus: seeds written under {out}")


if __name__ == "__main__":
    main()
