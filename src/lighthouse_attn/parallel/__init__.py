"""Context parallelism: one sequence over several ranks, exactly the single-device op."""

from .attention import chunk_config, lighthouse_attention_cp
from .dense import dense_attention_cp, kv_heads_per_gather
from .layout import chunk_ids, local_positions, shard_sequence, unshard_sequence

__all__ = ["chunk_config", "chunk_ids", "dense_attention_cp", "kv_heads_per_gather",
           "lighthouse_attention_cp", "local_positions", "shard_sequence", "unshard_sequence"]
