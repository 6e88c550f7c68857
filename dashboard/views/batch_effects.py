"""Batch effects: controls and treatments before and after sphering, coloured by plate."""

import altair as alt
import streamlit as st

from dashboard import common
from services.browse import batch

st.title("Batch effects")
s = common.settings()
fs = common.store(s)
summ = common.store_summary(s, fs)
level, version = common.pick_level_and_version(summ, key="batch", levels=("image", "cell"))
control = st.text_input("Control compound", "DMSO", key="batch-control")
with st.spinner("Sphering..."):
    result = common.attempt(batch.sphere_views, fs, level, version, control_value=control)
for note in result.notes:
    st.warning(note, icon=":material/info:")
st.caption(f"Sphering fitted on {result.fit_on}; both maps are PCA of L2-normalised embeddings.")

columns = st.columns(2)
for column, stage in zip(columns, ("before", "after"), strict=True):
    rows = result.frame[result.frame["stage"] == stage]
    chart = (
        alt.Chart(rows[["x", "y", "role", "entity_id", result.colour_by]].astype({result.colour_by: str}))
        .mark_point(filled=True, size=40)
        .encode(
            x=alt.X("x:Q", title="PC 1"),
            y=alt.Y("y:Q", title="PC 2"),
            color=alt.Color(f"{result.colour_by}:N", title=result.colour_by),
            shape=alt.Shape("role:N", title="role"),
            tooltip=["entity_id", result.colour_by, "role"],
        )
        .properties(title=f"{stage} sphering", height=380)
    )
    column.altair_chart(chart, width="stretch")
