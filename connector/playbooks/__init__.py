"""Playbooks: the language (model), loading and checking (loader), and templates."""
