#!/usr/bin/env python
"""CPU demo: synthetic nuclei, Mask R-CNN with the UNet# neck trained and evaluated, predictions;
then the model shipped with sharp_fpn on the real example images (examples/), predicted against
true nucleus counts (skipped, in one line, when its weights are not in this copy).

    python tools/demo.py [--output-dir demo_output] [--max-iter N]
"""
import argparse

from sharp_fpn.demo import format_summary, run_demo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="demo_output", help="where everything goes (default: demo_output)")
    p.add_argument("--num-images", type=int, default=30, help="synthetic images, 20%% for validation (default: 30)")
    p.add_argument("--max-iter", type=int, default=None, help="training iterations (default: the config's)")
    p.add_argument("--seed", type=int, default=0, help="seed of data and training (default: 0)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    summary = run_demo(args.output_dir, args.num_images, args.max_iter, args.seed, args.opts)
    print("\n" + format_summary(summary))


if __name__ == "__main__":
    main()
