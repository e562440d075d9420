"""Who the client pages say is asking: the sender's name, logo and reply-to address.

The deployment's brand is ``OFFBOARD_BRAND_NAME``, ``OFFBOARD_BRAND_LOGO_URL`` and
``OFFBOARD_BRAND_REPLY_TO``. An installed account may set its own
(``offboard connections set CRM ACCOUNT brand_name=…``); a page opened from a link shows
the brand of the account its run belongs to (``use`` sets it for the request), and any
other answer the deployment's (``current``). A logo is shown only from an http(s) URL,
and the answer's Content-Security-Policy allows images from that URL's origin only when
one is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flask import g

from connector.settings import Settings

if TYPE_CHECKING:
    from connector.connections import AccountSettings

_REQUEST_KEY = "offboard_brand"


@dataclass(frozen=True)
class Brand:
    name: str | None
    logo_url: str | None
    reply_to: str | None

    @classmethod
    def of(cls, name: str | None, logo_url: str | None, reply_to: str | None) -> Brand:
        """The brand as shown: blanks dropped, a logo only from a plain http(s) URL."""
        logo = (logo_url or "").strip()
        return cls(
            name=(name or "").strip() or None,
            logo_url=logo if logo_origin(logo) else None,
            reply_to=(reply_to or "").strip() or None,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Brand:
        """The deployment's brand (``OFFBOARD_BRAND_*``)."""
        return cls.of(settings.brand_name, settings.brand_logo_url, settings.brand_reply_to)

    @classmethod
    def from_account(cls, account: AccountSettings) -> Brand:
        """An account's brand: its own values where set, else the deployment's (``AccountConfig.over``)."""
        return cls.of(account.brand_name, account.brand_logo_url, account.brand_reply_to)

    @property
    def logo_origin(self) -> str | None:
        return logo_origin(self.logo_url or "")


def use(brand: Brand) -> None:
    """Show ``brand`` on this request's page and allow its logo in this answer's policy."""
    setattr(g, _REQUEST_KEY, brand)


def current(settings: Settings) -> Brand:
    """The brand of this request's answer: the one ``use`` set, else the deployment's."""
    found = g.get(_REQUEST_KEY)
    return found if isinstance(found, Brand) else Brand.from_settings(settings)


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
