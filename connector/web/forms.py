"""What a client typed on a survey or referral page, read and checked before any use case sees it."""

from __future__ import annotations

import re
from collections.abc import Mapping

from email_validator import EmailNotValidError, validate_email

from connector.errors import FormProblem
from connector.usecases.feedback import COMMENT_LIMIT, Referred

SCALES = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
# Control characters but tab and newlines: nobody types them, and Postgres refuses NUL outright.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def plain_text(value: object, limit: int) -> str:
    """What a client typed in a free-text field: control characters removed, trimmed, at most ``limit``."""
    return _CONTROL.sub("", str(value)).strip()[:limit]


def comment(form: Mapping[str, str]) -> str:
    return plain_text(form.get("comment", ""), COMMENT_LIMIT)


def score(kind: str, raw: str | None) -> int:
    """The chosen score on the survey's scale, or FormProblem naming the scale."""
    low, high = SCALES[kind]
    try:
        value = int(str(raw))
    except ValueError:
        raise FormProblem({"score": f"choose a score from {low} to {high}"}) from None
    if not low <= value <= high:
        raise FormProblem({"score": f"choose a score from {low} to {high}"})
    return value


def referral(form: Mapping[str, str]) -> Referred:
    """Someone introduced, a testimonial or case study agreed to, or both; FormProblem per field."""

    def text(field: str, limit: int) -> str:
        return plain_text(form.get(field, ""), limit)

    name, email, company, note = (
        text("name", 200),
        text("email", 255),
        text("company", 255),
        text("note", 2000),
    )
    testimonial, case_study = form.get("testimonial") == "yes", form.get("case_study") == "yes"
    errors: dict[str, str] = {}
    if email or name:
        if not name:
            errors["name"] = "give the name of the person you are introducing"
        try:
            # Lower-cased whole: the same person typed twice is one contact.
            email = validate_email(email, check_deliverability=False).normalized.lower()
        except EmailNotValidError as exc:
            errors["email"] = str(exc)
    elif not (testimonial or case_study):
        errors["name"] = "introduce someone, or tick a box below, or both"
    if errors:
        raise FormProblem(errors)
    return Referred(name, email, company, note, testimonial, case_study)
