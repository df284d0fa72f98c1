"""Writing scored results as they come: a table, CSV or JSON, to stdout or atomically to a file.

Used by the ``bpclip score`` command (:mod:`bpclip_core.cli`); it imports no torch, so the
command's argument errors still answer before torch is loaded.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import tempfile
import textwrap
import unicodedata
from pathlib import Path
from typing import IO, Any

from bpclip_core.errors import OutputError, UsageError
from bpclip_core.model.adjectives import DIMENSIONS, goodness_column


def display_text(text: str) -> str:
    """``text`` as valid Unicode: undecodable file-name bytes (surrogate escapes) become ``\\xNN``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def display_line(text: str) -> str:
    """:func:`display_text` on one line: newlines and other control characters escaped."""
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
        for c in display_text(text)
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class ResultWriter:
    """Writes result rows in one format as they come: to stdout, or to ``output`` through a
    temporary file beside it that atomically replaces it at the end.

    Checks at construction that the output can be written (raises :class:`UsageError`).
    File names are written as valid UTF-8 (:func:`display_text`); the table escapes control
    characters; JSON is strict (no NaN).
    """

    # one goodness column per quality dimension (the JSON's "dimensions"), empty for failed rows;
    # named as the Ray adapter's columns: "overall quality" -> overall_quality_goodness
    GOODNESS_COLUMNS = tuple(goodness_column(d) for d in DIMENSIONS)
    HEADER = ("path", "reference", "score", "mos", "top_adjectives", *GOODNESS_COLUMNS, "error")

    def __init__(self, fmt: str, output: Path | None, width: int = 5) -> None:
        self.fmt, self.output, self.width = fmt, output, width
        self.rows = self._json_rows = 0
        self._temp: Path | None = None
        self._target = output  # where the file is put: a symlinked output's target
        self._stream: IO[str] = sys.stdout
        self._started = self._aborted = False
        if output is not None:
            self._stream = self._open(output)
        self._csv = csv.writer(self._stream) if fmt == "csv" else None

    def _start(self) -> None:
        """The header, written with the first rows (or at :meth:`finish`): a run that fails before
        scoring (e.g. a broken checkpoint) leaves no lone ``[`` on stdout."""
        if not self._started:
            self._started = True
            self._write_text(self._header())

    def _open(self, output: Path) -> IO[str]:
        if output.is_symlink():  # written through to the link's target: the link stays a link
            self._target = output = Path(os.path.realpath(output))
        if output.is_dir():
            raise UsageError(f"--output {output} is a folder; name a file to write")
        if output.exists() and not output.is_file():  # a FIFO or device (/dev/null): written directly
            try:
                return output.open("w", encoding="utf-8", newline="")
            except OSError as exc:
                raise UsageError(f"--output {output} cannot be written: {exc.strerror or exc}") from exc
        if output.exists() and not os.access(output, os.W_OK):
            raise UsageError(f"--output {output} is not writable")
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial")
        except OSError as exc:
            raise UsageError(f"--output {output} cannot be written: {exc.strerror or exc}") from exc
        self._temp = Path(temp)
        from bpclip_core.weights.checkpoint import new_file_mode

        # mkstemp makes it 0600: keep the mode of the file it replaces, else the usual one (umask)
        mode = output.stat().st_mode & 0o7777 if output.exists() else new_file_mode()
        os.chmod(temp, mode)
        return os.fdopen(fd, "w", encoding="utf-8", newline="")

    def _header(self) -> str:
        if self.fmt == "json":
            return "["
        if self.fmt == "csv":
            self._csv.writerow(self.HEADER)
            return ""
        return f"{'image':<{self.width}}  {'score':>7}  dominant adjectives\n"

    def _write_text(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except OSError as exc:
            self.abort()
            where = "stdout" if self.output is None else f"--output {self.output} ({self.output} left unchanged)"
            raise OutputError(f"cannot write the results to {where}: {exc.strerror or exc}") from exc

    def write(self, results: list) -> None:
        """Write the rows of some results and flush them."""
        self._start()
        if self.fmt == "csv":
            for r in results:
                self._csv.writerow(self._csv_row(r))
            self._write_text("")
        else:
            self._write_text("".join(self._row(r) for r in results))
        self.rows += len(results)

    def _row(self, r: Any) -> str:
        if self.fmt == "json":
            row = {
                "path": display_text(r.path),
                "reference": None if r.reference is None else display_text(r.reference),
                "score": _finite(r.score),
                "mos": _finite(r.mos),
                "top_adjectives": [{"adjective": w, "probability": _finite(p)} for w, p in r.top_adjectives],
                "dimensions": {k: _finite(v) for k, v in r.dimensions.items()},
                "error": None if r.error is None else display_text(r.error),
            }
            text = textwrap.indent(json.dumps(row, indent=2, allow_nan=False), "  ")
            separator = ",\n" if self._json_rows else "\n"
            self._json_rows += 1
            return separator + text
        shown = f"{r.score:7.4f}  {_adjectives(r)}" if r.error is None else f"{'-':>7}  error: {display_line(r.error)}"
        return f"{display_line(r.path):<{self.width}}  {shown}\n"

    def _csv_row(self, r: Any) -> list[str]:
        reference = "" if r.reference is None else display_text(r.reference)
        error = "" if r.error is None else display_text(r.error)
        goodness = [_num(r.dimensions.get(d)) for d in DIMENSIONS]
        return [display_text(r.path), reference, _num(r.score), _num(r.mos), _adjectives(r), *goodness, error]

    def finish(self, interrupted: bool = False) -> None:
        """Complete the output (a valid file with the rows written so far) and put it in place;
        nothing after :meth:`abort` (e.g. the disk filled up: the output is left as it was)."""
        if self._aborted:
            return
        self._start()
        try:
            if self.fmt == "json":
                self._stream.write("\n]\n" if self.rows else "]\n")
            self._stream.flush()
            if self._stream is not sys.stdout:
                self._stream.close()
            if self._temp is not None:
                os.replace(self._temp, self._target)
                self._temp = None
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write --output {self.output}: {exc.strerror or exc}") from exc
        if interrupted and self.output is not None:
            print(f"wrote the {self.rows} results scored so far to {display_line(str(self.output))}", file=sys.stderr)

    def abort(self) -> None:
        """Discard the temporary file; the output is left as it was."""
        self._aborted = True
        if self._stream is not sys.stdout:
            with contextlib.suppress(OSError):
                self._stream.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


def _adjectives(r: Any) -> str:
    return ", ".join(f"{w} ({p:.2f})" for w, p in r.top_adjectives)


def _num(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6f}"
