"""What the ``sifa`` commands share: the parser's class, switches, signals and errors."""

from __future__ import annotations

import argparse
import contextlib
import signal

import yaml

# What every command's --checkpoint takes (sifa.engine.checkpoint.resolve_checkpoint).
CHECKPOINT_HELP = (
    "a .safetensors checkpoint, a run folder (its best, else last), a model folder (sifa "
    "publish) or hf-hub:ORG/NAME[@REVISION]"
)


def parse_switches(pairs: list[str]) -> dict:
    """``["dual_head=false", "sifa_stages=[res4,res5]"]`` -> typed keyword arguments (values
    are read as YAML scalars or lists)."""
    switches = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected a model switch as key=value, got {pair!r}")
        switches[key] = yaml.safe_load(value)
    return switches


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help gives it already or there
    is none to give (no value, a flag, a positional argument)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings  # a positional argument
            or action.nargs == 0  # a flag
            or action.default is None
            or action.default is argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The ``sifa`` parser and its subcommands' (``add_subparsers`` makes them of this
    class): help with defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpWithDefaults)
        super().__init__(*args, **kwargs)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises ``KeyboardInterrupt``, so that every command stops
    as cleanly on SIGTERM (a scheduler, ``kill``, a container stopping) as on Ctrl-C."""

    signal_number = signal.SIGTERM


def _raise_terminated(number, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While a command runs, SIGTERM raises :class:`Terminated` in the main thread. Where
    SIGTERM or SIGINT was ignored when ``sifa`` started (``nohup``, a background job of a
    script), it stays ignored: Python then raises no ``KeyboardInterrupt`` on Ctrl-C either."""
    installed = False
    with contextlib.suppress(ValueError):  # not the main thread: nothing to install
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_terminated)
            installed = True
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_outcome(stop: KeyboardInterrupt) -> tuple[str, int]:
    """What to print and the exit status for a command stopped by Ctrl-C or SIGTERM (a
    ``KeyboardInterrupt`` that names another signal in ``signal_number`` stands for it)."""
    number = getattr(stop, "signal_number", signal.SIGINT)
    if number == signal.SIGTERM:
        return "terminated (SIGTERM)", 128 + signal.SIGTERM
    return "interrupted", 128 + signal.SIGINT


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line. An error re-raised by a DataLoader from a worker
    process carries the worker's whole traceback: its last line is the original message."""
    message = str(error)
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    if "\nOriginal Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        return f"{last.partition(': ')[2] or last} (in a DataLoader worker)"
    return message
