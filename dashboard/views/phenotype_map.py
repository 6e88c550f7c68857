"""Phenotype map: UMAP or PCA of cell, image or treatment embeddings; selected points show thumbnails."""

import altair as alt
import streamlit as st

from dashboard import common
from services.browse import projection

st.title("Phenotype map")
s = common.settings()
fs = common.store(s)
summ = common.store_summary(s, fs)
level, version = common.pick_level_and_version(summ, key="map")
method = st.radio(
    "Projection", projection.METHODS, horizontal=True, key="map-method", format_func=str.upper,
    help="Computed once per model version and cached on disk; a new publish recomputes it.",
)  # fmt: skip
with st.spinner(f"Projecting {common.LEVEL_NAMES[level]} with {method.upper()} (once per model version)..."):
    points = common.attempt(common.embedding_map, common.settings_key(s), fs, s, level, version, method)
choices = projection.colour_columns(points) or ["entity_id"]
colour = st.selectbox("Colour by", choices, key="map-colour")
st.caption(f"{len(points):,} {common.LEVEL_NAMES[level]} of {version}. Click or shift-click points to see them.")

pick = alt.selection_point(name="pick", fields=["entity_id"], on="click", toggle="true")
tooltip = [c for c in ("entity_id", "label", "plate", "compound", "moa", "image_id") if c in points.columns]
chart = (
    alt.Chart(points[["x", "y", colour, *[t for t in tooltip if t != colour]]].astype({colour: str}))
    .mark_circle(size=40)
    .encode(
        x=alt.X("x:Q", title=f"{method.upper()} 1"),
        y=alt.Y("y:Q", title=f"{method.upper()} 2"),
        color=alt.Color(f"{colour}:N", title=colour),
        opacity=alt.condition(pick, alt.value(0.95), alt.value(0.35)),
        tooltip=tooltip,
    )
    .add_params(pick)
)
event = st.altair_chart(chart, on_select="rerun", key="map-chart", width="stretch")
selected = [p["entity_id"] for p in (event.selection.get("pick") or []) if "entity_id" in p] if event else []
ids = list(points["entity_id"].astype(str))
extra = st.multiselect("Or pick entities", ids, key="map-picked", max_selections=24)
chosen = list(dict.fromkeys([*selected, *extra]))
sample = points.iloc[0].to_dict()
view = common.thumbnail_controls(s, sample)
if chosen:
    st.subheader(f"{len(chosen)} selected")
    rows = points.set_index(points["entity_id"].astype(str)).loc[chosen[:24]].reset_index(drop=True)
    common.thumbnail_grid(s, rows.to_dict("records"), view, columns=6)
else:
    st.info("Select points on the map (or pick entities above) to see their thumbnails.")
