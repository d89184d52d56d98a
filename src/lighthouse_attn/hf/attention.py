"""The ``"lighthouse"`` attention implementation of transformers' AttentionInterface.

Attention modules call ``attention_fn(module, query, key, value, attention_mask, dropout=...,
scaling=..., **kwargs)`` with ``query`` ``(B, H, N, D)`` and ``key``, ``value``
``(B, H_kv, N_kv, D)`` after RoPE, and expect ``(attn_output, attn_weights)`` with
``attn_output`` in ``(B, N, H, D)`` layout. :func:`lighthouse_attention_forward` routes the dense
layers listed in the settings through transformers' own SDPA function and runs
:func:`~lighthouse_attn.lighthouse_attention` in the others, with the module's scaling and its
grouped-query heads.

Lighthouse is causal attention over whole rows. It cannot honour a padding mask, a document
mask (``position_ids`` restarting per packed document), a sliding window shorter than the
sequence, a KV cache, non-causal attention or attention dropout: those raise ``ValueError``
(or run through SDPA with ``fallback="dense"``). A packed row of concatenated documents with no
mask (or an all-ones mask) is plain causal attention and runs exactly like SDPA with
``is_causal=True``. The same checks run once per forward in :func:`lighthouse_mask`, the mask
function registered for ``"lighthouse"``, so that an unsupported batch fails before its
``N x N`` mask is built.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, sdpa_mask

from ..ops import lighthouse_attention
from .settings import CONFIG_KEY, Settings, read_settings

ATTN_IMPLEMENTATION = "lighthouse"
"""The name registered in transformers' AttentionInterface and AttentionMaskInterface."""

_UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks", "position_bias")
_FIXES = ("Lighthouse is a training-time attention over whole causal rows: train on unpadded "
          "rows of equal length (concatenated documents, no attention_mask or an all-ones one), "
          "call lighthouse_attn.hf.to_dense(model) before evaluating or generating, or configure "
          "the model with fallback='dense' to run such calls through SDPA.")
_warned: set[str] = set()


def register() -> None:
    """Add ``"lighthouse"`` to transformers' AttentionInterface and AttentionMaskInterface
    (idempotent). Afterwards ``from_config(..., attn_implementation="lighthouse")`` and
    ``from_pretrained(..., attn_implementation="lighthouse")`` accept it."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, lighthouse_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, lighthouse_mask)


def module_settings(config: object) -> Settings:
    """The settings on an attention module's config; ``ValueError`` when it has none."""
    settings = read_settings(config)
    if settings is None:
        raise ValueError(f"this model uses attn_implementation='{ATTN_IMPLEMENTATION}' but its "
                         f"config has no '{CONFIG_KEY}' settings; call "
                         "lighthouse_attn.hf.configure(model, LighthouseConfig(...), "
                         "dense_layers=[...]) first")
    return settings


def lighthouse_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                                 attention_mask: Tensor | None, dropout: float = 0.0,
                                 scaling: float | None = None, is_causal: bool | None = None,
                                 **kwargs) -> tuple[Tensor, None]:
    """AttentionInterface function: Lighthouse in the model's Lighthouse layers, SDPA in its
    dense layers.

    Args:
        module: the attention module; reads ``module.config`` (settings), ``module.layer_idx``
            and ``module.is_causal``.
        query: ``(B, H, N, D)``; key, value: ``(B, H_kv, N, D)`` with ``H % H_kv == 0``.
        attention_mask: ``None`` (plain causal) or a 4-D mask, which must be plain causal.
        dropout: must be 0 in Lighthouse layers.
        scaling: the module's softmax scale (``1/sqrt(D)`` when ``None``).

    Returns:
        ``((B, N, H, D) output in query's dtype, None)``.

    Raises:
        ValueError: missing settings, input Lighthouse cannot honour (with
            ``fallback="error"``), or a sequence length the LighthouseConfig rejects.
    """
    settings = module_settings(module.config)
    layer = getattr(module, "layer_idx", None)
    if not isinstance(layer, int):
        raise ValueError(f"{type(module).__name__} has no integer layer_idx; Lighthouse needs it "
                         "to tell its dense layers from the others")
    sdpa_args = dict(dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
    if layer in settings.dense_layers:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **sdpa_args)
    problem = _call_problem(module, query, key, attention_mask, dropout, is_causal, kwargs)
    if problem is not None:
        if settings.fallback == "dense":
            _warn_once(problem, f"Lighthouse layers run SDPA for this call: {problem} "
                                "(fallback='dense')")
            return sdpa_attention_forward(module, query, key, value, attention_mask, **sdpa_args)
        raise ValueError(f"Lighthouse attention (layer {layer}) cannot honour this call: "
                         f"{problem}. {_FIXES}")
    if torch.compiler.is_compiling():
        if attention_mask is None:
            _assert_one_document_per_row(kwargs.get("position_ids"))
        else:
            _assert_plain_causal(attention_mask)
    try:
        out = lighthouse_attention(query, key, value, settings.lighthouse, scale=scaling)
    except ValueError as err:
        raise ValueError(f"Lighthouse attention (layer {layer}): {err}") from err
    return out.transpose(1, 2).contiguous(), None


def lighthouse_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0,
                    kv_offset: int = 0, mask_function=causal_mask_function,
                    attention_mask: Tensor | None = None, local_size: int | None = None,
                    allow_is_causal_skip: bool = True, **kwargs) -> Tensor | None:
    """AttentionMaskInterface function: transformers' SDPA mask (``None`` for a plain causal
    batch, so SDPA and Lighthouse both run causal), after rejecting a batch that Lighthouse
    layers cannot honour before its mask is materialised (with ``fallback="error"``)."""
    config = kwargs.get("config")
    settings = read_settings(config)
    if settings is not None and settings.lighthouse_layers(
            getattr(config, "num_hidden_layers", 0)):
        if not allow_is_causal_skip and torch.compiler.is_compiling() and _batch_problem(
                config, q_length, kv_length, q_offset, kv_offset, attention_mask, local_size,
                True) is None:
            # Under tracing transformers cannot rule out packed documents (position_ids are
            # not inspected), so it never skips the mask: run plain causal, and let the
            # Lighthouse layers check position_ids at run time (_packed_documents).
            allow_is_causal_skip = True
        elif settings.fallback == "error":
            problem = _batch_problem(config, q_length, kv_length, q_offset, kv_offset,
                                     attention_mask, local_size, allow_is_causal_skip)
            if problem is not None:
                raise ValueError(f"Lighthouse attention cannot honour this batch: {problem}. "
                                 f"{_FIXES}")
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length,
                     q_offset=q_offset, kv_offset=kv_offset, mask_function=mask_function,
                     attention_mask=attention_mask, local_size=local_size,
                     allow_is_causal_skip=allow_is_causal_skip, **kwargs)


def _batch_problem(config: object, q_length: int, kv_length: int, q_offset, kv_offset,
                   attention_mask: Tensor | None, local_size: int | None,
                   allow_is_causal_skip: bool) -> str | None:
    if not getattr(config, "is_causal", True):
        return "the model config asks for non-causal (bidirectional) attention"
    if q_length != kv_length or not isinstance(q_offset, int) or q_offset or kv_offset:
        return (f"a KV cache ({q_length} queries against {kv_length} keys, as in generation); "
                "Lighthouse needs queries and keys of one full sequence")
    if attention_mask is not None and not bool(attention_mask.all()):
        return "the attention_mask has zeros (padding)"
    if local_size is not None and kv_length > local_size:
        return (f"a local attention window (sliding or chunked) of {local_size} tokens is "
                f"shorter than the sequence ({kv_length}); set config.sliding_window=None for "
                "full causal attention")
    if not allow_is_causal_skip:
        return ("the causal mask is modified: a document mask from position_ids that restart "
                "per packed document (e.g. DataCollatorWithFlattening), or a custom mask "
                "function. Packed rows train with Lighthouse when position_ids are omitted (or "
                "an all-ones attention_mask is passed): attention then spans the whole row, "
                "exactly as SDPA with is_causal=True")
    return None


def _call_problem(module: nn.Module, query: Tensor, key: Tensor, attention_mask: Tensor | None,
                  dropout: float, is_causal: bool | None, kwargs: dict) -> str | None:
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if not causal:
        return "non-causal attention (is_causal=False)"
    n, n_kv = query.shape[2], key.shape[2]
    if n != n_kv:
        return (f"a KV cache ({n} queries against {n_kv} keys, as in generation); Lighthouse "
                "needs queries and keys of one full sequence")
    if dropout:
        return f"attention dropout {dropout}; set config.attention_dropout=0.0"
    window = kwargs.get("sliding_window")
    if window is not None and n > window:
        return (f"a sliding window of {window} tokens is shorter than the sequence ({n}); set "
                "config.sliding_window=None for full causal attention")
    for name in _UNSUPPORTED_KWARGS:
        if kwargs.get(name) is not None:
            return f"the attention argument {name!r}, which Lighthouse does not implement"
    if attention_mask is not None and (
            attention_mask.dim() != 4 or tuple(attention_mask.shape[-2:]) != (n, n) or
            not torch.compiler.is_compiling() and not bool(_plain_causal(attention_mask, n))):
        # under compile the values are checked at run time (_assert_plain_causal)
        return ("an attention mask that is not plain causal (padding, packed documents or a "
                "custom mask)")
    return None


def _assert_one_document_per_row(position_ids: Tensor | None) -> None:
    """Under ``torch.compile``: fail at run time when ``position_ids`` restart inside a row (a
    packed-document mask Lighthouse cannot honour). A compiled graph cannot branch on data,
    so this is a run-time assertion (a RuntimeError on the CPU, a device-side assertion on a
    GPU), not the ValueError of eager mode, and ``fallback="dense"`` cannot reroute it."""
    if position_ids is None:
        return
    plain = (torch.diff(position_ids, dim=-1) == 1).all()
    torch._assert_async(plain, "Lighthouse attention cannot honour this batch: position_ids "
                               "restart inside a row (packed documents). " + _FIXES)


def _plain_causal(mask: Tensor, n: int) -> Tensor:
    """A 0-d boolean tensor: does the (..., n, n) boolean or additive ``mask`` allow exactly
    the causal pairs (transformers materialises such masks in a few cases, e.g. under
    tracing)?"""
    causal = torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
    if mask.dtype == torch.bool:
        return (mask == causal).all()
    blocked = mask <= torch.finfo(mask.dtype).min / 2
    return ((mask == 0) | blocked).all() & (~blocked == causal).all()


def _assert_plain_causal(mask: Tensor) -> None:
    """Under ``torch.compile``: fail at run time when a materialised mask is not plain causal
    (a compiled graph cannot branch on its values); see :func:`_assert_one_document_per_row`."""
    torch._assert_async(_plain_causal(mask, mask.shape[-1]),
                        "Lighthouse attention cannot honour this batch: the attention mask is "
                        "not plain causal (padding, packed documents or a custom mask). " + _FIXES)


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, stacklevel=3)
