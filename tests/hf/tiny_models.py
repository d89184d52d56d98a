"""Tiny random transformers configs and models for the HF tests (no downloads)."""

import torch

from lighthouse_attn import LighthouseConfig

LH = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128)
"""Small budget: valid from N = 256 on."""
N = 256
VOCAB = 97
ARCHS = ("llama", "qwen2", "qwen3", "mistral")


def tiny_config(arch: str = "llama", layers: int = 4, heads: int = 4, kv_heads: int = 2,
                **overrides):
    """A config of ``arch`` with hidden size 32, head dim 8 and grouped-query attention."""
    import transformers

    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "qwen3": transformers.Qwen3Config, "mistral": transformers.MistralConfig}[arch]
    kw = dict(hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads,
              num_key_value_heads=kv_heads, head_dim=32 // heads, intermediate_size=64,
              vocab_size=VOCAB, max_position_embeddings=4096, tie_word_embeddings=False,
              use_cache=False)
    if arch == "mistral":
        kw["sliding_window"] = None
    kw.update(overrides)
    return cls(**kw)


def tiny_model(arch: str = "llama", attn: str = "sdpa", seed: int = 0, **overrides):
    """A randomly initialised causal LM (fp32, train mode); same seed, same weights."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch, **overrides),
                                            attn_implementation=attn).train()


def tokens(batch: int = 2, n: int = N, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, n), generator=g)
