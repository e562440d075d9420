"""Who the client pages say is asking: the sender's name, logo and reply-to address.

From ``OFFBOARD_BRAND_NAME``, ``OFFBOARD_BRAND_LOGO_URL`` and
``OFFBOARD_BRAND_REPLY_TO``. A logo is shown only from an http(s) URL, and the
pages' Content-Security-Policy allows images from that URL's origin only when
one is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from connector.settings import Settings


@dataclass(frozen=True)
class Brand:
    name: str | None
    logo_url: str | None
    reply_to: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Brand:
        logo = (settings.brand_logo_url or "").strip()
        return cls(
            name=(settings.brand_name or "").strip() or None,
            logo_url=logo if logo_origin(logo) else None,
            reply_to=(settings.brand_reply_to or "").strip() or None,
        )

    @property
    def logo_origin(self) -> str | None:
        return logo_origin(self.logo_url or "")


def logo_origin(url: str) -> str | None:
    """``https://cdn.example.com`` for a logo at that origin; None for anything not a plain http(s) URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if any(c in url for c in " '\";,\n\r\t"):  # nothing that could end or extend a CSP source
        return None
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
