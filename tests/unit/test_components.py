"""The component set: one typed field per stage, each a KFP component named after its stage."""

from __future__ import annotations

from dataclasses import fields

import pytest

from components import STAGES, Components, build_components, stage_function, stage_of


def test_components_have_one_field_per_stage_in_order() -> None:
    assert [f.name for f in fields(Components)] == ["image", *STAGES]


def test_built_components_run_in_the_image_and_know_their_stage() -> None:
    built = build_components("registry.example/microsnoop:1.2")
    assert built.image == "registry.example/microsnoop:1.2"
    for stage in STAGES:
        component = getattr(built, stage)
        assert stage_of(component) == stage
        assert component.component_spec.implementation.container.image == "registry.example/microsnoop:1.2"
    with pytest.raises(KeyError, match="unknown stage"):
        stage_function("train")
    with pytest.raises(AttributeError):
        built.train  # type: ignore[attr-defined]  # noqa: B018
