"""``python -m lighthouse_attn ...`` is the ``lighthouse-attn`` command."""

from .cli import run

run()
