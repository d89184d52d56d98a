"""``python -m lighthouse_attn.cli ...`` is the ``lighthouse-attn`` command."""

import sys

from . import main

sys.exit(main())
