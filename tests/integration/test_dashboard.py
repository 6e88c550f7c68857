"""Dashboard: every page under AppTest against a real embedded PostgreSQL + MLflow filled by a profiling run,
the empty-store / database-down / no-champion messages, and one real-browser search (headless Chromium).

The tests that need the profiling run take over a minute, so they run with ``make e2e``
(``MICROSNOOP_E2E=1``); the message tests need no run and also run in ``make test``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from services.featurestore import FeatureStore
from services.settings import PlatformSettings
from tests.integration._data import tiny_fields
from tests.integration._postgres import embedded_platform

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
MODEL = REPO / "models" / "microsnoop-cpu-v1.pt"
CHROMIUM = Path("/usr/bin/chromium")
E2E = os.environ.get("MICROSNOOP_E2E") == "1"

pytestmark = pytest.mark.integration
e2e = pytest.mark.skipif(not E2E, reason="needs a profiling run (over a minute): run with 'make e2e'")


@pytest.fixture(scope="module")
def platform() -> Iterator[PlatformSettings]:
    """Embedded PostgreSQL + MLflow with the shipped model as champion and 3 demo fields profiled with it."""
    if not E2E:
        pytest.skip("needs a profiling run (over a minute): run with 'make e2e'")
    from pipelines.runner import run_local
    from services.registry import register_encoder

    with embedded_platform("dashboard") as settings:
        register_encoder(
            settings, MODEL, lineage={"source": "shipped model"}, scores={"knn1": 0.9}, primary_metric="knn1"
        )
        args = {"source_table": str(tiny_fields(settings.data_dir)), "model_ref": "champion"}
        run_local("profiling", args, settings, pipeline_root=settings.data_dir / "kfp")
        yield settings


def _point_at(monkeypatch: pytest.MonkeyPatch, settings: PlatformSettings, **extra: str) -> None:
    for key in [k for k in os.environ if k.startswith("MICROSNOOP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MICROSNOOP_DATA_DIR", str(settings.data_dir))
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, platform: PlatformSettings) -> PlatformSettings:
    _point_at(monkeypatch, platform)
    return platform


def _open(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    _no_traceback(at)
    return at


def _no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _charts(at: AppTest) -> list[Any]:
    return list(at.get("vega_lite_chart"))


def _texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def _latest(store: FeatureStore, level: str) -> str:
    return store.model_versions(level)[-1]


# -- pages on a filled store -----------------------------------------------------------------------------
@e2e
def test_overview_shows_counts_versions_datasets_and_runs(app_env: PlatformSettings) -> None:
    with FeatureStore.from_settings(app_env) as store:
        counts = store.counts()
    at = _open()
    assert _texts(at.metric)[:3] == [f"{counts['cell']:,}", f"{counts['image']:,}", f"{counts['treatment']:,}"]
    assert counts["image"] == 3 and counts["cell"] > 3
    assert not at.error
    tables = {d.value.columns[0]: d.value for d in at.dataframe}
    assert tables["version"]["aliases"].tolist() == ["champion"]
    assert "staged-fields" in set(tables["dataset"]["dataset"])
    runs = tables["source"]
    assert "kfp.local" in set(runs["source"]) and "microsnoop-profiling" in set(runs["pipeline"])


def _neighbour_ids(at: AppTest) -> list[str]:
    return [m.group(1) for text in _texts(at.markdown) if (m := re.match(r"\*\*#\d+\*\* `([^`]+)`", text))]


@e2e
def test_similarity_search_shows_k_neighbours_from_pgvector(app_env: PlatformSettings) -> None:
    at = _open("similarity")
    query = at.selectbox(key="search-entity").value
    at.slider(key="search-k").set_value(5)
    at.button(key="search-go").click().run()
    _no_traceback(at)
    with FeatureStore.from_settings(app_env) as store:
        hits = store.search("cell", model_version=_latest(store, "cell"), entity_id=query, k=5)
    assert _neighbour_ids(at) == [h.entity_id for h in hits]
    assert len(at.image) >= 1 + 5  # the query and its neighbours
    assert at.dataframe[-1].value["entity_id"].tolist() == [h.entity_id for h in hits]


@e2e
def test_similarity_filters_and_image_level(app_env: PlatformSettings) -> None:
    at = _open("similarity")
    at.radio(key="search-level").set_value("image").run()
    at.button(key="search-go").click().run()
    assert len(_neighbour_ids(at)) == 2  # 3 images: all but the query
    at.selectbox(key="f-plate").set_value("same").run()
    at.button(key="search-go").click().run()
    _no_traceback(at)
    assert any("has no plate" in e for e in _texts(at.error))


@e2e
def test_similarity_upload_is_embedded_with_the_champion(app_env: PlatformSettings) -> None:
    at = _open("similarity")
    at.radio(key="search-source").set_value("Upload an image").run()
    (app_env.data_dir / "upload").mkdir(exist_ok=True)
    field = pd.read_csv(tiny_fields(app_env.data_dir / "upload"))
    path = Path(field["path"].iloc[0])
    at.file_uploader[0].set_value((path.name, path.read_bytes(), "image/png")).run()
    at.button(key="search-go").click().run()
    _no_traceback(at)
    ids = _neighbour_ids(at)
    assert len(ids) == 3 and ids[0] == field["Metadata_ImageID"].iloc[0]  # its own stored copy first


@e2e
def test_phenotype_map_projects_once_and_shows_picked_thumbnails(app_env: PlatformSettings) -> None:
    at = _open("phenotype_map")
    assert len(_charts(at)) == 1
    cached = list((app_env.data_dir / "dashboard" / "maps").glob("cell-umap-*.parquet"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    at.radio(key="map-method").set_value("pca").run()
    at.selectbox(key="map-colour").set_value("image_id").run()
    picked = at.multiselect(key="map-picked").options[:2]
    at.multiselect(key="map-picked").set_value(picked).run()
    _no_traceback(at)
    assert len(_charts(at)) == 1 and len(at.image) == 2
    assert any("2 selected" in s for s in _texts(at.subheader))
    _open("phenotype_map")  # a new session reuses the cached UMAP
    assert cached[0].stat().st_mtime_ns == stamp


@e2e
def test_benchmarks_plot_suites_with_baselines_and_registry(app_env: PlatformSettings) -> None:
    at = _open("benchmarks")
    assert len(_charts(at)) == 2
    suites = at.selectbox[0].options
    assert "dsb2018-fields" in suites and "registry" in suites
    assert at.selectbox[0].value == "dsb2018-fields"
    table = at.dataframe[0].value
    assert {"model", "baseline"} <= set(table["kind"])


@e2e
def test_batch_effects_say_the_demo_store_has_no_plates(app_env: PlatformSettings) -> None:
    at = _open("batch_effects")
    assert any("no plate metadata" in w for w in _texts(at.warning))
    assert len(_charts(at)) == 2  # before and after


@e2e
def test_reconstruction_shows_original_masked_reconstructed(app_env: PlatformSettings) -> None:
    at = _open("reconstruction")
    assert not at.error
    assert len(at.image) == 3 * len(at.multiselect(key="recon-images").value) == 6
    # the champion's U-Net at the default ratio, panels in the order original | masked | reconstruction
    # (their pixels are checked in tests/unit/test_reconstruct.py)
    assert any("(champion), mask ratio 25%" in text for text in _texts(at.caption))
    titles = [t for t in _texts(at.markdown) if t in ("**original**", "**masked input**", "**reconstruction**")]
    assert titles == ["**original**", "**masked input**", "**reconstruction**"]


@e2e
def test_missing_champion_is_a_message(monkeypatch: pytest.MonkeyPatch, platform: PlatformSettings) -> None:
    empty_registry = f"sqlite:///{platform.data_dir / 'other-mlflow.db'}"
    _point_at(monkeypatch, platform, MICROSNOOP_MLFLOW_URI=empty_registry)
    at = _open("reconstruction")
    assert any("champion" in e for e in _texts(at.error))


# -- messages that need no pipeline run ------------------------------------------------------------------
PAGES = ["overview", "phenotype_map", "similarity", "benchmarks", "batch_effects", "reconstruction"]


def test_empty_store_shows_a_message_on_every_page(monkeypatch: pytest.MonkeyPatch) -> None:
    with embedded_platform("dashboard-empty") as settings:
        _point_at(monkeypatch, settings)
        for page in PAGES:
            at = _open(page)
            if page == "overview":
                assert _texts(at.metric)[:3] == ["0", "0", "0"]
            if page != "benchmarks":
                assert any("empty" in i for i in _texts(at.info)), page


def test_database_down_shows_a_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dead = f"host={tmp_path / 'no-server'} port=5999 dbname=microsnoop user=postgres connect_timeout=2"
    _point_at(monkeypatch, PlatformSettings().with_data_dir(tmp_path), MICROSNOOP_PG_DSN=dead)
    for page in PAGES:
        at = _open(page)
        if page != "benchmarks":
            assert any("database is not reachable" in e for e in _texts(at.error)), page


# -- a real browser --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Cdp:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")


@pytest.fixture
def dashboard_server(platform: PlatformSettings, tmp_path: Path) -> Iterator[str]:
    """``streamlit run dashboard/app.py`` on a free loopback port, pointed at the fixture platform."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROSNOOP_")}
    env["MICROSNOOP_DATA_DIR"] = str(platform.data_dir)
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1"]
    cmd += ["--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    log = open(tmp_path / "streamlit.log", "w")  # closed below
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: proc.poll() is not None or _http_ok(f"{url}/_stcore/health"), 60, "streamlit to start")
        assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Cdp]:
    """Headless Debian Chromium driven over the DevTools protocol."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: apt-get install chromium for the real-browser test")
    pytest.importorskip("websocket", reason="websocket-client drives Chromium over the DevTools protocol")
    profile = tmp_path / "chromium-profile"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0"]
    flags += [f"--user-data-dir={profile}", "--window-size=1400,1900", "about:blank"]
    proc = subprocess.Popen([str(CHROMIUM), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"
        _wait(lambda: active.is_file() and len(active.read_text().split()) >= 2, 60, "chromium's DevTools port")
        port = int(active.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t.get("type") == "page")
        cdp = Cdp(page["webSocketDebuggerUrl"])
        yield cdp
        cdp.ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


NEIGHBOUR_IDS_JS = "Array.from(document.querySelectorAll('.st-key-neighbours p code')).map(e => e.innerText)"
CLICK_SEARCH_JS = """(() => {
  const b = Array.from(document.querySelectorAll('button')).find(x => x.innerText.trim() === 'Search');
  if (!b) return false; b.click(); return true; })()"""
QUERY_JS = "(document.body.innerText.match(/query (\\S+) ·/) || [null, null])[1]"


@e2e
@pytest.mark.slow
def test_browser_search_shows_the_store_neighbours(
    platform: PlatformSettings, dashboard_server: str, chromium: Cdp, tmp_path: Path
) -> None:
    started = time.perf_counter()
    chromium.call("Page.enable")
    chromium.call("Emulation.setDeviceMetricsOverride", width=1400, height=1900, deviceScaleFactor=1, mobile=False)
    chromium.call("Page.navigate", url=f"{dashboard_server}/similarity")
    _wait(lambda: chromium.js(CLICK_SEARCH_JS), 90, "the Search button")
    ids = _wait(lambda: (found := chromium.js(NEIGHBOUR_IDS_JS)) and len(found) == 8 and found, 90, "8 neighbours")
    _wait(lambda: chromium.js("document.querySelectorAll('.st-key-neighbours img').length") == 8, 30, "thumbnails")
    query = chromium.js(QUERY_JS)
    with FeatureStore.from_settings(platform) as store:
        version = _latest(store, "cell")
        first = store.page("cell", model_version=version, limit=1)["entity_id"].iloc[0]
        hits = store.search("cell", model_version=version, entity_id=first, k=8)
    assert query == first
    assert ids == [h.entity_id for h in hits]
    time.sleep(1.0)  # let the images paint
    shot = chromium.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    import base64

    png = tmp_path / "dashboard-search.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    assert png.stat().st_size > 20_000
    if os.environ.get("MICROSNOOP_UPDATE_SCREENSHOT"):  # refresh the README's picture on purpose only
        shutil.copyfile(png, REPO / "docs" / "img" / "dashboard-search.png")
    print(f"browser search test: {time.perf_counter() - started:.1f} s, screenshot {png}")
