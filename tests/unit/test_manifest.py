"""manifest.json: valid against its schema, and honest about the settings and endpoints."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jsonschema
import pytest

from connector.settings import all_variables, secret_variables

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
SCHEMA = json.loads((ROOT / "manifest.schema.json").read_text())


def test_manifest_follows_its_schema():
    jsonschema.validate(MANIFEST, SCHEMA)


def test_schema_rejects_a_broken_manifest():
    broken = dict(MANIFEST, settings=[{"name": "lowercase", "secret": "no"}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_every_setting_the_code_reads_is_in_the_manifest():
    listed = {s["name"] for s in MANIFEST["settings"]}
    missing = set(all_variables()) - listed
    assert not missing, f"settings read but not in manifest.json: {sorted(missing)}"
    assert set(all_variables()) == listed, (
        f"manifest lists unknown settings: {sorted(listed - set(all_variables()))}"
    )


def test_secrets_are_marked_secret():
    marked = {s["name"] for s in MANIFEST["settings"] if s["secret"]}
    assert marked == secret_variables()


def _environment_reads(path: Path) -> list[str]:
    """String names passed to os.environ[...] / os.environ.get / os.getenv in a source file."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        target = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            target = node.slice
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "os.environ.get",
            "os.getenv",
        ):
            target = node.args[0] if node.args else None
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            names.append(target.value)
        elif target is not None:
            names.append(f"<computed in {path.name}>")
    return names


def test_no_code_reads_the_environment_behind_the_settings_back():
    listed = {s["name"] for s in MANIFEST["settings"]}
    sources = [*ROOT.joinpath("connector").rglob("*.py"), *ROOT.joinpath("adapters").rglob("*.py")]
    unlisted = {name: str(p) for p in sources for name in _environment_reads(p) if name not in listed}
    assert not unlisted, f"environment read but not in manifest.json: {unlisted}"


def _routes(app) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method in ("GET", "POST") and rule.endpoint != "static"
    }


def test_available_endpoints_are_served_and_no_others(app):
    listed = {(e["method"], e["path"]) for e in MANIFEST["endpoints"] if e["status"] == "available"}
    assert listed == _routes(app)
