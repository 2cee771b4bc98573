"""The nine objectives (docs/method.md §1) against float64 references written out by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call

from lossxfer.errors import UsageError
from lossxfer.objectives import OBJECTIVES, list_objectives, make_objective

PAPER_ORDER = [
    "softmax",
    "label_smoothing",
    "sigmoid",
    "extra_final_layer_l2",
    "dropout",
    "logit_penalty",
    "logit_normalization",
    "cosine_softmax",
    "squared_error",
]

# docs/method.md §1 defaults (label_smoothing.rescale: the released code's 1/(1−α) factor).
DEFAULTS = {
    "softmax": {"temperature": 1.0},
    "label_smoothing": {"alpha": 0.1, "rescale": True},
    "sigmoid": {},
    "extra_final_layer_l2": {"lam": 8e-4},
    "dropout": {"keep_prob": 0.7},
    "logit_penalty": {"beta": 6e-4},
    "logit_normalization": {"tau": 0.04},
    "cosine_softmax": {"tau": 0.05, "variant": "paper"},
    "squared_error": {"kappa": 9.0, "m": 60.0, "s": 10.0},
}

Z = [[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, -0.3, 1.5], [-2.0, 3.0, 1.0, -0.5]]
Y = [0, 3, 2]
K = 4


def logits_targets() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(Z, dtype=torch.float64), torch.tensor(Y)


def xent(row: list[float], y: int) -> float:
    """−log softmax(row)[y]."""
    return math.log(sum(math.exp(v) for v in row)) - row[y]


def mean_xent(rows: list[list[float]]) -> float:
    return float(np.mean([xent(r, y) for r, y in zip(rows, Y, strict=True)]))


def loss_of(
    name: str, opts: Mapping[str, object] | None = None, head: torch.nn.Module | None = None
) -> float:
    obj = make_objective(name, opts)
    logits, targets = logits_targets()
    return obj.loss(logits, targets, head if head is not None else obj.build_head(5, K)).item()


def test_registry_has_the_nine_in_paper_order() -> None:
    assert OBJECTIVES.names() == PAPER_ORDER
    assert [info.name for info in list_objectives()] == PAPER_ORDER


def test_defaults_are_the_paper_values() -> None:
    for info in list_objectives():
        assert info.options == DEFAULTS[info.name]
        assert make_objective(info.name).options() == DEFAULTS[info.name]
        assert info.doc and not info.doc.startswith(OBJECTIVES.get(info.name).__name__ + "(")


@pytest.mark.parametrize("name", PAPER_ORDER)
def test_options_round_trip_through_json(name: str) -> None:
    obj = make_objective(name)
    assert make_objective(name, json.loads(json.dumps(obj.options()))) == obj


def test_options_from_cli_strings() -> None:
    obj = make_objective("cosine_softmax", {"tau": "0.1", "variant": "released"})
    assert (obj.tau, obj.variant) == (0.1, "released")  # type: ignore[attr-defined]
    assert make_objective("label_smoothing", {"rescale": "false"}).rescale is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "opts"),
    [
        ("softmax", {"temperature": "0"}),
        ("label_smoothing", {"alpha": "1"}),
        ("label_smoothing", {"alpha": "-0.1"}),
        ("label_smoothing", {"rescale": "maybe"}),
        ("extra_final_layer_l2", {"lam": "-1e-4"}),
        ("dropout", {"keep_prob": "0"}),
        ("dropout", {"keep_prob": "1.5"}),
        ("logit_penalty", {"beta": "-1"}),
        ("logit_normalization", {"tau": "0"}),
        ("cosine_softmax", {"tau": "-0.05"}),
        ("cosine_softmax", {"variant": "other"}),
        ("squared_error", {"kappa": "0"}),
        ("squared_error", {"m": "nan"}),
        ("squared_error", {"s": "ten"}),
    ],
)
def test_invalid_values_are_usage_errors(name: str, opts: dict[str, str]) -> None:
    with pytest.raises(UsageError) as info:
        make_objective(name, opts)
    assert next(iter(opts)) in str(info.value)
    assert info.value.exit_code == 2


def test_unknown_key_names_the_valid_keys() -> None:
    with pytest.raises(UsageError, match=r"unknown squared_error option 'M'; choose from: kappa"):
        make_objective("squared_error", {"M": "60"})
    with pytest.raises(UsageError, match=r"--loss-opt alpha: sigmoid has no options"):
        make_objective("sigmoid", {"alpha": "0.1"})
    with pytest.raises(UsageError, match=r"did you mean 'sigmoid'"):
        make_objective("sigmoidd")


def test_softmax() -> None:
    assert loss_of("softmax") == pytest.approx(mean_xent(Z), rel=1e-12)
    scaled = [[v / 2.0 for v in row] for row in Z]
    assert loss_of("softmax", {"temperature": 2.0}) == pytest.approx(mean_xent(scaled), rel=1e-12)


@pytest.mark.parametrize(("alpha", "rescale"), [(0.1, True), (0.3, True), (0.3, False)])
def test_label_smoothing(alpha: float, rescale: bool) -> None:
    want = 0.0
    for row, y in zip(Z, Y, strict=True):
        log_norm = math.log(sum(math.exp(v) for v in row))
        target = [(1 - alpha) * (k == y) + alpha / K for k in range(K)]
        want += -sum(t * (v - log_norm) for t, v in zip(target, row, strict=True)) / len(Z)
    if rescale:
        want /= 1 - alpha
    got = loss_of("label_smoothing", {"alpha": alpha, "rescale": rescale})
    assert got == pytest.approx(want, rel=1e-12)


def test_sigmoid_sums_over_classes_with_log_k_shift() -> None:
    want = 0.0
    for row, y in zip(Z, Y, strict=True):
        for k, v in enumerate(row):
            p = 1 / (1 + math.exp(-(v - math.log(K))))
            want -= math.log(p) if k == y else math.log(1 - p)
    assert loss_of("sigmoid") == pytest.approx(want / len(Z), rel=1e-12)


def test_sigmoid_starts_each_class_near_one_over_k() -> None:
    """With z = 0, each σ(−log K) = 1/(K+1) ≈ 1/K."""
    zero = torch.zeros(1, K, dtype=torch.float64)
    loss = make_objective("sigmoid").loss(zero, torch.tensor([0]), torch.nn.Identity())
    want = -math.log(1 / (K + 1)) - (K - 1) * math.log(K / (K + 1))
    assert loss.item() == pytest.approx(want, rel=1e-12)


def test_extra_final_layer_l2_penalises_weight_not_bias() -> None:
    head = torch.nn.Linear(2, K).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0], [-1.0, 0.25]]))
        head.bias.fill_(100.0)
    sum_sq = 1 + 4 + 0.25 + 9 + 1 + 1 + 0.0625
    got = loss_of("extra_final_layer_l2", {"lam": 0.01}, head)
    assert got == pytest.approx(mean_xent(Z) + 0.01 * 0.5 * sum_sq, rel=1e-12)
    assert loss_of("extra_final_layer_l2", {"lam": 0.0}, head) == pytest.approx(mean_xent(Z))


def test_logit_penalty() -> None:
    mean_sq = np.mean([sum(v * v for v in row) for row in Z])
    got = loss_of("logit_penalty", {"beta": 0.01})
    assert got == pytest.approx(mean_xent(Z) + 0.01 * 0.5 * mean_sq, rel=1e-12)


def test_logit_normalization() -> None:
    tau = 0.04
    scaled = [[v / (tau * math.sqrt(sum(u * u for u in row))) for v in row] for row in Z]
    assert loss_of("logit_normalization", {"tau": tau}) == pytest.approx(
        mean_xent(scaled), rel=1e-12
    )


def test_logit_normalization_zero_logits_are_uniform_not_nan() -> None:
    zero = torch.zeros(2, K, dtype=torch.float64, requires_grad=True)
    loss = make_objective("logit_normalization").loss(
        zero, torch.tensor([0, 1]), torch.nn.Identity()
    )
    loss.backward()
    assert loss.item() == pytest.approx(math.log(K))
    assert zero.grad is not None and torch.isfinite(zero.grad).all()


def test_squared_error() -> None:
    kappa, m, s = 9.0, 60.0, 10.0
    want = 0.0
    for row, y in zip(Z, Y, strict=True):
        want += s * (kappa * (row[y] - m) ** 2 + sum(v * v for k, v in enumerate(row) if k != y))
    assert loss_of("squared_error") == pytest.approx(want / len(Z), rel=1e-12)
    custom = {"kappa": 2.0, "m": 3.0, "s": 0.5}
    want = 0.0
    for row, y in zip(Z, Y, strict=True):
        want += 0.5 * (2.0 * (row[y] - 3.0) ** 2 + sum(v * v for k, v in enumerate(row) if k != y))
    assert loss_of("squared_error", custom) == pytest.approx(want / len(Z), rel=1e-12)


def cosine_head(variant: str, tau: float = 0.05) -> torch.nn.Linear:
    head = make_objective("cosine_softmax", {"tau": tau, "variant": variant}).build_head(3, 2)
    head = head.double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0, 2.0], [0.0, -3.0, 4.0]]))
        head.bias.copy_(torch.tensor([0.5, -0.25]))
    return head


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_cosine_head_logits(variant: str) -> None:
    tau = 0.05
    x = [[1.0, 0.0, 1.0], [2.0, -1.0, 0.5]]
    w = [[1.0, 2.0, 2.0], [0.0, -3.0, 4.0]]
    b = [0.5, -0.25]

    def norm(v: list[float]) -> float:
        return math.sqrt(sum(u * u for u in v))

    want = []
    for xi in x:
        row = []
        for wk, bk in zip(w, b, strict=True):
            dot = sum(p * q for p, q in zip(xi, wk, strict=True))
            if variant == "paper":
                row.append(dot / (norm(xi) * norm(wk)) / tau + bk)
            else:
                row.append((dot / norm(wk) + bk) / tau)
        want.append(row)
    head = cosine_head(variant, tau)
    z = head(torch.tensor(x, dtype=torch.float64))
    np.testing.assert_allclose(z.detach().numpy(), want, rtol=1e-12)
    # The loss is plain cross-entropy on the head's output: the `logits` layer is z as used.
    obj = make_objective("cosine_softmax", {"tau": tau, "variant": variant})
    loss = obj.loss(z, torch.tensor([1, 0]), head).item()
    assert loss == pytest.approx((xent(want[0], 1) + xent(want[1], 0)) / 2, rel=1e-12)


def test_cosine_head_zero_features_give_bias_not_nan() -> None:
    z = cosine_head("paper")(torch.zeros(1, 3, dtype=torch.float64))
    np.testing.assert_allclose(z.detach().numpy(), [[0.5, -0.25]])


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_cosine_head_gradcheck(variant: str) -> None:
    head = cosine_head(variant)
    obj = make_objective("cosine_softmax", {"variant": variant})
    targets = torch.tensor([1, 0])

    def loss(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        z = functional_call(head, {"weight": w, "bias": b}, (x,))
        return obj.loss(z, targets, head)

    x = torch.tensor([[1.0, 0.0, 1.0], [2.0, -1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    w = head.weight.detach().clone().requires_grad_()
    b = head.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (x, w, b))


@pytest.mark.parametrize(
    ("name", "opts"),
    [
        ("sigmoid", {}),
        ("logit_normalization", {"tau": 0.5}),
        ("squared_error", {"kappa": 2.0, "m": 3.0, "s": 0.5}),
        ("label_smoothing", {}),
    ],
)
def test_loss_gradcheck(name: str, opts: dict[str, object]) -> None:
    obj = make_objective(name, opts)
    logits, targets = logits_targets()
    head = torch.nn.Identity()
    assert torch.autograd.gradcheck(
        lambda z: obj.loss(z, targets, head), (logits.requires_grad_(),)
    )


@pytest.mark.parametrize("name", PAPER_ORDER)
def test_heads_use_paper_init(name: str) -> None:
    torch.manual_seed(0)
    head = make_objective(name).build_head(200, 100)
    assert isinstance(head, torch.nn.Linear)  # state-dict keys weight/bias for every objective
    assert head.weight.shape == (100, 200)
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert abs(head.weight.mean().item()) < 5e-4
    assert torch.equal(head.bias, torch.zeros(100))


def test_dropout_head_is_linear_in_eval_and_drops_in_train() -> None:
    torch.manual_seed(0)
    width = 400
    head = make_objective("dropout").build_head(width, width)
    with torch.no_grad():
        head.weight.copy_(torch.eye(width))
    x = torch.ones(200, width)
    head.eval()
    assert torch.equal(head(x), x)
    head.train()
    out = head(x)
    kept = out != 0
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.7))  # inverted dropout
    assert (out == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert head.training and not torch.equal(head(x), out)  # a fresh mask every call


def test_dropout_loss_is_softmax_cross_entropy() -> None:
    assert loss_of("dropout") == pytest.approx(mean_xent(Z), rel=1e-12)


def test_importing_and_building_objectives_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from lossxfer.objectives import list_objectives, make_objective\n"
        "for info in list_objectives():\n"
        "    make_objective(info.name, info.options).describe()\n"
        "heavy = [m for m in ('torch', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, check=False, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_objectives_verb_lists_options_defaults_formula_scale_and_reference(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = cli("objectives", "--json")
    assert run.code == 0, run.stderr
    listed = json.loads(run.stdout)
    assert [o["name"] for o in listed] == OBJECTIVES.names()
    for entry in listed:
        cls = OBJECTIVES.get(entry["name"])
        assert entry["options"] == {
            k: v for k, v in make_objective(entry["name"]).options().items()
        }
        assert (
            entry["lr_scale"] == cls.lr_scale > 0 and "Kornblith et al. 2021" in entry["reference"]
        )
        assert entry["doc"] == (cls.__doc__ or "").strip().splitlines()[0]
    monkeypatch.setenv("COLUMNS", "250")  # one line per objective
    table = cli("objectives")
    assert table.code == 0
    assert "s·[kappa·(z_y − m)²" in table.stdout  # the formula's brackets are text, not markup
