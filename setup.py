"""sharp_fpn: UNet++/UNet 3+/UNet# skip connections as Detectron2 FPN necks."""
from setuptools import find_packages, setup

setup(
    name="sharp_fpn",
    version="0.1.0",
    description="Nested, full-scale and UNet# skip connections for Detectron2's FPN, "
    "for nuclei instance segmentation",
    packages=find_packages(include=["sharp_fpn", "sharp_fpn.*"]),
    package_data={
        "sharp_fpn": ["pretrained/*.yaml", "pretrained/*.pth", "pretrained/*.md"],  # the shipped model
        "sharp_fpn.napari": ["napari.yaml"],  # the napari plugin's manifest
    },
    python_requires=">=3.9",
    # Detectron2 itself is not on PyPI under its own name: scripts/setup_env.sh
    # installs it (see README). Ranges, so GPU users keep their own torch build.
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.23",
        "pycocotools>=2.0.6",
        # COCO AP ~10x faster than pycocotools (the fallback); 1.8.0 fixed an RLE IoU indexing bug
        "faster-coco-eval>=1.8.0; python_version >= '3.10'",
        "fvcore>=0.1.5",
        "tifffile>=2023.1",
        "imagecodecs>=2023.1",  # LZW/deflate TIFFs, the usual microscopy files
        "scikit-image>=0.21",
        "scipy>=1.9",
        "opencv-python-headless>=4.7",
        "tqdm>=4.60",
        "roifile>=2023.5",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2", "pytest-xdist>=3"],
        # the napari plugin (sharp_fpn/napari), with a Qt binding so that `napari` opens a window
        "napari": ["napari[pyqt6]>=0.6.2", "magicgui>=0.8"],
        # what its tests add: Qt test helpers and a virtual X server (Xvfb) for the viewer's canvas
        "napari-test": ["pytest-qt>=4.2", "pytest-xvfb>=3"],
    },
    entry_points={"napari.manifest": ["sharp_fpn = sharp_fpn.napari:napari.yaml"]},
)
