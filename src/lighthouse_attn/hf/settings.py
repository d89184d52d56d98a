"""Lighthouse settings of a Hugging Face model, stored in its config under ``lighthouse_attn``.

They travel with ``save_pretrained`` / ``from_pretrained`` as one JSON-ready entry of
``config.json``; transformers ignores it when the model is loaded with another attention.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..config import LighthouseConfig

CONFIG_KEY = "lighthouse_attn"
"""Attribute of the model config (and key of ``config.json``) that holds the settings."""
FALLBACKS = ("error", "dense")


@dataclass(frozen=True)
class Settings:
    """What the ``"lighthouse"`` attention implementation does in each layer.

    Args:
        lighthouse: the op's :class:`LighthouseConfig` (its ``short_seq`` decides what a sequence
            too short for the budget does).
        dense_layers: layers that always run SDPA, as sorted non-negative indices.
        fallback: what a Lighthouse layer does with input it cannot honour (a padding or
            document mask, a sliding window shorter than the sequence, a KV cache, non-causal
            attention, attention dropout): ``"error"`` raises ``ValueError``, ``"dense"`` runs
            that call through SDPA (warning once).
    """

    lighthouse: LighthouseConfig
    dense_layers: tuple[int, ...] = ()
    fallback: str = "error"

    def to_dict(self) -> dict:
        """JSON-ready ``dict``; :meth:`from_dict` restores it."""
        return {"lighthouse": self.lighthouse.to_dict(), "dense_layers": list(self.dense_layers),
                "fallback": self.fallback}

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        """Inverse of :meth:`to_dict`; ``ValueError`` on anything malformed."""
        return _from_json(json.dumps(d, sort_keys=True))

    def lighthouse_layers(self, num_layers: int) -> tuple[int, ...]:
        """The layers of a ``num_layers``-layer model that run Lighthouse."""
        return tuple(i for i in range(num_layers) if i not in self.dense_layers)


def resolve_dense_layers(dense_layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Sorted non-negative layer indices; negative ones count from the end (``-1`` is the last).

    Raises:
        ValueError: an index that is not an integer or is out of range for ``num_layers``.
    """
    if isinstance(dense_layers, (str, bytes)) or not hasattr(dense_layers, "__iter__"):
        raise ValueError(f"dense_layers must be a sequence of layer indices, e.g. [0, 1, -2, -1]; "
                         f"got {dense_layers!r}")
    out = set()
    for i in dense_layers:
        if not isinstance(i, int) or isinstance(i, bool) or not -num_layers <= i < num_layers:
            raise ValueError(f"dense_layers entry {i!r} is out of range for a model with "
                             f"{num_layers} layers: use 0..{num_layers - 1} or "
                             f"-{num_layers}..-1")
        out.add(i % num_layers)
    return tuple(sorted(out))


def make_settings(lighthouse: LighthouseConfig, dense_layers: Sequence[int], num_layers: int,
                  fallback: str = "error") -> Settings:
    """Validated :class:`Settings` for a model with ``num_layers`` attention layers."""
    if not isinstance(lighthouse, LighthouseConfig):
        raise ValueError(f"lighthouse must be a LighthouseConfig, got {type(lighthouse).__name__}")
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r}; choose one of "
                         f"{', '.join(map(repr, FALLBACKS))}")
    return Settings(lighthouse, resolve_dense_layers(dense_layers, num_layers), fallback)


def read_settings(config: object) -> Settings | None:
    """The settings stored on a transformers config, or ``None`` when it has none.

    Attention layers read them on every call. Eagerly they are parsed once per distinct
    settings (cached by their JSON text); under ``torch.compile`` they are built directly from
    the dict, which the compiler traces as constants (``json`` is not traceable)."""
    d = getattr(config, CONFIG_KEY, None)
    if d is None:
        return None
    if torch.compiler.is_compiling():
        return Settings(LighthouseConfig(**d["lighthouse"]), tuple(sorted(d["dense_layers"])),
                        d["fallback"])
    return Settings.from_dict(d)


@lru_cache(maxsize=64)
def _from_json(text: str) -> Settings:
    # Parsed once per distinct settings: attention layers read them on every call.
    d = json.loads(text)
    if not isinstance(d, dict) or set(d) != {"lighthouse", "dense_layers", "fallback"}:
        raise ValueError(f"config.{CONFIG_KEY} must be a dict with keys 'lighthouse', "
                         f"'dense_layers', 'fallback' (as written by configure()); got {text}")
    try:
        lighthouse = LighthouseConfig(**d["lighthouse"])
    except TypeError as err:
        raise ValueError(f"config.{CONFIG_KEY}['lighthouse'] is not a LighthouseConfig: "
                         f"{err}") from None
    dense = d["dense_layers"]
    if not isinstance(dense, list) or any(not isinstance(i, int) or i < 0 for i in dense):
        raise ValueError(f"config.{CONFIG_KEY}['dense_layers'] must be a list of non-negative "
                         f"layer indices; got {dense!r}")
    if d["fallback"] not in FALLBACKS:
        raise ValueError(f"config.{CONFIG_KEY}['fallback'] must be one of {FALLBACKS}; "
                         f"got {d['fallback']!r}")
    return Settings(lighthouse, tuple(sorted(set(dense))), d["fallback"])
