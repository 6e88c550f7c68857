"""Reconstruction: original / masked / reconstructed crops of chosen images with the champion U-Net."""

import streamlit as st

from dashboard import common
from services.browse import reconstruction, thumbnails

st.title("Reconstruction")
s = common.settings()
fs = common.store(s)
summ = common.store_summary(s, fs)
if not summ.counts.get("image"):
    st.info("No images are published yet; run the profiling pipeline first.")
    st.stop()
version = summ.versions["image"][-1]
rows = common.attempt(common.page_of, common.settings_key(s), fs, "image", version, 0, 200).to_dict("records")
by_id = {str(r["entity_id"]): r for r in rows if thumbnails.image_uri(r)}
if not by_id:
    st.info("The published images name no stored image file (image_uri), so there is nothing to reconstruct.")
    st.stop()
chosen = st.multiselect("Images", list(by_id), default=list(by_id)[:2], key="recon-images", max_selections=6)
ratio = st.slider("Mask ratio", 0.05, 0.75, 0.25, step=0.05, key="recon-ratio")
if not chosen:
    st.info("Choose one or more images.")
    st.stop()
uris = [thumbnails.image_uri(by_id[c]) or "" for c in chosen]
with st.spinner("Reconstructing with the champion model..."):
    result = common.attempt(reconstruction.reconstruct_stored, s, uris, mask_ratio=float(ratio))
st.caption(f"Checkpoint {result.checkpoint} (champion), mask ratio {result.mask_ratio:.0%}; one row per plane.")
panels = [reconstruction.to_display(p, result.original) for p in (result.original, result.masked, result.reconstructed)]
for title, column in zip(("original", "masked input", "reconstruction"), st.columns(3), strict=True):
    column.markdown(f"**{title}**")
for original, masked, recon in zip(*panels, strict=True):
    for image, column in zip((original, masked, recon), st.columns(3), strict=True):
        column.image(image, width="stretch")
