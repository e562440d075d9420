"""Playbooks: the language (model), loading and checking (loader, messages, roles), the
running set (registry), each account's own published versions (published, accounts),
templates and their sandbox with hard limits, and the checklist coverage table (coverage)."""
