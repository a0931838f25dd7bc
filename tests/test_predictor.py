"""Prediction: exact arithmetic on hand-built tables, outer modules, missing ops, settings, explanations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TINY_SHAPE
from tinymods import NeedsItem, TinyBlock, TinyNet

from mmt_nas.exceptions import OptionError, TableError, UnknownOpError
from mmt_nas.parser import parse_model, predict_latency, trace_calls
from mmt_nas.predict.cache import in_model_ms, is_block
from mmt_nas.predict.predictor import LatencyPredictor
from mmt_nas.table.records import OpRecord
from mmt_nas.table.table import LatencyStats, LatencyTable, RuntimeSettings, TableEntry


def _table(costs: dict[str, float], settings: RuntimeSettings | None = None) -> LatencyTable:
    entries = []
    for key, ms in costs.items():
        cls, _, shape = key.split("|")
        op = OpRecord(key, cls, "torch.nn", {}, tuple(int(d) for d in shape.split("x")))
        entries.append(TableEntry(op, LatencyStats(ms, ms, 0.0, ms, ms, 1)))
    return LatencyTable(settings or RuntimeSettings(), {"cpu_model": "test"}, {}, entries)


STEM = "Conv2d|Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))|1x3x16x16"
RELU = "ReLU|ReLU()|1x8x16x16"
BLOCK = "TinyBlock|TinyBlock-8-3|1x8x16x16"
BLOCK_CONV = "Conv2d|Conv2d(8, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))|1x8x16x16"
POOL = "AdaptiveAvgPool2d|AdaptiveAvgPool2d(output_size=1)|1x8x16x16"
FC = "Linear|Linear(in_features=8, out_features=4, bias=True)|1x8"
ADD = "Functional|Tensor.add(x, T[1x8x16x16])|1x8x16x16"
FLATTEN = "Functional|torch.flatten(x, 1)|1x8x1x1"


def test_leaf_keys_of_a_model() -> None:
    keys = [op.key for op in parse_model(TinyNet(), TINY_SHAPE, composition="modules")]
    assert keys == [STEM, RELU, BLOCK_CONV, RELU, POOL, FC]


def test_mnn_composition_counts_functions_and_marks_fusions() -> None:
    ops = parse_model(TinyNet(), TINY_SHAPE)
    assert [(op.key, op.fused_into) for op in ops] == [
        (STEM, None),
        (RELU, "stem"),
        (BLOCK_CONV, None),
        (RELU, "block.conv"),
        (ADD, None),
        (POOL, None),
        (FLATTEN, None),
        (FC, None),
    ]
    assert [op.name for op in ops if op.function] == ["block:Tensor.add", ":torch.flatten"]


@pytest.mark.parametrize(
    "layers,fused",
    [
        ([torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()], [None, "0", "0"]),
        ([torch.nn.Conv2d(4, 4, 3, groups=4), torch.nn.BatchNorm2d(4), torch.nn.ReLU6()], [None, "0", "0"]),
        ([torch.nn.Conv2d(4, 4, 1), torch.nn.Hardtanh(0, 6)], [None, "0"]),
        ([torch.nn.Conv2d(4, 4, 1), torch.nn.ReLU(), torch.nn.BatchNorm2d(4)], [None, "0", None]),
        ([torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Sigmoid()], [None, "0", None]),
        ([torch.nn.BatchNorm2d(4), torch.nn.ReLU()], [None, None]),
        ([torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU()], [None, None, "1"]),
        ([torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8)], [None, None, None]),
    ],
    ids=[
        "conv-bn-relu",
        "dwconv-bn-relu6",
        "conv-hardtanh06",
        "conv-relu-bn",
        "conv-bn-sigmoid",
        "bn-relu",
        "linear-relu",
        "linear-bn1d",
    ],
)
def test_fusion_patterns_follow_mnn(layers: list[torch.nn.Module], fused: list[str | None]) -> None:
    """The patterns were read off MNN 3.6's converted models (see test_fusion_patterns_match_mnn_profile)."""
    ops = parse_model(torch.nn.Sequential(*layers), [1, 4, 4, 4])
    assert [op.fused_into for op in ops] == fused


def test_addition_then_relu_is_fused_into_the_addition() -> None:
    ops = parse_model(TinyBlock(4), [1, 4, 8, 8])
    assert [(op.class_name, op.fused_into) for op in ops] == [("Conv2d", None), ("ReLU", "conv"), ("Functional", None)]

    class AddRelu(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 1)
            self.relu = torch.nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.conv(x) + x)

    ops = parse_model(AddRelu(), [1, 4, 8, 8])
    assert [(op.class_name, op.fused_into) for op in ops] == [
        ("Conv2d", None),
        ("Functional", None),
        ("ReLU", ":Tensor.add"),
    ]


def test_fusion_patterns_match_mnn_profile(tmp_path: Path) -> None:
    """A Conv-BN-ReLU runs as one MNN op (one Convolution) and an Add+ReLU as one BinaryOp."""
    from mmt_nas.build.export import export_to_mnn
    from mmt_nas.device.profile import profile_model

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()
            )
            self.relu = torch.nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.body(x) + x)

    export_to_mnn(Net(), [1, 4, 8, 8], tmp_path / "n.mnn")
    types = [o.type for o in profile_model(tmp_path / "n.mnn", 2) if o.type != "Raster"]
    assert types == ["Convolution", "BinaryOp"]
    counted = [op for op in parse_model(Net(), [1, 4, 8, 8]) if op.fused_into is None]
    assert [op.class_name for op in counted] == ["Conv2d", "Functional"]


class BatchNormAct2d(torch.nn.BatchNorm2d):
    """As timm's: a BatchNorm2d subclass that runs ``F.batch_norm`` itself, then a dropout and its activation."""

    def __init__(self, channels: int, act: type[torch.nn.Module] = torch.nn.ReLU6, drop: float = 0.0) -> None:
        super().__init__(channels)
        self.drop = torch.nn.Dropout(drop) if drop else torch.nn.Identity()
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.0, self.eps
        )
        return self.act(self.drop(x))


@pytest.mark.parametrize(
    ("make", "mnn_ops"),
    [
        # a library's norm layer that runs F.batch_norm and its activation module: folded like torch.nn's
        (lambda: torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), BatchNormAct2d(8)), ["Convolution"]),
        (
            lambda: torch.nn.Sequential(
                torch.nn.Conv2d(4, 8, 1), BatchNormAct2d(8, torch.nn.ReLU, 0.2), torch.nn.Conv2d(8, 8, 1)
            ),
            ["Convolution", "Convolution"],
        ),
        # Identity and dropouts run nothing; the norm and activation after them still fold
        (
            lambda: torch.nn.Sequential(
                torch.nn.Conv2d(4, 8, 1),
                torch.nn.Identity(),
                torch.nn.BatchNorm2d(8),
                torch.nn.Dropout(0.1),
                torch.nn.ReLU(),
            ),
            ["Convolution"],
        ),  # fmt: skip
        # a sigmoid does not fold: it stays an op of its own
        (lambda: torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1), BatchNormAct2d(8, torch.nn.Sigmoid)), None),
    ],
    ids=["bnact-relu6", "bnact-dropout-relu-conv", "identity-bn-dropout-relu", "bnact-sigmoid"],
)
def test_fusion_follows_the_computation_and_matches_mnn(
    make: Callable[[], torch.nn.Module], mnn_ops: list[str] | None, tmp_path: Path
) -> None:
    """What the converter folds, by what a layer computes (not its class): the ops counted are the ops MNN runs."""
    from mmt_nas.build.export import export_to_mnn
    from mmt_nas.device.profile import profile_model

    model = make().eval()
    export_to_mnn(model, [1, 4, 8, 8], tmp_path / "m.mnn")
    types = [o.type for o in profile_model(tmp_path / "m.mnn", 2) if o.type not in ("Raster", "ConvertTensor")]
    counted = [op for op in parse_model(model, [1, 4, 8, 8]) if op.fused_into is None]
    # a model left in train mode is counted as it exports (in eval mode): the same ops
    in_train = [op.key for op in parse_model(make().train(), [1, 4, 8, 8]) if op.fused_into is None]
    assert in_train == [op.key for op in counted]
    if mnn_ops is not None:
        assert types == mnn_ops
    assert len(counted) == len(types), ([op.key for op in counted], types)
    assert all(op.class_name in ("Conv2d", "Sigmoid") for op in counted)


def test_a_norm_layer_with_an_activation_counted_whole_is_not_folded_away() -> None:
    """Known whole (its key in the table), a BatchNorm subclass that also runs a SiLU is more than a norm: MNN
    folds the norm but runs the SiLU, so the op keeps its time."""
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1), BatchNormAct2d(8, torch.nn.SiLU)).eval()
    ops = parse_model(model, [1, 4, 8, 8], known=lambda key: key.startswith("BatchNormAct2d"))
    assert [(op.class_name, op.fused_into) for op in ops] == [("Conv2d", None), ("BatchNormAct2d", None)]


def test_prediction_is_the_exact_sum_of_table_entries() -> None:
    costs = {STEM: 0.5, RELU: 0.03125, BLOCK_CONV: 0.25, POOL: 0.0078125, FC: 0.015625}
    pred = LatencyPredictor(_table(costs), composition="modules").predict(TinyNet(), TINY_SHAPE)
    assert float(pred) == 0.5 + 2 * 0.03125 + 0.25 + 0.0078125 + 0.015625
    relu = next(o for o in pred.ops if o.key == RELU)
    assert (relu.count, relu.total_ms, relu.source) == (2, 0.0625, "table")
    assert relu.names == ("relu", "block.relu")
    assert sum(o.share for o in pred.ops) == pytest.approx(1.0)
    assert pred.source_ms("table") == float(pred) and pred.source_ms("fallback") == 0


def test_mnn_prediction_counts_functions_and_not_fused_ops() -> None:
    costs = {STEM: 0.5, RELU: 0.25, BLOCK_CONV: 0.125, ADD: 0.0625, POOL: 0.03125, FLATTEN: 0.015625, FC: 1.0}
    pred = LatencyPredictor(_table(costs)).predict(TinyNet(), TINY_SHAPE)
    assert float(pred) == 0.5 + 0.125 + 0.0625 + 0.03125 + 0.015625 + 1.0  # both ReLUs are fused
    fused = [o for o in pred.ops if o.source == "fused"]
    assert [(o.key, o.count, o.total_ms) for o in fused] == [(RELU, 2, 0.0)]
    # a fused op need not be in the table at all
    del costs[RELU]
    assert float(LatencyPredictor(_table(costs)).predict(TinyNet(), TINY_SHAPE)) == float(pred)


def test_core_latency_is_used_where_the_table_has_it() -> None:
    table = _table({STEM: 0.5, BLOCK_CONV: 0.125, ADD: 0.0625, POOL: 0.03125, FLATTEN: 0.015625, FC: 1.0})
    stem = table.get(STEM)
    table.add(TableEntry(stem.op, stem.latency, core_ms=0.25))
    assert (
        float(LatencyPredictor(table).predict(TinyNet(), TINY_SHAPE))
        == 0.25 + 0.125 + 0.0625 + 0.03125 + 0.015625 + 1.0
    )
    assert (
        float(LatencyPredictor(table, latency="wall").predict(TinyNet(), TINY_SHAPE))
        == 0.5 + 0.125 + 0.0625 + 0.03125 + 0.015625 + 1.0
    )


def test_outer_module_in_the_table_counts_once() -> None:
    costs = {STEM: 0.5, RELU: 0.25, BLOCK: 2.0, BLOCK_CONV: 100.0, POOL: 0.125, FC: 0.125}
    pred = LatencyPredictor(_table(costs), composition="modules").predict(TinyNet(), TINY_SHAPE)
    assert float(pred) == 0.5 + 0.25 + 2.0 + 0.125 + 0.125  # the block's own conv and ReLU are not added
    assert BLOCK_CONV not in {o.key for o in pred.ops}


def test_missing_ops_are_all_listed_with_closest_keys() -> None:
    table = _table({STEM: 0.5, RELU: 0.25, "Linear|Linear(in_features=8, out_features=10, bias=True)|1x8": 0.1})
    with pytest.raises(UnknownOpError) as info:
        LatencyPredictor(table).predict(TinyNet(), TINY_SHAPE)
    err = info.value
    assert set(err.missing) == {BLOCK_CONV, ADD, POOL, FLATTEN, FC}
    text = str(err)
    assert "never counts an unknown op as 0 ms" in text
    assert "closest in the table: Linear|Linear(in_features=8, out_features=10" in text
    assert isinstance(err, KeyError)


def test_table_measured_with_other_settings_is_refused(tmp_path: Path) -> None:
    table = _table({STEM: 1.0}, RuntimeSettings(threads=4))
    table.save(tmp_path / "t.json")
    with pytest.raises(TableError, match="threads=4"):
        predict_latency(TinyNet(), tmp_path / "t.json", TINY_SHAPE, threads=1)
    with pytest.raises(OptionError, match="on_missing"):
        LatencyPredictor(table, on_missing="zero")


def test_fallback_seam_marks_sources() -> None:
    class Constant:
        def predict_op(self, op):  # noqa: ANN001, ANN202
            return 1.0

    table = _table({STEM: 0.5, RELU: 0.25})
    pred = LatencyPredictor(table, on_missing="fallback", fallback=Constant()).predict(TinyNet(), TINY_SHAPE)
    assert float(pred) == 0.5 + 5.0  # block conv, add, pool, flatten, fc from the fallback; ReLUs fused
    assert {o.key: o.source for o in pred.ops}[FC] == "fallback"
    assert pred.source_ms("fallback") == 5.0
    assert "fallback" in pred.explain()


def test_predict_latency_on_a_real_table(tiny_ops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = LatencyTable.load(tiny_ops)
    pred = predict_latency(TinyNet(), tiny_ops, TINY_SHAPE, verbose=True)
    # the ReLU after stem is fused; each op's core time in a tiny model's cache state (its activations cold)
    # (a block, held whole, moves its weights only)
    expected = sum(
        in_model_ms(table.get(k), table.get(k).core_ms, 0.0, activations=not is_block(table.get(k).op.class_name, k))
        for k in (STEM, BLOCK, POOL, FLATTEN, FC)
    )
    assert float(pred) == pytest.approx(expected, rel=1e-12)
    out = capsys.readouterr().out
    assert "TinyBlock-8-3" in out and "predicted latency" in out


def test_trace_leaves_the_model_untouched() -> None:
    model = TinyNet().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    trace_calls(model, TINY_SHAPE)
    assert model.training and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_models_that_need_real_values_are_traced_for_real() -> None:
    ops = parse_model(torch.nn.Sequential(NeedsItem(), TinyBlock(4)), [1, 4, 8, 8], composition="modules")
    assert [op.class_name for op in ops] == ["ReLU", "Conv2d", "ReLU"]


def test_bad_input_shape() -> None:
    from mmt_nas.exceptions import OpSpaceError

    with pytest.raises(OpSpaceError, match="input_shape"):
        parse_model(TinyNet(), [1, 3, "a"])
    with pytest.raises(OpSpaceError, match="failed to run"):
        parse_model(TinyNet(), [1, 5, 16, 16])


def test_known_containers_are_not_traced_inside_and_give_the_same_ops() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "zoo"))
    import nas_zoo

    model = nas_zoo.MobileNetV2(width=0.5)
    shape = [1, 3, 64, 64]
    full = parse_model(model, shape)
    blocks = {op.name.split(".body.")[0] for op in full if ".body." in op.name}
    calls = {c.name: c for c in trace_calls(model, shape)}
    known = {calls[b].key(): calls[b].output_shape for b in blocks}
    stubbed = parse_model(model, shape, known=known.__contains__, known_output=known.get)
    plain = parse_model(model, shape, known=known.__contains__)
    assert [(o.key, o.fused_into) for o in stubbed] == [(o.key, o.fused_into) for o in plain]
    assert sum(o.class_name == "InvertedResidual" for o in stubbed) == len(blocks) > 5
    inside = [c for c in trace_calls(model, shape, known.get) if c.name.startswith("features.1.")]
    assert inside == []  # the known block's children were never called


@pytest.mark.parametrize(
    "expr,shape",
    [
        ("a + b", (2, 3, 4, 5)),
        ("a * c", (2, 3, 4, 5)),
        ("c - a", (2, 3, 4, 5)),
        ("a / 2.0", (2, 3, 4, 5)),
        ("2 * a", (2, 3, 4, 5)),
        ("torch.add(a, b)", (2, 3, 4, 5)),
    ],
)
def test_meta_shortcut_matches_torch(expr: str, shape: tuple[int, ...]) -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)

        def forward(self, a: torch.Tensor) -> torch.Tensor:
            b = self.conv(a)
            c = a.mean((2, 3), keepdim=True)
            return {
                "a + b": lambda: a + b,
                "a * c": lambda: a * c,
                "c - a": lambda: c - a,
                "a / 2.0": lambda: a / 2.0,
                "2 * a": lambda: 2 * a,
                "torch.add(a, b)": lambda: torch.add(a, b),
            }[expr]()

    calls = trace_calls(Net(), list(shape))
    assert calls[0].output_shape == tuple(Net()(torch.zeros(shape)).shape) == shape


def test_a_table_of_another_device_is_refused_when_a_device_is_asked_for(tiny_ops: Path) -> None:
    import subprocess
    import sys

    from mmt_nas.device.facts import device_info

    here = device_info()
    assert float(LatencyPredictor(tiny_ops, device="local").predict(TinyNet(), TINY_SHAPE)) > 0
    LatencyPredictor(tiny_ops, device={"cpu_model": here["cpu_model"]})
    with pytest.raises(TableError, match="cpu_model: table .*, asked 'Cortex-A76'.*meter the ops on the target"):
        LatencyPredictor(tiny_ops, device={"cpu_model": "Cortex-A76"})
    with pytest.raises(TableError, match="cpu_count"):
        LatencyTable.load(tiny_ops, device={"cpu_count": here["cpu_count"] + 1})
    with pytest.raises(TableError, match="device='phone'"):
        LatencyPredictor(tiny_ops, device="phone")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmt_nas.cli",
            "predict",
            "tinymods:TinyNet",
            "--input-shape",
            ",".join(map(str, TINY_SHAPE)),
            "--table",
            str(tiny_ops),
            "--expect-device",
            "{cpu_model: Cortex-A76}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert out.returncode == 2 and "another device than asked for" in out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmt_nas.cli",
            "predict",
            "tinymods:TinyNet",
            "--input-shape",
            ",".join(map(str, TINY_SHAPE)),
            "--table",
            str(tiny_ops),
            "--expect-device",
            "{cpu_model: [}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert out.returncode == 2 and "--expect-device must be 'local' or a mapping" in out.stderr


def test_a_table_metered_before_rounds_predicts_as_it_did(tiny_ops: Path, tmp_path: Path) -> None:
    """Entries without rounds (and a table without sentinel or device state) load and predict unchanged."""
    import json

    doc = json.loads((tiny_ops / "meta_latency.json").read_text())
    for e in doc["entries"]:
        e.pop("rounds_ms", None)
    doc["timing"] = {"times": 20, "warmup": "auto", "method": "runSession"}  # what tables held before rounds
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old, new = LatencyTable.load(tmp_path / "old.json"), LatencyTable.load(tiny_ops)
    assert all(e.rounds_ms is None for e in old) and old.noise_floor() is None
    assert all(e.rounds_ms is not None for e in new) and new.noise_floor() is not None
    assert [(e.latency_ms, e.core_ms) for e in old] == [(e.latency_ms, e.core_ms) for e in new]
    a = LatencyPredictor(old).predict(TinyNet(), TINY_SHAPE)
    b = LatencyPredictor(new).predict(TinyNet(), TINY_SHAPE)
    assert float(a) == float(b)
    same = [{k: v for k, v in o.to_dict().items() if k != "sigma"} for o in a.ops]
    assert same == [{k: v for k, v in o.to_dict().items() if k != "sigma"} for o in b.ops]
    # only the interval differs: without rounds, no entry has a measurement spread of its own
    assert all(o.sigma == 0 for o in a.ops) and any(o.sigma > 0 for o in b.ops)
