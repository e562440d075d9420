"""Templates render within hard limits: size, loops, time. Breaking one is a validation error, fast,
and at run time it fails the one run being planned instead of hanging the worker."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from click.testing import CliRunner

from connector.cli import main
from connector.errors import PlaybookError
from connector.playbooks import limits, templates
from connector.playbooks.loader import from_pinned, load_file

SEED = "{% set a = 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' %}"
ATTACKS = {
    "center": "{{ company.name.center(400000000) }}",
    "center-filter": "{{ company.name | center(400000000) }}",
    "percent-format-filter": "{{ '%400000000s' | format(company.name) }}",
    "percent-star-width": "{{ '%*s' | format(400000000, company.name) }}",
    "percent-operator": "{{ '%400000000s' % company.name }}",
    "brace-format": "{{ '{:>400000000}'.format(company.name) }}",
    "brace-nested-width": "{{ '{:>{}}'.format(company.name, 400000000) }}",
    "indent-width": "{{ company.name | indent(400000000) }}",
    "indent-many-lines": "{{ ('x\\n' * 50000) | indent(100000) }}",
    "concat-doubling": SEED + "{% set a = a ~ a %}" * 40 + "{{ a | length }}",
    "plus-doubling": SEED + "{% set a = a + a %}" * 40 + "{{ a | length }}",
    "nested-loops": "{% for i in 'x' * 100000 %}{% for j in 'x' * 100000 %}{{ j }}{% endfor %}{% endfor %}",
    "loop-literal": "{% for i in 'x' * 99999 %}" + "y" * 2000 + "{% endfor %}",
    "power": "{{ 9 ** 999 ** 999 }}",
    "power-of-power": "{{ (9 ** 1000) ** 1000 }}",
    "big-products": "{{ (9 ** 900) * (9 ** 900) * (9 ** 900) }}",
    "repeat": "{{ company.name * 400000000 }}",
    "join": "{{ (['x' * 10000] * 10000) | join('y') }}",
    "replace": "{{ ('x' * 50000).replace('x', 'yyyy') }}",
    "replace-filter": "{{ ('x' * 50000) | replace('x', 'yyyy') }}",
    "expandtabs": "{{ ('\\t' * 50000).expandtabs(100000) }}",
    "ljust": "{{ company.name.ljust(400000000) }}",
    "map-center": "{{ ('x' * 100000) | map('center', 100000) | list | length }}",
    "long-source": "x" * (limits.MAX_SOURCE + 1),
}


def write(tmp_path: Path, title: str) -> Path:
    path = tmp_path / "attack.yaml"
    book = {"id": "attack", "name": "Attack", "version": 1, "steps": [{"id": "t", "task": {"title": title}}]}
    path.write_text(yaml.safe_dump(book, width=1_000_000))
    return path


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_each_attack_is_a_validation_error_naming_file_and_field(tmp_path, attack):
    path = write(tmp_path, attack)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert time.monotonic() - started < 5  # generous: each stops at the first check it breaks
    assert result.exit_code == 1, result.output
    assert f"{path}: steps[0].task.title: template error:" in result.output, result.output


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    path = write(tmp_path, "Hello")
    with path.open("r+b") as handle:
        handle.truncate(300_000_000)  # a 300 MB file (sparse: nothing is written)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert f"{path}: the file is 300,000,000 bytes; a playbook file may be at most 1,000,000" in result.output


def test_time_is_bounded_even_when_each_step_is_small(monkeypatch):
    monkeypatch.setattr(limits, "MAX_LOOPS", 10**9)
    monkeypatch.setattr(limits, "MAX_BUILT", 10**12)
    slow = "{% for i in 'x' * 100000 %}{% for j in 'x' * 100000 %}{{ i }}{% endfor %}{% endfor %}"
    started = time.monotonic()
    problem = templates.check(slow)
    assert time.monotonic() - started < 5
    assert problem == "template error: rendering took longer than 1 s; simplify the template"


def test_ordinary_templates_still_work():
    text = (
        "{% for key in contact %}{{ key }},{% endfor %} {{ '%05d' | format(42) }}"
        " {{ '{:,}'.format(1234567) }} {{ ['a', 'b'] | join(', ') }} {{ company.name | center(10) }}"
        " {{ 2 ** 10 }} {{ contact.name ~ '!' }}"
    )
    assert templates.check(text) is None
    assert templates.render(text, templates.sample_context()) == (
        "id,first_name,last_name,name,email, 00042 1,234,567 a, b    Acme    1024 Pat Lee!"
    )


def test_a_value_over_the_limit_at_run_time_fails_the_plan_clearly():
    from connector.models import Deal
    from connector.planner import PlanContext, plan

    book = {
        "id": "big",
        "name": "Big",
        "version": 2,
        "steps": [{"id": "t", "task": {"title": "{{ deal.name * 50 }}"}}],
    }
    playbook = from_pinned(book)  # valid: the sample deal's name is short
    deal = Deal(crm="sandbox", account="a", id="D-9", name="n" * 5000, outcome="won", closed=True)
    ctx = PlanContext(
        zone=ZoneInfo("UTC"), roles={}, fallback_owner=None, now=datetime(2026, 11, 20, tzinfo=UTC)
    )
    with pytest.raises(PlaybookError) as failed:
        plan(deal, playbook, ctx)
    assert str(failed.value) == (
        "playbook big v2: step t (task): template error: repeating it would be 250,000 characters, "
        "over the limit of 100,000"
    )


def test_a_pinned_playbook_is_rebuilt_once_per_content_without_rendering(monkeypatch):
    book = yaml.safe_load(Path("playbooks/completed-project.yaml").read_text())
    first = from_pinned(book)
    monkeypatch.setattr(templates, "check", lambda source: pytest.fail("pinned content was re-rendered"))
    assert from_pinned(dict(book)) is first  # the same content: the same object, from the cache
    edited = {**book, "version": 99}
    assert from_pinned(edited).version == 99  # other content: built, still without rendering


def test_load_file_shares_one_deadline_across_a_files_templates(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_LOOPS", 10**9)
    monkeypatch.setattr(limits, "MAX_BUILT", 10**12)
    monkeypatch.setattr(limits, "MAX_FILE_SECONDS", 1.5)
    slow = "{% for i in 'x' * 100000 %}{% for j in 'x' * 100000 %}{{ i }}{% endfor %}{% endfor %}"
    steps = [{"id": f"s{n}", "task": {"title": slow}} for n in range(20)]
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump({"id": "slow", "name": "Slow", "version": 1, "steps": steps}))
    started = time.monotonic()
    with pytest.raises(PlaybookError) as refused:
        load_file(path)
    assert time.monotonic() - started < 5  # 20 templates, but one shared deadline
    assert "checking this file's templates took too long" in str(refused.value)
