"""Playbook files, arbitrary and near-valid, through ``load_file``: a playbook or a PlaybookError, no other.

A playbook that loads keeps its promise: what a run pins of it loads again to the
same playbook. One that does not says why, one line per problem, each naming the file.
Templates cannot reach files, attributes or code: every such attempt is a validation error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event as statistic
from hypothesis import example, given
from hypothesis import strategies as st

from connector.errors import PlaybookError
from connector.playbooks import templates
from connector.playbooks.loader import LoadedPlaybook, load_file
from connector.playbooks.model import Playbook
from tests.support.helpers import BUNDLED_PLAYBOOKS
from tests.support.hostile import HOSTILE
from tests.support.strategies import mutated, noisy, values

BASES = [yaml.safe_load(path.read_text()) for path in sorted(BUNDLED_PLAYBOOKS.glob("*.yaml"))]

# Templates that try to leave their text: attributes, globals, the template itself, other files.
TEMPLATE_ATTACKS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler }}",
    "{{ joiner }}",
    "{{ namespace }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum() }}",
    "{{ range(10) | list }}",
    "{{ dict(a=1) }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}{{ os }}",
    "{% from '/etc/passwd' import root %}",
    "{% extends '/etc/passwd' %}",
    "{{ self }}",
    "{{ self.__init__.__globals__ }}",
    "{% block b %}x{% endblock %}{{ self.b() }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request }}",
    "{{ request.environ }}",
    "{{ url_for }}",
    "{{ g }}",
    "{{ session }}",
    "{{ environment }}",
    "{{ context }}",
    "{{ deal.__class__ }}",
    "{{ deal.properties.__class__.__base__.__subclasses__() }}",
    "{{ dates.today.__class__.__init__ }}",
    "{{ dates.today.__reduce_ex__(2) }}",
    "{{ deal | attr('__class__') }}",
    "{{ deal['__class__'] }}",
    "{{ '{0.__class__}'.format(deal) }}",
    "{{ '%s' | format(deal.__class__) }}",
    "{% set x = deal.__class__ %}{{ x }}",
    "{{ deal.properties.update({'owned': 1}) }}",
    "{{ deal.properties.clear() }}",
    "{{ deal.name.__len__() }}",
    "{{ 'x' * 10**9 }}",
    "{{ 9 ** 999999999 }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{{ 1 | date }}",
    "{{ deal.name | money }}",
    "{% debug %}",
    # ... and templates that try to exhaust memory or time: each is refused before it costs much
    "{{ 'x'.center(400000000) }}",
    "{{ '%400000000s' | format('x') }}",
    "{{ '{:>400000000}'.format('x') }}",
    "{{ 'x' | indent(400000000) }}",
    "{% set a = 'xxxxxxxxxxxxxxxx' %}" + "{% set a = a ~ a %}" * 40 + "{{ a }}",
    "{% for i in 'x' * 100000 %}{% for j in 'x' * 100000 %}{{ j }}{% endfor %}{% endfor %}",
    "{{ (9 ** 1000) ** 1000 }}",
]


def playbook_file(tmp_path: Path, title: str) -> Path:
    path = tmp_path / "attack.yaml"
    text = yaml.safe_dump(
        {"id": "attack", "name": "Attack", "version": 1, "steps": [{"id": "t", "task": {"title": title}}]}
    )
    path.write_text(text)
    return path


@pytest.mark.parametrize("attack", TEMPLATE_ATTACKS)
def test_a_template_cannot_reach_files_attributes_or_code(attack, tmp_path):
    problem = templates.check(attack)
    assert problem and problem.startswith("template error:"), (attack, problem)
    path = playbook_file(tmp_path, attack)
    with pytest.raises(PlaybookError) as refused:
        load_file(path)
    (line,) = refused.value.problems
    assert line.startswith(f"{path}: steps[0].task.title: template error:"), line
    with pytest.raises(Exception) as at_plan_time:  # the planner's path refuses too, never renders it
        templates.render(attack, templates.sample_context())
    assert not isinstance(at_plan_time.value, MemoryError)


def test_the_documented_names_and_filters_still_work(tmp_path):
    text = "{{ company.name }} ends {{ deal.contract_end | date }} for {{ deal.amount | money }}"
    text += " ({{ playbook.tone }})"
    assert templates.check(text) is None
    assert (
        templates.render(text, templates.sample_context())
        == "Acme ends 31 March 2026 for 12,000.00 (neutral)"
    )
    assert isinstance(load_file(playbook_file(tmp_path, text)), LoadedPlaybook)


# --- arbitrary and near-valid playbook files -------------------------------------------------------

RAW_YAML = [
    "1" * 5000,  # past Python's int-from-string digit limit
    "2026-13-45",
    "2026-02-30",
    "2001-01-01t25:00:00",
    "!!python/object/apply:os.system ['id']",
    "!!python/name:os.system",
    "*nowhere",
    "&anchor [1, 2]",
    "[" * 3000 + "]" * 3000,
    "{" * 3000 + "}" * 3000,
    "!!binary aGVsbG8=",
    "!!binary '@@@'",
    "!!set {a: null}",
    "!!timestamp 'x'",
    "!!float 'x'",
    "!!int '0x'",
    "!!omap [a: 1]",
    "{? [a, b] : c}",
    "{1: 2}",
    "{null: 1}",
    "{1.5: x}",
    "{2020-01-01: x}",
    ".nan",
    ".inf",
    "-.inf",
    "~",
    "0o777",
    "0x_1F",
    "1_000",
    "190:20:30",
    # an alias bomb: a few lines, millions of leaves if anything walks it
    "[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
    "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]]",
]
PREFIXES = [
    "",
    "",
    "",
    "",
    "---\n",
    "%YAML 1.1\n---\n",
    "%TAG ! tag:yaml.org,2002:python/\n---\n",
    "---\n---\n",
]


def playbook_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        values(),
        st.sampled_from(TEMPLATE_ATTACKS),
        st.sampled_from(["-3x", "+1bd", "99999d", "role:", "user:é"]),
    )


@st.composite
def playbook_texts(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from(BASES))
    value, raws = draw(mutated(base, max_mutations=4))
    if draw(st.integers(0, 3)) == 0:  # a template attack in a title, where templates are checked
        steps = value.get("steps") if isinstance(value, dict) else None
        if (
            isinstance(steps, list)
            and steps
            and isinstance(steps[0], dict)
            and isinstance(steps[0].get("task"), dict)
        ):
            steps[0]["task"]["title"] = draw(playbook_values())
    raws = [draw(st.sampled_from(RAW_YAML)) for _ in raws]  # YAML's own hostile tokens, not JSON's
    text = yaml.safe_dump(value, allow_unicode=draw(st.booleans()), sort_keys=False, width=10_000)
    for index, raw in enumerate(raws):
        text = re.sub(rf"'?@@raw{index}@@'?", lambda _m, raw=raw: raw, text)
    text = draw(st.sampled_from(PREFIXES)) + text
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("\n  ", "\n\t", 1)  # a tab where YAML wants spaces
    return draw(noisy(text.encode("utf-8", "surrogatepass")))


@HOSTILE
@given(text=playbook_texts())
@example(text=b"id: x\nversion: " + b"1" * 5000)
@example(text=b"id: x\nname: 2026-13-45\n")
@example(text=b"[" * 3000 + b"]" * 3000)
@example(text=b"a:\n" + b"".join(b" " * n + b"- \n" for n in range(1, 1500)))
@example(text=b"id: x\nname: !!python/object/apply:os.system ['id']\n")
@example(text=b"id: \xff\n")
@example(text=b"id: a\x00b\n")
@example(text=b"")
@example(text=b"- just\n- a list\n")
@example(text=b"{1: 2, null: 3, 1.5: 4}")
def test_a_playbook_file_loads_or_says_why_and_nothing_else(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzzed-playbook.yaml"
    path.write_bytes(text)
    try:
        loaded = load_file(path)
    except PlaybookError as exc:
        statistic("refused")
        assert exc.problems
        for line in exc.problems:
            assert (
                isinstance(line, str) and line.startswith(f"{path}: ") and line[len(str(path)) + 2 :].strip()
            )
        return
    statistic("loaded")
    pinned = loaded.pinned()
    json.dumps(pinned, allow_nan=False).encode("utf-8")
    assert Playbook.model_validate(pinned) == loaded.playbook  # what a run keeps loads back the same
