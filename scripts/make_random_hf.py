"""A Hugging Face model directory with random weights in the shape of a real checkpoint, for timing
`lmlab verify` (and `lmlab generate`) at real sizes without a model hub:

    .venv/bin/python scripts/make_random_hf.py --shape gpt2-124m  --out /tmp/gpt2-124m
    .venv/bin/python scripts/make_random_hf.py --shape qwen2-0.5b --out /tmp/qwen2-0.5b
    .venv/bin/python scripts/make_random_hf.py --shape llama3.2-1b --out /tmp/llama3.2-1b

The configs are those of the published `gpt2`, `Qwen/Qwen2.5-0.5B` and `meta-llama/Llama-3.2-1B`
config.json files (the first two are the shapes bench/bench.cpp builds in memory; Llama 3.2's with
its rope_scaling llama3 x32 of 8192, grouped-query attention 32:8, tied embeddings); the weights
are transformers' own initialisation (normal, std initializer_range) from a fixed seed, saved with
save_pretrained in float32. Such a model computes nothing meaningful, but every matrix has its real
size, so time and memory are real. (Llama 3.2-1B: 1.24B parameters, 4.9 GB in float32.)
"""
import argparse

from lmlab_ref import common  # noqa: F401 (first: it sets HF_HUB_OFFLINE, nothing is downloaded)
import torch  # noqa: E402
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,  # noqa: E402
                          Qwen2ForCausalLM)

from lmlab_ref.hf_decoder import save_hf_dir  # noqa: E402

SHAPES = {
    "gpt2-124m": (GPT2Config, GPT2LMHeadModel,
                  dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                       activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=50256, eos_token_id=50256)),
    "qwen2-0.5b": (Qwen2Config, Qwen2ForCausalLM,
                   dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                        rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                        sliding_window=32768, max_window_layers=24, hidden_act="silu",
                        bos_token_id=151643, eos_token_id=151643)),
    "llama3.2-1b": (LlamaConfig, LlamaForCausalLM,
                    dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                         rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
                         rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                         attention_bias=False, mlp_bias=False, bos_token_id=128000,
                         eos_token_id=[128001, 128008, 128009])),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True, help="directory to write (config.json + model.safetensors)")
    ap.add_argument("--seed", type=int, default=20261123)
    args = ap.parse_args()
    config_cls, model_cls, fields = SHAPES[args.shape]
    torch.manual_seed(args.seed)
    model = model_cls(config_cls(**fields)).eval()
    n = sum(p.numel() for p in model.parameters())
    save_hf_dir(model, args.out, max_shard_size="10GB")
    print(f"make_random_hf: {args.shape}: {n / 1e6:.0f}M parameters written to {args.out}")


if __name__ == "__main__":
    main()
