"""Reports poisoned by student strings: a submission (and its file name) made of terminal
escapes, XML-breaking characters, HTML, script links, Markdown fences and spreadsheet
formulas, graded through the real CLI. Every report must stay valid for its format and
show the hostile text only as inert text.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from functools import cache
from html.parser import HTMLParser
from pathlib import Path

import mistune
import pytest
import xmlschema
from mistune.renderers.html import HTMLRenderer

from tests import notebooks as fixtures

ASSIGNMENT = "01_elementwise"
FAST = ["--timeout", "2", "--public-only", "--efficiency-weight", "0"]
SCHEMA = Path(__file__).with_name("junit.xsd")

# all on the first line (reports keep first lines in tables and attributes): clear the
# screen, home the cursor, a terminal hyperlink to javascript:, a C1 CSI, then erase the
# line and print a fake total; bidi overrides; HTML and Markdown links
SCREEN = "\x1b[2J\x1b[H\x1b]8;;javascript:alert(0)\x07link\x1b]8;;\x07\x9b31m\x1b[2K\x1b[G"
FAKE_TOTAL = "total             26/26"
BIDI = "\u202eevil\u202c\u2066x\u2069\u200f"
HTML = '<img src=x onerror=alert(1)><script>alert(2)</script><a href="javascript:alert(3)">a</a>'
LINKS = (
    "[click](javascript:alert(4)) ![i](data:text/html;base64,PHNjcmlwdD4=) "
    "<javascript:alert(5)> [r][evil] | x | y |"
)
# characters XML 1.0 forbids, a CDATA terminator and a lone surrogate
XML_BREAKERS = "\x00\x01\x08\x1f\x7f\ufffe\uffff]]>&amp;\ud800\x0b\x0c"
# then lines that try to close a code fence and start raw HTML and a link definition
FENCE = (
    "\n```\n<img src=y onerror=alert(6)>\n~~~\n<svg onload=alert(7)>\n"
    "\n[evil]: javascript:alert(8)\n# heading\n\r\ntotal 26/26\n"
)
HOSTILE = SCREEN + FAKE_TOTAL + BIDI + HTML + LINKS + XML_BREAKERS + FENCE

RAISES = f"""def relu_backward(input, output_grad):
    payload = {HOSTILE!r}
    raise ValueError(payload + "```\\n<img src=z onerror=alert(9)>")
"""
# printed (print cannot write a lone surrogate), next to a wrong answer: feedback shows
# the output of a function that fails
PRINTS = f"""def sin_backward(input, output_grad):
    print({HOSTILE.replace(chr(0xD800), "")!r})
    return output_grad * np.sin(input)
"""
RETURNS = f"""def cos_backward(input, output_grad):
    kind = type("Evil", (), {{}})
    kind.__qualname__ = {HOSTILE[:150]!r}
    kind.__module__ = "<img src=q onerror=alert(10)>"
    return kind()
"""
AT_LOAD = f"""def _make_neg():
    raise RuntimeError({HOSTILE!r})
neg_backward = _make_neg()
"""
# a file name is student text too (batches keep the names students upload)
NAME = "\x1b]0;pwned\x07<img src=n onerror=alert(11)>[x](javascript:alert(12))\u202e.ipynb"

# what may not reach any report: C0 controls but tab and newline, DEL, C1, bidi
# controls, line and paragraph separators, non-characters, surrogates
UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u2028\u2029\ufffe\uffff\ud800-\udfff]"
)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GRADCHECK_SECRET"}
    return subprocess.run(
        [sys.executable, "-m", "autograder.cli", *args],
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=180,
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    cells = fixtures.solution_cells(
        ASSIGNMENT,
        {"relu_backward": RAISES, "sin_backward": PRINTS, "cos_backward": RETURNS},
    )
    cells = [c for c in cells if not c.startswith("def neg_backward")] + [AT_LOAD]
    return fixtures.build_notebook(tmp_path_factory.mktemp("poison") / NAME, cells)


@cache
def _report(path: str, fmt: str) -> bytes:
    result = run(path, "--format", fmt, *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    assert b"Traceback" not in result.stderr
    return result.stdout


def report(path: Path, fmt: str) -> str:
    # strict: a report must be UTF-8 that any reader can decode
    return _report(str(path), fmt).decode("utf-8")


def assert_inert(text: str, where: str) -> None:
    found = sorted({f"U+{ord(c):04X}" for c in UNSAFE.findall(text)})
    assert not found, f"{where}: {found}"


def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(k) + strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_text_report_shows_escapes_as_text_and_only_the_real_total(hostile):
    text = report(hostile, "text")
    assert_inert(text, "text report")
    totals = [line for line in text.splitlines() if line.startswith("total")]
    assert len(totals) == 1, totals
    assert totals[0].split()[-1] == "22/26"  # four ops fail
    # the attack is visible for what it is, not executed
    assert "\\x1b" in text and "relu_backward" in text


def test_json_report_parses_and_carries_no_control_characters(hostile):
    data = json.loads(report(hostile, "json"))
    for value in strings(data):
        assert_inert(value, "json value")
    ops = fixtures.ops_by_name(data)
    assert ops["relu_backward"]["score"] == 0
    assert any("onerror" in c["message"] for c in ops["relu_backward"]["cases"])
    assert "<svg onload=alert(7)>" in ops["sin_backward"]["output"]


def test_gradescope_results_parse_and_render_as_plain_text(hostile):
    data = json.loads(report(hostile, "gradescope"))
    for value in strings(data):
        assert_inert(value, "results.json value")
    # Gradescope renders "html", "md" and its default "simple_format": student HTML must
    # be shown as text, for the submission and every test
    assert data.get("output_format") == "text"
    assert data.get("test_output_format") == "text"
    assert data.get("test_name_format") == "text"
    for test in data["tests"]:
        assert test.get("output_format") == "text", test["name"]
        assert test.get("name_format") == "text", test["name"]


def _junit(hostile) -> tuple[str, ET.Element]:
    text = report(hostile, "junit")
    return text, ET.fromstring(text.encode("utf-8"))  # raises if not well-formed


def test_junit_is_well_formed_and_valid_against_the_junit_schema(hostile):
    text, root = _junit(hostile)
    xmlschema.XMLSchema(str(SCHEMA)).validate(text)
    for element in root.iter():
        for value in [element.text or "", element.tail or "", *element.attrib.values()]:
            assert_inert(value, f"<{element.tag}>")
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases)
        assert int(suite.get("errors")) == sum(c.find("error") is not None for c in cases)
    failures = [f for f in root.iter("failure") if "onerror" in (f.text or "")]
    assert failures and all(f.get("type") for f in root.iter("failure"))
    (sin,) = [s for s in suites if s.get("name") == "sin_backward"]
    assert "<svg onload=alert(7)>" in sin.find("system-out").text


def test_a_correct_notebook_gives_schema_valid_junit(tmp_path):
    path = fixtures.build_notebook(tmp_path / "good.ipynb", fixtures.solution_cells(ASSIGNMENT))
    text = report(path, "junit")
    xmlschema.XMLSchema(str(SCHEMA)).validate(text)
    root = ET.fromstring(text.encode("utf-8"))
    assert not list(root.iter("failure")) and not list(root.iter("error"))


class _Html(HTMLParser):
    """Tags and attributes of rendered HTML, and the text that lies outside code."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.depth = 0
        self.outside: list[str] = []
        self.inside: list[str] = []
        self.rows: list[int] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("code", "pre"):
            self.depth += 1
        if tag == "tr":
            self.rows.append(0)
        if tag in ("td", "th"):
            self.rows[-1] += 1

    def handle_endtag(self, tag):
        if tag in ("code", "pre"):
            self.depth -= 1

    def handle_data(self, data):
        (self.inside if self.depth else self.outside).append(data)


def render_markdown(text: str) -> _Html:
    """Rendered the way a permissive viewer would: raw HTML passed through, every URL
    scheme linked, bare URLs made into links."""
    renderer = HTMLRenderer(escape=False, allow_harmful_protocols=True)
    html = mistune.create_markdown(renderer=renderer, plugins=["table", "url", "strikethrough"])
    parsed = _Html()
    parsed.feed(html(text))
    return parsed


SAFE_TAGS = {"h1", "h2", "h3", "h4", "p", "table", "thead", "tbody", "tr", "th", "td"}
SAFE_TAGS |= {"code", "pre", "strong", "em", "ul", "li", "a", "br", "hr", "del"}


def assert_safe_html(parsed: _Html, where: str) -> None:
    for tag, attrs in parsed.tags:
        assert tag in SAFE_TAGS, f"{where}: <{tag} {attrs}>"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"{where}: <{tag} {name}>"
            if name in ("href", "src"):
                scheme = re.sub(r"[\x00-\x20]", "", value or "").lower()
                assert not scheme.startswith(("javascript:", "data:", "vbscript:")), where


def test_markdown_feedback_renders_without_html_or_script_links(hostile):
    text = report(hostile, "markdown")
    assert_inert(text, "markdown")
    parsed = render_markdown(text)
    assert_safe_html(parsed, "markdown feedback")
    # the table keeps its four columns whatever the hints hold
    assert parsed.rows and set(parsed.rows) == {4}, parsed.rows
    # the student's traceback (its source line tries to close the fence) and printed
    # output are shown, inside code blocks only
    inside = "".join(parsed.inside)
    assert "onerror=alert(9)" in inside
    assert inside.count("<svg onload=alert(7)>") > 1  # relu's traceback, sin's output
    assert "alert(9)" not in "".join(parsed.outside)


def _batch(tmp_path: Path, names: dict[str, list[str] | None], *paths: str):
    for name, cells in names.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if cells is None:
            path.write_text("not a notebook")
        else:
            fixtures.build_notebook(path, cells)
    # "--": names such as "-2+3.ipynb" are paths, not options
    result = run("--csv", "out/grades.csv", "--jobs", "2", *FAST, "--", *paths, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert b"Traceback" not in result.stderr
    return result


FORMULAS = ("=", "+", "-", "@", "\t", "\r")


def test_csv_cells_never_start_a_formula(tmp_path):
    small = ["import numpy as np", fixtures.solution_sources()["neg_backward"]]
    names = {
        '=HYPERLINK("http://evil","x").ipynb': small,
        "+1+2.ipynb": None,  # not graded: the error cell repeats the name
        "@SUM(A1).ipynb": small,
        "-2+3.ipynb": None,
        "\t=1.ipynb": small,
        "\x1b[2Jplain.ipynb": small,
    }
    result = _batch(tmp_path, names, *names)
    text = (tmp_path / "out" / "grades.csv").read_bytes().decode("utf-8")
    assert_inert(text.replace("\r\n", "\n"), "grades.csv")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1 + len(names)
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULAS), (cell, row)
    # the names are still there to read, defused
    assert {row[0] for row in rows[1:]} >= {'\'=HYPERLINK("http://evil","x").ipynb', "'+1+2.ipynb"}
    # and the summary printed for the instructor's terminal is inert too
    assert_inert(result.stdout.decode("utf-8"), "batch summary")


def _heading(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    parsed = render_markdown(first)
    assert_safe_html(parsed, path.name)
    return "".join(parsed.outside).strip()


def test_feedback_files_are_unique_and_each_names_its_submission(tmp_path):
    small = ["import numpy as np", fixtures.solution_sources()["neg_backward"]]
    names = {
        "alice/hw.ipynb": small,
        "bob/hw.ipynb": small,
        "hw.ipynb": small,
        "Hw.ipynb": small,  # the same file as hw.md where names ignore case
        "h w.ipynb": small,
        "h?w.ipynb": small,  # both are h_w once made safe for every file system
        "h<w>.ipynb": None,
        NAME: small,
    }
    _batch(tmp_path, names, ".")
    feedback = sorted((tmp_path / "out" / "feedback").iterdir())
    assert len(feedback) == len(names), [p.name for p in feedback]
    assert len({p.name.casefold() for p in feedback}) == len(feedback)
    for path in feedback:
        assert re.fullmatch(r"[\w.-]+\.md", path.name), path.name
        assert not path.name.startswith(".")
    headings = {path.name: _heading(path) for path in feedback}
    for name in names:
        label = unicodedata.normalize("NFC", name)
        if UNSAFE.search(label):  # shown with its escapes; its visible part is enough
            label = "onerror=alert(11)"
        matching = [file for file, heading in headings.items() if label in heading]
        if name in ("hw.ipynb", "Hw.ipynb"):  # also inside alice/hw.ipynb and bob/hw.ipynb
            matching = [file for file in matching if headings[file].endswith(" " + name)]
        assert len(matching) == 1, (name, headings)
    for path in feedback:
        assert_inert(path.read_text(encoding="utf-8"), path.name)
