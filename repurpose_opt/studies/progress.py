"""A tiny terminal progress bar on stderr, shared by every study (no tqdm dependency).

On a terminal the bar redraws itself in place (``\\r``); when stderr is redirected (CI logs, files) it
prints a plain line at each tenth of the work instead, so logs stay short and readable. A disabled bar
accepts the same calls and prints nothing, so callers never branch on ``progress``.

Examples
--------
>>> import io
>>> stream = io.StringIO()
>>> with ProgressBar(4, desc="compare", stream=stream) as bar:
...     for _ in range(4):
...         bar.update(1, note="digits")
>>> print(stream.getvalue().splitlines()[-1])
compare 4/4 (100%) ...
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]

_WIDTH = 24


class ProgressBar:
    """Count ``total`` steps on ``stream`` (default stderr).

    Parameters
    ----------
    total : int
        Number of steps the work has.
    desc : str
        Label printed before the counts.
    enabled : bool
        ``False`` gives a bar that prints nothing.
    stream : text stream, optional
        Where to draw (default ``sys.stderr``).
    """

    def __init__(self, total: int, desc: str = "", *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.count = 0
        self._started = time.perf_counter()
        self._last_tenth = -1
        isatty = getattr(self.stream, "isatty", None)
        self._interactive = bool(isatty and isatty())

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, note: str = "") -> None:
        """Advance by ``n`` steps; ``note`` says what just finished (shown on the bar)."""
        self.count = min(self.count + n, self.total) if self.total else self.count + n
        if not self.enabled:
            return
        if self._interactive:
            self.stream.write("\r" + self._line(note).ljust(100)[:100])
            self.stream.flush()
            return
        tenth = 10 * self.count // self.total if self.total else 10
        if tenth != self._last_tenth:  # a redirected stream gets one line per tenth of the work
            self._last_tenth = tenth
            self.stream.write(self._line(note) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the bar's line (on a terminal)."""
        if self.enabled and self._interactive:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False

    def _line(self, note: str) -> str:
        elapsed = time.perf_counter() - self._started
        if self.total:
            done = self.count / self.total
            filled = int(round(_WIDTH * done))
            bar = "#" * filled + "-" * (_WIDTH - filled)
            eta = elapsed / self.count * (self.total - self.count) if self.count else 0.0
            counts = f"{self.count}/{self.total} ({100 * done:.0f}%) [{bar}] {elapsed:.1f}s elapsed, ~{eta:.1f}s left"
        else:
            counts = f"{self.count} {elapsed:.1f}s elapsed"
        text = f"{self.desc} {counts}" if self.desc else counts
        return f"{text}  {note}" if note else text
