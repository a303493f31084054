"""Bad input: every problem is named with its file, --strict refuses it and then nothing is
written, errors are one line without a traceback."""
import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sharp_fpn.data import coco_export
from sharp_fpn.data.coco_export import convert_dsb2018
from sharp_fpn.data.issues import ISSUE_KINDS, DatasetError
from sharp_fpn.data.kaggle_rle import kaggle_rle_encode
from sharp_fpn.data.synthetic import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CLI_PATH = REPO / "datasets" / "prepare_dsb2018.py"


def _load_cli():
    spec = importlib.util.spec_from_file_location("prepare_dsb2018", CLI_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clean_stage(tmp_path_factory):
    stage_dir = tmp_path_factory.mktemp("clean") / "stage"
    ids = make_synthetic_dataset(stage_dir, num_images=3, size=(48, 48), seed=2, overlap_probability=0.0)
    return stage_dir, ids


@pytest.fixture
def stage(clean_stage, tmp_path):
    """A private copy of the clean stage folder, for one test to break."""
    stage_dir = tmp_path / "stage"
    shutil.copytree(clean_stage[0], stage_dir)
    return stage_dir, clean_stage[1]


def _mask_path(stage_dir, image_id, index=0):
    return sorted((stage_dir / image_id / "masks").glob("*.png"))[index]


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _write(path, array):
    cv2.imwrite(str(path), array)


def _labels_csv(stage_dir, ids, path, extra_rows=(), with_size=False):
    """Kaggle labels CSV of the stage's PNG masks, plus ``extra_rows``; the masks/ folders are
    then removed so that only the CSV can supply masks."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "EncodedPixels"] + (["Height", "Width"] if with_size else []))
        for image_id in ids:
            for mask_path in sorted((stage_dir / image_id / "masks").glob("*.png")):
                mask = _read(mask_path)
                writer.writerow([image_id, kaggle_rle_encode(mask)] + (list(mask.shape) if with_size else []))
            shutil.rmtree(stage_dir / image_id / "masks")
        writer.writerows(extra_rows)
    return path


# Each case: how to break the clean stage, the kind reported, the file it must name, and
# whether the rest still converts (False: the image is lost, True: only one mask).
def _corrupt_image(stage_dir, ids, tmp_path):
    path = stage_dir / ids[0] / "images" / f"{ids[0]}.png"
    path.write_bytes(path.read_bytes()[:60])  # truncated PNG
    return path, {}


def _corrupt_mask(stage_dir, ids, tmp_path):
    path = _mask_path(stage_dir, ids[1])
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    return path, {}


def _mask_of_wrong_size(stage_dir, ids, tmp_path):
    path = _mask_path(stage_dir, ids[1])
    _write(path, np.full((10, 12), 255, np.uint8))
    return path, {}


def _empty_mask(stage_dir, ids, tmp_path):
    path = _mask_path(stage_dir, ids[1])
    _write(path, np.zeros_like(_read(path)))
    return path, {}


def _non_binary_mask(stage_dir, ids, tmp_path):
    path = _mask_path(stage_dir, ids[1])
    mask = _read(path)
    mask[np.nonzero(mask)[0][0]] //= 2  # part of the nucleus at 127
    _write(path, mask)
    return path, {}


def _duplicate_mask(stage_dir, ids, tmp_path):
    path = stage_dir / ids[1] / "masks" / "zzz_copy.png"
    shutil.copy(_mask_path(stage_dir, ids[1]), path)
    return path, {}


def _overlapping_masks(stage_dir, ids, tmp_path):
    path = stage_dir / ids[1] / "masks" / "zzz_part.png"
    mask = _read(_mask_path(stage_dir, ids[1]))
    mask[tuple(np.transpose(np.nonzero(mask))[-1])] = 0  # all but one pixel of the first mask
    _write(path, mask)
    return path, {}


def _no_masks(stage_dir, ids, tmp_path):
    shutil.rmtree(stage_dir / ids[2] / "masks")
    return stage_dir / ids[2], {}


def _missing_images_folder(stage_dir, ids, tmp_path):
    shutil.rmtree(stage_dir / ids[2] / "images")
    return stage_dir / ids[2], {}


def _missing_image(stage_dir, ids, tmp_path):
    image_folder = stage_dir / ids[0] / "images"
    for path in image_folder.iterdir():
        path.unlink()
    return image_folder, {}


def _bad_rle_row(stage_dir, ids, tmp_path):
    path = _labels_csv(stage_dir, ids, tmp_path / "labels.csv", extra_rows=[(ids[1], "5 3 1")])
    return path, {"labels_csv": path}


def _csv_row_of_unknown_image(stage_dir, ids, tmp_path):
    path = _labels_csv(stage_dir, ids, tmp_path / "labels.csv", extra_rows=[("no_such_image", "1 4")])
    return path, {"labels_csv": path}


def _csv_row_of_wrong_size(stage_dir, ids, tmp_path):
    rows = [(ids[1], "1 4", 10, 10)]
    path = _labels_csv(stage_dir, ids, tmp_path / "solution.csv", extra_rows=rows, with_size=True)
    return path, {"labels_csv": path}


def _empty_csv_row(stage_dir, ids, tmp_path):
    path = _labels_csv(stage_dir, ids, tmp_path / "labels.csv", extra_rows=[(ids[1], "")])
    return path, {"labels_csv": path}


def _image_without_csv_rows(stage_dir, ids, tmp_path):
    path = _labels_csv(stage_dir, ids[:2], tmp_path / "labels.csv")
    shutil.rmtree(stage_dir / ids[2] / "masks")
    return stage_dir / ids[2], {"labels_csv": path}


# case: (kind reported, how to break the clean stage, index of the image that is then left out
# or None, change in the number of nuclei written besides that image's).
CASES = {
    "unreadable_file (image)": ("unreadable_file", _corrupt_image, 0, 0),
    "unreadable_file (mask)": ("unreadable_file", _corrupt_mask, None, -1),
    "size_mismatch (png)": ("size_mismatch", _mask_of_wrong_size, None, -1),
    "size_mismatch (csv)": ("size_mismatch", _csv_row_of_wrong_size, None, 0),
    "empty_mask (png)": ("empty_mask", _empty_mask, None, -1),
    "empty_mask (csv)": ("empty_mask", _empty_csv_row, None, 0),
    "non_binary_mask": ("non_binary_mask", _non_binary_mask, None, 0),  # kept, as mask > 0
    "duplicate_mask": ("duplicate_mask", _duplicate_mask, None, 0),
    "overlapping_masks": ("overlapping_masks", _overlapping_masks, None, +1),  # both kept
    "no_masks (png)": ("no_masks", _no_masks, 2, 0),
    "no_masks (csv)": ("no_masks", _image_without_csv_rows, 2, 0),
    "missing_images_folder": ("missing_images_folder", _missing_images_folder, 2, 0),
    "missing_image": ("missing_image", _missing_image, 0, 0),
    "bad_rle": ("bad_rle", _bad_rle_row, None, 0),
    "unknown_image": ("unknown_image", _csv_row_of_unknown_image, None, 0),
}


def test_every_kind_has_a_case():
    assert {case[0] for case in CASES.values()} == set(ISSUE_KINDS)


@pytest.mark.parametrize("case", CASES)
def test_strict_refuses_and_writes_nothing(stage, tmp_path, case):
    kind, breaker, _, _ = CASES[case]
    stage_dir, ids = stage
    named_file, options = breaker(stage_dir, ids, tmp_path)
    output_dir = tmp_path / "out"
    with pytest.raises(DatasetError) as raised:
        convert_dsb2018(stage_dir, output_dir, strict=True, workers=1, **options)
    message = str(raised.value)
    assert str(named_file) in message and f"[{kind}]" in message and "\n" not in message
    assert not output_dir.exists()


@pytest.mark.parametrize("case", CASES)
def test_warning_names_the_file_and_the_rest_converts(stage, tmp_path, case):
    kind, breaker, lost_image, nuclei_change = CASES[case]
    stage_dir, ids = stage
    nuclei_of = {i: len(list((stage_dir / i / "masks").glob("*.png"))) for i in ids}
    named_file, options = breaker(stage_dir, ids, tmp_path)
    seen = []
    summary = convert_dsb2018(stage_dir, tmp_path / "out", val_fraction=0.0, workers=1, on_issue=seen.append, **options)
    assert seen == summary.issues
    assert [issue.kind for issue in seen] == [kind]
    assert str(named_file) in str(seen[0])
    written = json.loads((tmp_path / "out" / "train.json").read_text())
    kept_ids = [i for index, i in enumerate(ids) if index != lost_image]
    assert [image["file_name"].split("/")[0] for image in written["images"]] == kept_ids
    assert len(written["annotations"]) == sum(nuclei_of[i] for i in kept_ids) + nuclei_change


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "stage" / "a" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no usable images"):
        convert_dsb2018(tmp_path / "stage", tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda stage: stage / "missing", "no such directory"),
        (lambda stage: stage / ".." / "empty", "no sample folders"),
    ],
)
def test_stage_folder_errors(stage, tmp_path, setup, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=message):
        convert_dsb2018(setup(stage[0]), tmp_path / "out", workers=1)


def test_csv_errors_name_the_file(stage, tmp_path):
    (tmp_path / "wrong.csv").write_text("id,pixels\na,1 2\n")
    with pytest.raises(DatasetError, match=r"wrong\.csv: not a Kaggle labels CSV"):
        convert_dsb2018(stage[0], tmp_path / "out", labels_csv=tmp_path / "wrong.csv")
    (tmp_path / "size.csv").write_text("ImageId,EncodedPixels,Height,Width\na,1 2,x,3\n")
    with pytest.raises(DatasetError, match=r"size\.csv: line 2: Height/Width"):
        convert_dsb2018(stage[0], tmp_path / "out", labels_csv=tmp_path / "size.csv")
    with pytest.raises(DatasetError, match=r"gone\.csv: cannot open"):
        convert_dsb2018(stage[0], tmp_path / "out", labels_csv=tmp_path / "gone.csv")
    assert not (tmp_path / "out").exists()


def test_unknown_val_ids_are_reported(stage, tmp_path):
    (tmp_path / "val.txt").write_text(f"{stage[1][0]}\nnot_there\n")
    summary = convert_dsb2018(stage[0], tmp_path / "out", val_ids=tmp_path / "val.txt", workers=1)
    assert [(i.kind, i.path) for i in summary.issues] == [("unknown_image", str(tmp_path / "val.txt"))]
    with pytest.raises(DatasetError, match="not_there"):
        convert_dsb2018(stage[0], tmp_path / "out2", val_ids=tmp_path / "val.txt", strict=True, workers=1)
    assert not (tmp_path / "out2").exists()


def test_failed_write_leaves_old_output_and_no_temporaries(stage, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "train.json").write_text("old")

    def dump_then_fail(data, stream, **kwargs):
        stream.write('{"images": [')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(coco_export.json, "dump", dump_then_fail)
    with pytest.raises(OSError):
        convert_dsb2018(stage[0], output_dir, workers=1)
    assert sorted(p.name for p in output_dir.iterdir()) == ["train.json"]
    assert (output_dir / "train.json").read_text() == "old"


def test_cli_error_is_one_line_without_traceback(stage, tmp_path, capsys):
    cli = _load_cli()
    _empty_mask(stage[0], stage[1], tmp_path)
    assert cli.main([str(stage[0]), "--output-dir", str(tmp_path / "out"), "--strict"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "Traceback" not in error
    assert "empty_mask" in error and not (tmp_path / "out").exists()
    with pytest.raises(DatasetError):  # --verbose shows the traceback
        cli.main([str(stage[0]), "--output-dir", str(tmp_path / "out"), "--strict", "--verbose"])


def test_cli_warns_and_summarises(stage, tmp_path, capsys):
    cli = _load_cli()
    _duplicate_mask(stage[0], stage[1], tmp_path)
    assert cli.main([str(stage[0]), "--output-dir", str(tmp_path / "out"), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "warning: " in captured.err and "[duplicate_mask]" in captured.err
    assert "3 images" in captured.out and "warnings: duplicate_mask 1" in captured.out
    assert f"wrote {tmp_path / 'out' / 'train.json'}" in captured.out
    assert "Traceback" not in captured.err


def test_cli_rejects_bad_fraction(stage, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        _load_cli().main([str(stage[0]), "--output-dir", str(tmp_path), "--val-fraction", "1.5"])
    assert exited.value.code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_cli_as_a_program(tmp_path):
    result = subprocess.run(
        [sys.executable, str(CLI_PATH), str(tmp_path / "missing"), "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing'}: no such directory"
    assert "Traceback" not in result.stderr


def test_strict_stops_the_process_pool(tmp_path):
    stage_dir = tmp_path / "stage"
    ids = make_synthetic_dataset(stage_dir, num_images=coco_export.MIN_IMAGES_FOR_POOL, size=(32, 32), overlap_probability=0)
    _write(_mask_path(stage_dir, ids[1]), np.zeros((32, 32), np.uint8))
    with pytest.raises(DatasetError, match="empty_mask"):
        convert_dsb2018(stage_dir, tmp_path / "out", strict=True, workers=2)
    assert not (tmp_path / "out").exists()


def test_unreadable_files_are_reported_with_their_cause(stage, tmp_path):
    stage_dir, ids = stage
    image, _ = _corrupt_image(stage_dir, ids, tmp_path)  # truncated after 60 bytes
    empty, text = _mask_path(stage_dir, ids[1]), _mask_path(stage_dir, ids[2])
    empty.write_bytes(b"")
    text.write_text("not an image")
    summary = convert_dsb2018(stage_dir, tmp_path / "out", val_fraction=0.0, workers=1)
    messages = {issue.path: issue.message for issue in summary.issues}
    assert messages == {
        str(image): "cannot read image: truncated PNG (60 bytes, no end chunk)",
        str(empty): "cannot read mask: empty file (0 bytes)",
        str(text): "cannot read mask: not a PNG, JPEG or TIFF file (it starts with b'not an i')",
    }


def test_stage_folder_one_level_off_names_the_right_one(stage, tmp_path):
    stage_dir, ids = stage
    with pytest.raises(DatasetError) as too_high:
        convert_dsb2018(tmp_path, tmp_path / "out", workers=1)
    assert str(too_high.value) == f"{tmp_path}: no <id>/images/ folders in it; its subfolder {stage_dir} holds them, convert that"
    shutil.copytree(stage_dir, tmp_path / "stage2")
    with pytest.raises(DatasetError, match=f"its subfolders {stage_dir}, {tmp_path / 'stage2'} hold them, convert one"):
        convert_dsb2018(tmp_path, tmp_path / "out", workers=1)
    with pytest.raises(DatasetError) as too_deep:
        convert_dsb2018(stage_dir / ids[0], tmp_path / "out", workers=1)
    assert str(too_deep.value).endswith(f"no <id>/images/ folders in it; it is one sample folder, convert its parent {stage_dir}")
    assert not (tmp_path / "out").exists()
