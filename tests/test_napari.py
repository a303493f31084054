"""The napari plugin (sharp_fpn/napari) in a real napari viewer: the widget docked from its entry
in napari's Plugins menu (the manifest, found through the package's entry point); runs of a tiny
real Mask R-CNN on synthetic images; errors shown in the viewer; the reader of predict.py's label
files.

Headless: pytest-xvfb starts a virtual X server. napari's canvas needs OpenGL, which Qt 6's
``offscreen`` platform does not provide ("QOpenGLWidget is not supported"), so a virtual display
it is. The tiny model is random but real (see test_predict.py); what a run must give is what
``NucleiPredictor`` gives for the same image and settings, pixel for pixel.
"""
import os
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if not os.environ.get("DISPLAY"):
    pytest.fail("the napari tests need an X display for napari's OpenGL canvas: install Xvfb (Debian: "
                "apt-get install xvfb, see README 'napari plugin') so that pytest-xvfb starts one", pytrace=False)

from napari.utils.notifications import notification_manager  # noqa: E402
from test_predict import one_torch_thread, synthetic_images, tiny_checkpoint  # noqa: E402,F401

from sharp_fpn import get_sharp_cfg  # noqa: E402
from sharp_fpn.data.image_io import load_image_array  # noqa: E402
from sharp_fpn.napari._reader import get_reader, read_label_image  # noqa: E402
from sharp_fpn.napari._widget import OWN_MODEL, SHIPPED, SHIPPED_MODEL, NucleiWidget  # noqa: E402
from sharp_fpn.predict import NucleiPredictor, SetupError  # noqa: E402
from sharp_fpn.predict.writers import write_label_tiff  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 120_000  # a run on a busy 2-core machine, model loading included
PLUGINS_MENU_ENTRY = "Segment nuclei (sharp_fpn nuclei)"


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    """A viewer with the widget docked from its entry in napari's Plugins menu."""
    viewer = make_napari_viewer()
    entries = {action.text(): action for action in viewer.window.plugins_menu.actions()}
    assert PLUGINS_MENU_ENTRY in entries, list(entries)
    entries[PLUGINS_MENU_ENTRY].trigger()
    return viewer, viewer.window.dock_widgets[PLUGINS_MENU_ENTRY]


def use_tiny_model(widget, score_threshold=0.0, tile_size=1024):
    widget.model.value = OWN_MODEL
    widget.weights.value = tiny_checkpoint() / "model_final.pth"  # config: the config.yaml beside it
    widget.score_threshold.value = score_threshold
    widget.tile_size.value = tile_size


def tiny_predictor(score_threshold=0.0, tile_size=1024, config=None):
    folder = tiny_checkpoint()
    return NucleiPredictor(config or folder / "config.yaml", folder / "model_final.pth",
                           score_threshold=score_threshold, tile_size=tile_size)


def full_resolution_config(folder: Path) -> Path:
    """The tiny model's config without its test resize (it shrinks every image to 64 px, which
    is never tiled)."""
    cfg = get_sharp_cfg(str(tiny_checkpoint() / "config.yaml"), ["INPUT.MIN_SIZE_TEST", "0"])
    path = folder / "config.yaml"
    path.write_text(cfg.dump())
    return path


def click_run(widget, qtbot):
    """Press Run and wait for the worker to end; the click itself returns at once."""
    widget.run_button.native.click()
    assert not widget.run_button.enabled, "the prediction runs in a worker thread"
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=WAIT_MS)


def check_layers_match(viewer, name, expected):
    labels, points = viewer.layers[f"{name}_labels"], viewer.layers[f"{name}_detections"]
    assert labels._type_string == "labels" and points._type_string == "points"
    assert np.array_equal(labels.data, expected.labels)
    table = expected.table
    assert np.allclose(points.data, [[row["centroid_y"], row["centroid_x"]] for row in table])
    assert points.features["label"].tolist() == [row["label"] for row in table]
    assert np.allclose(points.features["score"], expected.scores)
    assert points.features["area"].tolist() == [row["area"] for row in table]
    assert list(points.text.values) == [f"{s:.2f}" for s in expected.scores]


def test_widget_docks_from_the_plugins_menu(viewer_and_widget):
    viewer, widget = viewer_and_widget
    assert isinstance(widget, NucleiWidget)
    assert widget.model.value == SHIPPED and widget.model.choices == (SHIPPED, OWN_MODEL)
    assert widget.config.native.isHidden() and widget.weights.native.isHidden()  # (the window is not shown)
    widget.model.value = OWN_MODEL
    assert not widget.config.native.isHidden() and not widget.weights.native.isHidden()
    assert widget.image.value is None
    viewer.add_image(np.zeros((8, 8)), name="cells")
    assert widget.image.value.name == "cells", "the image choice follows the viewer's layers"


def test_run_gives_the_predictors_labels_and_detections(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    image = load_image_array(synthetic_images()[3])  # 16-bit grey TIFF, 96x128
    viewer.add_image(image, name="cells")
    use_tiny_model(widget)
    click_run(widget, qtbot)
    expected = tiny_predictor().predict(image)
    assert expected.num_objects > 0
    check_layers_match(viewer, "cells", expected)
    assert widget.status.value == f"{expected.num_objects} nuclei at score >= 0"

    # A second run with a higher threshold replaces the layers the first one made.
    threshold = float(np.median(expected.scores))
    widget.score_threshold.value = threshold
    click_run(widget, qtbot)
    fewer = tiny_predictor(score_threshold=widget.score_threshold.value).predict(image)
    assert 0 < fewer.num_objects < expected.num_objects
    check_layers_match(viewer, "cells", fewer)
    assert [layer.name for layer in viewer.layers] == ["cells", "cells_labels", "cells_detections"]

    widget.score_threshold.value = 1.0
    click_run(widget, qtbot)
    assert widget.status.value == "no nuclei at score >= 1"
    assert not viewer.layers["cells_labels"].data.any() and len(viewer.layers["cells_detections"].data) == 0


def test_large_image_runs_in_tiles_with_progress(viewer_and_widget, qtbot, tmp_path):
    viewer, widget = viewer_and_widget
    image = np.tile(load_image_array(synthetic_images()[1]), (3, 3, 1))  # colour, 288x384: 2x2 tiles of 256
    viewer.add_image(image, name="he", rgb=True)
    use_tiny_model(widget, tile_size=256)
    widget.config.value = config = full_resolution_config(tmp_path)
    progress = []
    widget.progress.changed.connect(lambda value: progress.append((value, widget.progress.max)))
    click_run(widget, qtbot)
    expected = tiny_predictor(tile_size=256, config=config).predict(image)
    assert expected.num_tiles == 4
    check_layers_match(viewer, "he", expected)
    assert progress[-4:] == [(1, 4), (2, 4), (3, 4), (4, 4)], "the bar counts the tiles done"
    assert widget.status.value.endswith("in 4 tiles")


def run_expecting_error(viewer, widget, qtbot):
    before = [layer.name for layer in viewer.layers]
    notes = len(notification_manager.records)
    click_run(widget, qtbot)
    qtbot.waitUntil(lambda: len(notification_manager.records) > notes, timeout=5000)
    message = notification_manager.records[-1].message
    assert widget.status.value == f"error: {message}" and "\n" not in message
    assert [layer.name for layer in viewer.layers] == before, "a failed run adds no layer"
    return message


def test_errors_are_shown_in_the_viewer(viewer_and_widget, qtbot, tmp_path):
    viewer, widget = viewer_and_widget
    notes = len(notification_manager.records)
    widget.run_button.native.click()  # no image layer yet
    assert widget.status.value == "error: no image layer: open an image first (File > Open)"
    assert notification_manager.records[notes:][-1].message in widget.status.value

    viewer.add_image(load_image_array(synthetic_images()[0]), name="cells", rgb=True)
    use_tiny_model(widget)
    widget.config.value = tiny_checkpoint() / "config.yaml"
    widget.weights.value = tmp_path / "model_final.pth"
    assert run_expecting_error(viewer, widget, qtbot) == f"weights {tmp_path / 'model_final.pth'}: no such file"

    widget.weights.value = tiny_checkpoint() / "model_final.pth"
    widget.config.value = ROOT / "configs" / "mask_rcnn_plain_R50.yaml"
    message = run_expecting_error(viewer, widget, qtbot)
    assert "model_final.pth do not match" in message and "mask_rcnn_plain_R50.yaml" in message

    widget.config.value = None
    viewer.add_image(np.zeros((3, 64, 64), np.uint8), name="stack")
    widget.image.value = viewer.layers["stack"]
    assert "2-D image" in run_expecting_error(viewer, widget, qtbot)

    widget.image.value = viewer.layers["cells"]
    click_run(widget, qtbot)  # and the widget still works
    assert "cells_labels" in viewer.layers


def test_shipped_model_is_the_default(viewer_and_widget, qtbot):
    """The shipped model's files may be absent from a checkout: then Run shows from_pretrained's
    one-line error; with them, Run predicts as from_pretrained does."""
    viewer, widget = viewer_and_widget
    image = load_image_array(synthetic_images()[0])
    viewer.add_image(image, name="cells", rgb=True)
    try:
        expected = NucleiPredictor.from_pretrained(SHIPPED_MODEL).predict(image)
    except SetupError as error:
        assert run_expecting_error(viewer, widget, qtbot) == str(error)
    else:
        click_run(widget, qtbot)
        check_layers_match(viewer, "cells", expected)


def test_reader_opens_label_files_that_predict_writes(make_napari_viewer, tmp_path):
    labels = np.zeros((40, 50), np.uint16)
    labels[5:15, 5:20], labels[20:35, 30:45] = 1, 2
    path = write_label_tiff(tmp_path / "cells_labels.tif", labels)
    viewer = make_napari_viewer()
    viewer.open(path, plugin="sharp_fpn")
    layer = viewer.layers["cells_labels"]
    assert layer._type_string == "labels" and np.array_equal(layer.data, labels)

    assert get_reader(str(tmp_path / "cells.tif")) is None
    assert get_reader([str(path), str(tmp_path / "other_labels.TIFF")]) is not None
    broken = tmp_path / "broken_labels.tif"
    broken.write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="broken_labels.tif: cannot read it as a TIFF"):
        read_label_image(broken)
    floats = write_label_tiff(tmp_path / "float_labels.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="float_labels.tif: not a label image"):
        read_label_image(floats)
