"""Salesforce: outbound messages and Flow callouts in; Tasks, notes and field updates out.

``plugin`` is what the core finds (``PLUGIN``). ``inbound`` serves the two
endpoints with ``outbound`` and ``flow``, which parse what Salesforce sends and
import no SDK; ``adapter`` imports simple-salesforce, only when it is built.
"""

from __future__ import annotations

from adapters.salesforce.plugin import PLUGIN

__all__ = ["PLUGIN"]
