"""Progress bars: shown on a terminal, silent in logs and pipes, off with ``--no-progress``."""

from __future__ import annotations

import os
import sys


def bar_disable(progress: bool) -> bool | None:
    """tqdm's ``disable`` argument: ``True`` when progress is off, else ``None`` (tqdm then
    disables itself when its output is not a terminal, so logs get no carriage-return frames)."""
    return None if progress else True


def quiet_libraries() -> None:
    """Silence the progress bars of transformers and huggingface_hub too (``--no-progress``),
    in this process and in the processes it starts."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
