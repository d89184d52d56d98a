"""``python -m lighthouse_attn.train ...`` (and ``torchrun ... -m lighthouse_attn.train ...``)
is ``lighthouse-attn train ...``."""

import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
