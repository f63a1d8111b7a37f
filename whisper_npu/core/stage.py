"""The entry wrapper of every stage and command: logging, one-line errors, exit codes, SIGTERM cleanup."""
from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from whisper_npu.core.errors import StageError


class Terminated(SystemExit):
    """SIGTERM, turned into an exception so `finally` blocks and atomic_output clean up partial outputs."""


def _raise_on_sigterm(signum: int, _frame: Any) -> None:
    raise Terminated(128 + signum)


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's main: log to stderr, one-line errors for expected failures (StageError and its subclasses,
    such as a params error), non-zero exit codes.

    Temporary files of the run (``tempfile``: exported models, quantizer work) live in one folder of their own,
    removed when the stage ends however it ends, with SIGTERM ignored meanwhile: a SIGTERM that lands while a
    TemporaryDirectory is being removed would otherwise abort that removal and leave the rest in /tmp."""
    import shutil
    import tempfile

    logging.basicConfig(level=os.environ.get("WHISPER_NPU_LOG", "INFO"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    scratch = tempfile.mkdtemp(prefix="whisper-npu-stage-")
    tempfile.tempdir = scratch
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        main(argv)
    except StageError as e:
        say(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
    except Terminated:
        say("terminated (SIGTERM); partial outputs removed")
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        tempfile.tempdir = None
        shutil.rmtree(scratch, ignore_errors=True)


def say(message: str) -> None:
    """One line on stderr, through tqdm: a progress bar being drawn is cleared first."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
