"""``python -m lighthouse_attn ...`` is the ``lighthouse-attn`` command."""

import sys

from .cli import main

sys.exit(main())
