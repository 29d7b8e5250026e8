"""Evaluate a saved captioner on a dataset split with the COCO caption metrics.

    accelerate launch evaluate_captions.py --model_dir outputs/demo --output_dir outputs/demo/eval
    python evaluate_captions.py --model_dir outputs/demo --dataset path/to/imagefolder --split validation

Writes (main process only) `metrics.json`, `predictions.jsonl` (one line per image, sorted by image id) and
`gallery.png` to `--output_dir`. Under `accelerate launch` the images are split over the processes and each
is captioned exactly once; the results equal a single-process run's.
"""

import argparse
import json
import logging

from accelerate import Accelerator

from vitgpt2_caption.caption_datasets import DATASET_FORMATS
from vitgpt2_caption.caption_evaluation import evaluate_model_folder


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="A saved model folder (save_pretrained output).")
    parser.add_argument("--dataset", default="synthetic", help="`synthetic`, a folder / annotation file, or a Hub name.")
    parser.add_argument("--dataset_format", choices=DATASET_FORMATS, default=None, help="Detected when not given.")
    parser.add_argument("--image_dir", default=None, help="Image folder for `coco` / `karpathy` / `mini_coco` sources.")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--num_beams", type=int, default=3)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--per_device_eval_batch_size", type=int, default=8)
    parser.add_argument("--max_samples", type=int, default=None, help="Evaluate only the split's first N images.")
    parser.add_argument("--gallery_size", type=int, default=16, help="Images in gallery.png (0: no gallery).")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    for name in ("num_beams", "max_new_tokens", "per_device_eval_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    if args.max_samples is not None and args.max_samples < 1:
        parser.error("--max_samples must be at least 1.")
    return args


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator()
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.ERROR, format="%(message)s")
    summary = evaluate_model_folder(
        args.model_dir,
        args.dataset,
        split=args.split,
        dataset_format=args.dataset_format,
        image_dir=args.image_dir,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.per_device_eval_batch_size,
        max_samples=args.max_samples,
        output_dir=args.output_dir,
        gallery_size=args.gallery_size,
        accelerator=accelerator,
    )
    if accelerator.is_main_process:
        print(json.dumps(summary, indent=2))
        print(f"Evaluated {summary['num_images']} images on {accelerator.num_processes} process(es); "
              f"wrote metrics.json, predictions.jsonl and gallery.png to {args.output_dir}")
    accelerator.end_training()  # tears down the process group cleanly under `accelerate launch`
    return summary


if __name__ == "__main__":
    main()
