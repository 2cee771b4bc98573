"""`report`: tables from hand-written records, compared exactly; statistics against scipy."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

GOLDEN = Path(__file__).parent / "golden"
SOURCE = "digits[0-4]"
# (objective, options, seed) → source accuracy, linear on two datasets, kNN, R², fine-tuning
RUNS: dict[tuple[str, tuple[tuple[str, float], ...], int], tuple[float, ...]] = {
    ("softmax", (), 0): (0.900, 0.800, 0.700, 0.750, 0.200, 0.950),
    ("softmax", (), 1): (0.910, 0.810, 0.720, 0.760, 0.210, 0.955),
    ("softmax", (), 2): (0.905, 0.790, 0.710, 0.740, 0.190, 0.945),
    ("sigmoid", (), 0): (0.930, 0.700, 0.650, 0.690, 0.400, 0.950),
    ("sigmoid", (), 1): (0.935, 0.715, 0.640, 0.700, 0.420, 0.960),
    ("sigmoid", (), 2): (0.940, 0.690, 0.660, 0.680, 0.410, 0.940),
    ("squared_error", (), 0): (0.920, 0.600, 0.550, 0.580, 0.700, 0.930),
    ("softmax", (("temperature", 0.5),), 0): (0.915, 0.780, 0.690, 0.730, 0.300, 0.950),
    ("softmax", (("temperature", 0.5),), 1): (0.925, 0.770, 0.700, 0.720, 0.320, 0.952),
}
LAYERS = ("block1", "block2", "penultimate")


def model(objective: str, seed: int, opts: dict[str, Any] | None = None, **kw: Any) -> dict:
    defaults = {"temperature": 1.0} if objective == "softmax" else {}
    return {
        "arch": kw.get("arch", "smallcnn"),
        "objective": objective,
        "objective_opts": {**defaults, **(opts or {})},
        "seed": seed,
        "data": {"spec": "digits", "classes": [0, 1, 2, 3, 4], "label": kw.get("source", SOURCE)},
        "checkpoint_sha256": kw.get("sha", f"{objective}{sorted((opts or {}).items())}{seed}"),
    }


def record(kind: str, mdl: dict, metrics: dict, dataset: str | None = None, **extra: Any) -> dict:
    return {
        "format": "lossxfer.result/1",
        "kind": kind,
        "created": extra.get("created", "2026-01-01T00:00:00+00:00"),
        "lossxfer_version": "0.1.0",
        "inputs": [],
        "model": mdl,
        "dataset": {"spec": "digits", "label": dataset} if dataset else None,
        "config": {},
        "metrics": metrics,
        "timing": {"wall_s": 1.0},
    }


def probe(acc: dict[str, float]) -> dict:
    return {"layers": {"penultimate": {m: {"test_top1": v} for m, v in acc.items()}}}


def write(folder: Path, name: str, doc: dict) -> Path:
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def cka_value(a: tuple[str, int], b: tuple[str, int], layer: str) -> float:
    """Hand-made CKA: high in early layers, lower between objectives in late layers."""
    depth = LAYERS.index(layer)
    return 0.95 - depth * (0.05 if a[0] == b[0] else 0.15) - 0.01 * (a[1] + b[1])


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return make_study(tmp_path / "runs")


def make_study(root: Path) -> Path:
    """Records of a small study: train, probes, separation, fine-tuning and CKA per run."""
    for (objective, opts, seed), numbers in RUNS.items():
        src, lin_a, lin_b, knn, r2, ft = numbers
        m = model(objective, seed, dict(opts))
        run = root / f"{objective}{''.join(f'-{k}{v}' for k, v in opts)}-s{seed}"
        write(run, "train", record("train", m, {"test_top1": src, "test_top5": 1.0}))
        write(
            run, "probe-a", record("probe", m, probe({"linear": lin_a, "knn": knn}), "digits[5-9]")
        )
        write(run, "probe-b", record("probe", m, probe({"linear": lin_b}), "synthetic"))
        sep = {
            "layers": {
                "penultimate": {"r2": r2, "sparsity": 0.5 + r2 / 10, "per_class_within": [1]}
            }
        }
        write(run, "separation", record("separation", m, sep, SOURCE))
        write(run, "finetune", record("finetune", m, {"test_top1": ft}, "digits[5-9]"))
        if opts:
            continue
        others = [("softmax", seed)] if objective != "softmax" else []
        others += [(objective, 0)] if seed > 0 else []
        for other in others:
            matrix = [[cka_value((objective, seed), other, la) for la in LAYERS] for la in LAYERS]
            metrics = {
                "estimator": "linear",
                "split": "test",
                "layers_a": list(LAYERS),
                "layers_b": list(LAYERS),
                "matrix": matrix,
                "model_b": model(*other),
            }
            write(run, f"cka-{other[0]}{other[1]}", record("cka", m, metrics, SOURCE))
    return root


def golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; LOSSXFER_UPDATE_GOLDEN=1 rewrites it (review the diff)."""
    path = GOLDEN / name
    if os.environ.get("LOSSXFER_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def values(objective: str, index: int, opts: tuple = ()) -> list[float]:
    return [v[index] for (o, op, _), v in RUNS.items() if o == objective and op == opts]


def report_json(cli, *args: object) -> dict:
    run = cli("report", *args, "--json")
    assert run.code == 0, run.stderr
    return json.loads(run.stdout)


def table(doc: dict, name: str) -> dict:
    return next(t for t in doc["tables"] if t["name"] == name)


def row(tab: dict, label: str, group: str | None = None) -> dict:
    return next(r for r in tab["rows"] if r["label"] == label and group in (None, r["group"]))


@pytest.mark.parametrize("fmt", ["markdown", "csv", "tsv", "latex", "rich"])
def test_every_format_renders_exactly(cli, study: Path, fmt: str) -> None:
    run = cli("report", study, "--format", fmt)
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    suffix = {"markdown": "md", "latex": "tex", "rich": "txt"}.get(fmt, fmt)
    golden(f"report_all.{suffix}", run.stdout)


def test_statistics_equal_scipy(cli, study: Path) -> None:
    import numpy as np
    from scipy import stats

    doc = report_json(cli, study)
    transfer = table(doc, "transfer")
    soft, sig = values("softmax", 0), values("sigmoid", 0)
    cell = row(transfer, "sigmoid")["cells"]["source"]
    assert cell["mean"] == pytest.approx(np.mean(sig), abs=1e-15)
    assert cell["std"] == pytest.approx(np.std(sig, ddof=1), rel=1e-12)
    assert cell["p"] == pytest.approx(stats.ttest_ind(sig, soft, equal_var=False).pvalue, rel=1e-12)
    assert cell["significant"] == (cell["p"] < 0.05) and cell["best"]
    # the per-run average over the two transfer datasets, then mean over seeds
    avg = [(a + b) / 2 for a, b in zip(values("sigmoid", 1), values("sigmoid", 2), strict=True)]
    assert row(transfer, "sigmoid")["cells"]["linear:mean"]["mean"] == pytest.approx(np.mean(avg))
    base = row(transfer, "softmax")["cells"]["source"]
    assert base["p"] is None and not base["significant"]
    one = row(transfer, "squared_error")["cells"]["source"]
    assert (one["n"], one["std"], one["p"]) == (1, None, None)


def test_correlation_and_cka_columns_equal_scipy(cli, study: Path) -> None:
    from scipy import stats

    summary = table(report_json(cli, study, "--table", "summary"), "summary")
    r2 = [v[4] for v in RUNS.values()]
    transfer = [(v[1] + v[2]) / 2 for v in RUNS.values()]
    (corr,) = summary["correlations"]
    assert corr["runs"] == len(RUNS)
    assert corr["pearson_r"] == pytest.approx(stats.pearsonr(r2, transfer).statistic, rel=1e-12)
    assert corr["spearman_rho"] == pytest.approx(stats.spearmanr(r2, transfer).statistic)
    # CKA vs softmax: sigmoid pairs with softmax seeds; the softmax row: its own seeds vs seed 0
    sig = row(summary, "sigmoid")["cells"]["cka:softmax"]
    want = [cka_value(("sigmoid", s), ("softmax", s), "penultimate") for s in range(3)]
    assert sig["values"] == pytest.approx(want)
    own = row(summary, "softmax")["cells"]["cka:softmax"]
    want = [cka_value(("softmax", s), ("softmax", 0), "penultimate") for s in (1, 2)]
    assert sorted(own["values"]) == pytest.approx(sorted(want))
    assert row(summary, "softmax (temperature=0.5)")["cells"]["cka:softmax"] is None


def test_json_option_and_format_json_agree(cli, study: Path) -> None:
    assert cli("report", study, "--json").stdout == cli("report", study, "--format", "json").stdout
    run = cli("report", study, "--json", "--format", "markdown")
    assert run.code == 2 and "--json" in run.stderr


def test_objective_options_and_architectures_are_never_pooled(cli, study: Path) -> None:
    m = model("softmax", 0, arch="resnet18")
    write(study / "r18", "train", record("train", m, {"test_top1": 0.5}))
    transfer = table(report_json(cli, study, "--table", "transfer"), "transfer")
    small = row(transfer, "softmax", "smallcnn on digits[0-4]")
    assert small["n"] == 3
    assert small["cells"]["source"]["mean"] == pytest.approx(sum(values("softmax", 0)) / 3)
    r18 = row(transfer, "softmax", "resnet18 on digits[0-4]")
    assert (r18["n"], r18["cells"]["source"]["values"]) == (1, [0.5])
    temp = row(transfer, "softmax (temperature=0.5)")
    assert temp["options"] == {"temperature": 0.5} and temp["n"] == 2
    # the best mark and the t-test stay inside a group
    assert r18["cells"]["source"]["best"] and row(transfer, "sigmoid")["cells"]["source"]["best"]
    text = cli("report", study, "--table", "transfer", "--format", "markdown").stdout
    assert "| Group | Objective | n |" in text
    assert "| resnet18 on digits[0-4] | softmax | 1 | **50.0** |" in text


def test_baseline_may_name_a_row_with_options(cli, study: Path) -> None:
    label = "softmax (temperature=0.5)"
    transfer = table(report_json(cli, study, "--baseline", label), "transfer")
    assert row(transfer, label)["cells"]["source"]["p"] is None
    assert row(transfer, "softmax")["cells"]["source"]["p"] is not None


def test_unusable_records_are_listed_and_skipped(cli, study: Path) -> None:
    bad = study / "bad"
    bad.mkdir()
    (bad / "broken.json").write_text("{not json")
    newer = record("train", model("softmax", 0), {"test_top1": 0.5})
    write(bad, "v2", {**newer, "format": "lossxfer.result/2"})
    write(bad, "nometric", record("train", model("softmax", 0), {"test_top5": 0.5}))
    noseed = model("softmax", 0)
    del noseed["seed"]
    write(bad, "noseed", record("train", noseed, {"test_top1": 0.5}))
    write(bad, "layer", record("probe", model("softmax", 0), {"layers": {"logits": {}}}, "x"))
    run = cli("report", study, "--table", "transfer", "--format", "csv")
    assert run.code == 0
    lines = run.stderr.splitlines()
    assert len(lines) == 5
    for name, reason in [
        ("broken.json", "invalid JSON"),
        ("v2.json", "newer format version '2'"),
        ("nometric.json", "'metrics.test_top1'"),
        ("noseed.json", "'model.seed'"),
        ("layer.json", "no layer 'penultimate' in metrics.layers (has: logits)"),
    ]:
        assert any(f"skipped {bad / name}: " in ln and reason in ln for ln in lines), name
    assert run.stdout.splitlines()[1].startswith("softmax,3,90.5 ± 0.5,")
    only_bad = cli("report", bad)
    assert only_bad.code == 3
    assert only_bad.stdout == ""
    assert "skipped" in only_bad.stderr and "no usable result records" in only_bad.stderr


def test_newest_record_of_a_measurement_wins(cli, study: Path) -> None:
    m = model("sigmoid", 2)
    late = record("train", m, {"test_top1": 0.99}, created="2026-02-01T00:00:00+00:00")
    write(study / "rerun", "train", late)
    run = cli("report", study, "--table", "transfer", "--json")
    cell = row(table(json.loads(run.stdout), "transfer"), "sigmoid")["cells"]["source"]
    assert sorted(cell["values"]) == [0.93, 0.935, 0.99]
    assert "sigmoid-s2/train.json: superseded by newer records" in run.stderr


def test_same_seed_with_two_checkpoints_is_flagged(cli, study: Path) -> None:
    m = model("sigmoid", 2, sha="other")
    write(study / "retrain", "train", record("train", m, {"test_top1": 0.5}))
    run = cli("report", study, "--table", "transfer", "--json")
    assert "sigmoid seed 2: 2 different checkpoints" in run.stderr
    assert row(table(json.loads(run.stdout), "transfer"), "sigmoid")["n"] == 4


def test_table_without_records_is_an_input_error(cli, study: Path) -> None:
    write(study.parent / "only", "train", record("train", model("softmax", 0), {"test_top1": 0.9}))
    run = cli("report", study.parent / "only", "--table", "cka")
    assert run.code == 3 and "table cka" in run.stderr


def test_out_file_format_from_suffix_and_no_clobber(cli, study: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.tex"
    run = cli("report", study, "--table", "summary", "-o", out)
    assert run.code == 0
    assert out.read_text() == run.stdout and out.read_text().startswith("% Summary")
    assert cli("report", study, "-o", out).code == 2
    assert cli("report", study, "--table", "cka", "-o", out, "--force").code == 0
    assert out.read_text().startswith("% CKA")


def test_plots_are_written_with_labelled_axes(cli, study: Path, tmp_path: Path) -> None:
    from lossxfer.report import ReportConfig, run_report
    from lossxfer.report.plots import figures

    rep = run_report(ReportConfig(paths=(study,)))
    figs = figures(rep.runs, rep.cka, rep.config.layer)
    assert set(figs) == {
        "r2_vs_transfer",
        "source_vs_transfer",
        "cka_heatmap_penultimate",
        "cka_layers",
    }
    for fig in figs.values():
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert figs["r2_vs_transfer"].axes[0].get_title().startswith("Pearson r = -0.98")
    assert len(figs["r2_vs_transfer"].axes[0].collections) == 4  # one colour per row

    folder = tmp_path / "figs"
    run = cli("report", study, "--table", "summary", "--plots", folder)
    assert run.code == 0, run.stderr
    for stem in figs:
        png, svg = folder / f"{stem}.png", folder / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"wrote {png}" in run.stderr
        assert figs[stem].axes[0].get_xlabel() in svg.read_text()
    again = cli("report", study, "--plots", folder)
    assert again.code == 2 and "exists" in again.stderr
    assert cli("report", study, "--plots", folder, "--force").code == 0


def test_rich_shows_best_in_bold(study: Path) -> None:
    from rich.console import Console

    from lossxfer.report import ReportConfig, rich_tables, run_report

    console = Console(record=True, width=300, force_terminal=True, color_system="standard")
    console.print(rich_tables(run_report(ReportConfig(paths=(study,), tables=("transfer",)))))
    text = console.export_text(styles=True)
    assert "\x1b[1m93.5 ± 0.5\x1b[0m†" in text  # sigmoid's source accuracy
    assert "\x1b[1m92.0" not in text


# accuracies and R² as records hold them: fractions, here on a grid so that ties happen
fractions = st.integers(0, 1000).map(lambda i: i / 1000)
samples = st.lists(fractions, min_size=2, max_size=10)


@settings(max_examples=150, deadline=None)
@given(samples, samples)
def test_welch_t_test_equals_scipy(a: list[float], b: list[float]) -> None:
    import math

    from scipy import stats

    from lossxfer.report.stats import Cell, welch_p

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    got = welch_p(Cell(a), Cell(b))
    if math.isfinite(want):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    else:  # both samples constant
        assert got is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(fractions, fractions), min_size=3, max_size=30))
def test_correlations_equal_scipy(pairs: list[tuple[float, float]]) -> None:
    from scipy import stats

    from lossxfer.report.records import RunKey
    from lossxfer.report.tables import RunPoint, correlation

    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return  # constant input has no correlation
    key = RunKey(None, 0, None)  # type: ignore[arg-type]
    points = [RunPoint(key, None, y, None, x) for x, y in pairs]
    corr = correlation(points, "r2", "linear")
    assert corr is not None
    pearson, spearman = stats.pearsonr(xs, ys), stats.spearmanr(xs, ys)
    assert corr["pearson_r"] == pytest.approx(pearson.statistic, abs=1e-9)
    assert corr["pearson_p"] == pytest.approx(pearson.pvalue, rel=1e-6, abs=1e-7)
    assert corr["spearman_rho"] == pytest.approx(spearman.statistic, abs=1e-9)
    assert corr["spearman_p"] == pytest.approx(spearman.pvalue, rel=1e-6, abs=1e-7)


def test_best_is_the_highest_number_and_single_csv_has_no_title(cli, tmp_path: Path) -> None:
    for objective, acc in (("softmax", 0.995), ("sigmoid", 1.0), ("squared_error", 0.9999)):
        write(tmp_path, objective, record("train", model(objective, 0), {"test_top1": acc}))
    run = cli("report", tmp_path, "--table", "transfer", "--format", "csv")
    assert run.stdout.splitlines() == [
        "Objective,n,Source",
        "softmax,1,99.5",
        "sigmoid,1,100.0",
        "squared_error,1,100.0",
    ]
    text = cli("report", tmp_path, "--table", "transfer", "--format", "markdown").stdout
    assert "| sigmoid | 1 | **100.0** |" in text and "| squared_error | 1 | **100.0** |" in text
    assert "| softmax | 1 | 99.5 |" in text


def test_probe_on_the_source_data_is_shown_but_not_averaged(cli, study: Path) -> None:
    before = table(report_json(cli, study, "--table", "transfer"), "transfer")
    for seed in range(3):
        m = model("softmax", seed)
        write(study / "src", f"probe{seed}", record("probe", m, probe({"linear": 0.99}), SOURCE))
    after = table(report_json(cli, study, "--table", "transfer"), "transfer")
    assert row(after, "softmax")["cells"][f"linear:{SOURCE}"]["values"] == [0.99] * 3
    for label in ("softmax", "sigmoid"):
        assert (
            row(after, label)["cells"]["linear:mean"] == row(before, label)["cells"]["linear:mean"]
        )
