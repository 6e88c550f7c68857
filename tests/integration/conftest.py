"""Session fixtures that start real servers (embedded PostgreSQL, S3 via `weed mini`, MLflow on SQLite)."""

from tests.integration._mlflow import mlflow_module_settings, mlflow_settings  # noqa: F401
from tests.integration._postgres import pg_dsn, pg_settings, pg_tmp_dir  # noqa: F401
from tests.integration._s3 import s3_server  # noqa: F401
