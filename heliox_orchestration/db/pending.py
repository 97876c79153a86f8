"""Moved to ``heliox_orchestration.ingest.pending``; kept only until ``assets/`` imports it from
there (issue 13: the asset modules are being rewritten on another branch). Delete then."""

from heliox_orchestration.ingest.pending import release_due_usage

__all__ = ["release_due_usage"]
