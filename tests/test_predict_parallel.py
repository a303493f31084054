"""tools/predict.py --workers: images predicted side by side in worker processes give the
files of the one-at-a-time path, byte for byte and in the same order, and the same one-line
failures. Also --exact, which asks every worker's predictor for the float32 path."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_predict import one_torch_thread, synthetic_images, tiny_checkpoint  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def run(predict_cli, capsys, *argv):
    code = predict_cli.main(["--no-progress"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_workers_write_what_one_process_writes(predict_cli, capsys, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in synthetic_images():
        shutil.copy(path, inputs / path.name)
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    common = [inputs, "--weights", tiny_checkpoint() / "model_final.pth", "--all", "--score-threshold", "0", "--device", "cpu"]
    serial = run(predict_cli, capsys, *common, "--output-dir", tmp_path / "one", "--workers", "1")
    parallel = run(predict_cli, capsys, *common, "--output-dir", tmp_path / "many", "--workers", "2")
    assert serial[0] == parallel[0] == 1  # the broken file
    assert serial[2] == parallel[2] and serial[2].count("error: ") == 1 and "broken.png" in serial[2]
    assert serial[1].replace(str(tmp_path / "one"), str(tmp_path / "many")) == parallel[1]
    expected, found = files_of(tmp_path / "one"), files_of(tmp_path / "many")
    assert len(expected) == 4 * 5 + 2 and list(found) == list(expected)  # 5 files per image, COCO JSON, Kaggle CSV
    for name in expected:
        assert found[name] == expected[name], name


def test_workers_option(predict_cli):
    assert predict_cli.get_parser().parse_args(["x.png"]).workers == "auto"
    with pytest.raises(SystemExit):
        predict_cli.get_parser().parse_args(["x.png", "--workers", "0"])


def test_exact_reaches_the_predictor(predict_cli, capsys, tmp_path):
    image = synthetic_images()[0]
    argv = [image, "--weights", tiny_checkpoint() / "model_final.pth", "--device", "cpu", "--output-dir", tmp_path]
    make = predict_cli.predictor_factory(predict_cli.get_parser().parse_args([str(a) for a in argv] + ["--exact"]))
    assert make.keywords["exact"] is True and make().precision == "float32"
    assert "exact" not in predict_cli.predictor_factory(predict_cli.get_parser().parse_args([str(a) for a in argv])).keywords
    code, out, err = run(predict_cli, capsys, *argv, "--exact")
    assert code == 0 and err == "" and (tmp_path / f"{image.stem}_labels.tif").is_file()


def test_auto_workers_start_only_for_inputs_that_repay_them(tmp_path):
    """'auto' reads the sizes from the files' headers: a few small images stay in this process,
    inputs of 16 megapixels or more get one worker per core; a file without a readable header
    counts as empty (predicting it reports why)."""
    import cv2
    import numpy as np

    from sharp_fpn.predict.batch import AUTO_WORKERS_MIN_MEGAPIXELS, auto_workers, pixels

    small = [tmp_path / f"small{i}.png" for i in range(3)]
    for path in small:
        cv2.imwrite(str(path), np.zeros((256, 320), np.uint8))
    side = int((AUTO_WORKERS_MIN_MEGAPIXELS * 1e6 / 2) ** 0.5) + 1
    large = [tmp_path / f"large{i}.png" for i in range(2)]
    for path in large:
        cv2.imwrite(str(path), np.zeros((side, side), np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert pixels(small[0]) == 256 * 320 and pixels(broken) == 0
    assert auto_workers(small + [broken], available=2) == 1
    assert auto_workers(large, available=2) == 2 and auto_workers(large, available=1) == 1
    assert auto_workers(large[:1], available=4) == 1  # one image: nothing to share out


def test_workers_run_this_sharp_fpn_whatever_the_working_directory(tmp_path, monkeypatch):
    """A forkserver's workers would import a sharp_fpn found in the working directory (the
    server puts it first on its path and, before Python 3.12, ignores this process's): with
    another copy there, the workers must still run this process's code."""
    import concurrent.futures

    import sharp_fpn
    from sharp_fpn.predict import batch

    (tmp_path / "sharp_fpn").mkdir()
    (tmp_path / "sharp_fpn" / "__init__.py").write_text("raise ImportError('the copy in the working directory')\n")
    monkeypatch.chdir(tmp_path)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=batch._worker_context()) as pool:
        assert pool.submit(eval, "__import__('sharp_fpn').__file__").result() == sharp_fpn.__file__


def test_the_script_with_its_early_worker_server_writes_what_one_process_writes(predict_cli, capsys, tmp_path):
    """Run as a script, tools/predict.py starts the workers' server before its own imports; the
    workers it forks write the one-process files, byte for byte."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in synthetic_images()[:2]:
        shutil.copy(path, inputs / path.name)
    common = [inputs, "--weights", tiny_checkpoint() / "model_final.pth", "--all", "--score-threshold", "0", "--device", "cpu"]
    assert run(predict_cli, capsys, *common, "--output-dir", tmp_path / "one", "--workers", "1")[0] == 0
    script = Path(__file__).resolve().parent.parent / "tools" / "predict.py"
    done = subprocess.run([sys.executable, str(script), "--no-progress", *map(str, common), "--output-dir",
                           str(tmp_path / "many"), "--workers", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected, found = files_of(tmp_path / "one"), files_of(tmp_path / "many")
    assert len(expected) == 2 * 5 + 2 and list(found) == list(expected)
    for name in expected:
        assert found[name] == expected[name], name


@pytest.mark.parametrize("argv, starts", [
    (["in/"], True), (["in/", "--workers", "1"], False),
    (["in/", "--workers=1"], False), (["--merge", "out/"], False),
])
def test_the_worker_server_starts_early_unless_one_process_is_asked_for(argv, starts):
    """Checked in a fresh interpreter: the server is process-wide state."""
    script = Path(__file__).resolve().parent.parent / "tools" / "predict.py"
    probe = ("import multiprocessing.forkserver as f, runpy, sys; "
             f"runpy.run_path({str(script)!r})['start_worker_server']({argv!r}); "
             "print(f._forkserver._forkserver_pid is not None)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == str(starts and len(os.sched_getaffinity(0)) > 1)
