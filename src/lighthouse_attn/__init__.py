"""lighthouse-attn: Lighthouse Attention for cheaper long-context pretraining.

>>> from lighthouse_attn import lighthouse_attention, LighthouseConfig
>>> out = lighthouse_attention(q, k, v, LighthouseConfig(num_levels=3, pooling_factor=4,
...                                                      topk=1536))  # doctest: +SKIP
"""

from .config import LighthouseConfig
from .ops import Selection, lighthouse_attention, select

__version__ = "0.1.0"
__all__ = ["LighthouseConfig", "Selection", "lighthouse_attention", "plot_selection", "select",
           "__version__"]


def __getattr__(name: str):
    # plot_selection lives with the evaluations (models, matplotlib); import it on first use so
    # that `import lighthouse_attn` stays as light as the op
    if name == "plot_selection":
        from .eval.plots import plot_selection

        return plot_selection
    raise AttributeError(f"module 'lighthouse_attn' has no attribute {name!r}")
