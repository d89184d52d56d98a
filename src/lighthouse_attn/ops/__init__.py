"""The Lighthouse op, one module per stage of docs/spec.md:

pyramid (sec. 1) -> scores (sec. 2) -> select (sec. 3-4) -> gather (sec. 5) -> inner
attention -> scatter (sec. 6), composed by :func:`lighthouse_attention` in ``attention.py``.
"""

from .attention import lighthouse_attention, sdpa_causal
from .select import Selection, select

__all__ = ["lighthouse_attention", "sdpa_causal", "select", "Selection"]
