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

from dataclasses import dataclass, replace

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
        return replace(contract, protocol=protocol, normalize_before_pad=False, canvas="fixed", pooling="all")
    return replace(contract, protocol=protocol, normalize_before_pad=True)


def protocol_defaults(protocol: str) -> ProtocolDefaults:
    """Border rule, border skipping and empty-image handling that ``protocol`` implies."""
    return _DEFAULTS[check_protocol(protocol)]


def with_embedding_options(
    contract: PreprocessContract, *, canvas: str | None = None, pooling: str | None = None
) -> PreprocessContract:
    """The contract with its canvas and/or pooling replaced (``None`` keeps the stored choice).

    >>> with_embedding_options(PreprocessContract(), canvas="crop", pooling="valid").canvas
    'crop'
    """
    return replace(
        contract,
        canvas=contract.canvas if canvas is None else canvas,
        pooling=contract.pooling if pooling is None else pooling,
    )
