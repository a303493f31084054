"""tools/predict.py across machines: shards (--shard K/N, or RANK/WORLD_SIZE) each predict every
N-th file, and --merge joins their part files into exactly what one process writes."""
import json
import shutil

import pytest
from test_predict import one_torch_thread, synthetic_images, tiny_checkpoint  # noqa: F401

from sharp_fpn.predict.batch import parse_shard, shard_from_environment

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Five images in two folders, two of them of one name, and a file that is no image."""
    root = tmp_path_factory.mktemp("inputs")
    for folder in ("a", "b"):
        (root / folder).mkdir()
    for path in synthetic_images():
        shutil.copy(path, root / "a" / path.name)
    shutil.copy(synthetic_images()[1], root / "b" / synthetic_images()[1].name)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return [root / "a", root / "b"]


def run(predict_cli, capsys, *argv):
    code = predict_cli.main(["--no-progress", "--workers", "1"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def predict(predict_cli, capsys, inputs, out, *extra):
    return run(predict_cli, capsys, *inputs, "--weights", tiny_checkpoint() / "model_final.pth", "--all", "--score-threshold", "0",
               "--device", "cpu", "--output-dir", out, *extra)


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_shards_then_merge_give_the_files_of_one_process(predict_cli, capsys, inputs, tmp_path, monkeypatch):
    one = predict(predict_cli, capsys, inputs, tmp_path / "one")
    first = predict(predict_cli, capsys, inputs, tmp_path / "sharded", "--shard", "0/2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # the second shard as torchrun would start it
    second = predict(predict_cli, capsys, inputs, tmp_path / "sharded")
    monkeypatch.delenv("RANK")
    # The list: a/ (4 images), b/broken.png, b/ (a copy of one of a/); shard 0 has positions 0, 2, 4.
    assert one[0] == 1 and one[2].count("broken.png") == 1
    assert "shard 0/2: 2 image(s)" in first[1] and "shard 1/2: 3 image(s)" in second[1]
    assert (first[0], second[0]) == (1, 0) and first[2].count("broken.png") == 1 and second[2] == ""
    assert "--merge" in second[1] and "-2_* (another input is also named" in second[1]
    parts = files_of(tmp_path / "sharded")
    assert {"coco_results.shard-0-of-2.json", "submission.shard-1-of-2.csv", "predict.shard-1-of-2.json"} <= set(parts)

    code, out, err = run(predict_cli, capsys, "--merge", tmp_path / "sharded")
    assert code == 1 and "merged 2 shard(s): 5 image(s)" in out and "1 input(s) failed" in err
    expected, merged = files_of(tmp_path / "one"), files_of(tmp_path / "sharded")
    assert list(merged) == list(expected) and len(expected) == 5 * 5 + 2  # no part left, nothing missing
    for name in expected:  # label TIFFs and every other file, byte for byte; the tables with them
        assert merged[name] == expected[name], name
    coco = json.loads(merged["coco_results.json"])
    assert len({(r["image_id"], r["label"]) for r in coco}) == len(coco) > 0  # one id per image of the list
    assert len({r["image_id"] for r in coco}) == 5


def test_merge_names_the_missing_shard_and_writes_nothing(predict_cli, capsys, inputs, tmp_path):
    predict(predict_cli, capsys, inputs[:1], tmp_path / "out", "--shard", "2/3", "--coco")
    before = files_of(tmp_path / "out")
    code, out, err = run(predict_cli, capsys, "--merge", tmp_path / "out")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "shards 0, 1 of 3 have not finished (no predict.shard-0-of-3.json, predict.shard-1-of-3.json)" in err
    assert files_of(tmp_path / "out") == before
    code, _, err = run(predict_cli, capsys, "--merge", tmp_path / "nothing")
    assert code == 2 and "no shard to merge" in err


def test_shard_option_and_environment():
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "1/0", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    assert shard_from_environment({"RANK": "1", "WORLD_SIZE": "3"}) == (1, 3)
    assert shard_from_environment({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert shard_from_environment({"SLURM_PROCID": "1"}) is None


def test_bad_shard_names_the_option(predict_cli, capsys):
    with pytest.raises(SystemExit) as exited:
        predict_cli.main(["x.png", "--shard", "2/2"])
    assert exited.value.code == 2
    assert "argument --shard: shard 2/2: K/N needs N >= 1 and K from 0 to N-1" in capsys.readouterr().err
