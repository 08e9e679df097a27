"""``fs2-semionline plot`` draws the curves of real runs from fairseq2's metric files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fs2_semionline.cli import main as cli_main
from fs2_semionline.tools.plot import read_series, smooth

from helpers import run_recipe, tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    runs = []
    for name, sync in (("online", 1), ("offline", None)):
        tmp = tmp_path_factory.mktemp(name)
        config = tiny_config(tmp)
        config.generator.sync_every_n_steps = sync
        config.regime.num_steps = 3
        config.regime.checkpoint_every_n_steps = None
        run_recipe(config, tmp / name)
        runs.append(tmp / name)
    return runs


def test_plot_writes_one_png_per_metric_with_every_run(two_runs: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "plots"
    cli_main(["plot", *map(str, two_runs), "--out", str(out)])
    written = capsys.readouterr().out.split()
    assert [Path(p).name for p in written] == ["reward.png", "rollout_length.png", "rollout_entropy.png"]
    for path in map(Path, written):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    # What is drawn is what fairseq2 wrote.
    rows = [json.loads(l) for l in (two_runs[0] / "metrics" / "train.jsonl").read_text().splitlines()]
    assert read_series(two_runs[0], "Reward") == ([1, 2, 3], [r["Reward"] for r in rows])


def test_bad_run_dir_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["plot", str(tmp_path), "--out", str(tmp_path / "plots")])
    assert exit_info.value.code == 2
    assert "no fairseq2 metric file metrics/train.jsonl" in capsys.readouterr().err


def test_smoothing_skips_gaps() -> None:
    assert smooth([1.0, 3.0, math.nan, 5.0], 2) == [1.0, 2.0, 3.0, 5.0]
    assert smooth([1.0, 2.0], 1) == [1.0, 2.0]
