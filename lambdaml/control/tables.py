"""The records database's tables, in one place: what `Records` and `Tokens` read and write.

``metadata.create_all`` adds a table missing from an older database; a change to an
existing table's columns raises ``SCHEMA_VERSION`` (``Records`` refuses a database
made by a newer lambdaml).
"""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 1

# Plain JSON, not JSONB: JSONB reorders a model's output keys, and nothing queries inside these columns.
JSON = sa.JSON(none_as_null=True)
ROW_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements only INTEGER keys

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("model", sa.String),
    sa.Column("version", sa.String),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("input", JSON),
    sa.Column("output", JSON),
    sa.Column("logs", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.String),
    sa.Column("started_at", sa.String),
    sa.Column("completed_at", sa.String),
    sa.Column("metrics", JSON),
    sa.Column("urls", JSON),
    sa.Column("deadline", sa.String),
    sa.Column("data_removed", sa.Boolean, nullable=False),
    sa.Column("webhook", sa.Text),
    sa.Column("webhook_events_filter", JSON),
    # Private columns, never in a public record:
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.Column("updated_ts", sa.Float, nullable=False),
    sa.Column("heartbeat_ts", sa.Float),
    sa.Column("replica", sa.String),
    sa.Column("cancel_reason", sa.Text),
    sa.Column("input_hash", sa.String),
    sa.Column("token_id", sa.String),
    sa.Index("predictions_created", "created_ts", "id"),
    sa.Index("predictions_model_created", "model", "created_ts", "id"),
    sa.Index("predictions_status", "status"),  # the reaper looks for the few unfinished ones
)
deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String, sa.ForeignKey("predictions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("event", sa.String, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("state", sa.String, nullable=False),  # pending, sent, failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_ts", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.Index("webhook_deliveries_due", "state", "next_attempt_ts"),
    sqlite_autoincrement=True,  # ids are never reused: they are part of the webhook-id receivers dedupe on
)
settings = sa.Table(
    "settings", metadata, sa.Column("key", sa.String, primary_key=True), sa.Column("value", sa.Text, nullable=False)
)
schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))
tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String, primary_key=True),  # shown and used to revoke; never the token
    sa.Column("name", sa.String, nullable=False),
    sa.Column("role", sa.String, nullable=False),  # "predict" or "admin"
    sa.Column("hash", sa.String, nullable=False, unique=True),  # SHA-256 of the token: random tokens need no salt
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("last_used_ts", sa.Float),
    sa.Column("revoked_at", sa.String),
)
# The models the cluster runs and every version deployed, as /v1 describes them (Replicate's models API),
# written at deploy time so that describing a model never loads its code or wakes a replica.
models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("version", sa.String, nullable=False),  # the one running now
    sa.Column("visibility", sa.String, nullable=False),  # "private" or "public"
    sa.Column("deployed_at", sa.String, nullable=False),
    sa.Column("deleted_at", sa.String),  # deleted models stay, so their records keep a model to point to
)
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("model", sa.String, primary_key=True),
    sa.Column("version", sa.String, primary_key=True),
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("openapi", JSON),  # the model's OpenAPI document (None for artifacts made before it was kept)
)
# Files uploaded through /v1/files (Replicate's files API: the official clients upload local files given as inputs).
uploads = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String, primary_key=True),  # random: knowing it is part of being allowed to use the file
    sa.Column("name", sa.String, nullable=False),
    sa.Column("content_type", sa.String, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String, nullable=False),
    sa.Column("md5", sa.String, nullable=False),
    sa.Column("file_metadata", JSON),
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("expires_ts", sa.Float, nullable=False),
    sa.Column("token_id", sa.String),  # the token that uploaded it: only it (or an admin) may use it
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Index("files_expires", "expires_ts"),
)
# One row per model replica: when it started and last said it was up, and the Ray resources it held
# (lambdaml.serve.presence). `lambdaml cost` prices these spans (lambdaml.cost.actual).
replica_spans = sa.Table(
    "replica_spans",
    metadata,
    sa.Column("replica", sa.String, primary_key=True),
    sa.Column("model", sa.String, nullable=False),
    sa.Column("version", sa.String, nullable=False),
    sa.Column("resources", JSON),  # {"CPU": 1, "GPU": 1, "accelerator_type:A100": 0.001}
    sa.Column("started_ts", sa.Float, nullable=False),
    sa.Column("seen_ts", sa.Float, nullable=False),
    sa.Index("replica_spans_seen", "seen_ts"),
)
