"""What every reference shares: torch's set-up, the seeds and random streams, the export context
(output folder, exporter hash, ../shared, the stage table, models built once per export), the
../shared files the references read, and Reference, the one interface every family's models have.

Importing this module sets HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE: nothing is ever downloaded
from a model hub.
"""
import copy
import os
import zlib

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
from transformers import GenerationConfig  # noqa: E402

SEED = 20261123

# Files under ../shared (real checkpoints and tokenizers); the stages that need one are exported
# only when it is there. manifest.json records which were present (golden_status.py re-exports
# when that changes).
STORIES_MODEL = "models/stories260K/stories260K.bin"
STORIES_TOKENIZER = "models/stories260K/tok512.bin"
LLAMA2_TOKENIZER = "tokenizers/llama2/tokenizer.bin"
LLAMA2_SPM_MODEL = "tokenizers/llama2/tokenizer.model"
GPT2_ENCODER = "tokenizers/gpt2/encoder.json"
GPT2_MERGES = "tokenizers/gpt2/vocab.bpe"
QWEN_TOKENIZER = "tokenizers/qwen/tokenizer.json"
LLAMA3_TOKENIZER = "tokenizers/llama3/tokenizer.json"
LLAMA3_TOKENIZER_CONFIG = "tokenizers/llama3/tokenizer_config.json"
SHARED_FILES = sorted([STORIES_MODEL, STORIES_TOKENIZER, LLAMA2_TOKENIZER, LLAMA2_SPM_MODEL, GPT2_ENCODER,
                       GPT2_MERGES, QWEN_TOKENIZER, LLAMA3_TOKENIZER, LLAMA3_TOKENIZER_CONFIG])


def setup_torch():
    """One thread and deterministic algorithms: the same reductions in the same order on every run."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def generator(name):
    """A named random stream: seeded from SEED and the name (a stage id, a model, "<name>.prompt"),
    never from a position in a list, so adding or reordering stages never changes another's data."""
    return torch.Generator().manual_seed(SEED + zlib.crc32(name.encode()))


def randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale


def default_prompt(vocab_size, n, name):
    """n random token ids in [3, vocab_size) from the stream "<name>.prompt" (0..2: unk, BOS, EOS)."""
    return torch.randint(3, vocab_size, (n,), generator=generator(name + ".prompt"))


def to_float64(model):
    """A float64 copy of a model, in eval mode (the original is left as it is)."""
    return copy.deepcopy(model).double().eval()


def generate_greedy(model, prompt, n_new, pad_token_id, **generation_config):
    """Greedy decoding with transformers' own generate(): exactly n_new new tokens (eos_token_id=None:
    nothing stops early and no logits processor touches the scores, so an end-of-text id may be
    generated like any other token). Returns (tokens list[int], logits [n_new, V] in the model's
    dtype): row i is the logits after the prompt and the first i new tokens, the row tokens[i] was
    chosen from. synced_gpus=False: in Debian's torch 1.13 the FSDP probe generate() makes otherwise
    crashes on import."""
    prompt = torch.as_tensor(prompt, dtype=torch.long)[None]
    gc = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=n_new, min_new_tokens=n_new,
                          bos_token_id=pad_token_id, eos_token_id=None, pad_token_id=pad_token_id, use_cache=True,
                          **generation_config)
    # transformers 4.46.3 fills a None eos_token_id of the given config from model.generation_config
    # (_prepare_generation_config: "fallback ALL special tokens"); with min_new_tokens that eos is then
    # masked to -inf, so where the model's eos id is the argmax generate() picks the runner-up (the
    # assertion below caught it on a tiny model whose eos is id 2). The model's own eos is cleared
    # while generating, so no logits processor touches the scores.
    saved_eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        with torch.no_grad():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=gc,
                                 output_logits=True, return_dict_in_generate=True, synced_gpus=False)
    finally:
        model.generation_config.eos_token_id = saved_eos
    tokens = [int(t) for t in out.sequences[0, prompt.shape[1]:]]
    logits = torch.cat(out.logits, dim=0)
    assert len(tokens) == n_new and logits.shape == (n_new, model.config.vocab_size)
    assert tokens == [int(i) for i in torch.argmax(logits, dim=-1)], "generate() did not pick the argmax"
    return tokens, logits


def max_abs(a, b):
    return float((a.double() - b.double()).abs().max())


def top2_gaps(logits):
    """Top-1 minus top-2 logit, per row."""
    top = torch.topk(logits, 2, dim=-1).values
    return top[:, 0] - top[:, 1]


class Missing(Exception):
    """A ../shared file a model or fixture needs is absent: the fixture is skipped, not failed."""

    def __init__(self, path):
        super().__init__(f"{path} not found")
        self.path = path


class Context:
    """One export: where it writes (out_dir), the exporter hash every file records (sha), ../shared
    (shared_dir), the stage table (table: lmlab.Table), and what is built once per export (once)."""

    def __init__(self, out_dir, sha, shared_dir, table):
        self.out_dir, self.sha, self.shared_dir, self.table = out_dir, sha, shared_dir, table
        self._built = {}

    def once(self, key, build):
        """build() the first time key is asked for, the same object after that."""
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def shared_path(self, rel):
        return os.path.join(self.shared_dir, rel)

    def shared_file(self, rel):
        """The path of a ../shared file that must be there; Missing when it is not."""
        path = self.shared_path(rel)
        if not os.path.exists(path):
            raise Missing(path)
        return path

    def out_path(self, rel):
        return os.path.join(self.out_dir, rel)


class Reference:
    """A model's reference computation and its float64 truth behind one interface: what every
    family's build() (a golden model) and load() (a user's checkpoint, for `lmlab verify`) return.

    names: the family's intermediates of one block in pipeline order (`lmlab list --json`: the
    references never keep their own lists); results are dicts in that order, layer by layer
    (layer<i>.<name>), then final_norm and logits.

      forward_intermediates(tokens, names) -> (values [T, ...], {"cache_k", "cache_v": [L, T, kv_dim]})
      truth_intermediates(tokens, names)   the same in float64 (the "truth" both are measured against)
      layer_case(layer, pos, x, cache_k, cache_v, names) -> one block on one token after pos cached
                                           positions: {name: [...]} for the names after "in"
      truth_layer_case(...)                the same in float64
      greedy(prompt, n_new) -> (tokens, logits [n_new, V]): row i chose tokens[i]
      truth_logits(prompt, tokens) -> the float64 logits [n_new, V] of the same token sequence
      make_truth(tokens, names, max_positions) builds the truth (checked against the model on tokens;
                                           a KV cache of max_positions); returns what it checked
      int8(group), part_case(part, ...)    the llama family's int8 model (q8.py), one part of a block

    The golden recipes also read what build() sets: forward_tokens (the model.forward and
    model.kv_cache prompt), greedy_case ((prompt, n_new, description) of generation.greedy),
    prompt_vocab (the ids a random prompt may use), bos (what a serving prompt starts with), and
    dims() -> (dim, kv_dim, positions), block_points() -> layer.block's (layer, position, why)."""

    family = "?"
    what = "?"  # what computes it, for people ("transformers Qwen2ForCausalLM")
    forward_tokens = greedy_case = prompt_vocab = bos = None

    def set_prompts(self, name, vocab, n_forward=16, n_new=64, generated_by=" (transformers' generate, do_sample=False)"):
        """The golden prompts of a tiny model named name ("tiny-gpt2"): n_forward random ids for the
        model stages, 8 for greedy generation of n_new tokens, from the streams "model.<name>" and
        "generation.<name>" (+ ".prompt"); vocab: the ids they may use. No BOS (bos: [])."""
        self.forward_tokens = default_prompt(vocab, n_forward, f"model.{name}")
        self.greedy_case = (default_prompt(vocab, 8, f"generation.{name}"), n_new,
                            f"{n_new} greedy tokens after an 8-token prompt{generated_by}")
        self.prompt_vocab, self.bos = vocab, []

    def _none(self, what):
        raise SystemExit(f"lmlab_ref: family {self.family} has no {what} reference")

    def forward_intermediates(self, tokens, names):
        self._none("forward")

    def truth_intermediates(self, tokens, names):
        self._none("float64 forward")

    def layer_case(self, layer, pos, x, cache_k, cache_v, names):
        self._none("single-block")

    def truth_layer_case(self, layer, pos, x, cache_k, cache_v, names):
        self._none("float64 single-block")

    def greedy(self, prompt, n_new):
        self._none("greedy")

    def truth_logits(self, prompt, tokens):
        self._none("float64 logits")

    def make_truth(self, tokens, names, max_positions=None):
        self._none("float64 truth")

    def block_points(self):
        """(layer, position, why) of layer.block's cases: both layers, at positions 0, 1, 17 and near
        the end of the context."""
        n_pos = self.dims()[2]
        return [(0, 0, "layer 0 at position 0: empty cache"), (1, 1, "layer 1 at position 1"),
                (0, 17, "layer 0 at a typical position"),
                (1, n_pos - 2, f"layer 1 near the end of the context: {n_pos - 2} cached")]

    def int8(self, group, rounding=None):
        self._none("int8")

    def part_case(self, part, layer, pos, x, cache_k, cache_v, truth=False):
        self._none(f"separate {part}")

    def dims(self):
        self._none("dimensions")


class SameModelTruth(Reference):
    """A Reference whose float64 truth is the same model in float64 (a copy, made on first use):
    llama_ref.py (every step in its weights' dtype) and transformers' GPT-2 (no float32-only step)."""

    def __init__(self, model, what):
        self.model, self.what, self.truth = model, what, None

    def make_truth(self, tokens=None, names=None, max_positions=None):
        self.truth = to_float64(self.model)
        return "the same model in float64"

    def _truth(self):
        if self.truth is None:
            self.make_truth()
        return self.truth


def load_pretrained(cls, path):
    """A Hugging Face directory through transformers' own class, float32, eager attention."""
    return cls.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager").eval()
