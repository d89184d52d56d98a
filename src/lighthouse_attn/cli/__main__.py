"""``python -m lighthouse_attn.cli ...`` is the ``lighthouse-attn`` command."""

from . import run

run()
