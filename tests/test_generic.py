"""The generic op space (``mmt-nas sample --generic``): a seeded draw from a broad grid, every op real."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from test_cli import error_line, run

from mmt_nas.build.generate import generate_ops_list
from mmt_nas.exceptions import OpSpaceError
from mmt_nas.space.generic import GENERIC_SHARES, MAX_ELEMENTS, MAX_FLOPS, generic_space
from mmt_nas.space.opspace import dump_space, load_space


def _kinds(doc: dict) -> Counter:
    return Counter(
        (cls if cls != "Functional" else block["fn"][0]) for classes in doc.values() for cls, blocks in classes.items()
        for block in blocks
    )  # fmt: skip


def test_the_draw_is_seeded_distinct_and_split_by_the_shares(tmp_path: Path) -> None:
    doc = generic_space(400, seed=3)
    assert doc == generic_space(400, seed=3) and doc != generic_space(400, seed=4)
    dump_space(doc, tmp_path / "g.yaml")
    specs = load_space(tmp_path / "g.yaml")
    assert len(specs) == 400  # distinct ops: the loader drops duplicates
    kinds = _kinds(doc)
    convs = [b for b in doc["torch.nn"]["Conv2d"]]
    dense = sum(b["groups"][0] == 1 for b in convs)
    depthwise = sum(b["groups"][0] == b["in_channels"][0] > 1 for b in convs)
    assert dense == round(400 * GENERIC_SHARES["conv"]) and depthwise == round(400 * GENERIC_SHARES["depthwise"])
    assert kinds["torch.cat"] == round(400 * GENERIC_SHARES["cat"])
    for b in convs:  # nothing implausible: no layer of any network does more
        cin, cout, k, s = (b[a][0] for a in ("in_channels", "out_channels", "kernel_size", "stride"))
        size = b["input_shape"][0][-1]
        out = (size + 2 * (k // 2) - k) // s + 1
        assert cin * size * size <= MAX_ELEMENTS and 2 * cin // b["groups"][0] * k * k * cout * out * out <= MAX_FLOPS
    only_cat = generic_space(10, shares={"cat": 1.0})
    assert set(_kinds(only_cat)) == {"torch.cat"}


def test_every_kind_of_op_it_draws_exports_and_converts(tmp_path: Path) -> None:
    """One draw covering every kind goes through torch -> ONNX -> MNN: no combination the grid holds fails."""
    dump_space(
        generic_space(len(GENERIC_SHARES) * 2, seed=1, shares=dict.fromkeys(GENERIC_SHARES, 1.0)), tmp_path / "g.yaml"
    )
    result = generate_ops_list(tmp_path / "g.yaml", tmp_path / "ops", show_progress=False)
    assert not result.failed and not result.skipped
    assert len(result.ops) == 2 * len(GENERIC_SHARES)


@pytest.mark.parametrize(
    ("budget", "shares", "match"),
    [(0, None, "budget"), (True, None, "budget"), (10**6, None, "budget"), (10, {"convs": 1.0}, "convs"),
     (10, {"conv": -1.0}, "shares")],
)  # fmt: skip
def test_bad_budgets_and_shares_are_op_space_errors(budget: object, shares: dict | None, match: str) -> None:
    with pytest.raises(OpSpaceError, match=match):
        generic_space(budget, shares=shares)  # type: ignore[arg-type]


def test_the_command_writes_a_generic_space_and_refuses_mixed_arguments(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capfd, "sample", "--generic", "--budget", "30", "--seed", "2", "-o", tmp_path / "g.yaml")
    assert code == 0, err
    assert "wrote 30 generic ops" in out and len(load_space(tmp_path / "g.yaml")) == 30
    line = error_line(*run(capfd, "sample", "--generic", "cands.yaml")[::2], "sample")
    assert "--generic" in line and "cands.yaml" in line
    line = error_line(*run(capfd, "sample")[::2], "sample")
    assert "--table" in line and "--generic" in line
