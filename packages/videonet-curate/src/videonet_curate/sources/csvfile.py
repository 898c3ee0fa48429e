"""Read a CSV the way spreadsheet programs save it, or refuse it with a message that says how to fix it.

What the programs really write (checked against their save dialogs):

* Excel "CSV UTF-8 (Comma delimited)": a UTF-8 byte-order mark, CRLF line ends, ``,`` between fields,
  or ``;`` where the system list separator is ``;`` (locales whose decimal mark is a comma: de, fr, nl,
  ...). Excel's plain "CSV (Comma delimited)" uses the Windows code page (cp1252 in Western locales).
* LibreOffice Calc "Text CSV": UTF-8 without a byte-order mark by default, LF (Linux/macOS) or CRLF
  (Windows), the separator chosen in the dialog (``,`` by default, ``;`` and tab offered).
* Google Sheets "Download as .csv": UTF-8 without BOM, ``,``, CRLF.

So: a BOM is dropped, CRLF is read like LF, and the separator is found from the header line among
``,``, ``;`` and tab. A file that is not UTF-8 is refused (guessing a code page would silently garble
labels); the message tells the user to save it as "CSV UTF-8".
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

SEPARATORS = (",", ";", "\t")


class CsvInputError(ValueError):
    """A CSV that cannot be read (the message names the file, the option and the fix)."""


@dataclass(frozen=True)
class CsvTable:
    header: list[str]  # column names, stripped
    rows: list[tuple[int, dict[str, str]]]  # (line number in the file, record)
    separator: str


def _decode(path: Path, option: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvInputError(
            f"{option} {path}: not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); save it as "
            "'CSV UTF-8' (Excel) or with character set UTF-8 (LibreOffice)"
        ) from None


def _separator(header_line: str) -> str:
    counts = {sep: header_line.count(sep) for sep in SEPARATORS}
    best = max(SEPARATORS, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def read_csv(path: str | Path, option: str) -> CsvTable:
    """The header and rows of a CSV file (see the module docstring for what is accepted)."""
    path = Path(path)
    if path.is_dir():
        raise CsvInputError(f"{option} {path} is a directory; pass a CSV file")
    try:
        text = _decode(path, option)
    except OSError as exc:
        raise CsvInputError(f"{option} {path}: cannot read it ({exc.strerror})") from None
    if "\x00" in text:
        raise CsvInputError(f"{option} {path}: holds NUL bytes, so it is not a text CSV; pass a CSV file")
    first = text.lstrip("\r\n").split("\n", 1)[0]
    separator = _separator(first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue  # blank lines (and the empty last line some programs add)
            if header is None:
                header = [name.strip() for name in fields]
                continue
            record = {name: (fields[i] if i < len(fields) else "") for i, name in enumerate(header)}
            rows.append((reader.line_num, record))
    except csv.Error as exc:
        raise CsvInputError(f"{option} {path}:{reader.line_num}: {exc}; check the quoting") from None
    if header is None:
        raise CsvInputError(f"{option} {path} is empty; pass a CSV with a header line")
    return CsvTable(header, rows, separator)
