"""The use cases: what Offboard does, each in one unit of work that owns its transaction.

- ``offboarding``: start an offboarding for a deal, cancel a deal's runs, handle an inbox event.
- ``feedback``: open a personal link, record a survey answer or a referral, a survey's
  answer window closing.
- ``operator``: list, retry and cancel from the command line.
- ``sweep``: queue the deals whose contracts end soon, as events.
- ``performing``: perform one due action through its handler and the CRM's adapter.

State changes go through ``connector.queue``; audit entries through ``UnitOfWork.audit``.
"""
