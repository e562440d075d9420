"""The playbooks each account runs: its own published ones, loaded and kept per account.

An account (a CRM connection) with published versions (``connector/playbooks/published.py``)
runs the latest version of each of its playbooks and none of the deployment's folder; an
account with none runs the folder. Published versions are loaded from their text with the
loader files use, so they are checked the same way, and their problems name
``<crm>:<account>/<id>@<version>``.

Keeping them: the loaded set of each account is kept in memory. At most every
``check_every`` seconds per account (2 s, as for the folder) one small query reads the ids,
versions and hashes of the account's stored versions; when they differ from the set in
hand (a publish by this process or another), the latest versions are loaded again. Within
those seconds a new run uses the set in hand, so a publish reaches new runs within a
couple of seconds, in every process; ``forget`` makes it at once (this process's publish).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.errors import PlaybookError
from connector.playbooks.loader import LoadedPlaybook, set_problems
from connector.playbooks.published import Version
from connector.store.tables import PlaybookVersion

# What an account's set was loaded from: (playbook id, version, sha256) of each latest version.
Fingerprint = tuple[tuple[str, int, str], ...]


@dataclass(frozen=True)
class AccountSet:
    """An account's own playbooks: those that load, and one line per problem of those that do not."""

    loaded: list[LoadedPlaybook]
    problems: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # the versions with no playbook in use

    @property
    def unloaded(self) -> list[str]:
        """The versions that do not load (or clash): while any does, no run of the account starts."""
        return self.broken


@dataclass
class _Entry:
    fingerprint: Fingerprint
    found: AccountSet | None
    checked: float


class AccountPlaybooks:
    """Each account's own playbooks, loaded once per change (see the module's docstring)."""

    def __init__(self, *, check_every: float = 2.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.check_every = check_every
        self._monotonic = monotonic
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def for_account(self, session: Session, crm: str, account: str) -> AccountSet | None:
        """The account's own playbooks; None when it has published none (it runs the folder's)."""
        key, now = (crm, account), self._monotonic()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and now - entry.checked < self.check_every:
            return entry.found
        fingerprint = _fingerprint(session, crm, account)
        if entry is None or entry.fingerprint != fingerprint:
            found = _load(session, crm, account, fingerprint) if fingerprint else None
            entry = _Entry(fingerprint=fingerprint, found=found, checked=now)
        else:
            entry = _Entry(fingerprint=fingerprint, found=entry.found, checked=now)
        with self._lock:
            self._entries[key] = entry
        return entry.found

    def forget(self, crm: str, account: str) -> None:
        """Look at the account's stored versions again on its next run (a publish here)."""
        with self._lock:
            self._entries.pop((crm, account), None)


def account_playbooks(playbooks: object) -> AccountPlaybooks:
    """The accounts' playbooks kept by a registry (``PlaybookRegistry.accounts``); for a plain
    function handing out playbooks (tests), a fresh set that keeps nothing between calls."""
    found = getattr(playbooks, "accounts", None)
    return found if isinstance(found, AccountPlaybooks) else AccountPlaybooks(check_every=0)


def in_use(
    session: Session, playbooks: Callable[[], list[LoadedPlaybook]], crm: str, account: str
) -> list[LoadedPlaybook]:
    """The playbooks that load for the account's deals: its own where it published any, else those
    ``playbooks`` hands out (the folder's). For readers such as the contract-end sweep's horizon;
    starting a run also refuses while one does not load (``usecases.offboarding.playbooks_for``)."""
    own = account_playbooks(playbooks).for_account(session, crm, account)
    return playbooks() if own is None else own.loaded


def _fingerprint(session: Session, crm: str, account: str) -> Fingerprint:
    rows = session.execute(
        select(PlaybookVersion.playbook_id, PlaybookVersion.version, PlaybookVersion.sha256)
        .where(PlaybookVersion.crm == crm, PlaybookVersion.account == account)
        .order_by(PlaybookVersion.playbook_id, PlaybookVersion.version)
    ).all()
    latest = {playbook_id: (playbook_id, version, sha) for playbook_id, version, sha in rows}
    return tuple(latest[key] for key in sorted(latest))


def _load(session: Session, crm: str, account: str, fingerprint: Fingerprint) -> AccountSet:
    """Load the versions the fingerprint names, as files are loaded: every problem, one per line."""
    loaded: list[LoadedPlaybook] = []
    problems: list[str] = []
    broken: list[str] = []
    for playbook_id, version, _ in fingerprint:
        row = session.scalar(
            select(PlaybookVersion).where(
                PlaybookVersion.crm == crm,
                PlaybookVersion.account == account,
                PlaybookVersion.playbook_id == playbook_id,
                PlaybookVersion.version == version,
            )
        )
        if row is None:  # cannot happen while versions are append-only; a purge may race a run
            continue
        stored = Version.of(row)
        try:
            loaded.append(stored.load())
        except PlaybookError as exc:
            problems.extend(exc.problems)
            broken.append(stored.name)
    clashes = set_problems(loaded)
    problems.extend(clashes)
    broken.extend(item.path for item in loaded if any(line.startswith(f"{item.path}: ") for line in clashes))
    in_use = [item for item in loaded if item.path not in broken]
    return AccountSet(loaded=in_use, problems=problems, broken=broken)
