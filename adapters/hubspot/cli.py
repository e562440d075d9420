"""``offboard hubspot``: set up the HubSpot account Offboard writes to."""

from __future__ import annotations

import click

from adapters.hubspot.settings import HubSpotSettings
from connector.errors import CrmError, SettingsInvalid
from connector.settings import Settings, load_settings


@click.group()
def hubspot() -> None:
    """HubSpot: the properties Offboard writes, and the workflow that sends surveys."""


@hubspot.command()
def setup() -> None:
    """Create the custom properties Offboard writes (safe to run again); print the workflow to build."""
    from adapters.hubspot.api import HubSpotApi
    from adapters.hubspot.ratelimit import shared_limits
    from adapters.hubspot.setup import check_deal_property, ensure_properties, workflow_instructions

    settings = _settings()
    portal = HubSpotSettings.of(settings)
    try:
        api = HubSpotApi.from_settings(portal, shared_limits(portal))
        outcomes = ensure_properties(api)
        missing = [
            name
            for name in (portal.contract_type_property, portal.contract_end_property)
            if not check_deal_property(api, name)
        ]
    except CrmError as exc:
        raise click.ClickException(str(exc)) from None
    for outcome in outcomes:
        line = f"{outcome.state:<8} {outcome.object_type[:-1]} property {outcome.name}"
        click.echo(line + (f": {outcome.note}" if outcome.note else ""))
    for name in missing:
        click.echo(
            f"missing  deal property {name}: create it, or point "
            f"HUBSPOT_CONTRACT_TYPE_PROPERTY / HUBSPOT_CONTRACT_END_PROPERTY at the ones you use",
            err=True,
        )
    click.echo("")
    click.echo(workflow_instructions(settings.public_url))


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsInvalid as exc:
        raise click.ClickException(str(exc)) from None
    if HubSpotSettings.of(settings).access_token is None:
        raise click.ClickException(
            "HUBSPOT_ACCESS_TOKEN is not set: create a private app and export its token"
        )
    return settings
