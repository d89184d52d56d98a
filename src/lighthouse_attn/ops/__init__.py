"""The Lighthouse op. ``api.py`` holds the entry points and sends each call to the torch
reference path (``reference/``, one module per stage of docs/spec.md: pyramid, scores, select,
gather, scatter) or to its Triton twins (``triton/``); ``inner.py`` is the dense attention on
the gathered sequence, ``types.py`` the shared types; ``rope.py`` holds the rotary
embeddings the models apply to queries and keys (with a Triton twin).
"""

from .api import lighthouse_attention, select
from .inner import sdpa_causal
from .types import AttnFn, Selection

__all__ = ["AttnFn", "Selection", "lighthouse_attention", "sdpa_causal", "select"]
