"""Benchmarks: scores per model version and suite, with the baselines, as plots."""

import altair as alt
import streamlit as st

from dashboard import common

st.title("Benchmarks")
s = common.settings()
scores = common.attempt(common.scores, common.settings_key(s), s)
if not len(scores):
    st.info("No benchmark results yet: run 'make bench' or the benchmark suites (benchmarks/results/suites).")
    st.stop()

suites = sorted(scores["suite"].unique())
left, right = st.columns(2)
suite = left.selectbox("Suite", suites, index=suites.index("dsb2018-fields") if "dsb2018-fields" in suites else 0)
in_suite = scores[scores["suite"] == suite]
combos = sorted({f"{r.score} / {r.metric}" for r in in_suite.itertuples()})
combo = right.selectbox("Score / metric", combos)
score, metric = combo.split(" / ", 1)
rows = in_suite[(in_suite["score"] == score) & (in_suite["metric"] == metric)]

base = alt.Chart(rows).encode(
    y=alt.Y("feature_set:N", sort="-x", title=None),
    tooltip=["feature_set", "kind", "value", "ci_low", "ci_high", "source"],
)
bars = base.mark_bar().encode(
    x=alt.X("value:Q", title=metric),
    color=alt.Color("kind:N", scale=alt.Scale(domain=["model", "baseline"], range=["#1f77b4", "#b0b0b0"])),
)
chart = bars
if rows["ci_low"].notna().any():
    chart = bars + base.mark_rule(color="black").encode(x="ci_low:Q", x2="ci_high:Q")
st.altair_chart(chart.properties(height=max(120, 32 * len(rows))), width="stretch")
st.caption("Grey bars are baselines (untrained network, hand-crafted features); whiskers are 95 % bootstrap intervals.")

st.subheader("All suites")
overview = scores[scores["score"].isin(["knn_1", "nsc", "7_class/knn", "primary", "-"])]
if len(overview):
    grid = (
        alt.Chart(overview)
        .mark_point(filled=True, size=80)
        .encode(
            x=alt.X("value:Q"),
            y=alt.Y("feature_set:N", title=None),
            color="kind:N",
            shape="metric:N",
            row=alt.Row("suite:N", title=None),
            tooltip=["suite", "feature_set", "score", "metric", "value"],
        )
    )
    st.altair_chart(grid, width="stretch")
with st.expander("Table"):
    st.dataframe(scores, hide_index=True, width="stretch")
