"""Student text made inert for each report format.

Exception messages, printed output, descriptions of returned values and file names
all come from the submission. Whatever they hold, a report must stay valid for its
format and show that text as text: never as terminal control sequences, markup, links
or spreadsheet formulas. :func:`text` is the common step (every report's strings pass
through it once); the other functions add what one format needs on top of it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable

# C0 controls but tab and newline, DEL and C1 (ANSI/OSC sequences start with ESC, CSI or
# OSC), the bidi controls that reorder what a reader sees, line and paragraph separators
# (line breaks to some viewers, not to others), and the two characters XML forbids
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u2028\u2029\ufffe\uffff]"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(value: object) -> str:
    """``value`` as printable, valid Unicode text of several lines: each unsafe control
    character becomes its visible escape (``\\x1b``, ``\\u202e``), lone surrogates (from
    undecodable file names or student strings) become U+FFFD; newlines and tabs stay."""
    result = str(value).replace("\r\n", "\n")
    result = _SURROGATE.sub("\ufffd", result)
    return _UNSAFE.sub(_escape, result)


def line(value: object) -> str:
    """:func:`text` on one line: newlines and tabs become spaces."""
    return text(value).replace("\n", " ").replace("\t", " ")


def xml(value: object) -> str:
    """Text every XML 1.0 document can hold (markup is escaped by the XML writer)."""
    return text(value)


# CommonMark's backslash escapes for every character that can start emphasis, code,
# links, images, headings, tables or strikethrough; < > & are turned into entities
_MARKDOWN = re.compile(r"([\\`*_\[\]()!|~#])")


def markdown(value: object) -> str:
    """One line of Markdown that renders as exactly this text: no HTML, no link, no
    image, no emphasis, no table cell break, whatever the value holds."""
    escaped = _MARKDOWN.sub(r"\\\1", line(value))
    return html.escape(escaped, quote=False)


def fenced(value: object, info: str = "text") -> str:
    """A fenced Markdown code block holding ``value`` verbatim: the fence is longer
    than any run of backticks inside, so nothing in it can close the block."""
    body = text(value).rstrip("\n")
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}"


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A CSV cell that spreadsheets show as text: a string that a spreadsheet would
    read as a formula gets a leading apostrophe. Numbers are kept as numbers."""
    if not isinstance(value, str):
        return value
    cell = line(value)
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


_NOT_IN_FILE_NAMES = re.compile(r"[^\w.-]+")


def file_stem(label: str, limit: int = 80) -> str:
    """A file name stem from ``label`` that every file system accepts: letters,
    digits, ``_``, ``.`` and ``-`` only, no leading dot, at most ``limit`` characters."""
    stem = unicodedata.normalize("NFC", line(label))
    stem = _NOT_IN_FILE_NAMES.sub("_", stem).strip("._-")[:limit].rstrip("._-")
    return stem or "submission"


def unique_stems(labels: Iterable[str]) -> list[str]:
    """:func:`file_stem` of each label, numbered (``-2``, ``-3``...) where two would be
    the same file, also on file systems that ignore case."""
    used: set[str] = set()
    stems = []
    for label in labels:
        base = file_stem(label)
        stem, number = base, 2
        while stem.casefold() in used:
            stem, number = f"{base}-{number}", number + 1
        used.add(stem.casefold())
        stems.append(stem)
    return stems
