"""Playbooks: the language (model), loading and checking (loader, messages, roles), the
running set (registry), templates and their sandbox with hard limits, and the checklist
coverage table (coverage)."""
