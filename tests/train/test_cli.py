"""The digits demo runs shortened end to end; bad configs fail with one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from certify.errors import SpecError
from certify.train.cli import main
from certify.train.config import load_config, parse_config
from certify.train.data import load_dataset

DEMO = Path(__file__).resolve().parents[2] / "case_studies" / "certified_mnist" / "digits.yaml"


def test_digits_demo_shortened_writes_an_onnx_that_onnxruntime_runs(tmp_path: Path, capsys) -> None:
    import onnxruntime as ort

    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(DEMO.read_text()), "eval": {"n": 40}}))
    out = tmp_path / "out"
    assert main(["train", str(config), "--out", str(out), "--epochs", "1", "--max-batches", "3"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "clean" in last and "certified" in last
    x, _ = load_dataset("digits", "test")
    sess = ort.InferenceSession(str(out / "model.onnx"))
    logits = sess.run(None, {sess.get_inputs()[0].name: x[:7].numpy()})[0]
    assert logits.shape == (7, 10) and np.isfinite(logits).all()
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1

    # resume for one more epoch, then evaluate the ONNX through the CLI
    assert main(["train", str(config), "--out", str(out), "--resume", str(out / "checkpoint.pt"),
                 "--epochs", "2", "--max-batches", "3"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    report = tmp_path / "eval.json"
    records = tmp_path / "samples.jsonl"
    assert main(["evaluate", str(out / "model.onnx"), "--dataset", "digits", "--eps", "0.05", "--n", "40",
                 "--engines", "ibp,crown", "--json", str(report), "--records", str(records)]) == 0
    figures = json.loads(report.read_text())
    assert figures["n"] == 40 and 0 <= figures["certified"] <= figures["pgd"] <= figures["clean"] <= 1
    # one record per sample; holds match the certified count; every violation replays in onnxruntime
    recs = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(recs) == 40 and {r["status"] for r in recs} <= {"holds", "violated", "unknown"}
    assert sum(r["status"] == "holds" for r in recs) == round(figures["certified"] * 40)
    for r in recs:
        if r["status"] == "violated":
            shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
            x = np.asarray(r["counterexample"]["x"], dtype=np.float32).reshape(shape)
            logits = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
            label = r["lifted"]["label"]
            assert r["counterexample"]["replayed"] and logits.max() >= logits[label]


@pytest.mark.parametrize(("patch", "field"), [
    ({"eps": -0.1}, "eps"),
    ({"epochs": 0}, "epochs"),
    ({"method": "pgd"}, "method"),
    ({"dataset": {"name": "mnist"}}, "dataset"),
    ({"optim": {"lr": 0.1, "momentum": 0.9}}, "optim.momentum"),
    ({"schedule": {"shape": "cosine"}}, "schedule.shape"),
])
def test_bad_config_is_a_one_line_spec_error_naming_the_field(patch: dict, field: str) -> None:
    data = {**yaml.safe_load(DEMO.read_text()), **patch}
    with pytest.raises(SpecError) as info:
        parse_config(data)
    message = str(info.value)
    assert field in message and "\n" not in message


def test_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: {name: digits}\neps: 0.1\nepochs: 1\nmodel: {name: no-such-net}\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "model.name" in capsys.readouterr().err
    with pytest.raises(SpecError):
        load_config(tmp_path / "missing.yaml")


def test_relative_dataset_path_is_resolved_against_the_config(tmp_path: Path) -> None:
    cfg = parse_config({"dataset": {"name": "npz", "path": "d.npz"}, "eps": 0.1, "epochs": 1}, tmp_path)
    assert cfg.dataset.path == tmp_path / "d.npz"


def test_npz_dataset(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((4, 8, 8), np.uint8) + 255, y_train=np.arange(4),
             x_test=np.zeros((2, 1, 8, 8), np.float32), y_test=np.arange(2))
    x, y = load_dataset("npz", "train", path)
    assert x.shape == (4, 1, 8, 8) and float(x.max()) == 1.0 and y.tolist() == [0, 1, 2, 3]
    assert load_dataset("npz", "test", path)[0].shape == (2, 1, 8, 8)


class _Payload:
    """Unpickling this object runs ``touch <marker>``: a checkpoint that executes code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_pickled_payload_and_runs_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    marker = tmp_path / "pwned"
    crafted = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "model": _Payload(marker)}, crafted)
    config = tmp_path / "digits.yaml"
    config.write_text(DEMO.read_text())
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "certify.cli", "train", str(config), "--out", str(out),
                           "--resume", str(crafted), "--epochs", "1", "--max-batches", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("certify: error: --resume:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()  # the payload never ran
    assert not out.exists()  # nothing was trained or written


def test_resume_refuses_a_checkpoint_of_another_shape(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoint.pt"
    torch.save([1, 2, 3], bad)
    config = tmp_path / "digits.yaml"
    config.write_text(DEMO.read_text())
    assert main(["train", str(config), "--out", str(tmp_path / "o"), "--resume", str(bad)]) == 2
