"""pyproject.toml: the install is quiet, and the SDK bounds admit no release known to break the adapters."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.lowest import installed_mismatches, lower_bounds

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# What each SDK release before the bound gets wrong (CRM-FACTS, the SDKs' changelogs and issues).
KNOWN_BROKEN = {
    "hubspot-api-client": "11.1.0",  # lacks BatchInputSimplePublicObjectBatchInputForCreate
    "simple-salesforce": "1.12.8",  # 1.12.6: restful() raises on 204; 1.12.7-8: a 404 raises KeyError
}

BUILD_METADATA = """
import sys, warnings
warnings.simplefilter("always")
from setuptools import build_meta
print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))
"""


def test_the_license_is_an_spdx_expression_with_a_setuptools_that_reads_it():
    license_ = PYPROJECT["project"]["license"]
    assert isinstance(license_, str), "a TOML table here is deprecated by setuptools"
    assert re.fullmatch(r"LicenseRef-[A-Za-z0-9.-]+|[A-Za-z0-9.+-]+", license_)
    requires = PYPROJECT["build-system"]["requires"]
    assert "setuptools>=77" in requires, "SPDX license expressions need setuptools 77 or later"


def test_building_the_metadata_warns_of_nothing(tmp_path: Path):
    # The same backend call pip makes on `pip install -e .`, on a copy so the tree stays as it is.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    out = tmp_path / "metadata"
    out.mkdir()
    built = subprocess.run(
        [sys.executable, "-c", BUILD_METADATA, str(out)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    assert "deprecat" not in (built.stdout + built.stderr).lower(), built.stderr
    metadata = (out / built.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert f"License-Expression: {PYPROJECT['project']['license']}" in metadata


@pytest.mark.parametrize("sdk", sorted(KNOWN_BROKEN))
def test_the_sdk_lower_bounds_are_above_the_releases_known_to_break(sdk: str):
    lowest = tuple(int(part) for part in lower_bounds([sdk])[sdk].split("."))
    broken = tuple(int(part) for part in KNOWN_BROKEN[sdk].split("."))
    assert lowest > broken


def test_the_lowest_pins_come_from_pyproject_and_are_checked_against_what_is_installed(tmp_path: Path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["Simple_Salesforce[x] >= 1.2.3, <2", "flask"]\n')
    assert lower_bounds(["simple-salesforce"], pyproject) == {"simple-salesforce": "1.2.3"}
    with pytest.raises(ValueError, match="flask"):
        lower_bounds(["flask"], pyproject)
    assert installed_mismatches({"pytest": "0.0.1"}) == [
        f"pytest: {pytest.__version__}, expected the lower bound 0.0.1"
    ]
