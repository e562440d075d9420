"""An account's own playbooks, stored as versions: publishing them, and reading them back.

A connection (one CRM account) may publish playbooks of its own (``offboard playbooks
publish FILE --account CRM:ACCOUNT``). Each publish stores the YAML text as a new row of
``playbook_versions``; rows are never changed. The version a run pins is the playbook's own
``version:`` field, so a changed file must raise it above the latest stored one, and the same
text published again stores nothing. An account with published playbooks runs the latest
version of each of them and none of the deployment's folder (``connector/playbooks/accounts.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.clock import Clock, utcnow
from connector.errors import PlaybookError
from connector.playbooks.loader import LoadedPlaybook, load_text, playbook_files, read_text, set_problems
from connector.store import Run, Store
from connector.store.tables import PlaybookVersion
from connector.usecases.uow import unit_of_work


def version_name(crm: str, account: str, playbook_id: str, version: int) -> str:
    """What problems call a published version in place of a file name."""
    return f"{crm}:{account}/{playbook_id}@{version}"


def parse_account(value: str) -> tuple[str, str]:
    """``CRM:ACCOUNT`` (``hubspot:12345678``) as its two parts; ValueError saying what is expected."""
    crm, colon, account = value.partition(":")
    if not colon or not crm.strip() or not account.strip():
        raise ValueError(f"{value!r}: expected CRM:ACCOUNT, e.g. hubspot:12345678")
    return crm.strip(), account.strip()


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Version:
    """One stored version of an account's playbook."""

    crm: str
    account: str
    playbook_id: str
    version: int
    source: str
    sha256: str
    published_at: datetime
    published_by: str

    @classmethod
    def of(cls, row: PlaybookVersion) -> Version:
        return cls(
            crm=row.crm,
            account=row.account,
            playbook_id=row.playbook_id,
            version=row.version,
            source=row.source,
            sha256=row.sha256,
            published_at=row.published_at,
            published_by=row.published_by,
        )

    @property
    def name(self) -> str:
        return version_name(self.crm, self.account, self.playbook_id, self.version)

    def load(self) -> LoadedPlaybook:
        """The playbook, loaded and checked as a file is; PlaybookError names ``self.name``."""
        return load_text(self.source, self.name)


@dataclass(frozen=True)
class Draft:
    """A file to publish: its text, and what it loaded as (``load_text``/``load_file``)."""

    text: str
    loaded: LoadedPlaybook

    @property
    def sha256(self) -> str:
        return sha256_of(self.text)


def read_drafts(paths: Iterable[Path]) -> list[Draft]:
    """The files under ``paths``, checked exactly as ``offboard validate`` checks them (``load_all``):
    PlaybookError with one ``<file>: <field>: …`` line per problem in any of them."""
    paths = list(paths)
    drafts: list[Draft] = []
    problems: list[str] = []
    files = playbook_files(paths)
    if not files:
        problems.append(f"{', '.join(str(p) for p in paths)}: no playbook files (*.yaml) found")
    for path in files:
        try:
            text = read_text(path)
            drafts.append(Draft(text=text, loaded=load_text(text, str(path))))
        except PlaybookError as exc:
            problems.extend(exc.problems)
    problems.extend(set_problems([draft.loaded for draft in drafts]))
    if problems:
        raise PlaybookError(problems)
    return drafts


@dataclass(frozen=True)
class Published:
    """What publishing one file did: stored a new version, or nothing (the same text is there)."""

    path: str
    playbook_id: str
    version: int
    stored: bool

    @property
    def line(self) -> str:
        if self.stored:
            return f"published {self.playbook_id} v{self.version}  ({self.path})"
        same = "the same text is already the latest version published"
        return f"unchanged {self.playbook_id} v{self.version}: {same}  ({self.path})"


class PublishedPlaybooks:
    """The versions stored for each account, and publishing new ones (in one unit of work)."""

    def __init__(self, store: Store, *, clock: Clock = utcnow) -> None:
        self.store = store
        self.clock = clock

    def publish(self, crm: str, account: str, drafts: list[Draft], *, by: str) -> list[Published]:
        """Store each draft as a new version, all or none: PlaybookError (one line per problem,
        naming the file) stores nothing. A draft whose text is the latest version's is a no-op."""
        try:
            with unit_of_work(self.store, actor=by, clock=self.clock) as uow:
                results, problems = _sort_drafts(uow.session, crm, account, drafts)
                if problems:
                    raise PlaybookError(problems)
                for draft, result in zip(drafts, results, strict=True):
                    if result.stored:
                        _store(uow.session, crm, account, draft, by, uow.now)
                        detail = {"playbook": result.playbook_id, "version": result.version}
                        uow.audit(
                            "playbook.published", crm=crm, account=account, sha256=draft.sha256, detail=detail
                        )
                return results
        except IntegrityError:  # another publish stored one of these versions meanwhile
            raced = f"{crm}:{account}: another publish stored a version meanwhile; nothing was stored"
            raise PlaybookError([f"{raced}, try again"]) from None

    def latest(self, crm: str, account: str) -> list[Version]:
        """The latest version of each of the account's playbooks, by id."""
        newest: dict[str, Version] = {}
        for found in self._versions(crm, account):
            newest[found.playbook_id] = found  # ordered by version: the last one wins
        return [newest[key] for key in sorted(newest)]

    def history(self, crm: str, account: str, playbook_id: str) -> list[Version]:
        """Every stored version of one playbook, oldest first."""
        return [v for v in self._versions(crm, account) if v.playbook_id == playbook_id]

    def get(self, crm: str, account: str, playbook_id: str, version: int | None = None) -> Version | None:
        """One version (the latest when ``version`` is None), or None."""
        found = self.history(crm, account, playbook_id)
        if version is None:
            return found[-1] if found else None
        return next((v for v in found if v.version == version), None)

    def _versions(self, crm: str, account: str) -> list[Version]:
        with self.store.read() as session:
            rows = session.scalars(
                select(PlaybookVersion)
                .where(PlaybookVersion.crm == crm, PlaybookVersion.account == account)
                .order_by(PlaybookVersion.playbook_id, PlaybookVersion.version)
            ).all()
            return [Version.of(row) for row in rows]


def _sort_drafts(
    session: Session, crm: str, account: str, drafts: list[Draft]
) -> tuple[list[Published], list[str]]:
    """Which drafts are new versions and which are already there; the problems that refuse all."""
    stored = _latest_rows(session, crm, account)
    results: list[Published] = []
    problems: list[str] = []
    for draft in drafts:
        book, path = draft.loaded.playbook, draft.loaded.path
        latest = stored.get(book.id)
        same = latest is not None and latest.sha256 == draft.sha256
        results.append(Published(path=path, playbook_id=book.id, version=book.version, stored=not same))
        if latest is not None and not same and book.version <= latest.version:
            problems.append(
                f"{path}: version: {book.version} is not higher than {latest.version}, the latest version of "
                f"{book.id!r} published for {crm}:{account}, and the file differs from it; "
                f"set version: {latest.version + 1}"
            )
        elif not same:
            problems.extend(_unbumped(session, crm, account, draft.loaded))
    problems.extend(_clashes(stored, drafts))
    return results, problems


def _latest_rows(session: Session, crm: str, account: str) -> dict[str, PlaybookVersion]:
    rows = session.scalars(
        select(PlaybookVersion)
        .where(PlaybookVersion.crm == crm, PlaybookVersion.account == account)
        .order_by(PlaybookVersion.version)
    ).all()
    return {row.playbook_id: row for row in rows}


def _unbumped(session: Session, crm: str, account: str, loaded: LoadedPlaybook) -> list[str]:
    """The account's runs of this id and version started with other content (the folder's, say)."""
    book = loaded.playbook
    other = session.scalar(
        select(Run.id)
        .where(
            Run.crm == crm,
            Run.account == account,
            Run.playbook_id == book.id,
            Run.playbook_version == book.version,
            Run.playbook_hash != loaded.hash,
        )
        .limit(1)
    )
    if other is None:
        return []
    return [
        f"{loaded.path}: version: runs of {crm}:{account} started with other content as "
        f"{book.id} v{book.version}; set version: {book.version + 1} so runs tell the two apart"
    ]


def _clashes(stored: dict[str, PlaybookVersion], drafts: list[Draft]) -> list[str]:
    """Two of the account's playbooks (stored or new) that would always match the same deals."""
    new = {draft.loaded.id for draft in drafts}
    kept: list[LoadedPlaybook] = []
    for playbook_id, row in stored.items():
        if playbook_id in new:
            continue
        try:
            kept.append(Version.of(row).load())
        except PlaybookError:
            continue  # a stored version that no longer loads is reported where it is used
    return set_problems(kept + [draft.loaded for draft in drafts])  # the drafts last: lines name them


def _store(session: Session, crm: str, account: str, draft: Draft, by: str, now: datetime) -> None:
    session.add(
        PlaybookVersion(
            crm=crm,
            account=account,
            playbook_id=draft.loaded.id,
            version=draft.loaded.playbook.version,
            source=draft.text,
            sha256=draft.sha256,
            published_at=now,
            published_by=by,
        )
    )
    session.flush()  # a version another publish stored meanwhile fails here, inside the transaction
