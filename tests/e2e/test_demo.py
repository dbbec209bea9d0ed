import json

import pytest
import torch

from maskclf.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_where_things_are(capsys, tmp_path):
    torch.set_num_threads(2)
    out_dir = tmp_path / "demo"
    rc = main(["demo", "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    run_dir = out_dir / "runs" / "demo"
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5] evaluate"):
        assert step in out
    assert f"done. Everything is in {out_dir}" in out
    assert f"submission:    {run_dir / 'submission.csv'}" in out
    assert f"run folder:    {run_dir}" in out and f"tensorboard --logdir {run_dir / 'tb'}" in out
    assert (run_dir / "submission.csv").is_file() and (run_dir / "submission.probs.csv").is_file()
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] >= 1 and 0 <= report["f1"] <= 1
    assert f"macro F1 (18 classes) {report['f1']:.4f}" in out
