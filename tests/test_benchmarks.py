"""Each benchmark script's core runs at a tiny size and writes its JSON and markdown."""
import json
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.modeling import build_backbone

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import evaluator_speed  # noqa: E402
import gpu_bench  # noqa: E402
import neck_cost  # noqa: E402
import scaling  # noqa: E402
from synthetic_results import ellipse_rle, make_result_set  # noqa: E402

TINY = ["MODEL.RPN.POST_NMS_TOPK_TEST", "20", "MODEL.RPN.PRE_NMS_TOPK_TEST", "50",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "20", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "50",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16"]


def test_ellipse_rle_is_the_drawn_ellipse():
    yy, xx = np.mgrid[:40, :50]
    for cy, cx, ry, rx in [(10.3, 20.7, 5.2, 7.9), (0, 0, 6, 6), (39, 49, 9, 3)]:
        drawn = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        assert np.array_equal(mask_util.decode(ellipse_rle(cy, cx, ry, rx, 40, 50)).astype(bool), drawn)


def test_result_set_shape():
    rs = make_result_set(3, 20, size=64, n_gt=[5, 1, 30])
    assert len(rs["images"]) == 3 and len(rs["annotations"]) == 36 and len(rs["detections"]) == 60


def test_evaluator_libraries_agree(tmp_path):
    pytest.importorskip("faster_coco_eval")
    evaluator_speed.main(["--images", "3", "--detections", "30", "--size", "96", "--output-dir", str(tmp_path)])
    out = json.loads((tmp_path / "evaluator_speed.json").read_text())
    assert out["agreement"]["max_abs_diff_precision"] == 0.0
    assert (tmp_path / "evaluator_speed.md").read_text().startswith("### Evaluator")


def test_scaling_eval_tiny(tmp_path):
    scaling.main(["--part", "eval", "--objects", "3", "8", "--eval-images", "2", "--eval-size", "64",
                  "--output-dir", str(tmp_path)])
    points = json.loads((tmp_path / "scaling_eval.json").read_text())["points"]
    assert [p["objects"] for p in points] == [3, 8] and all(p["pycocotools_s"] > 0 for p in points)


def test_build_model_has_every_neck_option():
    variant = common.ALL_VARIANTS["sharp_sep"]
    neck = build_backbone(common.build_cfg("R50", variant, opts=["MODEL.SHARP_FPN.CONV_STRIDES", "[4]"]))
    assert neck.conv == "separable" and neck.conv_strides == (4,)
    assert isinstance(neck.nodes["x0_1"].fuse, torch.nn.Sequential)
    assert not isinstance(neck.nodes["x1_1"].fuse, torch.nn.Sequential)


def test_wide_plain_matches_sharp_params():
    width = common.wide_plain_channels("sharp")
    wide = common.variants(["wide_plain"])[0]
    target = common.neck_params(build_backbone(common.build_cfg("R50", common.ALL_VARIANTS["sharp"])))
    got = common.neck_params(build_backbone(common.build_cfg("R50", wide)))
    assert width % 32 == 0 and abs(got - target) <= 16 * 4 * (2 * 9 * 256 + 2)  # half a GN step


def test_neck_cost_tiny(tmp_path):
    neck_cost.main(["--backbones", "R50", "--variants", "sharp_sep", "--measure", "params", "macs", "neck", "model",
                    "--sizes", "64", "--size", "64", "--detections", "5", "--repeats", "1", "--neck-repeats", "1",
                    "--warmup", "0", "--opts", *TINY, "--output-dir", str(tmp_path)])
    out = json.loads((tmp_path / "neck_cost_R50.json").read_text())
    rows = {r["variant"]: r for r in out["results"][0]["rows"]}
    assert rows["plain"]["neck_params"] == 3346432  # Detectron2's FPN on ResNet: design §4
    assert rows["sharp_sep"]["neck_gmac_64"] > 0 and rows["sharp_sep"]["detections"] == 5
    assert rows["plain"]["model"]["ratio"] == 1.0


def test_gpu_bench_tiny_on_cpu(tmp_path):
    gpu_bench.main(["--tiny", "--device", "cpu", "--backbone", "R50", "--necks", "plain", "sharp_sep",
                    "--output-dir", str(tmp_path)])
    out = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert [r["variant"] for r in out["rows"]] == ["plain", "sharp_sep"]
    assert out["machine"]["device"] == "cpu" and all(r["train_images_per_s"] > 0 for r in out["rows"])


@pytest.mark.skipif(not (common.REPO / "datasets" / "prepare_dsb2018.py").is_file(), reason="no converter")
def test_converter_speed_tiny(tmp_path):
    import converter_speed
    import cv2

    for k in range(2):
        sample = tmp_path / "stage" / f"img{k}"
        (sample / "images").mkdir(parents=True)
        (sample / "masks").mkdir()
        cv2.imwrite(str(sample / "images" / f"img{k}.png"), np.full((32, 32, 3), 40, np.uint8))
        for m in range(2):
            mask = np.zeros((32, 32), np.uint8)
            mask[4 + 10 * m : 10 + 10 * m, 5:12] = 255
            cv2.imwrite(str(sample / "masks" / f"m{m}.png"), mask)
    converter_speed.main([str(tmp_path / "stage"), "--workers", "1", "--output-dir", str(tmp_path / "out")])
    out = json.loads((tmp_path / "out" / "converter_speed.json").read_text())
    assert out["images"] == 2 and out["nuclei"] == 4 and out["mask_files"] == 4


def test_compare_necks_neck_spec():
    import compare_necks

    assert compare_necks.neck_opts("sharp") == ["MODEL.SHARP_FPN.SCHEME", "sharp"]
    assert compare_necks.neck_opts("sharp:CONV=pw_dw, NODE_CHANNELS=128") == [
        "MODEL.SHARP_FPN.SCHEME", "sharp", "MODEL.SHARP_FPN.CONV", "pw_dw", "MODEL.SHARP_FPN.NODE_CHANNELS", "128"]
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        compare_necks.neck_opts("sharp:CONV")


def test_compare_necks_trains_each_variant(tmp_path):
    """Two short real trainings on converted synthetic nuclei; each row is its own neck's config."""
    import compare_necks
    from sharp_fpn.demo import make_demo_data

    ann = make_demo_data(tmp_path / "data", num_images=5)
    out = tmp_path / "cmp"
    compare_necks.main(["--train-json", str(ann / "train.json"), "--val-json", str(ann / "val.json"),
                        "--image-root", str(tmp_path / "data" / "stage1_train"), "--max-iter", "2",
                        "--necks", "plain", "sharp:CONV=3x3", "--seeds", "3", "--output-dir", str(out), *TINY,
                        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MIN_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0"])
    rows = json.loads((out / "compare_necks.json").read_text())["rows"]
    assert [(r["scheme"], r["conv"], r["seed"]) for r in rows] == [("plain", "-", 3), ("sharp:CONV=3x3", "3x3", 3)]
    assert rows[1]["params_M"] != rows[0]["params_M"]
    assert all(0 <= r["nuclei/dsb_score"] <= 1 and r["train_seconds"] > 0 for r in rows)
    assert "CONV: 3x3" in (out / "sharp_CONV-3x3" / "seed3" / "config.yaml").read_text()
    with pytest.raises(SystemExit, match="Non-existent key"):
        compare_necks.main(["--train-json", "x", "--val-json", "y", "--image-root", "z", "--necks", "sharp:NOPE=1"])


def test_compare_necks_collect_averages_seeds(tmp_path, capsys):
    import compare_necks

    rows = [{"scheme": neck, "conv": "-", "seed": seed, "params_M": 1.0, "train_seconds": 1.0,
             **{f"{t}/{k}": value for t, k in compare_necks.COLUMNS}}
            for neck, seed, value in [("plain", 0, 0.25), ("plain", 1, 0.75), ("sharp", 0, 0.5)]]
    for k, part in enumerate([rows[:2], rows[2:]]):
        (tmp_path / f"{k}.json").write_text(json.dumps({"header": f"run {k}", "rows": part}))
    compare_necks.main(["--collect", str(tmp_path / "0.json"), str(tmp_path / "1.json"), "--output-dir", str(tmp_path / "all")])
    table = (tmp_path / "all" / "compare_necks.md").read_text()
    written = [tmp_path / "all" / f"compare_necks.{ext}" for ext in ("json", "md")]
    assert capsys.readouterr().out == "".join(f"wrote {w}\n" for w in written) + table
    assert "| plain | - | 2 | 0.5000 ± 0.3536 |" in table and "| sharp | - | 1 | 0.5000 |" in table
    assert len(json.loads((tmp_path / "all" / "compare_necks.json").read_text())["rows"]) == 3


def test_compare_necks_pairs_each_neck_with_plain_by_seed():
    """sharp - plain per seed is +0.01, 0, +0.02: mean +0.01, s.d. 0.01, t(2) = 4.303 over sqrt(3)."""
    import compare_necks

    runs = [("plain", 0, 0.50), ("plain", 1, 0.52), ("plain", 2, 0.54), ("sharp", 2, 0.56), ("sharp", 0, 0.51),
            ("sharp", 1, 0.52), ("nested", 0, 0.60), ("sharp", 5, 0.90)]
    rows = [{"scheme": neck, "conv": "-", "seed": seed, "params_M": 1.0, "train_seconds": 1.0,
             **{f"{t}/{k}": value for t, k in compare_necks.COLUMNS}} for neck, seed, value in runs]
    table = compare_necks.markdown(rows, "header")
    paired = table.split("Paired by seed, each neck minus plain")[1]
    assert "| sharp | - | 3 | +0.0100 [-0.0148, +0.0348] | +0.01 [-0.01, +0.03] |" in paired
    assert "nested" not in paired  # one shared seed gives no interval
    assert "Paired by seed" not in compare_necks.markdown(rows[:3] + rows[-2:], "header")
