"""Logs and metrics: no credential in any log line of any logger; /metrics moves with the work."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector import metrics
from connector.links import make_link
from connector.logs import configure_logging
from connector.services import build
from connector.settings import load_settings
from connector.store import WorkerBeat
from connector.web import create_app
from tests.support.helpers import deal_closed_event, make_settings, signed

OUTBOUND_KEY = "k" * 20 + "OUTBOUNDKEY0123456789"
GUESSED_KEY = "GUESSEDKEY-not-the-real-one"


class _Written(io.StringIO):
    """A log buffer whose reading waits for the lines queued before it (a background writer's)."""

    def getvalue(self) -> str:
        for handler in logging.root.handlers:
            if handler.get_name() == "offboard":
                handler.flush()
        return super().getvalue()


@pytest.fixture(params=[False, True], ids=["inline", "background"])
def logged(request: pytest.FixtureRequest) -> Iterator[tuple[io.StringIO, Any]]:
    """Logging as a process sets it up, into a buffer; every logger at DEBUG; restored afterwards.
    Written inline (the commands) or by the background writer (the web server)."""
    saved = {
        name: (logger.level, logger.disabled)
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level = logging.root.level
    factory = logging.getLogRecordFactory()
    buffer = _Written()
    yield buffer, lambda settings: configure_logging(settings, stream=buffer, background=request.param)
    for handler in [h for h in logging.root.handlers if h.get_name() == "offboard"]:
        logging.root.removeHandler(handler)
    logging.root.setLevel(root_level)
    logging.setLogRecordFactory(factory)
    for name, (level, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.disabled = disabled


def every_logger_at_debug() -> None:
    logging.root.setLevel(logging.DEBUG)
    for logger in logging.root.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.DEBUG)
            logger.disabled = False


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_link_token_or_key_reaches_any_log_line(logged, sqlite_url, store, clock, log_format):
    buffer, configure = logged
    settings = make_settings(sqlite_url, OFFBOARD_LOG_FORMAT=log_format, SALESFORCE_OUTBOUND_KEY=OUTBOUND_KEY)
    configure(settings)
    every_logger_at_debug()
    client = create_app(build(settings, store=store, clock=clock)).test_client()
    secret = settings.secret_key.get_secret_value()
    claims = {"run": 1, "step": "exit-nps", "contact": "c-1", "kind": "nps"}
    survey = make_link("", secret, "survey", claims)
    referral = make_link("", secret, "referral", claims | {"kind": "referral"})
    tokens = [survey.rsplit("/", 1)[1], referral.rsplit("/", 1)[1]]
    client.get(survey)
    client.post(survey, data={"score": "9"})
    client.get(referral)
    client.post(
        "/webhooks/salesforce?key=" + OUTBOUND_KEY, data=b"<x/>", headers={"Content-Type": "text/xml"}
    )
    client.post("/webhooks/salesforce?key=" + GUESSED_KEY, data=b"<x/>")
    # Other loggers, whatever they write: an SDK's debug line, an error with a traceback.
    logging.getLogger("urllib3.connectionpool").debug("GET %s 200", "https://offboard.example.com" + survey)
    try:
        raise ValueError(f"bad callback https://x.example/webhooks/salesforce?key={GUESSED_KEY}&a=1")
    except ValueError:
        logging.getLogger("some.library").exception("while handling %s", referral)

    text = buffer.getvalue()
    lines = text.splitlines()
    access = [line for line in lines if "offboard.access" in line]
    assert len(access) == 5, text  # one line per request
    assert any("/s/[redacted]" in line for line in access) and any("/r/[redacted]" in line for line in access)
    assert any("key=[redacted]" in line for line in access)
    for needle in [*tokens, OUTBOUND_KEY, GUESSED_KEY]:
        assert needle not in text, needle
    assert "Traceback" in text and "[redacted]&a=1" in text  # the exception is there, redacted
    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert len(records) == len([line for line in lines if line.strip() and not line.startswith(" ")])
        assert {"time", "level", "logger", "message"} <= set(records[0])
        requests = [r for r in records if r["logger"] == "offboard.access"]
        assert sorted(r["status"] for r in requests) == [401, 404, 404, 404, 503]  # no run 1; no org id
        assert all(r["path"].startswith(("/s/[redacted]", "/r/[redacted]", "/webhooks/")) for r in requests)


def test_the_background_writer_writes_every_line_of_every_thread_in_order(logged, sqlite_url):
    buffer, configure = logged
    configure(make_settings(sqlite_url, OFFBOARD_LOG_FORMAT="json"))
    log = logging.getLogger("offboard.test")

    def lines(thread: int) -> None:
        for n in range(500):
            log.warning("line %d of %d", n, thread)

    threads = [threading.Thread(target=lines, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written = [json.loads(line)["message"] for line in buffer.getvalue().splitlines()]
    assert len(written) == 4000
    for t in range(8):
        assert [m for m in written if m.endswith(f"of {t}")] == [f"line {n} of {t}" for n in range(500)]


# --- /metrics ---------------------------------------------------------------------


def scrape(client: Any, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = client.get("/metrics", headers=headers)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(reply.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_when_an_event_arrives_and_actions_are_done_or_parked(client, services, store, clock):
    before = scrape(client)
    body, headers = signed(deal_closed_event())
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    assert client.post("/webhooks/generic", data=b"{}").status_code == 401
    queued = scrape(client)
    assert value(queued, "offboard_events_received_total", source="generic", answer="202") == 1 + value(
        before, "offboard_events_received_total", source="generic", answer="202"
    )
    assert value(queued, "offboard_events_received_total", source="generic", answer="401") >= 1
    assert value(queued, "offboard_queue_depth", queue="events", state="pending", kind="deal.closed") == 1

    services.adapters["sandbox"].inject("create_tasks", "permanent", times=1)
    services.worker().run_until_idle()
    worked = scrape(client)
    assert value(worked, "offboard_queue_depth", queue="events", state="pending", kind="deal.closed") == 0
    assert value(worked, "offboard_action_outcomes_total", kind="task", outcome="failed") == 1
    assert value(worked, "offboard_action_parkings_total", crm="sandbox") == 1
    assert value(worked, "offboard_queue_depth", queue="actions", state="failed", kind="task") == 1
    done = sum(
        v
        for (name, labels), v in worked.items()
        if name == "offboard_action_outcomes_total" and ("outcome", "done") in labels
    )
    assert done >= 1  # the run's notes and properties were written


def test_metrics_show_worker_heartbeats_and_the_last_sweep(client, services, store, clock):
    with store.session() as session:
        session.add(
            WorkerBeat(id="host-a:41", host="host-a", pid=41, started_at=clock.now, beat_at=clock.now)
        )
    clock.advance(seconds=42)
    services.worker().sweep_when_due()
    samples = scrape(client)
    assert value(samples, "offboard_worker_heartbeat_age_seconds", worker="host-a:41") == 42
    assert value(samples, "offboard_workers") == 1
    interval = services.settings.sweep_interval_seconds
    assert (
        value(samples, "offboard_sweep_next_timestamp_seconds")
        == (clock.now + timedelta(seconds=interval)).timestamp()
    )
    assert value(samples, "offboard_sweep_last_timestamp_seconds") == clock.now.timestamp()


def test_crm_calls_429s_and_waits_are_counted_across_processes(client, services):
    before = scrape(client)
    metrics.crm_call("hubspot", 200)
    metrics.crm_call("hubspot", 429)
    metrics.rate_limit_wait("hubspot", 1.5)
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("offboard_crm_calls_total", crm="hubspot", status="429") == 1
    assert moved("offboard_crm_rate_limited_total", crm="hubspot") == 1
    assert moved("offboard_crm_rate_limit_waits_total", crm="hubspot") == 1
    assert moved("offboard_crm_rate_limit_wait_seconds_total", crm="hubspot") == 1.5
    from connector.store import MetricCount

    with services.store.session() as session:  # in the shared table, where other processes' counts go too
        assert session.get(MetricCount, ("crm_rate_limited", '{"crm": "hubspot"}')).value >= 1


def test_metrics_need_the_bearer_token_when_one_is_set(sqlite_url, store, clock):
    settings = make_settings(sqlite_url, OFFBOARD_METRICS_TOKEN="metrics-token-0123456789")
    client = create_app(build(settings, store=store, clock=clock)).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "offboard_queue_depth" not in client.get("/metrics").get_data(as_text=True)
    samples = scrape(client, Authorization="Bearer metrics-token-0123456789")
    assert ("offboard_workers", ()) in samples


def test_hubspot_calls_429s_and_waits_are_counted_where_the_answers_are_seen(client, clock, httpserver):
    from tests.support.hubspot import (
        FakeHubSpot,
        add_deal,
        fake_time_adapter,
        offboard_properties,
        serve,
        settings_overrides,
        standard_portal,
    )

    fake = offboard_properties(standard_portal(FakeHubSpot(clock=clock)))
    adapter = fake_time_adapter(load_settings(**settings_overrides(serve(fake, httpserver))), clock)
    ids = add_deal(fake)
    before = scrape(client)
    fake.inject(429, times=2)
    assert adapter.fetch_deal(ids["deal"]).id == ids["deal"]
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("offboard_crm_calls_total", crm="hubspot", status="429") == 2
    assert moved("offboard_crm_rate_limited_total", crm="hubspot") == 2
    assert moved("offboard_crm_calls_total", crm="hubspot", status="200") >= 1
    assert moved("offboard_crm_rate_limit_waits_total", crm="hubspot") >= 2
    assert moved("offboard_crm_rate_limit_wait_seconds_total", crm="hubspot") >= 20  # 10 s per 429


def test_salesforce_calls_are_counted_where_the_answers_are_seen(client, tmp_path):
    import responses

    from adapters.salesforce.adapter import SalesforceAdapter
    from tests.support.salesforce import FakeSalesforce, session_settings

    org = FakeSalesforce()
    seed = org.add_opportunity()
    before = scrape(client)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        adapter = SalesforceAdapter.from_settings(
            make_settings(f"sqlite:///{tmp_path}/unused.db", **session_settings(org))
        )
        adapter.fetch_deal(seed.opportunity)
    after = scrape(client)
    moved = value(after, "offboard_crm_calls_total", crm="salesforce", status="200") - value(
        before, "offboard_crm_calls_total", crm="salesforce", status="200"
    )
    assert moved >= 1


def test_readyz_says_status_and_counts_only(client, services):
    reply = client.get("/readyz")
    assert reply.status_code == 200
    body = reply.get_json()
    loaded = len(services.playbooks.current())
    assert loaded >= 1
    assert body == {"status": "ready", "database": "ok", "playbooks": loaded, "crms": 1}
    text = reply.get_data(as_text=True)
    assert not any(p.id in text for p in services.playbooks.current())
    assert "sandbox" not in text
