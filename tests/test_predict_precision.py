"""The fast default path against the exact float32 one, on the shipped model and real images.

By default the backbone and neck run in bfloat16 where the CPU computes it in hardware
(AVX512-BF16, AMX); ``exact=True`` (``tools/predict.py --exact``) keeps float32 throughout. The
two must find the same nuclei with nearly the same outlines."""
import functools

import numpy as np
import pytest

from sharp_fpn.demo import EXAMPLES_DIR
from sharp_fpn.predict import NucleiPredictor
from sharp_fpn.predict.predictor import cpu_has_native_bfloat16
from sharp_fpn.predict.pretrained import SHIPPED_MODELS

pytestmark = pytest.mark.skipif(not SHIPPED_MODELS["nuclei"].weights_path.is_file(), reason="no shipped weights in this copy")


@functools.lru_cache(maxsize=None)
def shipped(exact: bool) -> NucleiPredictor:
    return NucleiPredictor.from_pretrained("nuclei", device="cpu", exact=exact)


def matched_ious(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """IoU of each reference object with the other image's object it overlaps most (0: none)."""
    ious = []
    for label in range(1, int(reference.max()) + 1):
        mask = reference == label
        found, counts = np.unique(other[mask], return_counts=True)
        counts, found = counts[found > 0], found[found > 0]
        if not len(found):
            ious.append(0.0)
            continue
        best = other == found[np.argmax(counts)]
        ious.append((mask & best).sum() / (mask | best).sum())
    return np.array(ious)


def test_exact_is_float32_throughout():
    predictor = shipped(True)
    assert predictor.precision == "float32"
    assert "forward" not in vars(predictor.model.backbone)


@pytest.mark.skipif(not cpu_has_native_bfloat16(), reason="this CPU has no native bfloat16 (neither AVX512-BF16 nor "
                    "AMX in /proc/cpuinfo): the default path is float32 here, the same as --exact")
@pytest.mark.parametrize("example", ["fluorescence_many.png", "he_tissue.png"])
def test_fast_path_finds_the_float32_nuclei(example):
    fast, exact = shipped(False), shipped(True)
    assert fast.precision == "bfloat16 backbone"
    reference = exact.predict(EXAMPLES_DIR / example)
    found = fast.predict(EXAMPLES_DIR / example)
    assert abs(found.num_objects - reference.num_objects) <= max(1, 0.02 * reference.num_objects)
    ious = matched_ious(reference.labels, found.labels)
    matched = ious[ious >= 0.5]
    assert len(matched) >= 0.97 * reference.num_objects
    assert np.median(matched) >= 0.95 and np.mean(matched >= 0.9) >= 0.95, np.sort(matched)[:10]
