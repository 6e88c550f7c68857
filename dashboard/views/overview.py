"""Overview: what the store holds, the registered model versions, data sets and pipeline runs."""

import streamlit as st

from dashboard import common
from services.browse import overview

st.title("Microsnoop platform")
s = common.settings()
fs = common.store(s)
summ = common.attempt(common.summary, common.settings_key(s), fs)

st.subheader("Feature store")
cols = st.columns(4)
cols[0].metric("Cells", f"{summ.counts.get('cell', 0):,}")
cols[1].metric("Images", f"{summ.counts.get('image', 0):,}")
cols[2].metric("Treatments", f"{summ.counts.get('treatment', 0):,}")
cols[3].metric("Model versions in store", len(summ.all_versions()))
if summ.empty:
    st.info(
        "The feature store is empty: no embeddings are published yet. Run 'make demo' or the profiling "
        "pipeline to fill it; the other pages need published embeddings.",
        icon=":material/inventory_2:",
    )
st.caption(f"Data dir `{s.data_dir}` · MLflow `{s.tracking_uri}` · object store `{s.store_uri}`")

st.subheader("Model versions")
versions = common.attempt(overview.model_versions, s, summ)
if len(versions):
    st.dataframe(versions, hide_index=True, width="stretch")
else:
    st.info(f"No encoder is registered under '{s.model_name}' yet; 'make demo' registers one.")

left, right = st.columns(2)
with left:
    st.subheader("Datasets")
    sets = common.attempt(overview.datasets, s)
    if len(sets):
        st.dataframe(sets, hide_index=True, width="stretch")
    else:
        st.info("No data set is staged in the object store yet.")
with right:
    st.subheader("Pipeline runs")
    runs = common.attempt(overview.pipeline_runs, s)
    if len(runs):
        st.dataframe(runs, hide_index=True, width="stretch")
    else:
        st.info("No pipeline run is recorded yet.")
