"""What `heart-mlops monitor` writes: one row per window and served version, one per feature.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# frozen here: a later change is a migration of its own
LIVE = ("roc_auc", "brier", "calibration_intercept", "calibration_slope")


def _with_interval(prefix: str, name: str) -> list[sa.Column]:
    return [sa.Column(f"{prefix}{name}{part}", sa.Float) for part in ("", "_low", "_high")]


def upgrade() -> None:
    """Create monitoring_window (key: id; unique: window_start, window_end, model_version) and
    monitoring_feature (key: window_id, feature)."""
    op.create_table(
        "monitoring_window",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("monitored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("summarised", sa.Boolean, nullable=False),
        sa.Column("predictions", sa.Integer, nullable=False),
        sa.Column("outcomes", sa.Integer, nullable=False),
        sa.Column("positive_rate", sa.Float),
        sa.Column("drift_share", sa.Float),
        sa.Column("dataset_drift", sa.Boolean, nullable=False),
        sa.Column("drift_reason", sa.Text, nullable=False),
        sa.Column("drifted_features", sa.Text, nullable=False),
        *(column for name in LIVE for column in _with_interval("live_", name)),
        *(sa.Column(f"holdout_{name}", sa.Float) for name in LIVE),
        sa.Column("challenger_version", sa.String(32)),
        sa.Column("shadow_rows", sa.Integer),
        sa.Column("agreement", sa.Float),
        *_with_interval("challenger_", "roc_auc"),
        *_with_interval("challenger_", "brier"),
        sa.Column("triggered", sa.Boolean, nullable=False),
        sa.Column("trigger_reason", sa.Text, nullable=False),
        sa.Column("report_uri", sa.Text),
        sa.Column("summary_uri", sa.Text),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.UniqueConstraint(
            "window_start", "window_end", "model_version", name="uq_monitoring_window"
        ),
    )
    op.create_index("ix_monitoring_window_window_end", "monitoring_window", ["window_end"])
    op.create_table(
        "monitoring_feature",
        sa.Column(
            "window_id",
            sa.Integer,
            sa.ForeignKey("monitoring_window.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("feature", sa.String(32), primary_key=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("method", sa.String(64)),
        sa.Column("drift_score", sa.Float),
        sa.Column("value_drifted", sa.Boolean, nullable=False),
        sa.Column("missing_share", sa.Float, nullable=False),
        sa.Column("reference_missing_share", sa.Float, nullable=False),
        sa.Column("missing_p_value", sa.Float, nullable=False),
        sa.Column("missing_drifted", sa.Boolean, nullable=False),
        sa.Column("drifted", sa.Boolean, nullable=False),
    )
    op.create_index("ix_monitoring_feature_window_end", "monitoring_feature", ["window_end"])
    if op.get_bind().dialect.name == "postgresql":
        # aggregates only, readable by every role that may connect to this database (the
        # stack's Grafana login); the patient-level log stays its owner's
        op.execute("GRANT SELECT ON monitoring_window, monitoring_feature TO PUBLIC")


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_monitoring_feature_window_end", "monitoring_feature")
    op.drop_table("monitoring_feature")
    op.drop_index("ix_monitoring_window_window_end", "monitoring_window")
    op.drop_table("monitoring_window")
