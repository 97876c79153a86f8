"""Heliox 0.1: the schema every database had before versioned migrations.

An unversioned database with Heliox tables is stamped with this revision, then upgraded.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # the 0.1 tables exist already (a fresh database is created at head, not from here)
