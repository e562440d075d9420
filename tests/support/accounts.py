"""Installing CRM accounts as their admins do, and setting them up as an operator does.

An install goes through the deployment's routes against the fakes: ``GET /install/<crm>``, the
CRM's consent page (the fakes' ``consent`` follows the link and approves it), then
``GET /oauth/<crm>/callback``. An operator's settings and playbooks go through the ``offboard``
command, run in-process with the deployment's environment.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import responses
from click.testing import CliRunner, Result

from tests.support.hubspot import FakeHubSpot
from tests.support.salesforce import FakeSalesforce

OUTBOUND_URL = re.compile(r"https://\S+/webhooks/salesforce\?org=\S+&amp;key=[\w-]+")


def callback_path(url: str, public_url: str) -> str:
    """The path and query of a CRM's redirect back to this deployment (the test client has no host)."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == public_url, url
    return f"{parts.path}?{parts.query}"


def install_hubspot(client: Any, hubspot: FakeHubSpot, portal_id: int, public_url: str) -> str:
    """An admin of ``portal_id`` installs the app; the page the callback answers."""
    started = client.get("/install/hubspot")
    assert started.status_code == 302, started.get_data(as_text=True)
    back = hubspot.consent(started.headers["Location"], portal_id=portal_id)
    page = client.get(callback_path(back, public_url))
    assert page.status_code == 200, page.get_data(as_text=True)
    text: str = page.get_data(as_text=True)
    return text


def install_salesforce(client: Any, org: FakeSalesforce, org_id: str, public_url: str) -> str:
    """An admin of ``org_id`` installs the app; the path its outbound messages go to, as the
    callback's page tells the admin."""
    started = client.get("/install/salesforce")
    assert started.status_code == 302, started.get_data(as_text=True)
    back = org.consent(started.headers["Location"], org_id=org_id)
    page = client.get(callback_path(back, public_url))
    assert page.status_code == 200, page.get_data(as_text=True)
    found = OUTBOUND_URL.search(page.get_data(as_text=True))
    assert found, "the install page names the org's outbound message URL"
    return html.unescape(found[0]).removeprefix(public_url)


def operator(env: dict[str, str], *secrets: str) -> Callable[..., Result]:
    """``offboard ARGS…`` run with ``env`` as the process environment; it must succeed, and its
    output must hold none of ``secrets``."""
    from connector.cli import main

    def offboard(*args: str) -> Result:
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == 0, (args, result.output)
        assert not any(secret in result.output for secret in secrets)
        return result

    return offboard


GLOBEX = "00D7g00000Globx"  # a second org behind the fake's login host (its own org, Acme, is the first)


@contextmanager
def salesforce_host(clock: Any) -> Iterator[Any]:
    """The fake Salesforce login host with a second org (GLOBEX) to install, answering the SDK's
    calls through ``responses`` while local servers (the CRM fakes, the connector) pass through."""
    from tests.support.salesforce import FakeSalesforce

    acme = FakeSalesforce(clock=clock)
    acme.add_org(GLOBEX, "globex.my.salesforce.com")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        acme.install(mock)
        mock.add_passthru("http://localhost")
        mock.add_passthru("http://127.0.0.1")
        yield acme
