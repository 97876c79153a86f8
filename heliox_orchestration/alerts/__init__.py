"""Alerts: the alert kinds (one registry entry each), their Block Kit messages, the alert ledger
and delivery, and the alert jobs. Importing the package registers every kind (``catalog``), so
the ledger always knows every key it is given."""

from heliox_orchestration.alerts import catalog

__all__ = ["catalog"]
