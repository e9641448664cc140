"""Text safety: names from the API (API keys, workspaces, models, tiers) shown anywhere.

A name is whatever the Admin API sends, so it may hold anything a person can type into a key's
name field: control characters (ESC sequences that rewrite a terminal, CR that overwrites a
line, NUL), bidi overrides that show text backwards, Markdown, a spreadsheet formula. Each
surface takes it through one function here:

- :func:`clean` for a terminal line, an email header, a Slack header or a log line: control
  characters and bidi controls are replaced, line breaks become spaces. One line comes out.
- :func:`csv_cell` for every CSV cell (the weekly report, the dashboard's downloads): control
  characters replaced (tabs and line breaks kept: the CSV writer quotes them), and a leading
  quote on a cell a spreadsheet would run as a formula (OWASP "CSV injection").
- :func:`markdown_text` for a name inside Markdown the dashboard renders (``st.markdown``,
  ``st.caption``, ``st.warning``, a metric's help): it reads as the literal text, never as an
  image, a link, HTML, a colour directive or LaTeX.

``spend --json`` keeps names exactly as stored: JSON escapes every control character itself.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: What a replaced character becomes: visible, so that "adm\\x00in" never reads as "admin".
REPLACEMENT = "\N{REPLACEMENT CHARACTER}"

#: Characters that end a line somewhere (a terminal, a mail header, a CSV reader).
LINE_BREAKS = frozenset("\n\r\t\v\f\x1c\x1d\x1e\x85\u2028\u2029")

#: A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
#: (https://owasp.org/www-community/attacks/CSV_Injection); tab and CR too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%")

# C0 and C1 controls; the bidi controls: marks U+061C, U+200E, U+200F, embeddings and overrides
# U+202A-U+202E, isolates U+2066-U+2069 (https://www.unicode.org/reports/tr9/); line and
# paragraph separators; lone surrogates (they cannot be encoded).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                     "\u2028\u2029\ud800-\udfff]")
_UNSAFE_IN_CSV = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f"
                            "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# Markdown's markup characters anywhere in a line (emphasis, links, images, code, HTML,
# entities, tables, Streamlit's :directives[] and $LaTeX$); -, +, =, . and digits matter at the
# start of a line only (lists, headings), see _LINE_START.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]<>()#!|~$:&^])")
_LINE_START = re.compile(r"^([-+=.])|^(\d+)\.")
# GFM turns these into links even when every punctuation mark is escaped: the autolink
# literals (http://, www., an e-mail address) are found in the text after unescaping.
_AUTOLINK = re.compile(r"://|www\.|@|mailto:|xmpp:", re.IGNORECASE)


#: What stands for a NUL character in stored text.
NUL_STAND_IN = "\ufffd"


def storable(value: str) -> str:
    """API text as it is stored: a NUL character (which no name means) as U+FFFD. A DuckLake
    passes a filtered value on to its PostgreSQL catalog, whose query text ends at a NUL, so
    a key named with one would make every query of its rows fail there."""
    return value.replace("\x00", NUL_STAND_IN) if "\x00" in value else value


def _replacement(match: re.Match[str]) -> str:
    return " " if match.group() in LINE_BREAKS else REPLACEMENT


def clean(value: Any) -> str:
    """``value`` as one safe line of text: C0 and C1 control characters (ESC, BEL, NUL, DEL,
    CSI...), bidi controls and lone surrogates become U+FFFD; line breaks and tabs become a
    space. ``None`` is ``""``. Everything else (any script, emoji) stays as it is.

    >>> clean("key\\r\\nBcc: x")
    'key  Bcc: x'
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_replacement, text)


def header_text(value: Any, limit: int = 250) -> str:
    """:func:`clean` text for a one-line header (an email Subject, a Slack header), at most
    ``limit`` characters (ending in an ellipsis when cut). Never holds CR or LF, so no name
    can add a header or break the one it is in."""
    text = " ".join(clean(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def csv_cell(value: Any) -> str:
    """A CSV text cell: the text as it is (tabs and line breaks included: the CSV writer
    quotes them), other control and bidi characters replaced as :func:`clean` does, and a
    leading ``'`` when a spreadsheet would read the cell as a formula (it starts with
    ``= + - @ | %``, a tab or a line break, also after leading spaces). ``None`` is ``""``.
    Numbers are not text cells: write them with their own formatting."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = _UNSAFE_IN_CSV.sub(REPLACEMENT, text)
    if text.lstrip(" ").startswith(FORMULA_STARTS):
        return "'" + text
    return text


def markdown_text(value: Any) -> str:
    """``value`` for Streamlit Markdown, shown as the literal text: cleaned to one line, every
    markup character backslash-escaped (no image, link, emphasis, HTML, ``:red[...]``
    directive or ``$`` LaTeX can start; nor a list or heading at the start), and a value GFM
    would still autolink (``http://``, ``www.``, an ``@``) as an inline code span, which
    Markdown never links.

    Streamlit 1.67 autolinks ``http://x`` even written ``http\\://x``; a code span is literal.
    """
    text = clean(value)
    if not text:
        return ""
    if _AUTOLINK.search(text):
        return code_span(text)
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    return _LINE_START.sub(lambda m: f"\\{m.group(1)}" if m.group(1) else f"{m.group(2)}\\.",
                           text, count=1)


def code_span(value: Any) -> str:
    """``value`` cleaned, as a Markdown inline code span (literal, monospace): the fence is one
    backtick longer than the longest run inside (CommonMark 6.1)."""
    text = clean(value) or " "
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or (
        text.startswith(" ") and text.endswith(" ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


class CleanFormatter(logging.Formatter):
    """A log formatter that passes what ``inner`` formats through :func:`clean`, line by line
    (a traceback keeps its lines): a name in a log message never reaches a terminal or a log
    file with its control characters."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(clean(line) for line in self.inner.format(record).split("\n"))


def clean_log_handlers(logger: logging.Logger | None = None) -> None:
    """Give every handler of ``logger`` (the root logger by default) a :class:`CleanFormatter`
    around its own formatter, once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, CleanFormatter):
            handler.setFormatter(CleanFormatter(handler.formatter))
