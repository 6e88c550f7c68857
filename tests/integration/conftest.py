"""Session fixtures that start real servers (embedded PostgreSQL, S3 via `weed mini`, MLflow on SQLite)."""
