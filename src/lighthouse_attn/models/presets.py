"""Named model configurations; every field can be overridden from the command line."""

from __future__ import annotations

from dataclasses import replace

from ..config import LighthouseConfig
from .llama import LlamaConfig

_PAPER_BODY = LlamaConfig(d_model=1024, n_layers=30, n_heads=8, n_kv_heads=8, ffn_hidden=1536,
                          rope_theta=10000.0, dense_layers=(0, 1, 28, 29),
                          lighthouse=LighthouseConfig(num_levels=3, pooling_factor=4, topk=1536,
                                                      scorer="norm"))

PRESETS: dict[str, LlamaConfig] = {
    # Tiny, for the CPU main job: Lighthouse is active from seq_len 2048 (L=3, p=4, K=128:
    # one tile of 128 coarsest entries; gathered length 1,152 of 2,048).
    "demo": LlamaConfig(d_model=128, n_layers=6, n_heads=4, n_kv_heads=2, ffn_hidden=384,
                        rope_theta=10000.0, dense_layers=(0, -1),
                        lighthouse=LighthouseConfig(num_levels=3, pooling_factor=4, topk=128)),
    # About 125M parameters; K=1024 is valid from seq_len 16,384 (gathered 10,240 of 32,768).
    "small": LlamaConfig(d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, ffn_hidden=3840,
                         rope_theta=500000.0, dense_layers=(0, 1, -2, -1),
                         lighthouse=LighthouseConfig(num_levels=3, pooling_factor=4, topk=1024)),
    # The body of the paper's 530M ablation model (30 layers, d_model 1024) with our byte
    # vocabulary: 268M parameters (the paper's 530M counts a 128K-token embedding and head).
    "paper-268m": _PAPER_BODY,
    # The paper's model as trained: the same body with the Llama 3 tokenizer's 128,256-token
    # embedding and head (531M parameters); the command line sizes the vocabulary to the
    # --tokenizer given.
    "paper-530m": replace(_PAPER_BODY, vocab_size=128_256),
}
