"""One exit-code contract for every ``videonet-curate`` command, and the guard that keeps it.

==========  ==========================================================================================
exit code   meaning
==========  ==========================================================================================
0           done
1           done, but some rows failed (the manifest says which and why); the output is complete
2           bad arguments or input: one line names the input and the fix; nothing was written
3           internal error (a bug): one line; ``--verbose`` prints the trace
130         interrupted by SIGINT (Ctrl-C); finished shards are kept, rerun the same command to resume
143         interrupted by SIGTERM (``timeout``, Slurm, systemd); finished shards kept, rerun to resume
==========  ==========================================================================================

130 and 143 are the shell's convention (128 + signal number), so ``$?`` reads the same whether the
tool stopped itself cleanly or was killed by the signal.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click
import typer
from rich.console import Console
from rich.text import Text

from videonet_curate.safepath import PathEscapeError

EXIT_OK = 0
EXIT_FAILED_ROWS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143

console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class Interrupted(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT; a BaseException so ``except Exception`` lets it pass."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# the first signal received while a guarded command runs (an error raised while unwinding after it,
# e.g. a Ray worker killed by the same process-group signal, still ends as "interrupted")
_received: list[int] = []


def on_signal(signum: int, _frame: Any) -> None:
    """The first signal raises :class:`Interrupted` (a clean stop); a second one kills at once."""
    if not _received:
        _received.append(signum)
        raise Interrupted(signum)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT raise :class:`Interrupted` in the main thread (call again after ``ray.init``,
    which installs its own SIGTERM handler that would exit with status 15)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)


def error_line(message: str, *, prefix: str = "error") -> None:
    """Print ``prefix: message`` on one line (no wrapping, no markup read from the message)."""
    console.print(Text.assemble((f"{prefix}: ", "bold red"), " ".join(str(message).split())), soft_wrap=True)


def guarded(command: F) -> F:
    """Wrap a typer command so it keeps the contract above.

    Exceptions meant for the user (:class:`typer.Exit`, click's usage errors) pass through. An
    interruption ends with 130/143 and one line; any other exception is an internal error: one line
    (the trace with ``--verbose``) and exit 3.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(kwargs.get("verbose"))
        previous = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
        _received.clear()
        install_signal_handlers()
        try:
            return command(*args, **kwargs)
        except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
            if _received:
                raise _interrupted_exit(_received[0]) from None
            raise
        except PathEscapeError as exc:  # a link planted in the output, or a hostile id that got this far
            error_line(f"{exc}; remove the link or pass another output directory")
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except (Interrupted, KeyboardInterrupt) as exc:
            signum = _received[0] if _received else getattr(exc, "signum", signal.SIGINT)
            raise _interrupted_exit(signum) from None
        except Exception as exc:
            if _received:
                raise _interrupted_exit(_received[0]) from None
            if verbose:
                traceback.print_exc(file=sys.stderr)
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
            hint = "" if verbose else "; rerun with --verbose for the trace"
            error_line(
                f"{type(exc).__name__}: {exc}{at}{hint}; this is a bug, please report it",
                prefix="internal error",
            )
            raise typer.Exit(EXIT_INTERNAL) from None
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous[0])
                signal.signal(signal.SIGINT, previous[1])

    return wrapper  # type: ignore[return-value]


def _interrupted_exit(signum: int) -> typer.Exit:
    name = signal.Signals(signum).name
    error_line(
        f"interrupted by {name}: finished shards are kept; rerun the same command to resume",
        prefix="stopped",
    )
    return typer.Exit(128 + signum)
