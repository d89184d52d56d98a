"""lighthouse-attn: Lighthouse Attention for cheaper long-context pretraining.

>>> from lighthouse_attn import lighthouse_attention, LighthouseConfig
>>> out = lighthouse_attention(q, k, v, LighthouseConfig(num_levels=3, pooling_factor=4,
...                                                      topk=1536))  # doctest: +SKIP
"""

from .config import LighthouseConfig

__version__ = "0.1.0"
__all__ = ["LighthouseConfig", "Selection", "lighthouse_attention", "plot_selection", "select",
           "__version__"]


def __getattr__(name: str):
    # the op (torch) and plot_selection (models, matplotlib) are imported on first use, so that
    # the command line starts, and answers Ctrl-C, before torch is loaded
    if name in ("Selection", "lighthouse_attention", "select"):
        from . import ops

        return getattr(ops, name)
    if name == "plot_selection":
        from .eval.plots import plot_selection

        return plot_selection
    raise AttributeError(f"module 'lighthouse_attn' has no attribute {name!r}")
