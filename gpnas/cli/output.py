"""Everything the commands print goes through here: text made printable, a
closed stdout that ends the printing quietly, and one progress bar.

- ``printable``: strings that come from files (formula texts, task names,
  config values, failure reasons) may hold terminal escape sequences; every
  control character except newline and tab is shown as a visible escape
  (``\\x1b``), never sent to the terminal.
- ``echo``: ``click.echo`` of printable text. When the reader of stdout went
  away (``gpnas show RUN | head``), the rest of the output goes to
  ``/dev/null`` and the command carries on: a run is never stopped by it.
- ``Progress``: tqdm's bar on stderr when stderr is a terminal, nothing
  otherwise (a pipe or a log file gets plain lines); lines printed while it is
  drawn clear it and redraw it below them (tqdm's ``external_write_mode``), so
  a bar never garbles a line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys

import click

# C0 and C1 controls (but \t and \n), DEL, and the bidirectional overrides that reorder text on screen
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text) -> str:
    """``text`` with every control character but newline and tab as a visible escape."""
    def escape(match):
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNPRINTABLE.sub(escape, str(text))


_closed = {"stdout": False, "stderr": False}


def _silence(name: str) -> None:
    """Point a closed standard stream at /dev/null, so neither later writes nor
    the interpreter's flush at exit fail (Python's documented SIGPIPE advice)."""
    _closed[name] = True
    stream = getattr(sys, name)
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def is_broken_pipe(error: BaseException) -> bool:
    return isinstance(error, BrokenPipeError) or (isinstance(error, OSError) and error.errno == errno.EPIPE)


def echo(text: str = "", err: bool = False, nl: bool = True) -> None:
    """Print one line of printable text; a closed stream swallows it."""
    name = "stderr" if err else "stdout"
    if _closed[name]:
        return
    try:
        click.echo(printable(text), err=err, nl=nl)
    except OSError as error:
        if not is_broken_pipe(error):
            raise
        _silence(name)


def silence_stdout() -> None:
    _silence("stdout")


def plural(n: int, word: str) -> str:
    """'1 curve', '2 curves'."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def stdout_closed() -> bool:
    return _closed["stdout"]


def use_bar(stream=None) -> bool:
    """A bar only on a real terminal (not a pipe, a file or TERM=dumb)."""
    stream = stream or sys.stderr
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress bar on stderr (terminal only) that printed lines never garble.

    >>> with Progress(total=20, initial=0, label="generations", unit="gen") as bar:
    ...     bar.line("gen 1 ...")   # clears the bar, prints, redraws it
    ...     bar.update_to(1)
    """

    def __init__(self, total: int, label: str, unit: str = "it", initial: int = 0, enabled: bool | None = None):
        self.enabled = use_bar() if enabled is None else enabled
        self.bar = None
        if self.enabled:
            from tqdm import tqdm

            # leave=False: the bar is gone when it closes, so the last lines the
            # command prints stand alone
            self.bar = tqdm(total=total, initial=initial, desc=label, unit=unit, file=sys.stderr,
                            leave=False, dynamic_ncols=True, smoothing=0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update_to(self, n: int) -> None:
        if self.bar is not None and n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def line(self, text: str, err: bool = False) -> None:
        """Print a line above the bar."""
        if self.bar is None:
            echo(text, err=err)
            return
        from tqdm import tqdm

        try:
            with tqdm.external_write_mode(file=sys.stderr if err else sys.stdout):
                echo(text, err=err)
        except OSError as error:  # the bar's own stream (stderr) was closed
            if not is_broken_pipe(error):
                raise
            self.bar.disable = True

    def close(self) -> None:
        if self.bar is not None:
            with contextlib.suppress(OSError):
                self.bar.close()
            self.bar = None

    def interrupted(self) -> None:
        """Close the bar after Ctrl-C and erase its whole line: the terminal echoed ``^C``
        after the bar, where closing it (which blanks only the bar's width) would leave it."""
        shown = self.bar is not None
        self.close()
        if shown:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write("\r\x1b[2K")  # carriage return, erase the entire line
                sys.stderr.flush()
