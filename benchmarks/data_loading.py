"""Loading throughput: 640x480 JPEGs -> `load_caption_dataset` -> CaptionCollator (resize to 224) -> DataLoader.

    python benchmarks/data_loading.py [--num_images 200] [--batch_size 32] [--workers 0 2]

Prints images/second per worker count (after one warm-up epoch), plus the time the loader's image check
took. Compare with a training step at base size (ViT-B/16 forward alone is ~5 s per 8 images on the
2-core CPU of DESIGN.md): the loader must be far faster than that.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from vitgpt2_caption import ViTGPT2CaptionImageProcessor, ViTGPT2CaptionProcessor
from vitgpt2_caption.caption_collator import CaptionCollator
from vitgpt2_caption.caption_datasets import load_caption_dataset
from vitgpt2_caption.caption_tokenizer import train_caption_tokenizer


def write_jpeg_imagefolder(folder: str, num_images: int, seed: int = 0) -> None:
    """Photo-like 640x480 JPEGs (smooth gradient, shapes, mild noise: realistic file sizes and decode cost)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:480, 0:640]
    with open(os.path.join(folder, "metadata.jsonl"), "w") as metadata:
        for index in range(num_images):
            base = rng.uniform(0, 255, size=3)
            pixels = base + 0.2 * xs[..., None] - 0.1 * ys[..., None] + rng.normal(0, 8, size=(480, 640, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(5):
                x, y = rng.integers(0, 640), rng.integers(0, 480)
                draw.ellipse((x, y, x + 80, y + 60), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            file_name = f"{index:05d}.jpg"
            image.save(os.path.join(folder, file_name), quality=90)
            captions = [f"a photo with five shapes number {index} view {k}" for k in range(5)]
            metadata.write(json.dumps({"file_name": file_name, "captions": captions}) + "\n")


def images_per_second(dataset, collator, batch_size: int, num_workers: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collator, num_workers=num_workers)
    for _ in loader:  # warm-up: worker start-up, page cache
        pass
    start = time.perf_counter()
    count = sum(batch["pixel_values"].shape[0] for batch in loader)
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        write_jpeg_imagefolder(folder, args.num_images)
        for verify_images in ("fast", "full"):
            start = time.perf_counter()
            splits = load_caption_dataset(folder, dataset_format="imagefolder", verify_images=verify_images)
            print(
                f"load_caption_dataset(verify_images={verify_images!r}): "
                f"{time.perf_counter() - start:.2f} s for {args.num_images} images"
            )
        dataset = splits["train"]
        tokenizer = train_caption_tokenizer([c for captions in dataset["captions"] for c in captions], vocab_size=300)
        image_processor = ViTGPT2CaptionImageProcessor(size={"height": 224, "width": 224})
        collator = CaptionCollator(
            ViTGPT2CaptionProcessor(image_processor=image_processor, tokenizer=tokenizer), max_length=32
        )
        print(
            f"cpu_count={os.cpu_count()}, {dataset.num_rows} train images of 640x480, "
            f"batch {args.batch_size}, resized to 224"
        )
        for num_workers in args.workers:
            rate = images_per_second(dataset, collator, args.batch_size, num_workers)
            print(f"num_workers={num_workers}: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
