"""The Python API (fixmatch.api, exported at the package's top level) does what the CLI does: train,
load any model file, predict on paths, PIL images and arrays (framed like `fixmatch predict`), evaluate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fixmatch
from fixmatch.cli import main
from fixmatch.errors import UserError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    summary = fixmatch.train(
        dataset="digits", algorithm="fixmatch", steps=8, eval_every=4, mu=1, progress=False, out=str(out), log=print
    )
    return summary


def test_train_returns_the_summary_of_the_run_it_wrote(run):
    assert run["steps"] == 8 and run["algorithm"] == "fixmatch"
    assert json.loads((fixmatch.api.Path(run["out"]) / "summary.json").read_text())["accuracy"] == run["accuracy"]


def test_train_resumes_a_run_like_the_cli(run, tmp_path):
    """fixmatch.train(resume=RUN, steps=N) continues RUN (a copy here) to N steps, as `train --resume`."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run["out"], copy)
    longer = fixmatch.train(resume=copy, steps=12, log=lambda *_: None)
    assert (longer["steps"], longer["out"], longer["algorithm"]) == (12, str(copy), "fixmatch")
    steps = [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8, 12]  # the run's own history, continued
    with pytest.raises(UserError, match="not a config"):
        fixmatch.train(fixmatch.TrainConfig(), resume=copy)


def test_a_path_a_pil_image_and_an_array_of_one_picture_get_one_answer(run, tmp_path):
    model = fixmatch.load(run["out"])
    assert model.class_names == [str(i) for i in range(10)]
    picture = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(picture).save(tmp_path / "p.png")
    by_path, by_image, by_array = model.predict([tmp_path / "p.png", Image.fromarray(picture), picture])
    assert by_path["probabilities"] == by_image["probabilities"] == by_array["probabilities"]
    assert by_path["label"] == max(by_path["probabilities"], key=by_path["probabilities"].get)
    assert abs(sum(by_path["probabilities"].values()) - 1) < 1e-5  # float32 softmax over 10 classes
    single = model.predict(picture)  # one image in, one answer out (a batch of one: float32 sums differ by ulps)
    assert single["probabilities"] == pytest.approx(by_array["probabilities"], abs=1e-5)


def test_predict_answers_like_the_cli(run, tmp_path, capsys):
    picture = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "q.png")
    assert main(["predict", "--checkpoint", run["out"], str(tmp_path / "q.png")]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = fixmatch.load(run["out"]).predict(tmp_path / "q.png")
    assert cli["label"] == api["label"]
    assert (
        max(abs(cli["probabilities"][c] - api["probabilities"][c]) for c in cli["probabilities"]) <= 1e-5
    )  # CLI rounds


def test_evaluate_reports_what_the_cli_reports(run, capsys):
    assert main(["evaluate", "--checkpoint", run["out"], "--json"]) == 0
    assert fixmatch.evaluate(fixmatch.load(run["out"])) == json.loads(capsys.readouterr().out)


def test_bad_input_is_one_clear_error(run):
    with pytest.raises(UserError, match="unknown training options: stepz"):
        fixmatch.train(stepz=3)
    model = fixmatch.load(run["out"])
    with pytest.raises(UserError, match="uint8"):
        model.predict(np.zeros((8, 8), np.float32))
    with pytest.raises(UserError, match="cannot predict on a int"):
        model.predict(3)
    with pytest.raises(UserError, match="cannot read image"):
        model.predict("/nonexistent.png")


def test_importing_the_package_loads_no_torch():
    code = "import sys, fixmatch; fixmatch.load; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_the_cli_prints_what_the_api_returns_for_datasets_and_bench(capsys):
    names = [name for name, _, _ in fixmatch.api.datasets()]
    assert {"digits", "cifar10", "folders", "fer2013"} <= set(names)
    assert main(["datasets"]) == 0
    listed = capsys.readouterr().out
    assert all(f"\n{name} " in "\n" + listed for name in names)
    tiny = dict(model="wrn10_1", image_size=8, channels=1, batch_size=4, mu=1, warmup=1, steps=2, device="cpu")
    result = fixmatch.api.bench(**tiny)
    assert result["images_per_step"] == 4 * (1 + 2 * 1) and result["ms_per_step"]["median"] > 0
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in tiny.items()]
    assert main(["bench", *flags, "--json"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert json.loads(printed[-1])["images_per_step"] == 12 and printed[0].startswith("device")


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: np.zeros((0, 0), np.uint8), "the image is empty (0x0 pixels)"),
        (lambda: np.zeros((10, 0, 3), np.uint8), "the image is empty (0x10 pixels)"),
        (lambda: Image.new("LAB", (8, 8)), "cannot predict on a LAB image"),
        (lambda: Image.new("La", (8, 8)), "cannot predict on a La image"),
        # broadcast: no memory of its own, so only a check before fromarray's copy keeps it small
        (lambda: np.broadcast_to(np.zeros((1, 1), np.uint8), (7_000, 7_000)), "7000x7000 pixels; the limit is 40"),
        (lambda: Image.new("1", (8_000, 6_000)), "8000x6000 pixels; the limit is 40 megapixels"),
    ],
    ids=["0x0", "no-columns", "LAB", "La", "broadcast", "bilevel"],
)
def test_images_the_model_cannot_take_are_one_clear_error(run, make, words):
    with pytest.raises(UserError) as refused:
        fixmatch.load(run["out"]).predict(make())
    assert words in str(refused.value)


def test_a_fifo_given_to_predict_is_refused_not_waited_on(run, tmp_path):
    import os

    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    code = f"import fixmatch; fixmatch.load({run['out']!r}).predict({str(fifo)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "UserError" in proc.stderr and "not a regular file" in proc.stderr, proc.stderr
