"""The address the live generation was rotated from: a replay within seconds from the
same address is a concurrent presentation of the same device, not a thief's.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("sessions", sa.Column("rotated_ip", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("rotated_ip")
