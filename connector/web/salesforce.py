"""Inbound salesforce events: verify, store, answer. The salesforce adapter owns parsing and verifying."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("salesforce", __name__, url_prefix="/webhooks/salesforce")
