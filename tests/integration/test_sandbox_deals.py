"""The sandbox CRM keeps the deals it is told about; `sandbox seed` gives the sweep something to find."""

from __future__ import annotations

import json
from datetime import date, timedelta

from click.testing import CliRunner
from sqlalchemy import select

from adapters.sandbox.tables import SandboxDeal
from connector.cli import main
from connector.store import Run
from tests.support.helpers import deal_closed_event, signed


def post(client, event) -> None:
    body, headers = signed(event)
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202


def cli_env(settings) -> dict[str, str]:
    return {
        "OFFBOARD_DATABASE_URL": settings.database_url,
        "OFFBOARD_PLAYBOOKS": str(settings.playbooks),
    }


def test_a_deal_posted_as_a_generic_event_is_kept_by_the_sandbox(client, services):
    post(client, deal_closed_event("D-42", contract_end="2027-01-15"))
    services.worker().run_until_idle()
    kept = services.adapters["sandbox"].fetch_deal("D-42")
    assert (kept.crm, kept.account, kept.name) == ("sandbox", "sandbox", "Acme website")
    assert kept.contract_end == date(2027, 1, 15)
    assert kept.primary_contact is not None and kept.primary_contact.email == "pat@acme.example"


def test_a_later_event_replaces_the_kept_deal(client, services, store):
    post(client, deal_closed_event("D-42"))
    services.worker().run_until_idle()
    reopened = deal_closed_event("D-42", name="Acme website (renewed)", contract_end="2027-06-30")
    reopened.update(id="evt-reopen", type="deal.reopened")
    post(client, reopened)
    services.worker().run_until_idle()
    with store.session() as session:
        rows = session.scalars(select(SandboxDeal)).all()
        assert [(r.id, r.contract_end, r.data["name"]) for r in rows] == [
            ("D-42", "2027-06-30", "Acme website (renewed)")
        ]


def test_plan_from_the_sandbox_finds_a_deal_that_arrived_by_event(client, services, settings):
    post(client, deal_closed_event("D-42"))
    services.worker().run_until_idle()
    result = CliRunner().invoke(
        main, ["plan", "--crm", "sandbox", "--deal", "D-42", "--format", "json"], env=cli_env(settings)
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert json.dumps(shown).count("completed-project") >= 1


def test_seed_puts_contracts_ending_within_the_contract_end_lead_time(services, clock):
    today = clock().date()
    deals = services.adapters["sandbox"].seed(today)
    assert [d.id for d in deals] == ["D-101", "D-102", "D-103"]
    for deal in deals:
        kept = services.adapters["sandbox"].fetch_deal(deal.id)
        assert kept == deal
        assert kept.contract_end is not None
        assert today < kept.contract_end <= today + timedelta(days=30)
        assert kept.contract_type in ("retainer", "support", "subscription", "services")


def test_seeding_twice_keeps_one_copy_of_each_deal(services, store, clock):
    services.adapters["sandbox"].seed(clock().date())
    services.adapters["sandbox"].seed(clock().date() + timedelta(days=3))
    with store.session() as session:
        rows = session.scalars(select(SandboxDeal).order_by(SandboxDeal.id)).all()
        assert [r.id for r in rows] == ["D-101", "D-102", "D-103"]
        assert rows[0].contract_end == (clock().date() + timedelta(days=15)).isoformat()


def test_the_sweep_starts_the_contract_end_playbook_for_seeded_deals(services, store, clock):
    services.adapters["sandbox"].seed(clock().date())
    runner = services.worker()
    report = runner.sweep()
    runner.run_until_idle()
    assert report.found["sandbox"] == 3
    with store.session() as session:
        runs = session.scalars(select(Run).order_by(Run.deal_id)).all()
        assert [(r.deal_id, r.playbook_id, r.trigger) for r in runs] == [
            ("D-101", "contract-ending", "contract_end"),
            ("D-102", "contract-ending", "contract_end"),
            ("D-103", "contract-ending", "contract_end"),
        ]
    assert services.adapters["sandbox"].tasks("D-101")


def test_sandbox_seed_command_lists_the_deals_it_added(services, settings):
    result = CliRunner().invoke(main, ["sandbox", "seed"], env=cli_env(settings))
    assert result.exit_code == 0, result.output
    assert "D-101" in result.stdout and "contract ends" in result.stdout
    assert services.adapters["sandbox"].fetch_deal("D-103").contract_type == "services"
