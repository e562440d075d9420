"""The benchmark's own checks: they must see a lost or doubled write, keep a budget, and read
an HTTP answer, or its figures would mislead."""

from __future__ import annotations

import io
import os
import sys
import threading
import time

import pytest

from tests.support import bench_hubspot
from tests.support.bench_baseline import MARGIN_SECONDS, Pacer
from tests.support.bench_ingest import _answer, cpu_times
from tests.support.bench_procs import TITLES, bench_title
from tests.support.hubspot import FakeHubSpot, offboard_properties, standard_portal


def portal(deals: int) -> tuple[FakeHubSpot, list[str], dict[str, str]]:
    fake = offboard_properties(standard_portal(FakeHubSpot()))
    ids, contacts = bench_hubspot.seed(fake, deals)
    return fake, ids, contacts


def write(fake: FakeHubSpot, deal: str, title: str) -> None:
    properties = {"hs_task_subject": f"{title} with Client", "hs_timestamp": "2026-12-01T00:00:00Z"}
    fake.add_record("tasks", properties, links=[("deals", deal, 216)])


def test_a_deal_with_its_three_tasks_and_one_survey_send_is_drained_once():
    fake, deals, contacts = portal(2)
    for title in TITLES:
        write(fake, deals[0], title)
    fake.set_property("contacts", contacts[deals[0]], bench_hubspot.SURVEY_REF, "ref-1")
    for title in TITLES[:2]:  # the second deal lacks a task
        write(fake, deals[1], title)
    fake.set_property("contacts", contacts[deals[1]], bench_hubspot.SURVEY_REF, "ref-2")
    seen = bench_hubspot.written(fake, contacts)
    assert (seen.done, seen.doubled) == (1, 0)


def test_a_task_or_a_survey_written_twice_is_counted():
    fake, deals, contacts = portal(2)
    for deal in deals:
        for title in TITLES:
            write(fake, deal, title)
        fake.set_property("contacts", contacts[deal], bench_hubspot.SURVEY_REF, f"ref-{deal}")
    write(fake, deals[0], TITLES[1])
    fake.set_property("contacts", contacts[deals[1]], bench_hubspot.SURVEY_REF, "another send")
    seen = bench_hubspot.written(fake, contacts)
    assert (seen.done, seen.doubled) == (2, 2)


def test_only_the_bench_playbooks_tasks_count():
    assert bench_title(f"{TITLES[2]} to Client 7") == TITLES[2]
    assert bench_title("Call Pat about their exit score") is None


def test_the_pacer_keeps_every_rolling_window_under_its_limit():
    pacer = Pacer(3, window=0.1)
    sent: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(3):
            pacer.acquire()
            with lock:
                sent.append(time.monotonic())

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    sent.sort()
    assert len(sent) == 9
    assert all(sent[n + 3] - sent[n] >= 0.1 + MARGIN_SECONDS - 0.01 for n in range(len(sent) - 3))


def test_an_answer_is_read_whole_and_says_whether_the_connection_stays():
    stream = io.BytesIO(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    )
    assert _answer(stream) == (200, True)
    assert _answer(stream) == (204, False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU times are read from Linux's /proc")
def test_the_cpu_of_a_process_group_is_counted_and_not_anothers():
    group = os.getpgrp()
    before = cpu_times(group)
    spent = time.process_time()
    while time.process_time() - spent < 0.3:  # CPU in this process, hence in its group
        pass
    after = cpu_times(group)
    assert after[0] - before[0] >= 0.2
    assert cpu_times(-1)[0] == 0  # no process is in that group
    idle, total = after[2] - before[2], after[3] - before[3]
    assert 0 <= idle < total
