"""GGUF files of the tiny models, written as llama.cpp's converter (convert_hf_to_gguf.py) writes them,
and their reference: transformers 4.46's own GGUF loading, its known bugs worked around visibly.

The files (stage rows' model keys models/gguf/tiny-<family>.<type>.gguf) are written with the gguf
package's GGUFWriter from the family's tiny Hugging Face model, following the converter:
  - names: token_embd, position_embd (GPT-2), blk.N.attn_norm / attn_q / attn_k / attn_v /
    attn_qkv (GPT-2) / attn_output / ffn_norm / ffn_gate / ffn_up / ffn_down, the experts of a layer
    merged into one [n_experts, rows, cols] tensor (ffn_gate_exps, ...), the router ffn_gate_inp,
    Qwen2-MoE's shared expert (ffn_*_shexp, ffn_gate_inp_shexp), output_norm, output; a tied
    classifier is not written (the converter drops lm_head when it is the embedding);
  - the `llama` architecture (LLaMA, and Mixtral, which llama.cpp writes as `llama` with experts):
    the q and k rows of each head permuted back from Hugging Face's rotate-half order to Meta's
    adjacent pairs (LlamaModel.permute); `qwen2`, `qwen2moe` and `gpt2` keep theirs;
  - GPT-2: the Conv1D weights ([in, out] in transformers) transposed to [out, in], the square
    attn.c_proj included;
  - types: 1-D tensors, *_norm.weight, biases, the routers (ffn_gate_inp, ffn_gate_inp_shexp) and
    GPT-2's position table stay F32; every other matrix is the file's type (F32, F16, Q8_0 by the
    gguf package's own quantizer gguf.quants.quantize, or Q6_K by ggml_quants.py's port of ggml's
    reference quantizer, which is ours, not llama.cpp's: its bytes are checked by
    gguf.quants.dequantize). A Q6_K matrix needs rows that are whole 256-blocks; one that has not
    falls back to Q8_0, as llama.cpp's quantizer does;
  - metadata: general.*, <arch>.context_length, embedding_length, block_count,
    feed_forward_length, attention.head_count(_kv), the norm epsilon, rope.freq_base,
    rope.dimension_count, expert_count / expert_used_count / expert_feed_forward_length, and the
    tokenizer (tokenizer.ggml.*: SentencePiece pieces, scores and types for the tiny LLaMA;
    byte-level BPE tokens, types and merges with the pre-tokenizer's name for Qwen2 and GPT-2 when
    ../shared has their vocabularies).

The reference (load): transformers 4.46.3's `from_pretrained(dir, gguf_file=name)`, which
dequantizes every tensor to float32 (with gguf.quants.dequantize) and undoes the llama permutation,
where it works; where it does not, transformers' own load_gguf_checkpoint (the same config and
tensors) put into the model class by hand, visibly:
  - BUG 1: a tied Qwen2 file (no output.weight) comes back with a randomly initialised lm_head
    (transformers maps no tensor to it and does not tie it): the checkpoint's tensors are loaded into
    Qwen2ForCausalLM built with tie_word_embeddings=True;
  - BUG 2: GPT-2's position table is sized from GPT2Config's default n_positions 1024, not from the
    file's gpt2.context_length, so a 256-position file is refused: the config gets n_positions from
    the file;
  - BUG 3: a qwen2moe file's hyperparameters are all lost: load_gguf_checkpoint renames the keys
    `qwen2moe.*` to `qwen2_moe.*` and then looks them up under `qwen2moe`, so the config is
    Qwen2MoeConfig's default (60 experts) and splitting the merged experts fails (IndexError);
  - BUG 4: llama.cpp writes "no padding token" as tokenizer.ggml.padding_token_id = 0xFFFFFFFF (its
    LLAMA_TOKEN_NULL; stories260K.gguf, made by llama.cpp's llama2.c converter, has it): transformers
    takes it as pad_token_id 4294967295 and LlamaModel refuses it ("Padding_idx must be within
    num_embeddings"): the checkpoint's tensors go into LlamaForCausalLM with pad_token_id None;
  - Mixtral (`llama` with experts): transformers 4.46 maps no expert tensor of a `llama` file (it
    builds a LlamaForCausalLM);
    for both MoE families the reference is the gguf package's GGUFReader and gguf.quants.dequantize
    into transformers' Qwen2MoeForCausalLM / MixtralForCausalLM (read_moe: Mixtral's q/k rows permuted
    back to rotate-half as transformers does for `llama`).
check() (refs.selfcheck) shows each bug on a file written here: the buggy load differs or raises.
"""
import os
import re

import numpy as np
import torch

from lmlab_ref import bpe, common, ggml_quants, hf_decoder, hf_moe, tokenizers

GGUF_DIR = "models/gguf"
# the file types of the stage rows (the K-quant: Q6_K, what a Q4_K_M file uses for its output and
# ffn_down, and the one our vectorised quantizer writes fast enough for the export budget)
TYPES = ("f32", "f16", "q8_0", "q6_k")
ARCH = {"llama": "llama", "qwen2": "qwen2", "gpt2": "gpt2", "qwen2moe": "qwen2moe", "mixtral": "llama"}


# The K-quant files need rows of whole 256-blocks: the tiny LLaMA (dim 256, ffn 1024) has them; GPT-2,
# Qwen2-MoE and Mixtral get a twin 256 wide ("tiny-<family>-256": hidden, expert and shared-expert widths
# 256, GPT-2's ffn 1024, the same vocabulary and depth). Qwen2 gets none: 256 wide, its 151936-row
# embedding alone is 39M weights (quantizing it costs ~90 s of the export).
WIDE = 256


def parse_key(k):
    """models/gguf/tiny-<family>[-256].<type>.gguf -> (family, type, wide)."""
    m = re.fullmatch(re.escape(GGUF_DIR) + r"/tiny-([a-z0-9]+)(-256)?\.([a-z0-9_]+)\.gguf", k)
    if not m or m.group(1) not in ARCH or m.group(3) not in TYPES:
        raise SystemExit(f"lmlab_ref: '{k}' is not a GGUF model key ({GGUF_DIR}/tiny-<family>[-256].<type>.gguf, "
                         f"families {', '.join(ARCH)}, types {', '.join(TYPES)})")
    return m.group(1), m.group(3), m.group(2) is not None


# ---- Writing ------------------------------------------------------------------------------------

def permute_hf_to_meta(w, n_head):
    """llama.cpp's LlamaModel.permute: rows [c * head_dim/2 + i] of each head (rotate-half pair i,
    component c) back to row 2i + c (Meta's adjacent pair i). w: [n_head * head_dim, ...]."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_tensors(family, model):
    """[(GGUF name, float32 numpy array in ours = PyTorch's [out, in] order)] of a transformers model,
    as the converter names and transforms them."""
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    c = model.config
    out = []
    if family == "gpt2":
        out += [("token_embd.weight", sd["transformer.wte.weight"]), ("position_embd.weight", sd["transformer.wpe.weight"])]
        for i in range(c.n_layer):
            p = f"transformer.h.{i}."
            for src, dst, transpose in (("ln_1.weight", "attn_norm.weight", False), ("ln_1.bias", "attn_norm.bias", False),
                                        ("attn.c_attn.weight", "attn_qkv.weight", True),
                                        ("attn.c_attn.bias", "attn_qkv.bias", False),
                                        ("attn.c_proj.weight", "attn_output.weight", True),
                                        ("attn.c_proj.bias", "attn_output.bias", False),
                                        ("ln_2.weight", "ffn_norm.weight", False), ("ln_2.bias", "ffn_norm.bias", False),
                                        ("mlp.c_fc.weight", "ffn_up.weight", True), ("mlp.c_fc.bias", "ffn_up.bias", False),
                                        ("mlp.c_proj.weight", "ffn_down.weight", True),
                                        ("mlp.c_proj.bias", "ffn_down.bias", False)):
                t = sd[p + src]
                out.append((f"blk.{i}.{dst}", np.ascontiguousarray(t.T) if transpose else t))
        out += [("output_norm.weight", sd["transformer.ln_f.weight"]), ("output_norm.bias", sd["transformer.ln_f.bias"])]
        return out  # GPT-2's lm_head is the embedding: never written
    nh, nkv, _ = hf_decoder.dims(c)
    permute = ARCH[family] == "llama"
    out.append(("token_embd.weight", sd["model.embed_tokens.weight"]))
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        for src, dst in (("input_layernorm.weight", "attn_norm.weight"), ("self_attn.q_proj.weight", "attn_q.weight"),
                         ("self_attn.q_proj.bias", "attn_q.bias"), ("self_attn.k_proj.weight", "attn_k.weight"),
                         ("self_attn.k_proj.bias", "attn_k.bias"), ("self_attn.v_proj.weight", "attn_v.weight"),
                         ("self_attn.v_proj.bias", "attn_v.bias"), ("self_attn.o_proj.weight", "attn_output.weight"),
                         ("post_attention_layernorm.weight", "ffn_norm.weight"),
                         ("mlp.gate_proj.weight", "ffn_gate.weight"), ("mlp.up_proj.weight", "ffn_up.weight"),
                         ("mlp.down_proj.weight", "ffn_down.weight"), ("mlp.gate.weight", "ffn_gate_inp.weight"),
                         ("block_sparse_moe.gate.weight", "ffn_gate_inp.weight"),
                         ("mlp.shared_expert.gate_proj.weight", "ffn_gate_shexp.weight"),
                         ("mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"),
                         ("mlp.shared_expert.down_proj.weight", "ffn_down_shexp.weight"),
                         ("mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight")):
            if p + src not in sd:
                continue
            t = sd[p + src]
            if permute and dst in ("attn_q.weight", "attn_k.weight"):
                t = permute_hf_to_meta(t, nh if dst == "attn_q.weight" else nkv)
            out.append((f"blk.{i}.{dst}", t))
        # the experts of a layer, merged as the converter does: [n_experts, rows, cols]
        for hf_names, dst in ((("mlp.experts.{}.gate_proj", "block_sparse_moe.experts.{}.w1"), "ffn_gate_exps"),
                              (("mlp.experts.{}.up_proj", "block_sparse_moe.experts.{}.w3"), "ffn_up_exps"),
                              (("mlp.experts.{}.down_proj", "block_sparse_moe.experts.{}.w2"), "ffn_down_exps")):
            for pattern in hf_names:
                if p + pattern.format(0) + ".weight" in sd:
                    n = sum(1 for k in sd if re.fullmatch(re.escape(p) + pattern.replace(".", r"\.").format(r"\d+") + r"\.weight", k))
                    out.append((f"blk.{i}.{dst}.weight", np.stack([sd[p + pattern.format(e) + ".weight"] for e in range(n)])))
    out.append(("output_norm.weight", sd["model.norm.weight"]))
    if not c.tie_word_embeddings:
        out.append(("output.weight", sd["lm_head.weight"]))
    return out


def tensor_type(name, t, qtype):
    """The ggml type of a tensor in a file of qtype, as the converter and llama.cpp's quantizer choose."""
    import gguf
    GT = gguf.GGMLQuantizationType
    if (t.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight")
            or any(k in name for k in ("ffn_gate_inp", "position_embd"))):
        return GT.F32
    if qtype == "q6_k" and t.shape[-1] % ggml_quants.QK_K:
        return GT.Q8_0  # llama-quantize: a row that is not whole 256-blocks falls back (Q6_K -> Q8_0)
    return {"f32": GT.F32, "f16": GT.F16, "q8_0": GT.Q8_0, "q6_k": GT.Q6_K}[qtype]


def encode(t, gtype):
    """(array to write, raw_dtype) of a float32 tensor in ggml type gtype."""
    import gguf
    GT = gguf.GGMLQuantizationType
    if gtype == GT.F32:
        return np.ascontiguousarray(t, dtype=np.float32), None
    if gtype == GT.F16:
        return t.astype(np.float16), None
    if gtype == GT.Q8_0:
        return gguf.quants.quantize(t, GT.Q8_0), GT.Q8_0  # the gguf package's own quantizer
    if gtype == GT.Q6_K:
        rows = int(np.prod(t.shape[:-1]))
        raw = np.frombuffer(ggml_quants.quantize_q6_k_rows(t), dtype=np.uint8)
        return raw.reshape(*t.shape[:-1], ggml_quants.row_bytes("Q6_K", t.shape[-1])), GT.Q6_K
    raise ValueError(gtype)


def add_hparams(w, family, c):
    """The architecture's hyperparameters under the converter's keys."""
    if family == "gpt2":
        w.add_context_length(c.n_positions)
        w.add_embedding_length(c.n_embd)
        w.add_feed_forward_length(c.n_inner or 4 * c.n_embd)
        w.add_block_count(c.n_layer)
        w.add_head_count(c.n_head)
        w.add_layer_norm_eps(c.layer_norm_epsilon)
        w.add_vocab_size(c.vocab_size)
        return
    nh, nkv, hd = hf_decoder.dims(c)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_freq_base(float(c.rope_theta))
    w.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    # (llama.cpp's converter writes <arch>.vocab_size for llama only; our Qwen2 and Qwen2-MoE files carry no
    # tokenizer, from whose token list readers otherwise take the vocabulary size: we write it for all)
    w.add_vocab_size(c.vocab_size)
    if family == "llama" or family == "mixtral":
        w.add_rope_dimension_count(hd)
    if family == "llama":  # the converter writes the head size when config.json has head_dim
        w.add_key_length(hd)
        w.add_value_length(hd)
    if family == "qwen2moe":
        w.add_expert_count(c.num_experts)
        w.add_expert_used_count(c.num_experts_per_tok)
        w.add_expert_feed_forward_length(c.moe_intermediate_size)
        w.add_expert_shared_feed_forward_length(c.shared_expert_intermediate_size)
    if family == "mixtral":
        w.add_expert_count(c.num_local_experts)
        w.add_expert_used_count(c.num_experts_per_tok)


def add_spm_tokenizer(w, proto):
    """tokenizer.ggml.* of a SentencePiece model (the converter's _set_vocab_sentencepiece): every
    piece, its score and its type (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6)."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_proto=proto)
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else
                     6 if sp.is_byte(i) else 1)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


def add_bpe_tokenizer(w, tokenizer_json, vocab_size, pre, bos, eos):
    """tokenizer.ggml.* of a byte-level BPE tokenizer.json (the converter's _set_vocab_gpt2): the tokens
    by id, padded to the embedding's rows with [PAD<id>] (UNUSED), added tokens CONTROL when
    special, the merges, the pre-tokenizer's llama.cpp name."""
    import json
    with open(tokenizer_json, encoding="utf-8") as f:
        tj = json.load(f)
    vocab = dict(tj["model"]["vocab"])
    special = {}
    for a in tj.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
        special[a["id"]] = a.get("special", False)
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(5)  # UNUSED
        else:
            # an added token is CONTROL when special or when it looks special (<|...|>), as the converter's
            # does_token_look_special; else USER_DEFINED
            t = by_id[i]
            looks = (t.startswith("<|") and t.endswith("|>")) or t in ("<pad>", "<mask>")
            tokens.append(t)
            types.append((3 if special[i] or looks else 4) if i in special else 1)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)


def write_tokenizer_only(path, arch, tokenizer):
    """A GGUF file with a tokenizer's metadata and no tensors (the tokenizer.gguf.* stages: lmlab reads
    a .gguf file's vocabulary, merges and pre-tokenizer name as llama.cpp's converter writes them)."""
    import gguf
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w = gguf.GGUFWriter(path, arch)
    w.add_type("vocab")
    tokenizer(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write(path, family, model, qtype, tokenizer=None):
    """The GGUF file of a transformers model; tokenizer(w) adds the tokenizer metadata (None: none).
    Returns {ggml type name: [tensor names]}."""
    import gguf
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w = gguf.GGUFWriter(path, ARCH[family])
    w.add_type("model")
    w.add_name(f"tiny-{family}")
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K}[qtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_hparams(w, family, model.config)
    if tokenizer is not None:
        tokenizer(w)
    kinds = {}
    for name, t in hf_tensors(family, model):
        gtype = tensor_type(name, t, qtype)
        data, raw = encode(t, gtype)
        w.add_tensor(name, data, raw_dtype=raw)
        kinds.setdefault(gtype.name, []).append(name)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return kinds


# ---- Reading: transformers' GGUF loading and its workarounds ---------------------------------------

def permute_meta_to_hf_rows(w, n_head):
    """The inverse of permute_hf_to_meta (transformers' reverse_permute_weights for `llama`)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def meta_columns(x, n_heads):
    """Activations [..., n_heads * head_dim] from Hugging Face's rotate-half order to Meta's adjacent
    pairs (what lmlab computes from a `llama` GGUF file, whose q/k rows are Meta's): element
    c * head_dim/2 + i of a head -> 2i + c."""
    hd = x.shape[-1] // n_heads
    return x.reshape(*x.shape[:-1], n_heads, 2, hd // 2).transpose(-1, -2).reshape(x.shape)


def from_pretrained(path):
    """transformers' own GGUF loading, as a user calls it."""
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                torch_dtype=torch.float32, attn_implementation="eager").eval()


def from_checkpoint(path, model_cls, config_cls, **fix):
    """The workaround: transformers' own load_gguf_checkpoint (the config and the dequantized tensors
    under Hugging Face names, the llama permutation undone) into model_cls(config_cls(...)), with the
    config fields `fix` corrected; tied when the file has no output.weight. Every parameter must come
    from the file (but a tied lm_head)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    ckpt = load_gguf_checkpoint(path, return_tensors=True)
    cfg = {k: v for k, v in ckpt["config"].items() if k not in ("model_type", "architectures", "_model_name_or_path")}
    tensors = ckpt["tensors"]
    tied = "lm_head.weight" not in tensors
    # a fix is a value, or a function of the checkpoint (its config and tensors)
    cfg.update({k: v(ckpt) if callable(v) else v for k, v in fix.items()}, tie_word_embeddings=tied)
    config = config_cls(**cfg, attn_implementation="eager")
    with torch.random.fork_rng(devices=[]):
        model = model_cls(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight") and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise SystemExit(f"gguf_models: {path}: load_gguf_checkpoint's tensors do not fit {model_cls.__name__}: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}")
    if tied:
        model.tie_weights()
    return model.float().eval()


def read_moe(path, family):
    """A MoE file, which transformers 4.46 does not read: the gguf package's GGUFReader and
    gguf.quants.dequantize into transformers' MixtralForCausalLM or Qwen2MoeForCausalLM (config from
    the metadata; Mixtral's q/k rows permuted back to rotate-half, as transformers does for `llama`;
    each layer's merged experts split)."""
    import gguf
    from transformers import MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM
    r = gguf.GGUFReader(path)
    arch = ARCH[family]
    names = {t.name for t in r.tensors}

    def meta(k):
        f = r.fields[f"{arch}.{k}"]
        return f.parts[f.data[0]].tolist()[0]

    def tensor(name):
        t = next(t for t in r.tensors if t.name == name)
        return torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)).reshape(
            [int(d) for d in reversed(t.shape)])

    nh, nkv, n_layers, n_exp = (meta("attention.head_count"), meta("attention.head_count_kv"), meta("block_count"),
                                meta("expert_count"))
    emb = tensor("token_embd.weight")
    common_cfg = dict(vocab_size=emb.shape[0], hidden_size=meta("embedding_length"), num_hidden_layers=n_layers,
                      num_attention_heads=nh, num_key_value_heads=nkv, num_experts_per_tok=meta("expert_used_count"),
                      max_position_embeddings=meta("context_length"), rope_theta=meta("rope.freq_base"),
                      rms_norm_eps=meta("attention.layer_norm_rms_epsilon"),
                      tie_word_embeddings="output.weight" not in names, attn_implementation="eager")
    if family == "mixtral":
        cfg = MixtralConfig(intermediate_size=meta("feed_forward_length"), num_local_experts=n_exp, sliding_window=None,
                            **common_cfg)
        cls, moe, experts = MixtralForCausalLM, "block_sparse_moe", (("ffn_gate_exps", "w1"), ("ffn_down_exps", "w2"),
                                                                     ("ffn_up_exps", "w3"))
    else:  # llama.cpp's qwen2moe never renormalises the top-k weights (Qwen2-MoE's norm_topk_prob False)
        cfg = Qwen2MoeConfig(intermediate_size=meta("feed_forward_length"), num_experts=n_exp,
                             moe_intermediate_size=meta("expert_feed_forward_length"),
                             shared_expert_intermediate_size=meta("expert_shared_feed_forward_length"),
                             norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False,
                             **common_cfg)
        cls, moe, experts = Qwen2MoeForCausalLM, "mlp", (("ffn_gate_exps", "gate_proj"), ("ffn_down_exps", "down_proj"),
                                                         ("ffn_up_exps", "up_proj"))
    sd = {"model.embed_tokens.weight": emb, "model.norm.weight": tensor("output_norm.weight")}
    if not cfg.tie_word_embeddings:
        sd["lm_head.weight"] = tensor("output.weight")
    for i in range(n_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        sd[p + "input_layernorm.weight"] = tensor(b + "attn_norm.weight")
        sd[p + "post_attention_layernorm.weight"] = tensor(b + "ffn_norm.weight")
        for src, dst in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_output", "o_proj")):
            w = tensor(b + src + ".weight")
            if family == "mixtral" and src in ("attn_q", "attn_k"):
                w = permute_meta_to_hf_rows(w, nh if src == "attn_q" else nkv)
            sd[p + f"self_attn.{dst}.weight"] = w
            if b + src + ".bias" in names:
                sd[p + f"self_attn.{dst}.bias"] = tensor(b + src + ".bias")
        sd[p + f"{moe}.gate.weight"] = tensor(b + "ffn_gate_inp.weight")
        for src, dst in experts:
            merged = tensor(b + src + ".weight")
            for e in range(n_exp):
                sd[p + f"{moe}.experts.{e}.{dst}.weight"] = merged[e].clone()
        if family == "qwen2moe":
            for src, dst in (("ffn_gate_shexp", "gate_proj"), ("ffn_up_shexp", "up_proj"), ("ffn_down_shexp", "down_proj")):
                sd[p + f"mlp.shared_expert.{dst}.weight"] = tensor(b + src + ".weight")
            sd[p + "mlp.shared_expert_gate.weight"] = tensor(b + "ffn_gate_inp_shexp.weight").reshape(1, -1)
    with torch.random.fork_rng(devices=[]):
        model = cls(cfg)
    model.load_state_dict(sd, strict=not cfg.tie_word_embeddings)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def load_model(path, family, tied, null_pad=False):
    """(transformers model, how it was loaded) of a GGUF file of family (tied: it has no
    output.weight; null_pad: its padding_token_id is llama.cpp's "none", 0xFFFFFFFF): from_pretrained
    where it works, else the workaround the module docstring names."""
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM
    if family == "mixtral":
        return read_moe(path, family), ("the gguf package's GGUFReader + gguf.quants.dequantize into transformers' "
                                        "MixtralForCausalLM (transformers 4.46 reads no experts of a `llama` file)")
    if family == "qwen2moe":
        return read_moe(path, family), ("the gguf package's GGUFReader + gguf.quants.dequantize into transformers' "
                                        "Qwen2MoeForCausalLM (bug 3: transformers 4.46 reads no qwen2moe hyperparameter)")
    if family == "gpt2":
        # n_positions: the file's gpt2.context_length (transformers reads it as n_ctx, which GPT-2 does not
        # use); vocab_size: the embedding's rows (transformers' gpt2 mapping takes it from the tokenizer only)
        return (from_checkpoint(path, GPT2LMHeadModel, GPT2Config, n_positions=lambda ck: ck["config"]["n_ctx"],
                                vocab_size=lambda ck: ck["tensors"]["transformer.wte.weight"].shape[0]),
                "transformers' load_gguf_checkpoint into GPT2LMHeadModel with n_positions from the file (bug 2)")
    if family == "llama" and null_pad:
        from transformers import LlamaConfig, LlamaForCausalLM
        return (from_checkpoint(path, LlamaForCausalLM, LlamaConfig, pad_token_id=None),
                "transformers' load_gguf_checkpoint into LlamaForCausalLM, pad_token_id None (bug 4)")
    if family == "qwen2" and tied:
        return (from_checkpoint(path, Qwen2ForCausalLM, Qwen2Config),
                "transformers' load_gguf_checkpoint into Qwen2ForCausalLM, tied (bug 1)")
    return from_pretrained(path), "transformers' from_pretrained(gguf_file=...)"


class MetaOrder(common.Reference):
    """A `llama`-architecture reference whose q, k and cached keys are reported in Meta's order
    (meta_columns), the order lmlab computes from the file; everything else as the wrapped one."""

    def __init__(self, inner, n_heads, n_kv_heads):
        self.inner, self.nh, self.nkv = inner, n_heads, n_kv_heads
        self.family, self.model, self.what = inner.family, inner.model, getattr(inner, "what", "")

    def _fix(self, run):
        values, cache = run
        for k in values:
            if k.endswith(".q"):
                values[k] = meta_columns(values[k], self.nh)
            elif k.endswith(".k"):
                values[k] = meta_columns(values[k], self.nkv)
        cache = dict(cache, cache_k=meta_columns(cache["cache_k"], self.nkv))
        return values, cache

    def forward_intermediates(self, tokens, names):
        return self._fix(self.inner.forward_intermediates(tokens, names))

    def truth_intermediates(self, tokens, names):
        return self._fix(self.inner.truth_intermediates(tokens, names))

    def make_truth(self, tokens, names, max_positions=None):
        return self.inner.make_truth(tokens, names, max_positions)

    def greedy(self, prompt, n_new):
        return self.inner.greedy(prompt, n_new)

    def truth_logits(self, prompt, tokens):
        return self.inner.truth_logits(prompt, tokens)

    def dims(self):
        return self.inner.dims()


def model_spec(family, model):
    """The hf_moe.Spec of a MoE model built here (its tiny config replaced by the model's own)."""
    import dataclasses
    from lmlab_ref.families import mixtral, qwen2moe
    spec = {"qwen2moe": qwen2moe.SPEC, "mixtral": mixtral.SPEC}[family]
    return dataclasses.replace(spec, tiny={k: getattr(model.config, k) for k in spec.tiny})


def reference(path, family, names, tokens, tied, null_pad=False, spec=None):
    """The family's Reference of a GGUF file: the transformers model load_model gives, its float64
    truth made (and cross-checked on tokens; tokens None: not made) as for the family's Hugging Face
    models."""
    from lmlab_ref.families import gpt2, mixtral, qwen2moe
    model, how = load_model(path, family, tied, null_pad)
    if family == "gpt2":
        ref = gpt2.Gpt2Ref(model, f"transformers GPT2LMHeadModel ({how})")
    elif family in ("qwen2moe", "mixtral"):
        ref = hf_moe.MoeReference(spec or {"qwen2moe": qwen2moe.SPEC, "mixtral": mixtral.SPEC}[family], model)
    else:
        ref = hf_decoder.DecoderRef(family, model)
    if tokens is not None and family != "gpt2":
        ref.make_truth(tokens, names)
    ref.what = f"{type(model).__name__} ({how})"
    if ARCH[family] == "llama":
        nh, nkv, _ = hf_decoder.dims(model.config)
        ref = MetaOrder(ref, nh, nkv)
    return ref, how


def wide_model(family, ctx):
    """(the family's 256-wide twin (WIDE), an object with its prompts), from its own seed."""
    import dataclasses
    from transformers import GPT2Config, GPT2LMHeadModel
    from lmlab_ref.families import gpt2, mixtral, qwen2moe

    def make():
        gen = common.generator(f"model.tiny-{family}-{WIDE}")
        if family == "gpt2":
            cfg = GPT2Config(**dict(gpt2.TINY_GPT2, n_embd=WIDE), attn_implementation="eager")
            model = GPT2LMHeadModel(cfg)
            with torch.no_grad():  # the tiny GPT-2's scales (build_tiny_gpt2), for this width
                for name, p in model.named_parameters():
                    n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                    if name == "transformer.wte.weight":
                        p.copy_(n * 3.0 / WIDE ** 0.5)
                    elif name == "transformer.wpe.weight":
                        p.copy_(n * gpt2.WPE_STD)
                    elif ".ln_" in name or name.startswith("transformer.ln_f"):
                        p.copy_(1.0 + gpt2.LN_STD * n if name.endswith(".weight") else gpt2.LN_STD * n)
                    elif name.endswith(".weight"):
                        p.copy_(n * p.shape[0] ** -0.5)
                    else:
                        p.copy_(n * gpt2.BIAS_STD)
            model.eval()
        else:
            spec = {"qwen2moe": qwen2moe.SPEC, "mixtral": mixtral.SPEC}[family]
            widths = {k: WIDE for k in ("hidden_size", "intermediate_size", "moe_intermediate_size",
                                        "shared_expert_intermediate_size") if k in spec.tiny}
            model = hf_moe.build_tiny(dataclasses.replace(spec, tiny=dict(spec.tiny, **widths)), gen)
        base = common.Reference()
        base.set_prompts(f"tiny-{family}-{WIDE}", model.config.vocab_size, n_forward=8, n_new=16)
        return model, base
    return ctx.once(f"gguf:wide-{family}", make)


def base_model(family, ctx, wide=False):
    """(the family's tiny transformers model, its stage reference: prompts) as the exporter builds it."""
    from lmlab_ref.families import FAMILIES, llama
    if wide:
        return wide_model(family, ctx)
    if family == "llama":
        base = llama.build(llama.TINY_LLAMA_FILE, ctx)
        return ctx.once("gguf:llama-hf", lambda: llama.llama_to_hf(base.model)), base
    k = {"qwen2": "models/tiny-qwen2", "gpt2": "models/tiny-gpt2", "qwen2moe": "models/tiny-qwen2moe",
         "mixtral": "models/tiny-mixtral"}[family]
    base = FAMILIES[family].build(k, ctx)
    return base.model, base


def tokenizer_writer(family, base, ctx):
    """The tokenizer metadata of the family's tiny model: the tiny LLaMA's SentencePiece vocabulary
    (16384 pieces). None for the others: the tiny MoE models have no tokenizer (384 ids), and Qwen2's
    and GPT-2's real vocabularies (151665 and 50257 tokens with their merges) would make every
    reference load slow: the gguf package's GGUFReader, which transformers reads the file with, parses
    each string of the metadata as its own numpy view, ~40 s for Qwen's on this machine. (The BPE
    writer is kept for lmlab verify and the converter comparison.)"""
    if family == "llama":
        return lambda w: add_spm_tokenizer(w, base.spm_proto)
    return None


def bpe_tokenizer_writer(family, base, ctx):
    """Qwen2's or GPT-2's byte-level BPE metadata from ../shared (None when it is absent)."""
    if family == "qwen2":
        tj = ctx.shared_path(common.QWEN_TOKENIZER)
        if not os.path.exists(tj):
            return None
        return lambda w: add_bpe_tokenizer(w, tj, base.model.config.vocab_size, "qwen2", 151643, 151645)
    if family == "gpt2":
        if not os.path.exists(ctx.shared_path(common.GPT2_ENCODER)):
            return None
        tj = ctx.out_path("models/tiny-gpt2/tokenizer.json")  # the GPT-2 vocabulary the gpt2 family wrote
        return lambda w: add_bpe_tokenizer(w, tj, base.model.config.vocab_size, "gpt-2", 50256, 50256)
    return None


def kinds_names(kinds):
    return {n for names in kinds.values() for n in names}


def _fields(path, keys):
    """{key: scalar value} of some metadata keys, and the tensor names, read by the gguf package."""
    import gguf
    r = gguf.GGUFReader(path)
    out = {}
    for k in keys:
        if k in r.fields:
            f = r.fields[k]
            v = f.parts[f.data[0]]
            out[k] = bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v.tolist()[0]
    return out, {t.name for t in r.tensors}


def family_of_file(path):
    """A GGUF file's family, as lmlab's find_family_gguf decides it: general.architecture; `llama`
    with experts is Mixtral."""
    f, _ = _fields(path, ["general.architecture", "llama.expert_count"])
    arch = f.get("general.architecture")
    if arch == "llama" and f.get("llama.expert_count", 0) > 0:
        return "mixtral"
    if arch not in ("llama", "qwen2", "qwen2moe", "gpt2"):
        raise SystemExit(f"verify_ref: {path}: general.architecture {arch!r} has no reference (llama, qwen2, qwen2moe, gpt2)")
    return arch


def load(path, family):
    """A user's GGUF file for `lmlab verify`: its Reference (the truth made later, by make_truth)."""
    f, names = _fields(path, ["tokenizer.ggml.padding_token_id"])
    pad = f.get("tokenizer.ggml.padding_token_id")
    ref, how = reference(path, family, None, None, "output.weight" not in names,
                         null_pad=pad is not None and pad >= 0xFFFFFFFF)
    ref.what = f"{ref.what}"
    return ref


STORIES_GGUF = "shared:models/stories260K/stories260K.gguf"
STORIES_GGUF_Q8 = "shared:models/stories260K/stories260K-q8_0.gguf"


def build_shared(k, ctx):
    """stories260K as llama.cpp's own tools made it (../shared: llama-convert-llama2c-to-ggml, then
    llama-quantize q8_0): transformers' GGUF loading (bug 4 worked around), the stories260K prompts."""
    from lmlab_ref.families import llama
    if k not in (STORIES_GGUF, STORIES_GGUF_Q8):
        raise SystemExit(f"lmlab_ref: no GGUF reference for '{k}' (known: {STORIES_GGUF}, {STORIES_GGUF_Q8})")

    def make():
        path = ctx.shared_file(k[len("shared:"):])
        base = llama.build(llama.STORIES, ctx)
        ref, how = reference(path, "llama", ctx.table.intermediates("llama"), base.forward_tokens, False, null_pad=True)
        for attr in ("forward_tokens", "prompt_vocab", "bos"):
            setattr(ref, attr, getattr(base, attr))
        # llama.cpp's llama2.c converter writes context_length 128 (its own default), not the checkpoint's 512
        ref.greedy_case = (torch.tensor([1]), 120, "120 greedy tokens from BOS (the file's context_length is 128: "
                           "llama-convert-llama2c-to-ggml writes its default, not the checkpoint's 512)")
        print(f"export_golden: {k}: reference: {how}")
        return ref
    return ctx.once(k, make)


def build(k, ctx):
    """The GGUF file of a stage row's model key, written once per export, and its reference."""
    if k.startswith("shared:"):
        return build_shared(k, ctx)
    family, qtype, wide = parse_key(k)

    def make():
        model, base = base_model(family, ctx, wide)
        path = ctx.out_path(k)
        kinds = write(path, family, model, qtype, tokenizer_writer(family, base, ctx))
        names = ctx.table.intermediates(family)
        ref, how = reference(path, family, names, base.forward_tokens, "output.weight" not in kinds_names(kinds),
                             spec=model_spec(family, model) if family in ("qwen2moe", "mixtral") else None)
        for attr in ("prompt_vocab", "bos"):
            setattr(ref, attr, getattr(base, attr))
        # 16 greedy tokens after the model's greedy prompt (its float stage runs 48-64): the plain path these
        # stages run dequantizes every row of a 16384- or 151936-row classifier at every step
        prompt, _, _ = base.greedy_case
        ref.greedy_case = (prompt, 16, f"16 greedy tokens after an {len(prompt)}-token prompt (transformers' generate on "
                           "the GGUF model)")
        # the first 8 tokens of the model's forward prompt: the logits of every position are most of a
        # forward fixture (1.2 MB per position with Qwen's 151936-token vocabulary), and 8 positions
        # already cross every layer's attention over several rows
        ref.forward_tokens = base.forward_tokens[:8]
        size = os.path.getsize(path) / 2 ** 20
        print(f"export_golden: {k}: {size:.1f} MB, " + ", ".join(f"{t} x{len(v)}" for t, v in kinds.items()) +
              f"; reference: {how}")
        return ref
    return ctx.once(k, make)


# ---- refs.selfcheck: the bugs shown, the workarounds checked ----------------------------------------

def check(tmp_dir):
    """transformers 4.46's GGUF loading on files written here from small random models (vocabulary 512):
    each bug shown (the buggy load differs from the model or raises), each workaround equal to the
    model it was written from (F32 files: the same float32 weights), the llama permutation undone by
    transformers as we write it. Returns one line per check."""
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MixtralConfig,
                              MixtralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM)
    from lmlab_ref.families import mixtral, qwen2, qwen2moe
    from lmlab_ref.families.gpt2 import TINY_GPT2
    lines = []
    tokens = torch.tensor([[3, 141, 59, 26, 5, 358, 97, 93]])

    def logits(m):
        with torch.no_grad():
            return m(tokens).logits[0]

    def make(cls, cfg, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            m = cls(cfg).eval()
            for p in m.parameters():  # every parameter random: a missed one is visible
                torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else torch.nn.init.normal_(p, 1.0 if p.numel() == 1 else 0.0, 0.2)
        return m

    def close(a, b):
        return float((a - b).abs().max())

    # llama: from_pretrained works, the q/k permutation round trip included
    m = make(LlamaForCausalLM, LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                           tie_word_embeddings=False, attn_implementation="eager"), 1)
    path = os.path.join(tmp_dir, "llama.f32.gguf")
    write(path, "llama", m, "f32")
    d = close(logits(from_pretrained(path)), logits(m))
    assert d < 1e-4, f"llama: from_pretrained(gguf_file) differs from the model written by {d:.3g}"
    lines.append(f"llama: from_pretrained(gguf_file) = the model (max |logits diff| {d:.2g}; q/k rows permuted and back)")

    # BUG 4: padding_token_id 0xFFFFFFFF (llama.cpp's "none") refused
    path = os.path.join(tmp_dir, "llama-nullpad.f32.gguf")
    write(path, "llama", m, "f32", lambda w: w.add_pad_token_id(0xFFFFFFFF))
    try:
        from_pretrained(path)
        raise RuntimeError("bug 4 fixed")
    except AssertionError as e:
        msg = str(e)[:60]
    except RuntimeError as e:
        raise AssertionError("llama: from_pretrained accepted padding_token_id 0xFFFFFFFF: bug 4 fixed? drop the workaround") from e
    d = close(logits(load_model(path, "llama", False, null_pad=True)[0]), logits(m))
    assert d < 1e-4, f"llama: the bug 4 workaround differs from the model by {d:.3g}"
    lines.append(f"BUG 4 shown: padding_token_id 0xFFFFFFFF (llama.cpp's none) through from_pretrained: "
                 f"AssertionError '{msg}'; the workaround: {d:.2g}")

    # BUG 1: a tied Qwen2 file: lm_head random
    cfg = Qwen2Config(**dict(qwen2.TINY_QWEN2, vocab_size=512), attn_implementation="eager")
    m = make(Qwen2ForCausalLM, cfg, 2)
    path = os.path.join(tmp_dir, "qwen2.f32.gguf")
    write(path, "qwen2", m, "f32")
    buggy = from_pretrained(path)
    d_bug = close(logits(buggy), logits(m))
    assert d_bug > 1.0 and close(buggy.lm_head.weight, buggy.model.embed_tokens.weight) > 0, \
        f"qwen2 tied: from_pretrained now gives the model (max |logits diff| {d_bug:.3g}): bug 1 fixed? drop the workaround"
    d = close(logits(load_model(path, "qwen2", True)[0]), logits(m))
    assert d < 1e-4, f"qwen2 tied: the workaround differs from the model by {d:.3g}"
    lines.append(f"BUG 1 shown: a tied Qwen2 file through from_pretrained has a random lm_head (logits off by {d_bug:.3g}); "
                 f"the workaround: {d:.2g}")

    # BUG 2: GPT-2 with 256 positions: refused (GPT-2's real vocabulary size: transformers' gpt2 mapping
    # takes the vocabulary size from the tokenizer, so a file without one gets the default, 50257)
    m = make(GPT2LMHeadModel, GPT2Config(**TINY_GPT2, attn_implementation="eager"), 3)
    path = os.path.join(tmp_dir, "gpt2.f32.gguf")
    write(path, "gpt2", m, "f32")
    try:
        from_pretrained(path)
        raise AssertionError("gpt2: from_pretrained loaded a 256-position file: bug 2 fixed? drop the workaround")
    except (RuntimeError, ValueError) as e:
        msg = str(e).splitlines()[0][:120]
        assert "[256, 64]" in msg and "[1024, 64]" in msg, f"gpt2: from_pretrained refuses for another reason: {msg}"
    d = close(logits(load_model(path, "gpt2", True)[0]), logits(m))
    assert d < 1e-4, f"gpt2: the workaround differs from the model by {d:.3g}"
    lines.append(f"BUG 2 shown: a 256-position GPT-2 file through from_pretrained raises ({msg}); the workaround: {d:.2g}")

    # BUG 3: qwen2moe: no hyperparameter read
    m = make(Qwen2MoeForCausalLM, Qwen2MoeConfig(**qwen2moe.TINY_QWEN2MOE, attn_implementation="eager"), 4)
    path = os.path.join(tmp_dir, "qwen2moe.f32.gguf")
    write(path, "qwen2moe", m, "f32")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    cfg_read = load_gguf_checkpoint(path, return_tensors=False)["config"]
    assert "num_experts" not in cfg_read and "hidden_size" not in cfg_read, \
        f"qwen2moe: load_gguf_checkpoint now reads the hyperparameters ({sorted(cfg_read)}): bug 3 fixed?"
    try:
        from_pretrained(path)
        raise AssertionError("qwen2moe: from_pretrained loaded the file: bug 3 fixed? use it")
    except (IndexError, RuntimeError, ValueError) as e:
        msg = f"{type(e).__name__}: {str(e)[:80]}"
    d = close(logits(load_model(path, "qwen2moe", False)[0]), logits(m))
    assert d < 1e-4, f"qwen2moe: read_moe differs from the model by {d:.3g}"
    lines.append(f"BUG 3 shown: a qwen2moe file's config from load_gguf_checkpoint has only {sorted(cfg_read)}; "
                 f"from_pretrained raises {msg}; read_moe: {d:.2g}")

    # Mixtral: not supported (a LlamaForCausalLM without experts, or an error)
    m = make(MixtralForCausalLM, MixtralConfig(**mixtral.TINY_MIXTRAL, attn_implementation="eager"), 5)
    path = os.path.join(tmp_dir, "mixtral.f32.gguf")
    write(path, "mixtral", m, "f32")
    try:
        got = type(from_pretrained(path)).__name__
    except Exception as e:  # noqa: BLE001 (any refusal shows the same: no Mixtral from GGUF)
        got = f"{type(e).__name__}: {str(e)[:80]}"
    assert got != "MixtralForCausalLM", "mixtral: from_pretrained now gives a MixtralForCausalLM: use it"
    d = close(logits(load_model(path, "mixtral", False)[0]), logits(m))
    assert d < 1e-4, f"mixtral: read_moe differs from the model by {d:.3g}"
    lines.append(f"Mixtral unsupported: from_pretrained gives {got}; read_moe: {d:.2g}")
    return lines
