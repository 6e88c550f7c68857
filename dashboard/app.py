"""Microsnoop dashboard: a Streamlit multipage app over the feature store and the encoder registry.

Run it with ``microsnoop dashboard`` (or ``streamlit run dashboard/app.py``); MICROSNOOP_* variables say
where the platform lives (``MICROSNOOP_DATA_DIR`` for the embedded defaults after ``make demo``).
"""

from __future__ import annotations

import logging

import streamlit as st

VIEWS = "views"
PAGES = [
    st.Page(f"{VIEWS}/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page(f"{VIEWS}/phenotype_map.py", title="Phenotype map", icon=":material/scatter_plot:"),
    st.Page(f"{VIEWS}/similarity.py", title="Similarity search", icon=":material/image_search:"),
    st.Page(f"{VIEWS}/benchmarks.py", title="Benchmarks", icon=":material/leaderboard:"),
    st.Page(f"{VIEWS}/batch_effects.py", title="Batch effects", icon=":material/blur_on:"),
    st.Page(f"{VIEWS}/reconstruction.py", title="Reconstruction", icon=":material/auto_fix_high:"),
]

st.set_page_config(page_title="Microsnoop", page_icon=":material/biotech:", layout="wide")
page = st.navigation(PAGES)
try:
    page.run()
except Exception as exc:  # the last line of defence (logged): a message, never a traceback
    logging.getLogger("dashboard").exception("page %s failed", page.title)
    st.error(f"{page.title} failed unexpectedly: {exc.__class__.__name__}: {exc}. The server log has the details.")
