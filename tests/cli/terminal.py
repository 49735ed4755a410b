"""Run a command on a pseudo-terminal and read what a person would see.

``run_on_pty`` gives the raw bytes a terminal receives (stdout and stderr
both on the terminal, as in an interactive shell); ``screen_lines`` replays
them the way a terminal does (carriage return, erase, cursor up), so a test
can check the lines a user reads, not the escape codes that drew them.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = 160


def run_on_pty(args: list[str], env: dict | None = None, timeout: float = 600,
               interrupt_after: bytes | None = None) -> tuple[int, bytes]:
    """(exit code, bytes written to the terminal) of ``python -m gpnas ARGS`` on a pty;
    with ``interrupt_after``, Ctrl-C is typed once those bytes have appeared."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": str(COLUMNS), **(env or {})}
    # with interrupt_after, the pty is the child's controlling terminal, so typing Ctrl-C (\x03) on it
    # signals the child's process group and the terminal echoes ^C, as in an interactive shell
    session = {"start_new_session": True, "preexec_fn": lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0)} \
        if interrupt_after is not None else {}
    process = subprocess.Popen([sys.executable, "-m", "gpnas", *args], stdin=slave, stdout=slave, stderr=slave,
                               env=full_env, cwd=ROOT, close_fds=True, **session)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            process.kill()
            raise TimeoutError(f"no output for {timeout} s from {args}")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
        if interrupt_after is not None and interrupt_after in b"".join(chunks):
            os.write(master, b"\x03")  # Ctrl-C
            interrupt_after = None
    os.close(master)
    return process.wait(), b"".join(chunks)


_ESCAPE = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen_lines(raw: bytes) -> list[str]:
    """The lines left on screen after replaying ``raw`` (a simple terminal: one
    cursor, carriage return, newline, erase in line, cursor up)."""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    lines, row, col = [""], 0, 0
    i = 0
    while i < len(text):
        ch = text[i]
        match = _ESCAPE.match(text, i) if ch == "\x1b" else None
        if match:
            args, code = match.groups()
            if code == "K":  # erase from the cursor to the end of the line
                lines[row] = lines[row][:col]
            elif code == "A":  # cursor up
                row = max(0, row - int(args or 1))
            i = match.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif ch >= " ":
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1:]
            col += 1
        i += 1
    return [line.rstrip() for line in lines]


def cursor_escapes(raw: bytes) -> tuple[int, int]:
    """(hide-cursor, show-cursor) escapes sent."""
    return raw.count(b"\x1b[?25l"), raw.count(b"\x1b[?25h")
