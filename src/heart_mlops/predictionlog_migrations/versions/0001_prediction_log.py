"""The prediction log and the outcomes fed back.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# frozen here: a later change of the feature list is a migration of its own
FEATURES = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
    "thalach", "exang", "oldpeak", "slope", "ca", "thal",
)  # fmt: skip


def upgrade() -> None:
    """Create prediction_log (key: request_id, role) and prediction_outcome (key:
    request_id)."""
    op.create_table(
        "prediction_log",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), primary_key=True),
        sa.Column("correlation_id", sa.String(128)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.Float) for name in FEATURES),
        *(sa.Column(f"{name}_used", sa.Float) for name in FEATURES),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("prediction", sa.SmallInteger, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("latency_ms", sa.Float),
    )
    op.create_index("ix_prediction_log_received_at", "prediction_log", ["received_at"])
    op.create_table(
        "prediction_outcome",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("prediction_outcome")
    op.drop_index("ix_prediction_log_received_at", "prediction_log")
    op.drop_table("prediction_log")
