"""The exit-code contract of the command-line tools (README, "Exit codes") as vito-train and vito-eval
apply it to a command body.

The numbers are videonet-curate's (`videonet_curate.exits`, the lowest package): one contract. Its
guard raises from the signal handler, which suits curation; training must instead finish the step in
flight and checkpoint, so SIGTERM/SIGINT set a flag there (`distributed.StopRequest`) and the run
returns the signal, which becomes 128 + signal here.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from videonet_curate.exits import (  # noqa: F401 - re-exported: the contract's numbers
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
)
from videonet_curate.exits import EXIT_FAILED_ROWS as EXIT_PARTIAL  # noqa: F401 - training: skipped work

T = TypeVar("T")


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
    """Run a command body under the contract: ``input_errors`` -> one line, exit 2; a Ctrl-C that was
    not handled as a stop request -> 130; anything else -> one line naming the error, exit 3 (trace with
    ``--verbose``)."""
    try:
        return body()
    except (typer.Exit, typer.Abort, typer.TyperException):  # typer's own exits and usage errors
        raise
    except input_errors as exc:
        console.print(f"[bold red]error:[/] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
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
