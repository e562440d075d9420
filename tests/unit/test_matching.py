"""Matching deals to playbooks, owners, and tone-specific text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from connector.generic import GenericEvent
from connector.planner import PlanContext, choose, plan, resolve_owner
from connector.playbooks.loader import load_file
from tests.support.helpers import deal_closed_event


def deal(**fields):
    return GenericEvent.model_validate(deal_closed_event(**fields)).to_deal("sandbox")


def book(tmp_path: Path, name: str, text: str):
    path = tmp_path / f"{name}.yaml"
    steps = "steps:\n  - id: a\n    task: {title: x}\n"
    path.write_text(f"id: {name}\nname: {name}\nversion: 1\n{text}\n{steps}")
    return load_file(path)


def ctx(**roles) -> PlanContext:
    return PlanContext(
        zone=ZoneInfo("UTC"), roles=roles, fallback_owner=None, now=datetime(2026, 11, 20, 12, tzinfo=UTC)
    )


def test_amount_fields_and_crm_all_must_hold(tmp_path):
    big = book(
        tmp_path,
        "big-emea",
        "match: {amount: {gte: 10000, lt: 50000}, crm: [sandbox],"
        " fields: {region: [emea], seats: {gte: 50}}}\npriority: 5",
    )
    fallback = book(tmp_path, "fallback", "match: {}")
    hit = deal(amount=24000, properties={"region": "EMEA", "seats": "120"})
    assert choose(hit, [big, fallback])[0] is big
    small = deal(amount=500, properties={"region": "emea", "seats": 10})
    chosen, verdicts = choose(small, [big, fallback])
    assert chosen is fallback
    reasons = next(v.reasons for v in verdicts if v.playbook is big)
    assert reasons == ["amount: 500 does not satisfy >= 10000 and < 50000", "fields.seats: 10 is not >= 50"]


def test_ties_go_to_the_more_specific_match(tmp_path):
    broad = book(tmp_path, "broad", "match: {outcome: [won]}")
    narrow = book(tmp_path, "narrow", "match: {outcome: [won], contract_type: [project]}")
    assert choose(deal(), [broad, narrow])[0] is narrow


def test_owner_rules_and_fallbacks():
    d = deal()
    assert resolve_owner("deal_owner", d, ctx()) == "owner-1"
    assert resolve_owner("user:42", d, ctx()) == "42"
    assert resolve_owner("role:finance", d, ctx(finance="f-1")) == "f-1"
    assert resolve_owner("role:finance", d, ctx(finance={"sandbox": "f-s", "hubspot": "f-h"})) == "f-s"
    assert resolve_owner("role:legal", d, ctx()) == "owner-1"  # no such role: the deal owner
    with_fallback = PlanContext(zone=ZoneInfo("UTC"), roles={}, fallback_owner="ops-1", now=ctx().now)
    assert resolve_owner("role:legal", d, with_fallback) == "ops-1"


def test_text_can_differ_by_tone(tmp_path):
    path = tmp_path / "toned.yaml"
    path.write_text(
        "id: toned\nname: T\nversion: 1\ntone: formal\nsteps:\n  - id: bye\n    task:\n"
        "      title: {celebratory: 'Party with {{ company.name }}!', formal: 'Write to {{ company.name }}',"
        " default: 'Say goodbye'}\n"
    )
    loaded = load_file(path)
    assert plan(deal(), loaded.playbook, ctx()).steps[0].title == "Write to Acme Corp"
    neutral = loaded.playbook.model_copy(update={"tone": "neutral"})
    assert plan(deal(), neutral, ctx()).steps[0].title == "Say goodbye"
