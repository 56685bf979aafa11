"""Canary and shadow: a version that takes a share of the traffic, one that answers in the background.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registry_models") as batch:
        batch.add_column(sa.Column("canary", sa.String(200), nullable=True))
        batch.add_column(sa.Column("canary_percent", sa.Float, nullable=True))
        batch.add_column(sa.Column("shadow", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registry_models") as batch:
        for column in ("shadow", "canary_percent", "canary"):
            batch.drop_column(column)
