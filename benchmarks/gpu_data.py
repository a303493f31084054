#!/usr/bin/env python
"""The Dsb2018 data of the prepared GPU run: packed here into a bundle small enough to travel
with the repository, unpacked on the GPU machine.

Only the repository and its carried folders reach that machine, 64 MiB in all with the
wheels, so the 600 stage1_train images (57 MB of RGBA PNGs, 110 MB more of mask PNGs) cannot
go as they are. The bundle holds what training and scoring read: the converter's COCO JSONs
(compressed-RLE masks, the 480/120 split of RESULTS.md#the-data-split), gzipped, and every image as
the array that ``sharp_fpn.data.read_image`` makes of it, in lossless WebP, which that reader
decodes like any other file: 32.4 MB for the 600 images, against 39.7 MB as grey or RGB PNGs at
OpenCV's strongest compression and 57 MB as shipped.

    python benchmarks/gpu_data.py pack ../shared/data/dsb2018/stage1_train --bundle .gpu_data
    python benchmarks/gpu_data.py unpack --bundle .gpu_data --out /tmp/gpu/data \
        --holdout-ids examples/dsb2018_ids.txt                                        # on the GPU machine
    python benchmarks/gpu_data.py synthetic --bundle /tmp/tiny_bundle                  # tiny stand-in
    python benchmarks/gpu_data.py semantic --data /tmp/gpu/data --cache-dir /tmp/gpu/cache --size 96

``unpack --holdout-ids`` also writes the shipped model's split: train_all.json, every image
but those of the list (the 596 of ``prepare_dsb2018.py STAGE_DIR --val-ids
examples/dsb2018_ids.txt``), and holdout.json, those. Unpacking imports neither torch nor
sharp_fpn, so it takes a fraction of a second.

``semantic`` writes the UNet family's resized images and merged foreground masks from the
unpacked JSONs where ``sharp_fpn.unet.data`` caches them for that image folder, so
``tools/train_net.py`` with a ``unet_*`` config and ``benchmarks/unet_reproduce.py`` find them
without the mask PNGs.
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPLITS = ("train", "val")
IMAGES = "images"  # the bundle's image root: file_name in the JSONs are relative to it
MANIFEST = "manifest.json"
WEBP_LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]  # above 100: lossless


def convert(stage_dir: Path, ann_dir: Path, val_fraction: float, seed: int) -> str:
    """Convert ``stage_dir`` into ``ann_dir`` with the project's converter, in this process (one
    import of Detectron2 fewer); returns the command line of ``prepare_dsb2018.py`` that does the same."""
    from sharp_fpn.data.coco_export import convert_dsb2018
    from sharp_fpn.data.issues import DatasetError

    try:
        convert_dsb2018(stage_dir, ann_dir, val_fraction=val_fraction, seed=seed)
    except (DatasetError, OSError) as error:
        raise SystemExit(f"error: {stage_dir}: the converter failed: {error}")
    args = [str(stage_dir), "--val-fraction", str(val_fraction), "--seed", str(seed)]
    return " ".join(["python datasets/prepare_dsb2018.py", *args, "--output-dir", "<temporary folder>"])


def pack(stage_dir, bundle, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """Convert ``stage_dir`` and write the bundle (JSONs, images, manifest) to ``bundle``.

    Written beside ``bundle`` and renamed at the end, so an interrupted pack leaves no bundle."""
    stage_dir, bundle = Path(stage_dir), Path(bundle)
    if not stage_dir.is_dir():
        raise SystemExit(f"error: {stage_dir}: no such stage folder")
    partial = bundle.with_name(bundle.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / IMAGES).mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = convert(stage_dir, Path(tmp), val_fraction, seed)
        counts, names = {}, set()
        for split in SPLITS:
            dataset = json.loads((Path(tmp) / f"{split}.json").read_text())
            for image in dataset["images"]:
                image["file_name"] = store_image(stage_dir / image["file_name"], partial / IMAGES, names)
            with gzip.open(partial / f"{split}.json.gz", "wt") as stream:
                json.dump(dataset, stream, separators=(",", ":"))
            counts[split] = {"images": len(dataset["images"]), "nuclei": len(dataset["annotations"])}
    sizes = {"images_bytes": tree_bytes(partial / IMAGES),
             "json_gz_bytes": sum((partial / f"{s}.json.gz").stat().st_size for s in SPLITS)}
    manifest = {"source": str(stage_dir.resolve()), "converter": command, "val_fraction": val_fraction,
                "seed": seed, "splits": counts, **sizes, "total_bytes": sum(sizes.values())}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if bundle.exists():
        shutil.rmtree(bundle)
    partial.rename(bundle)
    return manifest


def store_image(source: Path, image_dir: Path, taken: set) -> str:
    """Write what ``read_image`` makes of ``source`` as a lossless WebP; returns its file_name.

    RGBA loses its alpha and 16-bit files become the 8-bit image the reader stretches them to,
    as training would see them; the stored file reads back to exactly that array (checked).
    One flat folder (Dsb2018 names every image by its unique id): 1,200 folders of one file
    each would add megabytes of directory entries to what travels."""
    from sharp_fpn.data.image_io import read_image

    rgb = read_image(source, format="RGB")
    name = source.with_suffix(".webp").name
    if name in taken:
        raise SystemExit(f"error: {source}: a second image named {source.stem}; the bundle needs unique names")
    taken.add(name)
    target = image_dir / name
    if not cv2.imwrite(str(target), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), WEBP_LOSSLESS):
        raise SystemExit(f"error: {target}: could not write")
    if not np.array_equal(read_image(target, format="RGB"), rgb):
        raise SystemExit(f"error: {target}: does not read back as {source}")
    return name


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def unpack(bundle, out) -> dict:
    """Write ``out/train.json`` and ``out/val.json``; their images stay in the bundle.

    Each JSON records the bundle's image folder (``info.image_root``, relative to the JSON, as
    the converter does), and the paths are returned for ``--image-root``-style flags too."""
    bundle, out = Path(bundle), Path(out)
    for split in SPLITS:
        if not (bundle / f"{split}.json.gz").is_file():
            raise SystemExit(f"error: {bundle / f'{split}.json.gz'}: missing; build the bundle with "
                             f"'python benchmarks/gpu_data.py pack STAGE_DIR --bundle {bundle}'")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"image_root": str((bundle / IMAGES).resolve())}
    for split in SPLITS:
        with gzip.open(bundle / f"{split}.json.gz", "rt") as stream:
            dataset = json.load(stream)
        dataset.setdefault("info", {})["image_root"] = os.path.relpath(paths["image_root"], out.resolve())
        path = out / f"{split}.json"
        path.write_text(json.dumps(dataset, separators=(",", ":")))
        paths[f"{split}_json"] = str(path.resolve())
    return paths


def holdout(data_dir, ids_file) -> dict:
    """Split the unpacked train.json and val.json (together, every image of the bundle) into
    holdout.json, the images named in ``ids_file``, and train_all.json, all the others: what
    ``prepare_dsb2018.py --val-ids`` makes of the stage folder, image and nucleus ids included
    (the converter numbers both over the whole folder before it splits)."""
    data_dir = Path(data_dir)
    parts = [json.loads((data_dir / f"{split}.json").read_text()) for split in SPLITS]
    images = sorted((im for part in parts for im in part["images"]), key=lambda im: im["id"])
    annotations = sorted((a for part in parts for a in part["annotations"]), key=lambda a: a["id"])
    wanted = {line.split("#", 1)[0].strip() for line in Path(ids_file).read_text().splitlines()} - {""}
    held = {im["id"] for im in images if Path(im["file_name"]).stem in wanted}
    if len(held) != len(wanted):
        found = {Path(im["file_name"]).stem for im in images}
        raise SystemExit(f"error: {ids_file}: not in the bundle: {', '.join(sorted(wanted - found))}")
    paths = {}
    for name, keep in (("train_all", lambda i: i not in held), ("holdout", lambda i: i in held)):
        dataset = {**parts[0], "images": [im for im in images if keep(im["id"])],
                   "annotations": [a for a in annotations if keep(a["image_id"])]}
        path = data_dir / f"{name}.json"
        path.write_text(json.dumps(dataset, separators=(",", ":")))
        paths[f"{name}_json"] = str(path.resolve())
    return paths


def synthetic(bundle, num_images: int = 8, size: int = 96, seed: int = 0) -> dict:
    """A tiny bundle of synthetic nuclei, packed the same way (the dry run's stand-in)."""
    from sharp_fpn.data.synthetic import make_synthetic_dataset

    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage1_train"
        make_synthetic_dataset(stage, num_images=num_images, size=(size, size), seed=seed)
        return pack(stage, bundle)


def merged_foreground(annotations, height: int, width: int) -> np.ndarray:
    """Union of an image's RLE nucleus masks, as ``sharp_fpn.unet.data.merged_foreground``
    (merged as RLE and decoded once: hundreds of full-size decodes per image add up)."""
    import pycocotools.mask as mask_util

    if not annotations:
        return np.zeros((height, width), dtype=np.uint8)
    rles = [dict(a["segmentation"], counts=a["segmentation"]["counts"].encode()) for a in annotations]
    return mask_util.decode(mask_util.merge(rles, intersect=False)).astype(np.uint8)


def semantic(data_dir, cache_dir, size: int = 96) -> Path:
    """The UNet family's data set from the unpacked JSONs, cached where the UNet loader looks
    for this image folder and size (``sharp_fpn.unet.data.cache_path``)."""
    from sharp_fpn.data.image_io import read_image
    from sharp_fpn.unet.data import cache_path, resize_pair

    data_dir = Path(data_dir)
    images, masks, ids, image_root = [], [], [], None
    for split in SPLITS:
        dataset = json.loads((data_dir / f"{split}.json").read_text())
        image_root = data_dir / dataset["info"]["image_root"]
        by_image = {}
        for annotation in dataset["annotations"]:
            by_image.setdefault(annotation["image_id"], []).append(annotation)
        for image in dataset["images"]:
            foreground = merged_foreground(by_image.get(image["id"], []), image["height"], image["width"])
            rgb, mask = resize_pair(read_image(image_root / image["file_name"], format="RGB"), foreground, size)
            images.append(rgb)
            masks.append(mask)
            ids.append(Path(image["file_name"]).stem)
    path = cache_path(cache_dir, image_root, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, images=np.stack(images), masks=np.stack(masks), ids=np.array(ids))
    partial.replace(path)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="convert a stage folder and pack it into a bundle")
    a.add_argument("stage_dir", help="Dsb2018 stage folder (<id>/images, <id>/masks)")
    a.add_argument("--bundle", default=".gpu_data", help="bundle folder (default: %(default)s, ignored by git)")
    a.add_argument("--val-fraction", type=float, default=0.2, help="(default: %(default)s: 480/120 of 600)")
    a.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")
    s = sub.add_parser("synthetic", help="pack a tiny synthetic stage folder instead (dry runs)")
    s.add_argument("--bundle", required=True)
    s.add_argument("--images", type=int, default=8, help="(default: %(default)s)")
    s.add_argument("--size", type=int, default=96, help="image side (default: %(default)s)")
    u = sub.add_parser("unpack", help="write the bundle's train.json and val.json to --out")
    u.add_argument("--bundle", default=".gpu_data", help="(default: %(default)s)")
    u.add_argument("--out", required=True, help="folder for train.json and val.json")
    u.add_argument("--holdout-ids", help="also write train_all.json and holdout.json: all images but those "
                   "of this id list (one a line, e.g. examples/dsb2018_ids.txt), and those")
    u.add_argument("--unet-cache", help="also cache the UNet family's data set in this folder (as 'semantic')")
    u.add_argument("--unet-size", type=int, default=96, help="its INPUT.UNET.SIZE (default: %(default)s)")
    m = sub.add_parser("semantic", help="cache the UNet family's data set from unpacked JSONs")
    m.add_argument("--data", required=True, help="the folder 'unpack' wrote")
    m.add_argument("--cache-dir", required=True, help="DATASETS.DSB2018_SEMANTIC.CACHE_DIR of the UNet runs")
    m.add_argument("--size", type=int, default=96, help="INPUT.UNET.SIZE (default: %(default)s)")
    args = p.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.stage_dir, args.bundle, args.val_fraction, args.seed)
        print(json.dumps(manifest, indent=1))
        print(f"wrote {args.bundle} ({manifest['total_bytes'] / 2**20:.1f} MiB)")
    elif args.command == "synthetic":
        synthetic(args.bundle, args.images, args.size)
        print(f"wrote {args.bundle}")
    elif args.command == "unpack":
        paths = unpack(args.bundle, args.out)
        if args.holdout_ids:
            paths.update(holdout(args.out, args.holdout_ids))
        for key, value in paths.items():
            print(f"{key}={value}")
        if args.unet_cache:
            print(f"unet_cache={semantic(args.out, args.unet_cache, args.unet_size)}")
    else:
        print(f"wrote {semantic(args.data, args.cache_dir, args.size)}")


if __name__ == "__main__":
    main()
