"""Preprocessing protocols: the published reference end to end, or this project's default.

=====================  ==========================================  =========================================
step                   ``reference`` (the authors' public code)    ``default`` (this project)
=====================  ==========================================  =========================================
percentile normalise   after zero-padding to the input size        before padding (padding stays 0)
cell-region border     skip cells touching the top or left edge    keep every cell (``--skip-border``: all
                                                                   four edges)
images with no cells   a zero vector                               dropped and counted
rescale mode           bilinear, no anti-aliasing                  bilinear with anti-aliasing
tile mode              tiles narrower than the input not padded    every tile padded to the input size
=====================  ==========================================  =========================================

Sphering and the NSCB rule are evaluation steps, not preprocessing: the knee is kneed's under both, the
NSCB rule of the bbbc021 suites is the reference's, and the bbbc021-profiles suite scores the reference's
global sphering beside the default ``scope="auto"``. ``docs/method-fidelity.md`` lists every departure
and its measured effect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from microsnoop.config import PreprocessContract
from microsnoop.errors import ConfigError

PROTOCOLS = ("default", "reference")


@dataclass(frozen=True)
class ProtocolDefaults:
    """Profiling choices a protocol implies (each can still be set explicitly)."""

    skip_border: bool
    border_rule: str
    empty: str


_DEFAULTS = {
    "default": ProtocolDefaults(skip_border=False, border_rule="four-sides", empty="drop"),
    "reference": ProtocolDefaults(skip_border=True, border_rule="top-left", empty="zero"),
}


def check_protocol(protocol: str) -> str:
    """Return ``protocol`` if it is known, else raise a one-line error naming the choices."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return protocol


def contract_for_protocol(contract: PreprocessContract, protocol: str) -> PreprocessContract:
    """The contract with its protocol (and the normalisation order it implies) set.

    >>> contract_for_protocol(PreprocessContract(), "reference").normalize_before_pad
    False
    """
    check_protocol(protocol)
    if protocol == "reference":
        return replace(
            contract,
            protocol=protocol,
            normalize_before_pad=False,
            canvas="fixed",
            pooling="all",
            intensity="crop",
            intensity_levels=(),
        )
    return replace(contract, protocol=protocol, normalize_before_pad=True)


def protocol_defaults(protocol: str) -> ProtocolDefaults:
    """Border rule, border skipping and empty-image handling that ``protocol`` implies."""
    return _DEFAULTS[check_protocol(protocol)]


def with_embedding_options(
    contract: PreprocessContract,
    *,
    canvas: str | None = None,
    pooling: str | None = None,
    intensity: str | None = None,
) -> PreprocessContract:
    """The contract with its canvas, pooling and/or intensity scale replaced (``None`` keeps the stored choice).

    A new intensity scale drops the stored levels (``dataset`` levels are fitted on the images to embed).

    >>> with_embedding_options(PreprocessContract(), canvas="crop", pooling="valid").canvas
    'crop'
    """
    new_scale = intensity is not None and intensity != contract.intensity
    return replace(
        contract,
        canvas=contract.canvas if canvas is None else canvas,
        pooling=contract.pooling if pooling is None else pooling,
        intensity=contract.intensity if intensity is None else intensity,
        intensity_levels=() if new_scale else contract.intensity_levels,
    )


def levels_of_run(contract: PreprocessContract, run_json: Path) -> PreprocessContract:
    """The contract with the ``dataset`` intensity levels recorded in an earlier run's ``run.json``."""
    try:
        recorded = json.loads(Path(run_json).read_text())["contract"]
        levels = recorded.get("intensity_levels") or ()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{run_json}: not a run.json of microsnoop embed ({exc}); pass the run folder's run.json"
        ) from exc
    if recorded.get("intensity") != "dataset" or not levels:
        used = recorded.get("intensity", "crop")
        raise ConfigError(f"{run_json}: that run used intensity {used!r}, so it has no levels to reuse")
    try:
        return replace(contract, intensity="dataset", intensity_levels=tuple((lo, hi) for lo, hi in levels))
    except (TypeError, ValueError) as exc:  # not (low, high) pairs of numbers
        raise ConfigError(f"{run_json}: intensity_levels {levels!r} are not (low, high) pairs ({exc})") from exc
