"""Each account's own playbooks, on SQLite and Postgres: publishing versions, choosing among the
account's playbooks alone, runs pinned to the version they started with, and the cache that
notices a publish."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from alembic import command
from cryptography.fernet import Fernet
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from connector.connections import Connections, purge_rules
from connector.errors import PlaybookError
from connector.models import Deal
from connector.planner import sweep_horizon
from connector.playbooks.accounts import AccountPlaybooks, in_use
from connector.playbooks.loader import load_all
from connector.playbooks.pins import unbumped_edits
from connector.playbooks.published import Draft, PublishedPlaybooks, read_drafts
from connector.store import Action, AuditEntry, Run
from connector.store.migrate import alembic_config, upgrade
from connector.store.tables import PlaybookVersion
from connector.usecases import offboarding
from connector.usecases.accounts import account_context
from connector.usecases.feedback import unlock
from connector.usecases.uow import unit_of_work
from tests.support.helpers import deal_closed_event, signed

KEY = Fernet.generate_key().decode()


def playbook(
    playbook_id: str = "account-close",
    *,
    version: int = 1,
    title: str = "Call the client",
    match: str = "{}",
    priority: int = 0,
) -> str:
    """An account's playbook: a checklist task at once, an exit NPS, a call for detractors."""
    return f"""\
id: {playbook_id}
name: {playbook_id} playbook
version: {version}
tone: neutral
match: {match}
priority: {priority}
anchor: run_start
steps:
  - id: kickoff
    task: {{title: "{title}: kickoff", due: +0d, owner: deal_owner}}
  - id: exit-nps
    survey: {{kind: nps, to: primary_contact}}
  - id: detractor-call
    task: {{title: "{title}: detractor call", after: exit-nps, when: {{score: {{lte: 6}}}},
           due: +1bd, owner: deal_owner}}
"""


def draft(tmp_path: Path, text: str, name: str = "account-close.yaml") -> Draft:
    path = tmp_path / name
    path.write_text(text)
    (found,) = read_drafts([path])
    return found


def deal(account: str, deal_id: str = "D-1", crm: str = "hubspot", **values: object) -> Deal:
    data = deal_closed_event(deal_id, **values)["deal"]
    return Deal(crm=crm, account=account, **data)


def start(services, found: Deal) -> offboarding.Outcome:
    with unit_of_work(services.store, actor="worker", clock=services.clock) as uow:
        context = account_context(uow.session, services.settings, found.crm, found.account, uow.now)
        return offboarding.start_offboarding(
            uow, found, services.playbooks, context, trigger="deal_closed", event_id=None
        )


def run_of(store, account: str, deal_id: str = "D-1", crm: str = "hubspot") -> Run:
    with store.read() as session:
        return session.scalars(select(Run).filter_by(crm=crm, account=account, deal_id=deal_id)).one()


@pytest.fixture
def published(store, clock) -> PublishedPlaybooks:
    return PublishedPlaybooks(store, clock=clock)


@pytest.fixture
def installed(store, clock) -> Connections:
    from connector.keyring import Keyring

    connections = Connections(store, Keyring(KEY), clock=clock)
    for account in ("111", "222"):
        connections.save_install(
            "hubspot", account, access_token=f"token-{account}", refresh_token=None, expires_at=None
        )
    return connections


# --- choosing: the account's own playbooks, and only them ---------------------------------------


def test_an_account_with_playbooks_gets_its_own_and_others_get_the_folder(
    services, store, published, installed, tmp_path
):
    published.publish("hubspot", "111", [draft(tmp_path, playbook())], by="revops@a.example")

    assert start(services, deal("111")).note.endswith("started with playbook account-close")
    assert start(services, deal("222")).note.endswith("started with playbook completed-project")  # bundled
    own, folder = run_of(store, "111"), run_of(store, "222")
    assert (own.playbook_id, own.playbook_version) == ("account-close", 1)
    assert folder.playbook_id == "completed-project"
    with store.read() as session:
        tasks = session.scalars(select(Action).where(Action.run_id == own.id, Action.kind == "task")).one()
    assert [t["title"] for t in tasks.payload["tasks"]] == ["Call the client: kickoff"]


def test_an_account_with_playbooks_never_falls_back_to_the_folder(
    services, store, published, installed, tmp_path
):
    only_lost = playbook("lost-only", match="{outcome: [lost]}")
    published.publish("hubspot", "111", [draft(tmp_path, only_lost, "lost-only.yaml")], by="revops")

    outcome = start(services, deal("111"))  # a won deal: the folder's fallback would match it

    assert (outcome.state, outcome.note) == ("ignored", "no playbook matches this deal")
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0


def test_one_accounts_playbooks_never_match_another_accounts_deals(
    services, store, published, installed, tmp_path
):
    first = draft(tmp_path, playbook("first-close", title="First"), "first.yaml")
    second = draft(tmp_path, playbook("second-close", title="Second", priority=5), "second.yaml")
    published.publish("hubspot", "111", [first], by="revops")
    published.publish("hubspot", "222", [second], by="revops")

    for account in ("111", "222"):  # the same deal id in both portals
        start(services, deal(account))
    start(services, deal("333"))  # an account with none of its own
    start(services, deal("111", crm="salesforce"))  # the same account id in another CRM

    assert run_of(store, "111").playbook_id == "first-close"
    assert run_of(store, "222").playbook_id == "second-close"
    assert run_of(store, "333").playbook_id == "completed-project"
    assert run_of(store, "111", crm="salesforce").playbook_id == "completed-project"


# --- runs stay pinned -----------------------------------------------------------------------------


def test_a_run_keeps_its_version_after_a_newer_one_is_published(
    services, store, published, installed, tmp_path, clock
):
    published.publish("hubspot", "111", [draft(tmp_path, playbook(title="Old"))], by="revops")
    start(services, deal("111", "D-1"))
    published.publish("hubspot", "111", [draft(tmp_path, playbook(version=2, title="New"))], by="revops")
    services.playbooks.accounts.forget("hubspot", "111")  # as the next check would find it
    start(services, deal("111", "D-2"))

    first, second = run_of(store, "111", "D-1"), run_of(store, "111", "D-2")
    assert (first.playbook_version, second.playbook_version) == (1, 2)
    for run in (first, second):  # a detractor's answer releases the call of each run's own version
        with unit_of_work(store, actor="test", clock=clock) as uow:
            assert unlock(uow, services.settings, uow.session.get_one(Run, run.id), "exit-nps", 3) == 1
    with store.read() as session:
        calls = {
            a.run_id: a.payload["tasks"][0]["title"]
            for a in session.scalars(select(Action).where(Action.step_id == "detractor-call"))
        }
    assert calls == {first.id: "Old: detractor call", second.id: "New: detractor call"}


def test_a_publish_reaches_new_runs_at_the_next_check(store, published, installed, tmp_path):
    seconds = [0.0]
    accounts = AccountPlaybooks(check_every=2.0, monotonic=lambda: seconds[0])
    published.publish("hubspot", "111", [draft(tmp_path, playbook())], by="revops")

    def versions() -> list[int] | None:
        with store.read() as session:
            found = accounts.for_account(session, "hubspot", "111")
        return None if found is None else [item.playbook.version for item in found.loaded]

    assert versions() == [1]
    published.publish("hubspot", "111", [draft(tmp_path, playbook(version=2))], by="revops")
    seconds[0] = 1.9
    assert versions() == [1]  # within the check interval: the set in hand
    seconds[0] = 2.0
    assert versions() == [2]
    with store.read() as session:
        kept = accounts.for_account(session, "hubspot", "111")
        seconds[0] = 10.0  # a due check that finds nothing new keeps the set it loaded
        assert accounts.for_account(session, "hubspot", "111") is kept
        assert accounts.for_account(session, "hubspot", "222") is None  # none of its own


def test_in_use_gives_the_accounts_own_or_the_folders(services, store, published, installed, tmp_path):
    ending = playbook().replace(
        "anchor: run_start", "anchor: run_start\ntrigger: {contract_end: {lead: 90d}}"
    )
    published.publish("hubspot", "111", [draft(tmp_path, ending)], by="revops")

    with store.read() as session:
        own = in_use(session, services.playbooks, "hubspot", "111")
        folder = in_use(session, services.playbooks, "hubspot", "222")

    assert [item.path for item in own] == ["hubspot:111/account-close@1"]
    assert {item.path for item in folder} == {item.path for item in services.playbooks()}
    today = date(2026, 11, 20)
    assert sweep_horizon(own, today) == date(2027, 2, 18)  # the account's own lead, not the folder's
    assert sweep_horizon(folder, today) != sweep_horizon(own, today)


def test_a_stored_version_that_no_longer_loads_holds_the_accounts_runs(services, store, installed, clock):
    with store.session() as session:
        session.add(
            PlaybookVersion(
                crm="hubspot",
                account="111",
                playbook_id="broken",
                version=4,
                source="id: broken\nname: Broken\nversion: 4\nsteps: []\nanchor: someday\n",
                sha256="0" * 64,
                published_at=clock(),
                published_by="revops",
            )
        )
    with pytest.raises(offboarding.PlaybooksIncomplete) as held:
        start(services, deal("111"))
    assert "hubspot:111/broken@4 does not load" in held.value.reason
    assert start(services, deal("222")).state == "done"  # another account is not held


# --- publishing ------------------------------------------------------------------------------------


def test_publishing_stores_versions_and_audits_each(store, published, installed, tmp_path, clock):
    text = playbook()
    (result,) = published.publish("hubspot", "111", [draft(tmp_path, text)], by="revops@a.example")

    assert result.stored and result.line.startswith("published account-close v1")
    (stored,) = published.latest("hubspot", "111")
    assert (stored.source, stored.published_by, stored.published_at) == (text, "revops@a.example", clock())
    assert stored.name == "hubspot:111/account-close@1"
    assert published.latest("hubspot", "222") == []
    with store.read() as session:
        (entry,) = session.scalars(select(AuditEntry).where(AuditEntry.verb == "playbook.published")).all()
    assert entry.actor == "revops@a.example" and entry.crm == "hubspot"
    assert entry.detail == {
        "account": "111",
        "playbook": "account-close",
        "version": 1,
        "sha256": stored.sha256,
    }


def test_the_same_text_again_stores_nothing(store, published, installed, tmp_path):
    published.publish("hubspot", "111", [draft(tmp_path, playbook())], by="revops")
    (again,) = published.publish("hubspot", "111", [draft(tmp_path, playbook())], by="someone else")

    assert not again.stored
    assert "the same text is already the latest version published" in again.line
    assert len(published.history("hubspot", "111", "account-close")) == 1
    with store.read() as session:
        audited = session.scalar(select(func.count()).where(AuditEntry.verb == "playbook.published"))
    assert audited == 1


@pytest.mark.parametrize("version", [1, 2])
def test_a_changed_file_needs_a_version_above_the_latest(published, installed, tmp_path, version):
    published.publish("hubspot", "111", [draft(tmp_path, playbook(version=2))], by="revops")
    changed = draft(tmp_path, playbook(version=version, title="Changed"))

    with pytest.raises(PlaybookError) as refused:
        published.publish("hubspot", "111", [changed], by="revops")

    assert refused.value.problems == [
        f"{tmp_path / 'account-close.yaml'}: version: {version} is not higher than 2, the latest version of "
        "'account-close' published for hubspot:111, and the file differs from it; set version: 3"
    ]
    assert [v.version for v in published.history("hubspot", "111", "account-close")] == [2]
    published.publish("hubspot", "111", [draft(tmp_path, playbook(version=3, title="Changed"))], by="revops")
    assert [v.version for v in published.history("hubspot", "111", "account-close")] == [2, 3]


def test_one_refused_file_stores_none_of_them(published, installed, tmp_path):
    published.publish("hubspot", "111", [draft(tmp_path, playbook())], by="revops")
    fine = draft(tmp_path, playbook("another", priority=3), "another.yaml")
    unbumped = draft(tmp_path, playbook(title="Changed"))

    with pytest.raises(PlaybookError):
        published.publish("hubspot", "111", [fine, unbumped], by="revops")

    assert [v.playbook_id for v in published.latest("hubspot", "111")] == ["account-close"]


def test_a_playbook_tying_with_a_stored_one_is_refused(published, installed, tmp_path):
    published.publish("hubspot", "111", [draft(tmp_path, playbook())], by="revops")
    twin = draft(tmp_path, playbook("twin"), "twin.yaml")

    with pytest.raises(PlaybookError) as refused:
        published.publish("hubspot", "111", [twin], by="revops")

    (line,) = refused.value.problems
    assert line.startswith(f"{tmp_path / 'twin.yaml'}: match: matches exactly the same deals as ")
    assert "hubspot:111/account-close@1" in line
    published.publish("hubspot", "222", [twin], by="revops")  # another account's are no rivals


def test_an_unbumped_edit_of_what_the_accounts_runs_used_is_refused(
    services, store, published, installed, tmp_path
):
    start(services, deal("111"))  # the folder's completed-project, before the account had its own
    run = run_of(store, "111")
    assert run.playbook_id == "completed-project"
    version = run.playbook_version  # the same version, other content: an unbumped edit
    mine = draft(
        tmp_path, playbook("completed-project", version=version, priority=20), "completed-project.yaml"
    )

    with pytest.raises(PlaybookError) as refused:
        published.publish("hubspot", "111", [mine], by="revops")

    assert (
        f"runs of hubspot:111 started with other content as completed-project v{version}"
        in refused.value.problems[0]
    )
    published.publish("hubspot", "222", [mine], by="revops")  # no run of 222 used it


def test_validate_does_not_count_an_accounts_runs_against_the_folder(
    services, store, published, installed, tmp_path
):
    mine = draft(tmp_path, playbook("completed-project", priority=20), "completed-project.yaml")
    published.publish("hubspot", "111", [mine], by="revops")
    start(services, deal("111"))  # the account's completed-project v1, not the folder's
    assert run_of(store, "111").playbook_hash == mine.loaded.hash

    assert unbumped_edits(store, load_all([services.settings.playbooks])) == []


# --- the table -------------------------------------------------------------------------------------


def test_versions_are_unique_per_account_id_and_version(store, clock):
    row = {
        "crm": "hubspot",
        "account": "111",
        "playbook_id": "x",
        "version": 1,
        "source": "id: x",
        "sha256": "0" * 64,
        "published_at": clock(),
        "published_by": "revops",
    }
    with store.session() as session:
        session.add_all([PlaybookVersion(**row), PlaybookVersion(**(row | {"account": "222"}))])
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(PlaybookVersion(**row))


def test_an_account_purge_deletes_its_versions(store, published, installed, tmp_path):
    assert purge_rules()["playbook_versions"] == "crm and account"
    for account in ("111", "222"):
        published.publish("hubspot", account, [draft(tmp_path, playbook())], by="revops")

    installed.remove("hubspot", "111", purge=True, actor="test")

    assert published.latest("hubspot", "111") == []
    assert [v.account for v in published.latest("hubspot", "222")] == ["222"]


def test_the_migration_goes_down_and_up(store):
    try:
        command.downgrade(alembic_config(store.engine), "0010")
        assert "playbook_versions" not in inspect(store.engine).get_table_names()
    finally:
        upgrade(store.engine)
    assert "playbook_versions" in inspect(store.engine).get_table_names()


# --- end to end: a webhook's deal gets its account's playbook ---------------------------------------


def test_a_closed_deal_gets_its_accounts_checklist_through_the_worker(
    client, services, store, published, tmp_path
):
    published.publish("sandbox", "acme-a", [draft(tmp_path, playbook(title="Acme A"))], by="revops")
    for account, deal_id in (("acme-a", "D-A"), ("acme-b", "D-B")):
        event = deal_closed_event(deal_id) | {"id": f"evt-{deal_id}", "account": account}
        body, headers = signed(event)
        assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()

    subjects = {
        task.deal_id: task.subject
        for task in services.adapters["sandbox"].tasks()
        if task.step_id == "kickoff"
    }
    assert subjects == {"D-A": "Acme A: kickoff"}
    assert run_of(store, "acme-b", "D-B", crm="sandbox").playbook_id == "completed-project"
