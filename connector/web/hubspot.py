"""Inbound hubspot events: verify, store, answer. The hubspot adapter owns parsing and verifying."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("hubspot", __name__, url_prefix="/webhooks/hubspot")
