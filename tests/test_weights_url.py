"""MODEL.WEIGHTS and MODEL.UNET.ENCODER_WEIGHTS as URLs: fetched once into Detectron2's cache.

A real HTTP server on 127.0.0.1 serves tiny checkpoints in each layout a user meets (MSRA pkl,
torchvision ResNet, torchvision VGG), made here from real models; tools/train_net.py trains
from their URLs with the shipped ImageNet configs (configs/imagenet/). Nothing leaves the machine:
the one detectron2:// URL is tried through a proxy on a closed loopback port.
"""
import functools
import http.server
import importlib.util
import os
import pickle
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from detectron2.modeling import build_model
from test_checkpoint import caffe2_name
from torchvision.models.vgg import cfgs, make_layers

from sharp_fpn import get_sharp_cfg
from sharp_fpn.checkpoint import WeightsUnavailable, cache_path, local_weights
from sharp_fpn.config import CONFIG_DIR
from sharp_fpn.data import convert_dsb2018, make_synthetic_dataset
from sharp_fpn.unet import build_unet

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "train_net.py"
TINY = [
    "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.FPN.OUT_CHANNELS", "32", "SOLVER.WARMUP_ITERS", "1",
    "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
]


def _load_tool():
    spec = importlib.util.spec_from_file_location("train_net_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = _load_tool()


class Server:
    """A file server on a free loopback port that counts the requests it answers."""

    def __init__(self, folder):
        self.requests = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        if self.httpd.socket.fileno() >= 0:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A server for tmp_path/www, with the cache in tmp_path/cache and no proxy for loopback."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    (tmp_path / "www").mkdir()
    server = Server(tmp_path / "www")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsb")
    make_synthetic_dataset(root / "stage", num_images=2, size=(64, 64), seed=0)
    convert_dsb2018(root / "stage", root / "ann", val_fraction=0.5, seed=0, workers=1)
    return root / "ann" / "train.json"


def msra_r18(path):
    """An MSRA ImageNet file (Caffe2 names, frozen BN as scale and bias) for the demo's R-18."""
    torch.manual_seed(1)
    model = build_model(get_sharp_cfg("demo_sharp_R18_cpu", ["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.DEVICE", "cpu"]))
    blobs = {caffe2_name(k[len("backbone.bottom_up."):]): v.numpy() for k, v in model.state_dict().items()
             if k.startswith("backbone.bottom_up.") and not k.endswith(("running_mean", "running_var"))}
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f)
    return blobs["conv1_w"]


def torchvision_resnet18(path):
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, path)
    return state["conv1.weight"]


def torchvision_vgg16(path):
    """torchvision's vgg16 layout ("features.N"); the 102M-parameter classifier, which the
    import drops, is left out."""
    torch.manual_seed(1)
    state = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
    torch.save(state, path)
    return state["features.0.weight"]


# layout: (served file, its writer, the configs to stack, extra overrides, the first conv's name)
LAYOUTS = {
    "msra_pkl": ("ImageNetPretrained/MSRA/R-18.pkl", msra_r18, ["demo_sharp_R18_cpu.yaml", "imagenet/R-50_msra.yaml"],
                 ["MODEL.RESNETS.DEPTH", "18"], "stem.conv1.weight"),
    "torchvision_resnet": ("models/resnet18-f37072fd.pth", torchvision_resnet18,
                           ["demo_sharp_R18_cpu.yaml", "imagenet/R-50_torchvision.yaml"], ["MODEL.RESNETS.DEPTH", "18"],
                           "stem.conv1.weight"),
    "torchvision_vgg": ("models/vgg16-397923af.pth", torchvision_vgg16, ["imagenet/mask_rcnn_plain_VGG16.yaml"], [],
                        "stage1.conv1.weight"),
}


def serve(served, tmp_path, layout):
    name, write, configs, extra, first_conv = LAYOUTS[layout]
    file = tmp_path / "www" / name
    file.parent.mkdir(parents=True, exist_ok=True)
    first = torch.as_tensor(write(file))
    if len(configs) == 1:
        config = CONFIG_DIR / configs[0]
    else:  # stacked as a user stacks an ImageNet config on a neck config: a list _BASE_
        config = tmp_path / "stacked.yaml"
        config.write_text(f"_BASE_: {[str(CONFIG_DIR / c) for c in configs]}\n")
    return f"{served.url}/{name}", file, config, extra, first_conv, first


def train(data, config, out, opts, subprocess_run=False):
    argv = ["--config", str(config), "--train-json", str(data), *TINY, "OUTPUT_DIR", str(out), *opts]
    if subprocess_run:
        run = subprocess.run([sys.executable, str(TOOL), *argv], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert run.returncode == 0, run.stdout + run.stderr
    else:
        train_net.cli(argv)
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_training_starts_from_a_url_fetched_once_into_the_cache(data, served, tmp_path, layout):
    url, file, config, extra, first_conv, first = serve(served, tmp_path, layout)
    trained = train(data, config, tmp_path / "run", [*extra, "MODEL.WEIGHTS", url])
    cached = Path(cache_path(url))
    assert cached == tmp_path / "cache" / LAYOUTS[layout][0]
    assert cached.read_bytes() == file.read_bytes() and served.requests == 1
    # The stem (first VGG block) is frozen by the ImageNet config: it still holds the served weights.
    assert torch.equal(trained["backbone.bottom_up." + first_conv], first)
    if layout == "torchvision_resnet":  # a new process finds the file in the cache, not on the server
        again = train(data, config, tmp_path / "again", [*extra, "MODEL.WEIGHTS", url], subprocess_run=True)
        assert served.requests == 1
        assert torch.equal(again["backbone.bottom_up." + first_conv], first)


def one_line_error(capsys, *argv):
    with pytest.raises(SystemExit) as exited:
        train_net.cli([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return exited.value.code, lines[0]


def test_a_server_that_is_down_is_one_line(capsys, data, served, tmp_path):
    url = f"{served.url}/models/resnet18-f37072fd.pth"
    served.stop()
    status, line = one_line_error(capsys, "--config", "demo_sharp_R18_cpu", "--train-json", data, *TINY,
                                  "MODEL.WEIGHTS", url)
    assert status == 2
    assert line.startswith(f"error: MODEL.WEIGHTS {url}: cannot download it (")
    assert line.endswith(f"); without internet, put the file at {tmp_path}/cache/models/resnet18-f37072fd.pth "
                         "by hand and run again")
    assert not (tmp_path / "cache" / "models" / "resnet18-f37072fd.pth").exists()


@pytest.fixture
def offline(monkeypatch):
    """Every urllib request goes to a proxy on a closed loopback port: a URL outside fails at
    once, as without internet, and nothing leaves the machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({"http": closed,
                                                                                          "https": closed})))
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield
    urllib.request.install_opener(None)


def test_offline_detectron2_url_names_where_to_put_the_file(capsys, data, offline, tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    url = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    status, line = one_line_error(capsys, "--config", "imagenet/mask_rcnn_plain_R50", "--train-json", data, *TINY)
    place = tmp_path / "cache" / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    assert status == 2
    assert line.startswith(f"error: MODEL.WEIGHTS {url}: cannot download "
                           "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl (")
    assert line.endswith(f"put the file at {place} by hand and run again")
    place.write_bytes(b"the file, copied by hand")  # then it is used as it is, still offline
    assert local_weights(url) == str(place) == local_weights(url + "?matching_heuristics=True")


def test_unet_encoder_weights_from_a_url(served, tmp_path):
    url, file, *_ = serve(served, tmp_path, "torchvision_vgg")
    model = build_unet("unet", filters=[4, 8, 16, 32, 64], encoder="VGG16", encoder_norm="", encoder_weights=url)
    assert served.requests == 1 and Path(cache_path(url)).read_bytes() == file.read_bytes()
    served_state = torch.load(file, weights_only=True)
    assert torch.equal(model.encoder.body.stage5.conv3.weight, served_state["features.28.weight"])
    served.stop()
    with pytest.raises(WeightsUnavailable, match=r"/models/none\.pth: cannot download it \(.*/cache/models/none\.pth"):
        build_unet("unet", filters=[4, 8, 16, 32, 64], encoder="VGG16", encoder_weights=f"{served.url}/models/none.pth")


def test_each_imagenet_config_is_its_neck_config_plus_the_settings_of_its_weights():
    combos = sorted((CONFIG_DIR / "imagenet").glob("mask_rcnn_*.yaml"))
    assert len(combos) == 12
    for combo in combos:
        cfg, neck = (get_sharp_cfg(c, ["MODEL.DEVICE", "cpu"]) for c in (str(combo), combo.name))
        assert cfg.MODEL.SHARP_FPN == neck.MODEL.SHARP_FPN and cfg.MODEL.BACKBONE.NAME == neck.MODEL.BACKBONE.NAME
        assert cfg.OUTPUT_DIR == f"output/imagenet/{combo.stem}" and cfg.MODEL.BACKBONE.FREEZE_AT == 2
        if combo.stem.endswith("VGG16"):
            assert cfg.MODEL.WEIGHTS.endswith("/vgg16-397923af.pth") and cfg.MODEL.VGG.NORM == ""
            assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.PIXEL_STD == neck.MODEL.PIXEL_STD
        else:
            assert cfg.MODEL.WEIGHTS == f"detectron2://ImageNetPretrained/MSRA/R-{neck.MODEL.RESNETS.DEPTH}.pkl"
            assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.RESNETS.STRIDE_IN_1X1, cfg.INPUT.FORMAT) == ("FrozenBN", True, "BGR")
            assert cfg.MODEL.PIXEL_STD == [1.0, 1.0, 1.0] and cfg.MODEL.RESNETS.DEPTH == neck.MODEL.RESNETS.DEPTH
