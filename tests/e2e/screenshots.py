"""Screenshots of every page a client can see, at desktop and phone width: ``make screenshots``.

Starts the real server on a throwaway SQLite database, walks each page in
headless Chromium and writes PNGs to docs/screenshots/.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from adapters.sandbox import SandboxAdapter
from connector import links
from connector.demo import post, wait_for
from connector.settings import DEV_SECRET_KEY
from connector.store import Store
from tests.support.browser import DESKTOP, PHONE, browser, chromium_path
from tests.support.helpers import WEBHOOK_SECRET, deal_closed_today, signed
from tests.support.playbooks import exit_nps_referral
from tests.support.server import ServerProcess


def main(out: Path) -> None:
    chromium = chromium_path()
    if chromium is None:
        sys.exit("no Chromium found: apt-get install chromium")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = exit_nps_referral(
            Path(tmp, "playbooks"),
            more_surveys=("csat", "ces"),
            ask=("referral", "testimonial", "case_study"),
        )
        url = f"sqlite:///{tmp}/screens.db"
        env = {
            "OFFBOARD_DATABASE_URL": url,
            "OFFBOARD_PLAYBOOKS": str(folder),
            "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
        }
        server = ServerProcess(env, log=Path(tmp, "server.log")).start()
        try:
            shoot(server, SandboxAdapter(Store.from_url(url)), chromium, out)
        finally:
            server.stop()


def shoot(server: ServerProcess, sandbox: SandboxAdapter, chromium: str, out: Path) -> None:
    with browser(chromium) as instance:
        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            links_by_kind = surveys_for(server, sandbox, f"SHOT-{name}")
            page = instance.new_page(viewport=viewport)

            def snap(slug: str, page=page, name=name) -> None:
                page.screenshot(path=str(out / f"{slug}-{name}.png"), full_page=True)

            for kind in ("nps", "csat", "ces"):
                page.goto(links_by_kind[kind])
                snap(f"survey-{kind}")
            page.goto(links_by_kind["nps"])
            page.get_by_label("9", exact=True).check()
            page.get_by_role("button", name="Send my answer").click()
            snap("survey-thanks")
            page.goto(links_by_kind["nps"])
            snap("link-used")
            page.goto(f"{server.url}/s/this-link-was-cut-short")
            snap("link-invalid")
            page.goto(expired_link(server.url))
            snap("link-expired")
            referral = wait_for(lambda deal=f"SHOT-{name}": referral_link(sandbox, deal), 20)
            page.goto(referral)
            snap("referral")
            page.close()


def surveys_for(server: ServerProcess, sandbox: SandboxAdapter, deal_id: str) -> dict[str, str]:
    # Each deal its own contact: the fatigue guard would rightly stop a second survey to one person.
    contact = {"id": f"contact-{deal_id}", "first_name": "Pat", "last_name": "Lee", "primary": True}
    body, headers = signed(deal_closed_today(deal_id, contacts=[contact]))
    post(server.url, body, headers)
    invites = wait_for(lambda: sandbox.invites(deal_id) if len(sandbox.invites(deal_id)) == 3 else None, 20)
    return {invite.kind: invite.link for invite in invites}


def referral_link(sandbox: SandboxAdapter, deal_id: str) -> str | None:
    found = [i.link for i in sandbox.invites(deal_id) if i.kind == "referral"]
    return found[0] if found else None


def expired_link(public_url: str) -> str:
    long_ago = time.time() - 40 * 86400
    with mock.patch("itsdangerous.timed.time.time", return_value=long_ago):
        return links.make_link(
            public_url,
            DEV_SECRET_KEY,
            "survey",
            {"run": 1, "step": "exit-nps", "contact": "contact-1", "kind": "nps"},
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
