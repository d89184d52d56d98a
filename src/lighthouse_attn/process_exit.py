"""Ending a process that ``torchrun`` started; imports nothing heavy, so the command line can
use it."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``. A process that ``torchrun`` started (``WORLD_SIZE`` > 1)
    ends without interpreter shutdown, its output flushed: DTensor's caches keep FSDP's device
    mesh and with it the process group, whose worker threads outlive
    ``destroy_process_group``, and one that drops the last reference to a tensor while the
    interpreter shuts down aborts the process (SIGABRT) after all its work is done. Every file
    the package writes is closed by then."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):  # gone or closed
                stream.flush()
        os._exit(code)
    sys.exit(code)
