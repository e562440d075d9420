"""A template within the limits for the sample deal but over them for a real deal's data fails that
deal's run start clearly (the event says which playbook, step and limit); the worker goes on."""

from __future__ import annotations

from sqlalchemy import select

from connector.store import Event, Run
from tests.support.helpers import deal_closed_event, signed

BOOK = """id: echo
name: Echo
version: 1
steps:
  - id: shout
    task: {title: "{{ deal.name * 50 }}"}
"""


def test_an_over_limit_render_fails_the_event_and_the_worker_goes_on(client, services, store, tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "echo.yaml").write_text(BOOK)
    services.playbooks.folder = folder
    services.playbooks.reload()
    for event in (deal_closed_event("D-big", name="n" * 5000), deal_closed_event("D-ok")):
        body, headers = signed(event)
        assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()
    with store.session() as session:
        events = {e.payload["deal"]["id"]: e for e in session.scalars(select(Event))}
        runs = [run.deal_id for run in session.scalars(select(Run))]
    failed = events["D-big"]
    assert failed.state == "failed"
    assert failed.outcome == (
        "PlaybookError: playbook echo v1: step shout (task): template error: "
        "repeating it would be 250,000 characters, over the limit of 100,000"
    )
    assert runs == ["D-ok"]  # the next deal still got its run
    (task,) = services.adapters["sandbox"].tasks("D-ok")
    assert task.subject.startswith("Acme websiteAcme website")
