"""Third-party noise a user can do nothing about, kept off the terminal (all of it comes back with `-v`)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

log = logging.getLogger(__name__)

# Loggers that report at INFO or WARNING what only a developer of those libraries can act on.
NOISY_LOGGERS = (
    "distributed",  # "Worker process still alive after 4.0 seconds, killing" when a busy worker exits slowly
    "great_expectations",  # "Created temporary directory … for ephemeral docs site"
    "ragas",
    "openvino",
    "nncf",
    "optimum",
    "transformers",
    "sentence_transformers",
    "py.warnings",
)


def quiet(verbose: bool) -> None:
    """Unless `verbose`: no Python warnings (here and in the processes this one starts), noisy loggers at ERROR."""
    decline_openvino_telemetry()
    if verbose:
        return
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # Dask workers and other child processes inherit it
    warnings.simplefilter("ignore")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def decline_openvino_telemetry() -> None:
    """Decline OpenVINO's telemetry, as its opt-out file would (without writing to the user's home).

    When no opt-out file exists, OpenVINO's model conversion posts usage events to Google Analytics from a forked
    process: a network call that fails offline, and a fork of a process holding LanceDB's runtime (LanceDB warns
    that a deadlock may follow). Checked: this is the only fork in an ingest run.
    """
    try:
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:
        return
    opt_in_checker.OptInChecker.check = lambda self, *args, **kwargs: opt_in_checker.ConsentCheckResult.DECLINED  # type: ignore[method-assign]


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence a model export's warnings and prints (TracerWarning, "saving the exported model is recommended", …).

    What they said is logged at DEBUG; an exception still propagates.
    """
    decline_openvino_telemetry()
    captured = io.StringIO()
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            warnings.simplefilter("ignore")
            for name in NOISY_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if captured.getvalue().strip():
            log.debug("model export said: %s", captured.getvalue()[-2000:])
