"""Usage rows get the FOCUS PricingCategory (nullable: NULL = not known).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COMMENT = "FOCUS PricingCategory: Standard | Committed | Dynamic | Other; NULL = not known"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table in ("gpu_usage_hourly", "gpu_usage_pending"):
        if "pricing_category" not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column("pricing_category", sa.String(16), nullable=True, comment=COMMENT))
