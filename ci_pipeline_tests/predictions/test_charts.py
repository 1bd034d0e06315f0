"""The evaluation report's drawn charts: PNG images from the report's points, and the training asset showing them
(Markdown images in its metadata) and storing them in the lake beside the model."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import subprocess
import sys
import zlib

import dagster as dg
import numpy as np
import pytest

from ci_pipeline.defs import predictions
from ci_pipeline.lake import Lake
from ci_pipeline.predictions import charts, metrics
from ci_pipeline_tests.conftest import ROOT
from ci_pipeline_tests.predictions.test_assets import CONFIG, materializations, materialize, prefill, project

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) chunks of a PNG, each CRC checked: a truncated or damaged file fails here."""
    assert png.startswith(PNG_SIGNATURE), png[:8]
    chunks, at = [], len(PNG_SIGNATURE)
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + data) == crc, kind
        chunks.append((kind, data))
        at += 12 + length
    assert chunks[-1][0] == b"IEND"
    return chunks


def png_size(png: bytes) -> tuple[int, int]:
    kind, header = png_chunks(png)[0]
    assert kind == b"IHDR"
    return struct.unpack(">II", header[:8])


def churn_like_charts(n: int = 4000, seed: int = 3) -> dict:
    """The points an evaluation computes, from scores whose outcomes follow them (a calibrated model), a noisier
    score (BG/NBD's place) and a 0/1 rule."""
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    y = (rng.random(n) < score).astype(float)
    noisy = np.clip(score + rng.normal(0, 0.25, n), 0, 1)
    rule = (score > 0.4).astype(float)
    out = {"calibration": metrics.calibration_table(y, score), "gain": metrics.gain_table(y, score)}
    for name, baseline in (("bgnbd_p_no_purchase", noisy), ("rule_no_purchase_22_days", rule)):
        out[f"calibration/{name}"] = metrics.calibration_table(y, baseline)
        out[f"gain/{name}"] = metrics.gain_table(y, baseline)
    return out


def test_each_chart_is_a_valid_png_of_about_640_by_400_pixels_and_a_few_tens_of_kb():
    drawn = charts.draw_report_charts("TransactionalChurn", churn_like_charts())
    assert set(drawn) == {"calibration", "gain"}
    for png in drawn.values():
        assert png_size(png) == (640, 400)
        assert 2_000 < len(png) < 40_000


def test_the_same_points_give_the_same_bytes_and_no_software_or_date_entry():
    points = churn_like_charts()
    first = charts.draw_report_charts("TransactionalChurn", points)
    again = charts.draw_report_charts("TransactionalChurn", points)
    assert first == again
    for png in first.values():
        kinds = {kind for kind, _ in png_chunks(png)}
        assert not kinds & {b"tEXt", b"iTXt", b"zTXt", b"tIME"}, kinds
    # Other points give another image (the bytes follow the points, not only the layout).
    other = charts.draw_report_charts("TransactionalChurn", churn_like_charts(seed=4))
    assert other["gain"] != first["gain"]


def test_a_users_matplotlib_style_does_not_change_the_bytes():
    import matplotlib

    points = churn_like_charts()
    before = charts.draw_report_charts("TransactionalChurn", points)
    with matplotlib.rc_context({"lines.linewidth": 6, "axes.facecolor": "black", "font.size": 20}):
        during = charts.draw_report_charts("TransactionalChurn", points)
    assert during == before


def test_another_process_draws_the_same_bytes_and_importing_the_module_does_not_load_matplotlib():
    points = churn_like_charts()
    expected = hashlib.sha256(charts.draw_report_charts("TransactionalChurn", points)["gain"]).hexdigest()
    script = (
        "import hashlib, json, sys\n"
        "from ci_pipeline.predictions import charts\n"
        "assert 'matplotlib' not in sys.modules, 'importing charts loaded matplotlib'\n"
        "points = json.loads(sys.stdin.read())\n"
        "print(hashlib.sha256(charts.draw_report_charts('TransactionalChurn', points)['gain']).hexdigest())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(points), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_a_model_without_baseline_points_draws_the_model_alone():
    points = churn_like_charts()
    alone = {"calibration": points["calibration"], "gain": points["gain"]}
    drawn = charts.draw_report_charts("TransactionalChurn", alone)
    assert set(drawn) == {"calibration", "gain"} and png_size(drawn["gain"]) == (640, 400)
    assert drawn["gain"] != charts.draw_report_charts("TransactionalChurn", points)["gain"]
    assert list(charts.series_of(points, "gain")) == ["model", "bgnbd_p_no_purchase", "rule_no_purchase_22_days"]


def test_clv_draws_the_value_captured_and_predicted_against_actual_by_decile():
    rng = np.random.default_rng(5)
    actual = rng.gamma(0.5, 100, 3000)
    predicted = actual * rng.lognormal(0, 0.5, 3000)
    points = {
        "gain": metrics.gain_table(actual, predicted),
        "deciles": metrics.decile_table(actual, predicted),
        "gain/bgnbd_gamma_gamma": metrics.gain_table(actual, rng.random(3000)),
    }
    drawn = charts.draw_report_charts("CustomerLifetimeValue", points)
    assert set(drawn) == {"gain", "deciles"}
    assert all(png_size(png) == (640, 400) for png in drawn.values())


def test_decile_table_holds_the_mean_predicted_and_actual_value_of_each_predicted_decile():
    predicted = np.arange(20, dtype=float)[::-1]
    actual = predicted * 2
    table = metrics.decile_table(actual, predicted)
    assert [row["decile"] for row in table] == list(range(1, 11))
    assert table[0] == {"decile": 1, "customers": 2, "mean_predicted": 18.5, "mean_actual": 37.0}
    assert table[-1]["mean_predicted"] == 0.5 and sum(row["customers"] for row in table) == 20


def test_empty_or_valueless_points_give_a_chart_that_says_no_data():
    empty = charts.draw_report_charts("TransactionalChurn", {"calibration": [], "gain": []})
    assert set(empty) == {"calibration", "gain"} and png_size(empty["gain"]) == (640, 400)
    # A gain table of a window where nothing happened (no positives) has no captured share: nothing to draw either.
    valueless = [{"top_share": 0.1 * g, "captured": None, "lift": None} for g in range(1, 11)]
    assert charts.gain_chart("TransactionalChurn", {"model": valueless}) == empty["gain"]
    assert charts.gain_chart("TransactionalChurn", {"model": valueless, "rule": []}) == empty["gain"]
    # One usable series is drawn even when the others hold nothing.
    drawn = charts.gain_chart("TransactionalChurn", {"model": churn_like_charts()["gain"], "rule": valueless})
    assert drawn != empty["gain"]
    deciles = charts.decile_chart(
        "CustomerLifetimeValue", {"model": [{"decile": 1, "mean_predicted": float("nan"), "mean_actual": 0.0}]}
    )
    assert png_size(deciles) == (640, 400)


def test_points_without_the_columns_a_chart_reads_are_refused_with_a_message_naming_them():
    with pytest.raises(
        ValueError,
        match=r"calibration chart of TransactionalChurn: point 1 of the model points has "
        r"no observed_rate \(each point needs mean_score, observed_rate\)",
    ):
        charts.draw_report_charts(
            "TransactionalChurn",
            {"calibration": [{"mean_score": 0.1, "observed_rate": 0.1}, {"mean_score": 0.5}]},
        )
    with pytest.raises(ValueError, match="gain chart of X: the rule points must be a list of rows"):
        charts.gain_chart("X", {"rule": "0.1,0.2"})


def test_a_report_without_charts_draws_nothing():
    assert charts.draw_report_charts("ProductRecommendation", {}) == {}


def test_the_markdown_image_is_a_png_data_uri():
    png = charts.draw_report_charts("TransactionalChurn", churn_like_charts())["gain"]
    text = charts.markdown_image("gain chart", png)
    assert text.startswith("![gain chart](data:image/png;base64,") and text.endswith(")")
    assert base64.b64decode(text.split(",", 1)[1][:-1]) == png


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory):
    """The churn and CLV training assets materialised on a lake with a generated shop's timeline."""
    folder = tmp_path_factory.mktemp("charts")
    config = project(folder, predictions={**CONFIG["predictions"], "models": ["churn", "clv"]})
    lake = Lake.local(folder / "lake")
    prefill(lake)
    keys = [predictions.model_key(m) for m in ("churn", "clv")]
    result = materialize(config, selection=dg.AssetSelection.assets(*keys))
    return lake, materializations(result)


@pytest.mark.parametrize(
    ("model", "drawn"), [("churn", ("calibration", "gain")), ("clv", ("gain", "deciles"))], ids=["churn", "clv"]
)
def test_the_training_asset_shows_its_charts_as_markdown_images_and_stores_the_pngs_beside_the_model(
    trained_models, model, drawn
):
    lake, metadata = trained_models
    shown = metadata[f"predictions/{model}_model"]
    # The points stay as tables, for tests and text tools; the drawn charts come next to them.
    baseline = "bgnbd_p_no_purchase" if model == "churn" else "bgnbd_gamma_gamma"
    assert {"chart/gain", f"chart/gain/{baseline}"} <= set(shown)
    assert sorted(k for k in shown if k.startswith("plot/") and not k.endswith("/path")) == sorted(
        f"plot/{c}" for c in drawn
    )
    for chart in drawn:
        path = predictions.chart_path(model, chart)
        assert path == f"ci_pipeline/predictions/{model}_model_{chart}.png"
        stored = lake.read_bytes(path)
        assert png_size(stored) == (640, 400)
        assert shown[f"plot/{chart}/path"].path == lake.url(path)
        text = shown[f"plot/{chart}"].md_str
        prefix = "](data:image/png;base64,"
        assert text.startswith("![") and prefix in text and len(text) < 60_000
        assert base64.b64decode(text.split(prefix, 1)[1].removesuffix(")")) == stored
    # Baselines are drawn beside the model: the stored chart is not the model-alone chart.
    report = json_report(lake, model)
    alone = charts.gain_chart(report["model"], {"model": report["charts"]["gain"]})
    assert lake.read_bytes(predictions.chart_path(model, "gain")) != alone


def json_report(lake: Lake, model: str) -> dict:
    summary = json.loads(lake.read_bytes(f"ci_pipeline/predictions/{model}_model.json"))
    return {"model": summary["model"], "charts": summary["metrics"]["charts"]}


def test_an_image_is_what_pillow_reads_as_640_by_400():
    from PIL import Image

    png = charts.draw_report_charts("TransactionalChurn", churn_like_charts())["calibration"]
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        assert image.size == (640, 400)


def test_charts_that_cannot_be_drawn_are_said_so_and_the_model_is_stored_all_the_same(tmp_path, monkeypatch, caplog):
    def broken(model, points):
        raise ValueError("posx and posy should be finite values")

    monkeypatch.setattr(predictions, "draw_report_charts", broken)
    lake = Lake.local(tmp_path / "lake")
    metadata = predictions.chart_metadata(lake, "churn", {"charts": churn_like_charts()})
    said = "TransactionalChurn: the report's charts could not be drawn (ValueError: posx and posy should be finite"
    assert metadata["plots"].value.startswith(said)
    assert said in caplog.text
    assert not (tmp_path / "lake").exists() or not list((tmp_path / "lake").rglob("*.png"))
