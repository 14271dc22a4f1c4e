"""PEP 691 content negotiation: which form of an index page a client gets (``Accept``, and
``User-Agent`` for the pips that misread the JSON form), and whether it takes gzip."""

from __future__ import annotations

import re
from dataclasses import dataclass

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Offer:
    """A representation of a directory URL: what the client asks for, the file, what we send."""

    media_type: str
    filename: str
    content_type: str


# In order of preference when the client likes several equally (e.g. "*/*"): browsers get HTML.
OFFERS = (
    Offer("text/html", "index.html", TEXT_HTML),
    Offer(HTML_V1, "index.html", HTML_V1),
    Offer("application/vnd.pypi.simple.latest+html", "index.html", HTML_V1),
    Offer(JSON_V1, "index.json", JSON_V1),
    Offer("application/vnd.pypi.simple.latest+json", "index.json", JSON_V1),
)
# pip 22.3 to 23.1 (Debian bookworm's and Raspberry Pi OS bookworm's 23.0.1 among them) read
# PEP 658 metadata in JSON from a "dist-info-metadata" string, which PEP 691 makes an object:
# they crash on the object and ignore PEP 714's "core-metadata". Their HTML reading is right,
# so they get the HTML page (which they accept), and every other client the JSON it asks for.
LEGACY_JSON_PIP = re.compile(r"^pip/(22\.3|23\.[01])([.\s]|$)")


def negotiate(accept: str | None, user_agent: str | None = None) -> Offer | None:
    """The representation that best fits an ``Accept`` header (None: none is acceptable); a
    pip that misreads the JSON form's metadata (``LEGACY_JSON_PIP``) is offered HTML only."""
    if not accept or not accept.strip():
        return OFFERS[0]
    offers: tuple[Offer, ...] = OFFERS
    if user_agent and LEGACY_JSON_PIP.match(user_agent):
        offers = tuple(offer for offer in OFFERS if offer.filename == "index.html")
    ranges = [
        (media_range, quality)
        for media_range, quality in weighted(accept)
        if media_range and quality is not None and 0 <= quality <= 1  # a malformed entry is ignored
    ]
    best: tuple[tuple[float, int, int, int], Offer] | None = None
    for preference, offer in enumerate(offers):
        kind = offer.media_type.split("/")[0]
        specific = {offer.media_type: 2, f"{kind}/*": 1, "*/*": 0}
        # The most specific range that matches an offer sets its quality (RFC 9110 12.5.1):
        # "text/html;q=0, */*" refuses HTML even though "*/*" would allow it.
        matches = [
            (specific[media_range], -position, quality)
            for position, (media_range, quality) in enumerate(ranges)
            if media_range in specific
        ]
        if not matches:
            continue
        specificity, position, quality = max(matches)
        # Ties go to the range the client listed first, then to our order of preference.
        rank = (quality, specificity, position, -preference)
        if quality > 0 and (best is None or rank > best[0]):
            best = (rank, offer)
    return best[1] if best else None


def weighted(header: str) -> list[tuple[str, float | None]]:
    """The items of a comma-separated header with their ``q`` weights (1 when absent, None
    when malformed), items lower-cased."""
    items: list[tuple[str, float | None]] = []
    for item in header.split(","):
        token, *params = (part.strip() for part in item.split(";"))
        quality: float | None = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = None
        items.append((token.lower(), quality))
    return items


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header lets us send gzip (RFC 9110 12.5.3)."""
    if not header:
        return False
    qualities = {coding: quality or 0.0 for coding, quality in weighted(header)}
    for coding in ("gzip", "x-gzip", "*"):
        if coding in qualities:
            return qualities[coding] > 0
    return False
