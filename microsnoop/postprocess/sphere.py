"""ZCA-corr sphering fitted on negative controls, per batch or globally (method.md, "Sphering")."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import kneed
import numpy as np
import pandas as pd

from microsnoop.errors import ConfigError, MicrosnoopError, MissingColumnsError

log = logging.getLogger(__name__)
SCOPES = ("auto", "batch", "centred", "global")
SPECTRA = ("full", "nonzero")
NULL_SPACE_TOL = 1e-10  # eigenvalues below this fraction of the largest are the null space, not the spectrum


class FewControlsWarning(UserWarning):
    """A batch has fewer control rows than features: the transform is regularised, not exact."""


class NoControlsError(MicrosnoopError, ValueError):
    """A batch has no control rows to fit on."""


@dataclass(frozen=True)
class SphereConfig:
    """Which rows are controls, how batches are defined, and the regularisation.

    ``scope="auto"`` (the default) fits one transform per batch only when every batch has at least
    ``auto_min_ratio`` controls per feature (the correlation matrix then has full rank with room to
    spare); else, when every batch has at least ``auto_min_centre`` controls, ``centred``: each batch
    is centred on its own controls' mean (the plate offset) and one whitening is fitted on all the
    centred controls together; else one global transform. The choice and its reason are kept on the fit.
    """

    control_column: str = "Metadata_Compound"
    control_value: str = "DMSO"
    batch_column: str | None = "Metadata_Plate"
    scope: str = "auto"
    reg: float | str = "knee"
    variance_floor: float = 1e-3
    missing_controls: str = "error"
    auto_min_ratio: float = 2.0
    auto_min_centre: int = 3
    knee_spectrum: str = "full"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.scope in ("batch", "centred") and not self.batch_column:
            raise ConfigError(f"scope={self.scope!r} needs a batch_column")
        if not (self.reg == "knee" or (isinstance(self.reg, float | int) and self.reg > 0)):
            raise ConfigError(f"reg must be 'knee' or a positive number, got {self.reg!r}")
        if self.missing_controls not in ("error", "global"):
            raise ConfigError(f"missing_controls must be 'error' or 'global', got {self.missing_controls!r}")
        if self.auto_min_ratio <= 0:
            raise ConfigError(f"auto_min_ratio must be positive, got {self.auto_min_ratio}")
        if self.auto_min_centre < 2:
            raise ConfigError(f"auto_min_centre must be at least 2, got {self.auto_min_centre}")
        if self.knee_spectrum not in SPECTRA:
            raise ConfigError(f"knee_spectrum must be one of {SPECTRA}, got {self.knee_spectrum!r}")


def knee_value(eigenvalues: np.ndarray, *, spectrum: str = "full") -> float:
    """Eigenvalue at the knee of the sorted (descending) spectrum, found by ``kneed`` as in the reference.

    ``kneed.KneeLocator(range(n), T, S=1.0, curve="convex", direction="decreasing")``; ``spectrum="full"``
    passes every eigenvalue, zeros of a rank-deficient matrix included (the reference), ``"nonzero"``
    leaves the null space out. When kneed finds no knee (flat, straight or tiny spectra) the smallest
    non-zero eigenvalue is returned, so the span of the controls is whitened exactly.

    >>> knee_value(np.array([10.0, 5.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1]))
    1.0
    """
    if spectrum not in SPECTRA:
        raise ConfigError(f"spectrum must be one of {SPECTRA}, got {spectrum!r}")
    t = np.sort(np.asarray(eigenvalues, np.float64))[::-1]
    if len(t) == 0:
        return 0.0
    nonzero = t[t > max(t[0], 0.0) * NULL_SPACE_TOL]
    if len(nonzero) == 0:
        return 0.0
    curve = t if spectrum == "full" else nonzero
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")  # kneed warns "no knee/elbow found" and divides by zero on flat curves
        elbow = kneed.KneeLocator(range(len(curve)), curve, S=1.0, curve="convex", direction="decreasing").elbow
    return float(curve[int(elbow)]) if elbow is not None else float(nonzero[-1])


@dataclass
class ZCACorr:
    """One fitted transform: ``(X - mean) @ W.T``."""

    mean: np.ndarray
    w: np.ndarray
    reg: float
    n_controls: int

    @classmethod
    def fit(
        cls,
        controls: np.ndarray,
        *,
        reg: float | str = "knee",
        variance_floor: float = 1e-3,
        name: str = "controls",
        knee_spectrum: str = "full",
    ) -> ZCACorr:
        """Fit on control rows (n x d); ``reg="knee"`` is the knee eigenvalue / 10 (reference)."""
        x = np.asarray(controls, np.float64)
        n, d = x.shape
        if n < 2:
            raise NoControlsError(f"{name}: {n} control row(s); at least 2 are needed to fit sphering")
        if n <= d:
            warnings.warn(
                f"{name}: {n} controls for {d} features; the correlation matrix is singular, so the "
                "transform relies on the regulariser (use scope='global' or fewer features for exact sphering)",
                FewControlsWarning,
                stacklevel=3,
            )
        mean = x.mean(axis=0)
        var = x.var(axis=0, ddof=1)
        std = np.sqrt(np.maximum(var, variance_floor))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.corrcoef(x, rowvar=False)
        r = np.nan_to_num(np.atleast_2d(r), nan=0.0)
        t, g = np.linalg.eigh(r)
        t = np.clip(t, 0.0, None)
        reg_value = knee_value(t, spectrum=knee_spectrum) / 10.0 if reg == "knee" else float(reg)
        if reg == "knee" and reg_value <= t.max() * NULL_SPACE_TOL:
            warnings.warn(
                f"{name}: the knee of the full spectrum lies in the null space ({n} controls for {d} features), "
                "which would give reg ~ 0; using the knee of the non-zero spectrum instead",
                FewControlsWarning,
                stacklevel=3,
            )
            reg_value = knee_value(t, spectrum="nonzero") / 10.0
        reg_value = max(reg_value, 1e-12)
        w = (g * (1.0 / np.sqrt(np.maximum(t, reg_value)))) @ g.T @ np.diag(1.0 / std)
        return cls(mean=mean, w=w, reg=reg_value, n_controls=n)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Apply to rows of ``x``."""
        return (np.asarray(x, np.float64) - self.mean) @ self.w.T


@dataclass
class FittedSphering:
    """Transforms per batch (or one global one), with the scope actually used."""

    config: SphereConfig
    features: list[str]
    transforms: dict[str, ZCACorr] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    scope_reason: str = ""


def choose_scope(df: pd.DataFrame, config: SphereConfig, features: list[str]) -> tuple[str, str]:
    """The scope to fit and why: ``auto`` is per batch only when every batch has enough controls."""
    if config.scope != "auto":
        return config.scope, f"{config.scope} (as asked)"
    if not config.batch_column or config.batch_column not in df.columns:
        return "global", "auto -> global: no batch column"
    is_control = df[config.control_column].astype(str) == str(config.control_value)
    counts = is_control.groupby(df[config.batch_column].astype(str)).sum()
    need = config.auto_min_ratio * len(features)
    fewest, where = int(counts.min()), str(counts.idxmin())
    if fewest >= need:
        return (
            "batch",
            f"auto -> batch: every batch has >= {need:g} controls "
            f"({config.auto_min_ratio:g} x {len(features)} features; fewest {fewest})",
        )
    if fewest >= config.auto_min_centre:
        return "centred", (
            f"auto -> centred: batch {where!r} has {fewest} controls, fewer than {config.auto_min_ratio:g} x "
            f"{len(features)} features (per-batch fits would rest on the regulariser); each batch is centred on "
            "its controls and one whitening is fitted on all of them"
        )
    return "global", (
        f"auto -> global: batch {where!r} has {fewest} controls, fewer than {config.auto_min_centre} to centre "
        f"a batch on (and than {config.auto_min_ratio:g} x {len(features)} features for per-batch fits)"
    )


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Columns that are not ``Metadata_*``."""
    return [c for c in df.columns if not str(c).startswith("Metadata_")]


def fit_sphering(df: pd.DataFrame, config: SphereConfig, features: list[str] | None = None) -> FittedSphering:
    """Fit on the control rows: one transform per batch, one for all, or (``auto``) chosen by :func:`choose_scope`."""
    batch = [config.batch_column] if config.scope != "global" and config.batch_column else []
    needed = [config.control_column, *batch]
    absent = [c for c in needed if c not in df.columns]
    if absent:
        raise MissingColumnsError(
            f"the profiles lack {absent}; available metadata: {[c for c in df.columns if c.startswith('Metadata_')]}; "
            "name the right ones with --control-column/--batch-column (or --scope global)"
        )
    features = features or feature_columns(df)
    scope, reason = choose_scope(df, config, features)
    config = replace(config, scope=scope)
    log.info("sphering scope %s", reason)
    is_control = df[config.control_column].astype(str) == str(config.control_value)
    fitted = FittedSphering(config=config, features=features, scope_reason=reason)
    controls = df.loc[is_control, features].to_numpy()

    def fit(x: np.ndarray, name: str) -> ZCACorr:
        return ZCACorr.fit(
            x, reg=config.reg, variance_floor=config.variance_floor, name=name, knee_spectrum=config.knee_spectrum
        )

    if config.scope == "global" or config.missing_controls == "global":
        if len(controls) == 0:
            raise NoControlsError(
                f"no rows with {config.control_column} == {config.control_value!r}; check the control name"
            )
        fitted.transforms["__global__"] = fit(controls, "all batches")
    if config.scope == "centred":
        assert config.batch_column is not None
        fitted.transforms.update(_fit_centred(df, is_control, features, config, fitted, fit))
    if config.scope == "batch":
        assert config.batch_column is not None
        for batch, rows in df.groupby(df[config.batch_column].astype(str)):
            ctrl = rows.loc[is_control.loc[rows.index], features].to_numpy()
            if len(ctrl) < 2:
                if config.missing_controls == "error":
                    raise NoControlsError(
                        f"batch {batch!r}: {len(ctrl)} control rows ({config.control_column} == "
                        f"{config.control_value!r}); add controls, use scope='global', or missing_controls='global'"
                    )
                warnings.warn(
                    f"batch {batch!r} has no controls: using the global transform", FewControlsWarning, stacklevel=2
                )
                fitted.fallbacks.append(str(batch))
                continue
            fitted.transforms[str(batch)] = fit(ctrl, f"batch {batch!r}")
    return fitted


def _fit_centred(
    df: pd.DataFrame,
    is_control: pd.Series,
    features: list[str],
    config: SphereConfig,
    fitted: FittedSphering,
    fit: Callable[[np.ndarray, str], ZCACorr],
) -> dict[str, ZCACorr]:
    """Per batch: its controls' mean; one whitening fitted on every batch's controls minus their batch mean."""
    assert config.batch_column is not None
    means: dict[str, tuple[np.ndarray, int]] = {}
    centred = []
    for batch, rows in df.groupby(df[config.batch_column].astype(str)):
        ctrl = rows.loc[is_control.loc[rows.index], features].to_numpy(np.float64)
        if len(ctrl) < 2:
            if config.missing_controls == "error":
                raise NoControlsError(
                    f"batch {batch!r}: {len(ctrl)} control rows ({config.control_column} == "
                    f"{config.control_value!r}) to centre on; add controls, use scope='global', or "
                    "missing_controls='global'"
                )
            warnings.warn(
                f"batch {batch!r} has no controls: using the global transform", FewControlsWarning, stacklevel=3
            )
            fitted.fallbacks.append(str(batch))
            continue
        mean = ctrl.mean(axis=0)
        means[str(batch)] = (mean, len(ctrl))
        centred.append(ctrl - mean)
    if not centred:
        raise NoControlsError(f"no batch has 2 or more rows with {config.control_column} == {config.control_value!r}")
    pooled = fit(np.concatenate(centred), "controls centred per batch")
    return {b: ZCACorr(mean=m + pooled.mean, w=pooled.w, reg=pooled.reg, n_controls=n) for b, (m, n) in means.items()}


def apply_sphering(df: pd.DataFrame, fitted: FittedSphering) -> pd.DataFrame:
    """Sphere every row with its batch's transform (metadata columns kept, order kept)."""
    out = df.copy()
    values = df[fitted.features].to_numpy(np.float64)
    result = np.empty_like(values)
    if fitted.config.scope == "global":
        result[:] = fitted.transforms["__global__"].transform(values)
    else:
        batches = df[fitted.config.batch_column].astype(str).to_numpy()
        for batch in np.unique(batches):
            sel = batches == batch
            transform = fitted.transforms.get(batch) or fitted.transforms.get("__global__")
            if transform is None:
                raise NoControlsError(f"batch {batch!r} was not seen when fitting; refit on data that includes it")
            result[sel] = transform.transform(values[sel])
    if not np.isfinite(result).all():
        raise FloatingPointError("sphering produced non-finite values; check the input features for NaN/Inf")
    out[fitted.features] = result
    return out


def save_sphering(path: Path, fitted: FittedSphering) -> Path:
    """Write a fitted sphering as ``.npz`` arrays plus JSON metadata (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    batches = list(fitted.transforms)
    for i, name in enumerate(batches):
        t = fitted.transforms[name]
        arrays[f"mean_{i}"], arrays[f"w_{i}"] = t.mean, t.w
    meta = {
        "config": asdict(fitted.config),
        "features": fitted.features,
        "batches": batches,
        "reg": [fitted.transforms[b].reg for b in batches],
        "n_controls": [fitted.transforms[b].n_controls for b in batches],
        "fallbacks": fitted.fallbacks,
        "scope_reason": fitted.scope_reason,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_sphering(path: Path) -> FittedSphering:
    """Read a sphering written by :func:`save_sphering`."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        transforms = {
            b: ZCACorr(z[f"mean_{i}"], z[f"w_{i}"], meta["reg"][i], meta["n_controls"][i])
            for i, b in enumerate(meta["batches"])
        }
    return FittedSphering(
        SphereConfig(**meta["config"]), meta["features"], transforms, meta["fallbacks"], meta.get("scope_reason", "")
    )
