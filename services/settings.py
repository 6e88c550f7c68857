"""One settings object for the platform, read from ``MICROSNOOP_*`` environment variables at call time.

Every service takes a :class:`PlatformSettings`; on a laptop the defaults point at embedded servers under
``data_dir`` and in a cluster the same code points at real PostgreSQL, MLflow, S3 and KFP.

===============================  ==========================================================  ======================
Variable                         Meaning                                                     Default
===============================  ==========================================================  ======================
MICROSNOOP_DATA_DIR              where embedded services keep their state (made absolute)   checkout's ``runs/platform``
MICROSNOOP_PG_DSN                PostgreSQL DSN (pgvector installed); empty = embedded       embedded server
MICROSNOOP_MLFLOW_URI            MLflow tracking URI; empty = SQLite under data_dir          ``sqlite:///...``
MICROSNOOP_MLFLOW_ARTIFACTS      artifact root for new experiments (``s3://`` in a cluster)  ``data_dir/mlartifacts``
MICROSNOOP_MODEL_NAME            registered model name                                       ``microsnoop-encoder``
MICROSNOOP_STORAGE_URI           object store root: ``file:///path`` or ``s3://bucket/pfx``  ``file://data_dir/store``
MICROSNOOP_S3_ENDPOINT           S3 endpoint host:port for ``s3://`` URIs                    ``127.0.0.1:9000``
MICROSNOOP_S3_ACCESS_KEY         S3 access key (or AWS_ACCESS_KEY_ID)                        none
MICROSNOOP_S3_SECRET_KEY         S3 secret key (or AWS_SECRET_ACCESS_KEY)                    none
MICROSNOOP_S3_SECURE             use TLS for S3 (``true``/``false``)                         ``false``
MICROSNOOP_S3_REGION             S3 region                                                   none
MICROSNOOP_IMAGE                 container image the compiled pipeline steps run            ``microsnoop:0.1.0``
MICROSNOOP_KFP_HOST              Kubeflow Pipelines API URL for ``pipeline submit``          none
MICROSNOOP_GPU_LIMIT             GPUs requested by pretrain and embed steps (0 = none)      ``1``
MICROSNOOP_GPU_NODE_SELECTOR     ``key=value`` node selector for GPU steps                  none
MICROSNOOP_GPU_TOLERATION        ``key=value:Effect`` toleration for GPU steps              none
MICROSNOOP_SHARD_PARALLELISM     most profiling shards segmented/embedded at once (KFP      ``4``
                                 ParallelFor limit, fixed at compile time; 0 = no limit)
MICROSNOOP_STEPS_SECRET_NAME     Secret whose MICROSNOOP_* keys every compiled step gets     none
                                 as environment variables (service DSNs and S3 keys)
MICROSNOOP_AMP                   autocast of the steps that run the network (auto, bf16,     ``auto``: bf16 only on
                                 fp16, off)                                                  AMX CPUs and GPUs
MICROSNOOP_SEARCH_API_KEYS       file of hashed search-API keys, re-read when it changes     none: open, loopback
                                 (format in services/search_auth.py)                         only
===============================  ==========================================================  ======================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from microsnoop import __version__
from microsnoop.config import check_amp

PREFIX = "MICROSNOOP_"


class SettingsError(ValueError):
    """A MICROSNOOP_* variable holds a value that cannot be used."""


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{PREFIX}{name}={value!r} is not a boolean; use true or false")


def default_data_dir() -> Path:
    """``runs/platform`` of the source checkout (absolute), else ``$XDG_DATA_HOME/microsnoop``."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "microsnoop").is_dir():
        return checkout / "runs" / "platform"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "microsnoop"


@dataclass(frozen=True)
class PlatformSettings:
    """Where the platform's services live; build with :func:`load_settings`."""

    data_dir: Path = field(default_factory=default_data_dir)
    pg_dsn: str = ""
    mlflow_uri: str = ""
    mlflow_artifacts: str = ""
    model_name: str = "microsnoop-encoder"
    storage_uri: str = ""
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = False
    s3_region: str = ""
    image: str = f"microsnoop:{__version__}"
    kfp_host: str = ""
    gpu_limit: int = 1
    gpu_node_selector: str = ""
    gpu_toleration: str = ""
    shard_parallelism: int = 4
    steps_secret_name: str = ""
    search_api_keys: str = ""
    amp: str = "auto"

    def __post_init__(self) -> None:
        try:
            check_amp(self.amp)
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}AMP: {exc}") from exc
        # absolute at once: a relative folder would silently open another, empty database elsewhere
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())
        if self.gpu_limit < 0:
            raise SettingsError(f"{PREFIX}GPU_LIMIT must be >= 0, got {self.gpu_limit}")
        if self.shard_parallelism < 0:
            raise SettingsError(f"{PREFIX}SHARD_PARALLELISM must be >= 0 (0 = no limit), got {self.shard_parallelism}")
        if self.storage_uri and not self.storage_uri.startswith(("file://", "s3://")):
            raise SettingsError(f"{PREFIX}STORAGE_URI={self.storage_uri!r} must start with file:// or s3://")

    @property
    def embedded_postgres(self) -> bool:
        """True when no DSN is set and the platform starts its own PostgreSQL."""
        return not self.pg_dsn

    @property
    def pg_data_dir(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.data_dir.resolve() / "postgres"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: the configured one or a SQLite file under data_dir."""
        return self.mlflow_uri or f"sqlite:///{self.data_dir.resolve() / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        """Artifact location for new MLflow experiments."""
        return self.mlflow_artifacts or (self.data_dir.resolve() / "mlartifacts").as_uri()

    @property
    def store_uri(self) -> str:
        """Object store root URI."""
        return self.storage_uri or (self.data_dir.resolve() / "store").as_uri()

    def with_data_dir(self, data_dir: Path) -> PlatformSettings:
        """The same settings with another data_dir (tests and demos)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["data_dir"] = Path(data_dir)
        return PlatformSettings(**values)


def load_settings(environ: Mapping[str, str] | None = None) -> PlatformSettings:
    """Read PlatformSettings from MICROSNOOP_* variables (``os.environ`` when none is given)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(PlatformSettings):
        key = PREFIX + f.name.upper()
        if key not in env:
            continue
        raw = env[key]
        if f.name == "data_dir":
            values[f.name] = Path(raw)
        elif f.name == "s3_secure":
            values[f.name] = _parse_bool(f.name.upper(), raw)
        elif f.name in ("gpu_limit", "shard_parallelism"):
            try:
                values[f.name] = int(raw)
            except ValueError as exc:
                raise SettingsError(f"{key}={raw!r} is not an integer") from exc
        else:
            values[f.name] = raw
    if "s3_access_key" not in values and env.get("AWS_ACCESS_KEY_ID"):
        values["s3_access_key"] = env["AWS_ACCESS_KEY_ID"]
    if "s3_secret_key" not in values and env.get("AWS_SECRET_ACCESS_KEY"):
        values["s3_secret_key"] = env["AWS_SECRET_ACCESS_KEY"]
    return PlatformSettings(**values)  # type: ignore[arg-type]


def settings_or_env(settings: PlatformSettings | None) -> PlatformSettings:
    """``settings`` when given, else :func:`load_settings` (what pipeline steps do in a container)."""
    return settings if settings is not None else load_settings()
