"""The fakes and the sandbox CRM name their faults alike."""

from __future__ import annotations

from adapters.sandbox.adapter import FAULT_KINDS
from tests.support.faults import SANDBOX, Fault
from tests.support.hubspot import FakeHubSpot
from tests.support.salesforce import FakeSalesforce


def test_the_sandbox_kinds_are_the_shared_names():
    """``offboard sandbox fail KIND`` and the fakes mean the same thing by the same word."""
    assert tuple(fault.value for fault in SANDBOX) == FAULT_KINDS


def test_both_fakes_play_every_fault_the_sandbox_can():
    assert set(SANDBOX) <= FakeHubSpot.FAULTS
    assert set(SANDBOX) <= FakeSalesforce.FAULTS


def test_every_fault_is_played_by_some_fake():
    assert set(Fault) == FakeHubSpot.FAULTS | FakeSalesforce.FAULTS
