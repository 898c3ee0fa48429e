"""The exit-code contract of the command-line tools (README, "Exit codes"), and the one wrapper that
applies it to a command body.

videonet-curate states the same numbers in its own CLI modules (it cannot import vito-train);
vito-eval uses this module.
"""

from __future__ import annotations

import signal
import traceback
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

EXIT_OK = 0
EXIT_PARTIAL = 1  # done, output complete, but rows failed (curation) or work was skipped (training)
EXIT_BAD_INPUT = 2  # bad arguments or input; nothing written
EXIT_INTERNAL = 3  # a bug or an environment fault: one line, the trace with --verbose
EXIT_SIGINT = 128 + signal.SIGINT  # 130: interrupted (Ctrl-C); a checkpoint was written
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: terminated (timeout, Slurm, systemd); a checkpoint was written

T = TypeVar("T")


class Interrupted(Exception):
    """A signal asked the job to stop; it stopped cleanly (checkpoint written) and exits 128 + signum."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def verbose_requested(ctx: typer.Context) -> bool:
    """Whether the command line carried the root ``--verbose`` flag."""
    return bool(ctx.find_root().params.get("verbose"))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def run_with_exit_codes(
    body: Callable[[], T],
    *,
    input_errors: tuple[type[BaseException], ...],
    console: Console,
    program: str,
    verbose: bool = False,
) -> T:
    """Run a command body under the contract: ``input_errors`` -> one line, exit 2; `Interrupted` ->
    128 + signal; Ctrl-C -> 130; anything else -> one line naming the error, exit 3 (trace with
    ``--verbose``)."""
    try:
        return body()
    except (typer.Exit, typer.Abort, typer.TyperException):  # typer's own exits and usage errors
        raise
    except input_errors as exc:
        console.print(f"[bold red]error:[/] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except Interrupted as exc:
        console.print(f"[yellow]interrupted:[/] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]", highlight=False)
        raise typer.Exit(EXIT_SIGINT) from None
    except Exception as exc:
        if verbose:
            console.print(escape(traceback.format_exc()), highlight=False, soft_wrap=True)
        console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(one_line(exc))} "
            f"(a bug in {program} or a fault of the machine; run with --verbose for the trace)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERNAL) from None
