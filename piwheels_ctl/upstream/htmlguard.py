"""Keeps hostile HTML away from pypi-simple's parsers: markup first, nesting bounded, messages short."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from html.parser import HTMLParser

# Simple index pages nest a handful of elements (html, body, a); this is far past any real one.
HTML_DEPTH_MAX = 64
VOID_ELEMENTS = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)


def short(exc: BaseException) -> str:
    """An exception's message, cut to one line of reasonable length (hostile input can be long)."""
    if isinstance(exc, RecursionError):
        return "nested too deep"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def markup_first(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks, refused unless the page starts with markup: JSON or text labelled HTML is not HTML."""
    started = False
    for chunk in chunks:
        if not started:
            head = chunk.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
            if not head:
                continue
            if not head.startswith(b"<"):
                raise ValueError("labelled HTML, but it does not start with markup")
            started = True
        yield chunk
    if not started:
        raise ValueError("labelled HTML, but empty")


class DepthCheck(HTMLParser):
    """Follows the nesting of elements, refusing it past HTML_DEPTH_MAX or a link inside a link.

    pypi-simple's parsers take time that grows with the square of such nesting (every link's
    text is gathered from all it encloses); simple index pages never nest at all.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self._open: list[str] = []
        self.repository_version: str | None = None  # what the page's PEP 629 meta tag declares

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_ELEMENTS:
            self._note_meta(tag, attrs)
            return
        if tag == "a" and "a" in self._open:
            raise ValueError("a link inside a link")
        self._open.append(tag)
        if len(self._open) > HTML_DEPTH_MAX:
            raise ValueError(f"elements nested more than {HTML_DEPTH_MAX} deep")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """A self-closed element opens nothing."""
        self._note_meta(tag, attrs)

    def _note_meta(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "meta" and values.get("name") == "pypi:repository-version":
            self.repository_version = values.get("content")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass


def check_html(chunks: Iterable[bytes], checker: DepthCheck | None = None) -> Iterator[bytes]:
    """The chunks, each checked by ``checker`` (a new DepthCheck by default) before it is passed on."""
    checker = checker or DepthCheck()
    for chunk in chunks:
        checker.feed(chunk.decode("utf-8", "replace"))
        yield chunk
    checker.close()
