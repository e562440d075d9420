"""``GET /install/<crm>`` and ``GET /oauth/<crm>/callback``: a CRM admin installs Offboard from a browser.

The install link answers 302 to the CRM's consent page; the CRM sends the browser back to
the callback, which finishes the install (``connector.installs``) and answers a page naming
the account and what to do next. Refusals are pages too, with the status saying why (400 for
a state or code that cannot complete an install, 503 while installs are off).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request

import adapters
from connector import installs
from connector.web import services

bp = Blueprint("install", __name__)

NEXT_STEPS = {
    "hubspot": [
        "Deals that close in this portal now get their offboarding checklist from the playbooks.",
        "See what a playbook will do with `offboard plan --crm hubspot --deal <deal id>`.",
        "Set this portal's roles and time zone with `offboard connections set hubspot {account} …`.",
    ],
    "salesforce": [
        "Add an outbound message on Opportunity (the fields docs/salesforce.md lists) whose endpoint "
        "URL is {public}/webhooks/salesforce?org={account}&key={key} — this org's own URL: keep it "
        "as you would a password.",
        "Set this org's roles and time zone with `offboard connections set salesforce {account} …`.",
    ],
}
NAMES = {"hubspot": ("HubSpot", "portal"), "salesforce": ("Salesforce", "org")}


def install(crm: str) -> Any:
    try:
        return redirect(installs.start(services(), crm), code=302)
    except installs.InstallRefused as refused:
        return _refused(crm, refused)


def callback(crm: str) -> Any:
    try:
        done = installs.finish(services(), crm, request.args.to_dict())
    except installs.InstallRefused as refused:
        return _refused(crm, refused)
    product, kind = NAMES.get(crm, (crm, "account"))
    settings = services().settings
    public = settings.public_url.rstrip("/")
    key = installs.inbound_key(settings.secret_key.get_secret_value(), crm, done.account)
    lines = [
        f"Offboard is installed in {product} {kind} {done.account}"
        + (f" by {done.installed_by}." if done.installed_by else "."),
        *done.notes,
        *(step.format(account=done.account, public=public, key=key) for step in NEXT_STEPS.get(crm, [])),
    ]
    return render_template("message.html", heading="Offboard is installed", lines=lines, company=None)


def _refused(crm: str, refused: installs.InstallRefused) -> Any:
    product = NAMES.get(crm, (crm, ""))[0]
    html = render_template(
        "message.html",
        heading=f"The install into {product} did not complete",
        lines=[refused.reason[:1].upper() + refused.reason[1:] + "."],
        company=None,
    )
    return html, refused.status


# One pair of routes per CRM that installs by OAuth: /install/hubspot, /oauth/hubspot/callback…
for _plugin in adapters.plugins():
    if _plugin.oauth is not None:
        name = _plugin.name
        bp.add_url_rule(f"/install/{name}", f"install_{name}", install, defaults={"crm": name})
        bp.add_url_rule(f"/oauth/{name}/callback", f"callback_{name}", callback, defaults={"crm": name})
