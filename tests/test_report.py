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


def rec(tab: dict, objective: str, metric: str, **fields: str) -> dict | None:
    """The tidy record of one cell: a row (objective, options, ...) and a column (metric, ...)."""
    want = {"objective": objective, "metric": metric, "options": "", **fields}
    found = [r for r in tab["records"] if all(r.get(k, "") == v for k, v in want.items())]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_statistics_equal_scipy(cli, study: Path) -> None:
    import numpy as np
    from scipy import stats

    transfer = table(report_json(cli, study), "transfer")
    soft, sig = values("softmax", 0), values("sigmoid", 0)
    cell = rec(transfer, "sigmoid", "source_top1")
    assert cell is not None
    assert cell["mean"] == pytest.approx(np.mean(sig), abs=1e-15)
    assert cell["std"] == pytest.approx(np.std(sig, ddof=1), rel=1e-12)
    want = stats.ttest_ind(sig, soft, equal_var=False).pvalue
    assert cell["p_value"] == pytest.approx(want, rel=1e-12)
    assert cell["significant"] == (cell["p_value"] < 0.05) and cell["best"]
    # the per-run average over the two transfer datasets, then mean over seeds
    avg = [(a + b) / 2 for a, b in zip(values("sigmoid", 1), values("sigmoid", 2), strict=True)]
    mean = rec(transfer, "sigmoid", "linear_top1", dataset="mean")
    assert mean is not None and mean["mean"] == pytest.approx(np.mean(avg))
    base = rec(transfer, "softmax", "source_top1")
    assert base is not None and base["p_value"] is None and not base["significant"]
    one = rec(transfer, "squared_error", "source_top1")
    assert one is not None and (one["n"], one["std"], one["p_value"]) == (1, None, None)


def test_correlation_and_cka_columns_equal_scipy(cli, study: Path) -> None:
    import numpy as np
    from scipy import stats

    summary = table(report_json(cli, study, "--table", "summary"), "summary")
    r2 = [v[4] for v in RUNS.values()]
    transfer = [(v[1] + v[2]) / 2 for v in RUNS.values()]
    (corr,) = summary["correlations"]
    assert corr["runs"] == len(RUNS)
    assert corr["pearson_r"] == pytest.approx(stats.pearsonr(r2, transfer).statistic, rel=1e-12)
    assert corr["spearman_rho"] == pytest.approx(stats.spearmanr(r2, transfer).statistic)
    # CKA vs softmax: sigmoid pairs with softmax seeds; the softmax row: its own seeds vs seed 0
    sig = rec(summary, "sigmoid", "cka")
    want = [cka_value(("sigmoid", s), ("softmax", s), "penultimate") for s in range(3)]
    assert sig is not None and (sig["mean"], sig["n"]) == (pytest.approx(np.mean(want)), 3)
    assert sig["std"] == pytest.approx(np.std(want, ddof=1))
    own = rec(summary, "softmax", "cka")
    want = [cka_value(("softmax", s), ("softmax", 0), "penultimate") for s in (1, 2)]
    assert own is not None and (own["mean"], own["n"]) == (pytest.approx(np.mean(want)), 2)
    assert rec(summary, "softmax", "cka", options="temperature=0.5") is None


def test_json_option_and_format_json_agree(cli, study: Path) -> None:
    assert cli("report", study, "--json").stdout == cli("report", study, "--format", "json").stdout
    run = cli("report", study, "--json", "--format", "markdown")
    assert run.code == 2 and "--json" in run.stderr


def test_objective_options_and_architectures_are_never_pooled(cli, study: Path) -> None:
    m = model("softmax", 0, arch="resnet18")
    write(study / "r18", "train", record("train", m, {"test_top1": 0.5}))
    transfer = table(report_json(cli, study, "--table", "transfer"), "transfer")
    small = rec(transfer, "softmax", "source_top1", arch="smallcnn")
    assert small is not None and small["n"] == 3
    assert small["mean"] == pytest.approx(sum(values("softmax", 0)) / 3)
    r18 = rec(transfer, "softmax", "source_top1", arch="resnet18")
    assert r18 is not None and (r18["n"], r18["mean"]) == (1, 0.5)
    temp = rec(transfer, "softmax", "source_top1", options="temperature=0.5")
    assert temp is not None and temp["n"] == 2
    # the best mark and the t-test stay inside a group
    sig = rec(transfer, "sigmoid", "source_top1")
    assert r18["best"] and sig is not None and sig["best"]
    text = cli("report", study, "--table", "transfer", "--format", "markdown").stdout
    assert "| Group | Objective | n |" in text
    assert "| resnet18 on digits[0-4] | softmax | 1 | **50.0** |" in text


def test_training_settings_split_rows_and_say_so(cli, study: Path) -> None:
    """Runs of one objective trained differently are never pooled (model.training)."""
    for seed, epochs in ((0, 1), (1, 1), (0, 10)):
        m = model("cosine_softmax", seed, sha=f"cos{seed}-{epochs}")
        m["training"] = {"epochs": epochs, "lr": 0.1, "batch_size": 256}
        write(
            study / f"cos-e{epochs}-s{seed}",
            "train",
            record("train", m, {"test_top1": 0.8 + epochs / 100}),
        )
    m = model("cosine_softmax", 5, sha="cos-old")  # a record from before model.training
    write(study / "cos-old", "train", record("train", m, {"test_top1": 0.1}))
    run = cli("report", study, "--table", "transfer", "--json")
    assert run.code == 0, run.stderr
    transfer = table(json.loads(run.stdout), "transfer")
    one = rec(transfer, "cosine_softmax", "source_top1", training="epochs=1")
    ten = rec(transfer, "cosine_softmax", "source_top1", training="epochs=10")
    old = rec(transfer, "cosine_softmax", "source_top1", training="training=unrecorded")
    assert one is not None and (one["n"], one["mean"]) == (2, pytest.approx(0.81))
    assert ten is not None and (ten["n"], ten["mean"]) == (1, pytest.approx(0.9))
    assert old is not None and (old["n"], old["mean"]) == (1, 0.1)
    (line,) = [ln for ln in run.stderr.splitlines() if "cosine_softmax" in ln]
    assert "not pooled" in line and "cosine_softmax (epochs=1)" in line
    assert "cosine_softmax (epochs=10)" in line and "cosine_softmax (training=unrecorded)" in line
    # runs whose settings agree, or differ only between objectives, stay one row each
    assert "softmax" not in run.stderr.replace("cosine_softmax", "")


def test_baseline_may_name_a_row_with_options(cli, study: Path) -> None:
    transfer = table(report_json(cli, study, "--baseline", "softmax (temperature=0.5)"), "transfer")
    base = rec(transfer, "softmax", "source_top1", options="temperature=0.5")
    other = rec(transfer, "softmax", "source_top1")
    assert base is not None and base["p_value"] is None
    assert other is not None and other["p_value"] is not None


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--baseline", "sofmax", "unknown baseline 'sofmax' (did you mean 'softmax'?); choose"),
        ("--layer", "blok2", "unknown layer 'blok2' (did you mean 'block2'?); choose from: "),
        ("--table", "sumary", "unknown table 'sumary' (did you mean 'summary'?); choose from: "),
        ("--format", "markdwn", "unknown report format 'markdwn' (did you mean 'markdown'?)"),
    ],
)
def test_name_typos_are_usage_errors(
    cli, study: Path, tmp_path: Path, option: str, value: str, message: str
) -> None:
    out = tmp_path / "t.md"
    run = cli("report", study, option, value, "-o", out, "--plots", tmp_path / "figs")
    assert run.code == 2 and run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert message in line
    assert not out.exists() and not (tmp_path / "figs").exists()


def test_no_softmax_row_means_no_test_unless_a_baseline_is_named(cli, tmp_path: Path) -> None:
    for seed in range(2):
        for objective, acc in (("sigmoid", 0.9), ("cosine_softmax", 0.8)):
            m = model(objective, seed)
            write(
                tmp_path / f"{objective}{seed}",
                "train",
                record("train", m, {"test_top1": acc + seed / 100}),
            )
    run = cli("report", tmp_path, "--format", "markdown")
    assert run.code == 0 and run.stderr == "" and "†" not in run.stdout.split("\n\n")[1]
    assert "No baseline row, so no t-test." in run.stdout
    named = cli("report", tmp_path, "--format", "markdown", "--baseline", "sigmoid")
    assert "t-test against sigmoid" in named.stdout


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
    assert run.stdout.splitlines()[1].startswith(
        "smallcnn,digits[0-4],softmax,,source_top1,,0.905,"
    )
    only_bad = cli("report", bad)
    assert only_bad.code == 3
    assert only_bad.stdout == ""
    assert "skipped" in only_bad.stderr and "no usable result records" in only_bad.stderr


def test_newest_record_of_a_measurement_wins(cli, study: Path) -> None:
    m = model("sigmoid", 2)
    late = record("train", m, {"test_top1": 0.99}, created="2026-02-01T00:00:00+00:00")
    write(study / "rerun", "train", late)
    run = cli("report", study, "--table", "transfer", "--json")
    cell = rec(table(json.loads(run.stdout), "transfer"), "sigmoid", "source_top1")
    assert cell is not None and cell["mean"] == pytest.approx((0.93 + 0.935 + 0.99) / 3)
    assert "sigmoid-s2/train.json: superseded by newer records" in run.stderr


def test_same_seed_with_two_checkpoints_is_flagged(cli, study: Path) -> None:
    m = model("sigmoid", 2, sha="other")
    write(study / "retrain", "train", record("train", m, {"test_top1": 0.5}))
    run = cli("report", study, "--table", "transfer", "--json")
    assert "sigmoid seed 2: 2 different checkpoints" in run.stderr
    cell = rec(table(json.loads(run.stdout), "transfer"), "sigmoid", "source_top1")
    assert cell is not None and cell["n"] == 4


def test_table_without_records_is_an_input_error(cli, study: Path) -> None:
    write(study.parent / "only", "train", record("train", model("softmax", 0), {"test_top1": 0.9}))
    run = cli("report", study.parent / "only", "--table", "cka")
    assert run.code == 3 and "table cka" in run.stderr


def test_out_file_format_from_suffix_and_no_clobber(cli, study: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.tex"
    run = cli("report", study, "--table", "summary", "-o", out)
    assert run.code == 0 and run.stdout == "" and run.stderr == f"lossxfer: wrote {out}\n"
    assert out.read_text().startswith("\\begin{table}[t]")
    assert cli("report", study, "-o", out).code == 2
    assert cli("report", study, "--table", "cka", "-o", out, "--force", "-q").code == 0
    assert "\\label{tab:cka}" in out.read_text()


def test_one_table_per_tidy_file(cli, study: Path, tmp_path: Path) -> None:
    """CSV and TSV hold one table: several go to one file each, named after the table."""
    several = cli("report", study, "--format", "csv")
    assert several.code == 2 and several.stdout == ""
    assert (
        "csv holds one table and the records give 5 (summary, transfer, separation, finetune, cka)"
        in several.stderr
    )
    folder = tmp_path / "tables"
    assert cli("report", study, "-o", folder, "-q").code == 0  # a folder: csv by default
    names = ["summary", "transfer", "separation", "finetune", "cka"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.csv" for n in names)
    run = cli("report", study, "--table", "summary,cka", "-o", tmp_path / "out.tsv", "-q")
    assert (run.code, run.stdout, run.stderr) == (0, "", "")
    assert (tmp_path / "out-summary.tsv").is_file() and (tmp_path / "out-cka.tsv").is_file()
    assert not (tmp_path / "out.tsv").exists()
    again = cli("report", study, "-o", folder)  # every file is checked before any work
    assert again.code == 2 and "exists" in again.stderr


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_tidy_files_read_back_with_pandas(cli, study: Path, tmp_path: Path, fmt: str) -> None:
    """pandas reads every table with the right dtypes and no options; numbers round-trip."""
    import pandas as pd

    folder = tmp_path / fmt
    assert cli("report", study, "--format", fmt, "-o", folder).code == 0
    doc = report_json(cli, study)
    for tab in doc["tables"]:
        frame = pd.read_csv(folder / f"{tab['name']}.{fmt}", sep="," if fmt == "csv" else "\t")
        numbers = {"mean": "float64", "std": "float64", "n": "int64", "p_value": "float64"}
        numbers |= {"significant": "bool", "best": "bool"}
        assert {k: str(frame[k].dtype) for k in numbers} == numbers, tab["name"]
        assert all(
            frame[k].dtype == object or str(frame[k].dtype) == "str"
            for k in frame.columns
            if k not in numbers
        )
        assert len(frame) == len(tab["records"])
        for got, want in zip(frame.to_dict("records"), tab["records"], strict=True):
            for key in numbers:
                if want[key] is None:
                    assert pd.isna(got[key])
                else:
                    assert got[key] == pytest.approx(want[key], rel=1e-11)


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


def test_best_is_the_highest_number_as_shown(cli, tmp_path: Path) -> None:
    for objective, acc in (("softmax", 0.995), ("sigmoid", 1.0), ("squared_error", 0.9999)):
        write(tmp_path, objective, record("train", model(objective, 0), {"test_top1": acc}))
    run = cli("report", tmp_path, "--table", "transfer", "--format", "csv")
    assert run.stdout.splitlines() == [
        "arch,data,objective,metric,mean,std,n,p_value,significant,best",
        "smallcnn,digits[0-4],softmax,source_top1,0.995,,1,,False,False",
        "smallcnn,digits[0-4],sigmoid,source_top1,1,,1,,False,True",
        "smallcnn,digits[0-4],squared_error,source_top1,0.9999,,1,,False,True",
    ]
    text = cli("report", tmp_path, "--table", "transfer", "--format", "markdown").stdout
    assert "| sigmoid | 1 | **100.0** |" in text and "| squared_error | 1 | **100.0** |" in text
    assert "| softmax | 1 | 99.5 |" in text
    tex = cli("report", tmp_path, "--table", "transfer", "--format", "latex").stdout
    # no ± anywhere: one plain column, not an r@{}l pair
    assert "\\begin{tabular}{lrr}" in tex and "sigmoid & 1 & \\textbf{100.0} \\\\" in tex


def test_probe_on_the_source_data_is_shown_but_not_averaged(cli, study: Path) -> None:
    before = table(report_json(cli, study, "--table", "transfer"), "transfer")
    for seed in range(3):
        m = model("softmax", seed)
        write(study / "src", f"probe{seed}", record("probe", m, probe({"linear": 0.99}), SOURCE))
    after = table(report_json(cli, study, "--table", "transfer"), "transfer")
    cell = rec(after, "softmax", "linear_top1", dataset=SOURCE)
    assert cell is not None and (cell["mean"], cell["n"]) == (pytest.approx(0.99), 3)
    for label in ("softmax", "sigmoid"):
        mean = {"metric": "linear_top1", "dataset": "mean"}
        assert rec(after, label, **mean) == rec(before, label, **mean)


# -- golden files: every format and every table -----------------------------------------------

TABLE_NAMES = ("summary", "transfer", "separation", "finetune", "cka")


@pytest.mark.parametrize("fmt", ["markdown", "latex", "rich", "json"])
def test_human_formats_and_json_render_exactly(cli, study: Path, fmt: str) -> None:
    """Every table, in the order of --table all, as the format writes it."""
    run = cli("report", study, "--format", fmt)
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    suffix = {"markdown": "md", "latex": "tex", "rich": "txt"}.get(fmt, fmt)
    text = run.stdout
    if fmt == "json":  # record paths differ between runs of the test
        doc = json.loads(text)
        assert doc["skipped"] == [] and doc["plots"] == []
        text = json.dumps(doc["tables"], indent=1, ensure_ascii=False) + "\n"
    golden(f"report_all.{suffix}", text)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
@pytest.mark.parametrize("name", TABLE_NAMES)
def test_tidy_formats_render_exactly(cli, study: Path, fmt: str, name: str) -> None:
    run = cli("report", study, "--table", name, "--format", fmt)
    assert run.code == 0, run.stderr
    golden(f"report_{name}.{fmt}", run.stdout)


def test_latex_compiles(cli, study: Path, tmp_path: Path) -> None:
    """The LaTeX compiles with pdflatex and booktabs alone (skipped where pdflatex is absent)."""
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    assert cli("report", study, "-o", tmp_path / "tables.tex", "--label", "tab:study").code == 0
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage[margin=1cm]{geometry}"
        "\\begin{document}\\input{tables.tex}\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert "Missing character" not in log and "Undefined control sequence" not in log
    tex = (tmp_path / "tables.tex").read_text()
    assert tex.count("\\toprule") == tex.count("\\bottomrule") == len(TABLE_NAMES)
    assert "\\label{tab:study-summary}" in tex and "\\textbf{93.5}" in tex
    assert "$^\\dagger$" in tex and "Welch's t-test against softmax" in tex


def test_latex_caption_and_label_options(cli, study: Path) -> None:
    run = cli(
        "report", study, "--table", "summary", "--format", "latex",
        "--caption", "Objectives on digits", "--label", "tab:digits",
    )  # fmt: skip
    assert run.code == 0
    assert "\\caption{Objectives on digits. Top-1 accuracy" in run.stdout
    assert "\\label{tab:digits}\n" in run.stdout


def test_captions_state_the_statistics(cli, study: Path) -> None:
    text = cli("report", study, "--format", "markdown").stdout
    for name in ("summary", "transfer", "separation", "finetune"):
        assert "Mean ± sample standard deviation over the n seeds of each row" in text, name
    assert text.count("two-sided Welch's t-test against softmax") == 4
    assert "n = 1: the value alone, no test." in text
    # n = 1: no ± and no mark
    assert "| squared_error | 1 | 92.0 | 57.5 | 58.0 | 0.700 | 0.650 |" in text


def test_rich_shows_best_in_bold(study: Path) -> None:
    from rich.console import Console

    from lossxfer.report import ReportConfig, rich_tables, run_report

    console = Console(record=True, width=300, force_terminal=True, color_system="standard")
    console.print(
        rich_tables(run_report(ReportConfig(paths=(study,), tables=("transfer",))).tables)
    )
    text = console.export_text(styles=True)
    assert "\x1b[1m93.5 ± 0.5\x1b[0m†" in text  # sigmoid's source accuracy
    assert "\x1b[1m92.0" not in text


def test_quiet_prints_nothing_but_requested_output(cli, study: Path, tmp_path: Path) -> None:
    run = cli("report", study, "-o", tmp_path / "t.md", "--plots", tmp_path / "f", "-q")
    assert (run.code, run.stdout, run.stderr) == (0, "", "")
    shown = cli("report", study, "--table", "summary", "-q")  # no -o: the table is the output
    assert shown.stdout.startswith("Source accuracy") and shown.stderr == ""
    dash = cli("report", study, "--table", "cka", "--format", "csv", "-o", "-", "-q")
    assert dash.stdout.startswith("arch,data,estimator,layer,metric,") and dash.stderr == ""


# -- layers stored twice ----------------------------------------------------------------------


def test_identical_layers_are_shown_once(cli, tmp_path: Path) -> None:
    """smallcnn's block3 is its penultimate features: CKA records show it, tables show it once."""
    from lossxfer.layers import identical_layers

    layers = ["block2", "block3", "penultimate"]
    a, b = model("softmax", 0), model("sigmoid", 0)
    matrix = [[0.9, 0.5, 0.5], [0.6, 0.8, 0.8], [0.6, 0.8, 0.8]]
    assert identical_layers(layers, layers, matrix) == {"block3": "penultimate"}
    assert (
        identical_layers(layers, layers, [[0.9, 0.5, 0.5], [0.6, 0.8, 0.8], [0.6, 0.8, 0.7]]) == {}
    )
    metrics = {
        "estimator": "linear", "split": "test", "layers_a": layers, "layers_b": layers,
        "matrix": matrix, "model_b": b,
    }  # fmt: skip
    write(tmp_path, "cka", record("cka", a, metrics, SOURCE))
    text = cli("report", tmp_path, "--table", "cka", "--format", "markdown").stdout
    assert "| block3 |" not in text and "| penultimate |" in text
    assert "block3 is not shown: the same activations as penultimate" in text
    doc = report_json(cli, tmp_path, "--table", "cka")
    assert doc["same_layers"] == {"block3": "penultimate"}
    # asked for by name, the layer is still there
    summary = report_json(cli, tmp_path, "--table", "summary", "--layer", "block3")
    assert rec(table(summary, "summary"), "sigmoid", "cka")["mean"] == 0.8  # type: ignore[index]


# -- figures ----------------------------------------------------------------------------------


def legend_labels(fig: Any) -> list[str]:
    return [
        t.get_text()
        for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
        if legend
        for t in legend.get_texts()
    ]


def test_figures_are_what_a_reviewer_needs(study: Path) -> None:
    from lossxfer.report import ReportConfig
    from lossxfer.report.plots import figures
    from lossxfer.report.records import gather

    config = ReportConfig(paths=(study,))
    found = gather(config)
    figs = figures(found, "penultimate", "softmax")
    assert set(figs) == {
        "r2_vs_transfer",
        "source_vs_transfer",
        "transfer_by_dataset",
        "cka_heatmap_penultimate",
        "cka_layers",
    }
    for fig in figs.values():  # one column of a two-column paper
        width, height = fig.get_size_inches()
        assert width == pytest.approx(3.4) and height < 3.5
        ax = fig.axes[0]
        assert ax.get_xlabel() and (ax.get_ylabel() or ax.get_title())
    objectives = ["softmax", "softmax (temperature=0.5)", "sigmoid", "squared_error"]
    for stem in ("r2_vs_transfer", "source_vs_transfer"):
        fig = figs[stem]
        assert sorted(legend_labels(fig)) == sorted(objectives)
        ax = fig.axes[0]
        scatters = ax.collections
        markers = {
            c.get_label(): (c.get_paths()[0].vertices.tobytes(), tuple(c.get_edgecolor()[0]))
            for c in scatters
        }
        assert len(set(markers.values())) == len(objectives)  # marker and colour per objective
        base = next(c for c in scatters if c.get_label() == "softmax")
        assert base.get_zorder() > max(c.get_zorder() for c in scatters if c is not base)
        assert base.get_sizes()[0] > max(c.get_sizes()[0] for c in scatters if c is not base)
        # outlines and translucent faces: a point under another still shows
        assert len(base.get_facecolor()) == 0 or base.get_facecolor()[0][3] == 0
        assert all(c.get_facecolor()[0][3] < 0.5 for c in scatters if c is not base)
        (line,) = ax.get_lines()  # the least-squares line
        texts = [t.get_text() for t in ax.texts]
        assert any(t.startswith("r = ") and ", p = " in t and "9 runs" in t for t in texts)
        assert len(line.get_xdata()) == 2
    assert figs["r2_vs_transfer"].axes[0].get_xlabel() == "class separation R² (penultimate)"
    by_dataset = figs["transfer_by_dataset"].axes[0]
    assert [t.get_text() for t in by_dataset.get_xticklabels()] == ["digits[5-9]", "synthetic"]
    assert sorted(legend_labels(figs["transfer_by_dataset"])) == sorted(objectives[1:])
    layers = figs["cka_layers"].axes[0]
    assert [t.get_text() for t in layers.get_xticklabels()] == list(LAYERS)
    assert layers.get_xlabel() == "layer"
    low, high = layers.get_ylim()
    assert low >= 0.0 and high == 1.0
    for band in layers.collections:  # min–max bands: inside [0, 1]
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() >= 0.0 and ys.max() <= 1.0
    heat = figs["cka_heatmap_penultimate"].axes[0]
    image = heat.get_images()[0]
    values = [cka_value(("sigmoid", s), ("softmax", s), "penultimate") for s in range(3)]
    low, high = image.get_clim()  # the data's range, not a fixed [0, 1]
    assert high < 1.0 and low == pytest.approx(sum(values) / 3)  # the lowest cell: sigmoid
    cells = [t.get_text() for t in heat.texts]
    assert f"{sum(values) / 3:.2f}" in cells


def test_plots_are_written_as_png_svg_pdf(cli, study: Path, tmp_path: Path) -> None:
    folder = tmp_path / "figs"
    run = cli("report", study, "--table", "summary", "--plots", folder)
    assert run.code == 0, run.stderr
    stems = [
        "r2_vs_transfer",
        "source_vs_transfer",
        "transfer_by_dataset",
        "cka_heatmap_penultimate",
        "cka_layers",
    ]
    for stem in stems:
        png, svg, pdf = (folder / f"{stem}.{ext}" for ext in ("png", "svg", "pdf"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-"
        assert "<svg" in svg.read_text()
        assert f"wrote {png}" in run.stderr
    assert "class separation R²" in (folder / "r2_vs_transfer.svg").read_text()
    again = cli("report", study, "--plots", folder)
    assert again.code == 2 and "exists" in again.stderr
    assert cli("report", study, "--plots", folder, "--force").code == 0


# -- completion -------------------------------------------------------------------------------


def test_completion_of_names_from_registries_and_records(study: Path) -> None:
    from types import SimpleNamespace

    from lossxfer.cli import report as cli_report

    ctx = SimpleNamespace(args=[], params={"paths": [str(study)]})

    assert cli_report._complete_table("s") == ["summary", "separation"]
    assert cli_report._complete_format("t") == ["tsv"]
    want = ["softmax", "softmax (temperature=0.5)"]
    assert cli_report._complete_baseline(ctx, "soft") == want  # type: ignore[arg-type]
    assert sorted(cli_report._complete_layer(ctx, "")) == sorted(LAYERS)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["smallcnn", "resnet18"])
def test_extract_names_the_layer_stored_twice(arch: str) -> None:
    """penultimate is the pooled last block: extract says so, and the numbers agree."""
    import torch

    from lossxfer.extract import same_layers
    from lossxfer.inputs import InputSpec
    from lossxfer.models import build_network
    from lossxfer.objectives import make_objective

    spec = InputSpec(3, 16, (0.5,) * 3, (0.25,) * 3)
    network = build_network(arch, spec, make_objective("softmax"), 5).eval()
    last = network.backbone.layer_names()[-1]
    assert same_layers(network, [last, "penultimate", "logits"], "avg") == {last: "penultimate"}
    assert same_layers(network, [last, "penultimate"], "flatten") == {}
    assert same_layers(network, ["block1", "penultimate"], "avg") == {}
    captured = {}
    hook = network.named_layers()[last].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("x", out.mean(dim=(2, 3)))
    )
    with torch.inference_mode():
        features = network.backbone(torch.randn(4, 3, 16, 16))
    hook.remove()
    torch.testing.assert_close(captured["x"], features, rtol=1e-6, atol=1e-6)


def test_cka_plot_uses_the_data_range_and_shows_each_layer_once() -> None:
    """`cka --plot`: colours over the values' range, each value in its cell, block3 once."""
    from lossxfer.results import Result
    from lossxfer.similarity.plot import heatmap_figure

    layers = ["stem", "block3", "penultimate"]
    matrix = [[1.0, 0.41, 0.41], [0.41, 1.0, 1.0], [0.41, 1.0, 1.0]]
    metrics = {"estimator": "linear", "split": "test", "layers_a": layers, "layers_b": layers}
    fig = heatmap_figure(Result("cka", {**metrics, "matrix": matrix}, model=model("softmax", 0)))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["stem", "penultimate"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["stem", "penultimate"]
    assert ax.get_images()[0].get_clim() == (0.41, 1.0)
    assert sorted(t.get_text() for t in ax.texts) == ["0.41", "0.41", "1.00", "1.00"]
    assert "block3 = penultimate (shown once)" in ax.get_title()
    assert fig.get_size_inches()[0] == pytest.approx(3.4)
