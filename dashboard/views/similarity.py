"""Similarity search: a stored cell/image or an uploaded image, its top-k neighbours from pgvector."""

import streamlit as st

from dashboard import common
from services.browse import similarity

st.title("Similarity search")
s = common.settings()
fs = common.store(s)
summ = common.store_summary(s, fs)
level, version = common.pick_level_and_version(summ, key="search", levels=("cell", "image"))

source = st.radio("Query", ["Stored entity", "Upload an image"], horizontal=True, key="search-source")
left, right = st.columns([2, 1])
with right:
    k = st.slider("Neighbours (k)", 1, 50, 8, key="search-k")
    modes = tuple(
        (key, st.selectbox(f"{key.upper() if key == 'moa' else key.title()}", similarity.FILTER_MODES, key=f"f-{key}"))
        for key in similarity.FILTER_KEYS
    )
    st.caption("'same' keeps neighbours with the query's value, 'other' keeps those with a different one.")

query = None
sample = None
upload_name = None
with left:
    if source == "Stored entity":
        total = summ.counts.get(level, 0)
        pages = max(1, -(-total // similarity.PAGE_SIZE))
        page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="search-page") - 1
        rows = common.attempt(
            common.page_of, common.settings_key(s), fs, level, version, int(page), similarity.PAGE_SIZE
        )
        if not len(rows):
            st.info("This page is empty.")
            st.stop()
        records = rows.to_dict("records")
        by_id = {str(r["entity_id"]): r for r in records}
        chosen = st.selectbox(f"Query {level}", list(by_id), key="search-entity")
        sample = by_id[str(chosen)]
        query = similarity.Query(level, version, entity_id=str(chosen), k=int(k), modes=modes)
    else:
        upload = st.file_uploader(
            "Image (embedded with the champion model)", type=["png", "jpg", "jpeg", "tif", "tiff"]
        )
        if upload is not None:
            if level != "image":
                st.warning("An uploaded image is one image-level profile: searching the images level.")
                level = "image"
            with st.spinner("Embedding with the champion model..."):
                vector, upload_version = common.attempt(
                    similarity.embed_upload, s, upload.getvalue(), upload.name, store=fs
                )
            if upload_version not in summ.versions.get("image", []):
                st.error(
                    f"The champion is {upload_version}, but the store holds no image embeddings of it "
                    f"(it has {summ.versions.get('image', [])}); run the profiling pipeline with the champion."
                )
                st.stop()
            version = upload_version
            if any(mode != "any" for _, mode in modes):
                st.info("Filters compare with the query's metadata; an uploaded image has none, so they are ignored.")
            query = similarity.Query("image", version, vector=vector, k=int(k))
            upload_name = upload.name
            st.caption(f"Uploaded {similarity.escape_markdown(upload.name)}; searching {version}.")

view = common.thumbnail_controls(s, sample)
if sample is not None:
    with left:
        image = common.thumbnail(s, sample, view, size=160)
        if image is not None:
            st.image(image, caption=f"query {sample['entity_id']} · {common.caption(sample)}")

if query is None:
    st.info("Upload an image to search with it.")
    st.stop()

signature = (query.level, query.model_version, query.entity_id, upload_name, query.k, query.modes)
if st.button("Search", type="primary", key="search-go") or st.session_state.get("search-signature") == signature:
    st.session_state["search-signature"] = signature
    hits = common.attempt(similarity.find_neighbours, fs, query)
    table = similarity.hits_frame(hits)
    st.subheader(f"{len(hits)} nearest {common.LEVEL_NAMES[query.level]}")
    if not len(hits):
        st.info("No neighbour matches these filters.")
    else:
        with st.container(key="neighbours"):
            common.thumbnail_grid(s, table.to_dict("records"), view)
        shown = [c for c in ("rank", "entity_id", "distance", "label", "plate", "compound", "moa", "image_id")]
        st.dataframe(table[[c for c in shown if c in table.columns]], hide_index=True, width="stretch")
