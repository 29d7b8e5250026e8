"""Feature caching: time per training epoch with cached encoder outputs vs without, base shapes, frozen encoder.

    python benchmarks/feature_cache.py [--num_images 64] [--batch_size 8] [--repeats 2] [--threads 2]

Data: the synthetic default (`generate_synthetic_dataset`, 64 px images, resized to 224 by the processor).
Model: ours at base shapes (ViT-B/16 224 + DistilGPT2's shape), random weights, encoder frozen, AdamW.
First the cache is built (the extra cost of the first cached epoch, timed), then uncached and cached epochs
alternate `--repeats` times each (same model, same data order; an epoch = DataLoader + forward + backward
+ AdamW step over every image). Reports medians and the speed-up of cached epochs after the first.
"""

import argparse
import os
import sys
import tempfile
import time

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import GPT2_VOCAB, build_ours, median, print_table, setup_threads  # noqa: E402

from vitgpt2_caption import ViTGPT2CaptionImageProcessor, ViTGPT2CaptionProcessor  # noqa: E402
from vitgpt2_caption.caption_collator import CaptionCollator  # noqa: E402
from vitgpt2_caption.caption_tokenizer import train_caption_tokenizer  # noqa: E402
from vitgpt2_caption.feature_cache import (  # noqa: E402
    CachedFeatureCollator,
    ImageFeatureCache,
    forward_with_cached_features,
)
from vitgpt2_caption.synthetic import generate_synthetic_dataset  # noqa: E402


def run_epoch(model, optimizer, loader, cached):
    start = time.perf_counter()
    for batch in loader:
        loss = forward_with_cached_features(model, batch).loss if cached else model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefix_pool_size", type=int, default=1,
                        help="ours with the patch grid average-pooled k x k before the projector (1: every patch)")
    args = parser.parse_args(argv)
    setup_threads(args.threads)

    dataset = generate_synthetic_dataset(num_train=args.num_images, num_validation=1, num_test=1)["train"]
    tokenizer = train_caption_tokenizer([c for captions in dataset["captions"] for c in captions], vocab_size=300)
    processor = ViTGPT2CaptionProcessor(
        image_processor=ViTGPT2CaptionImageProcessor(size={"height": 224, "width": 224}), tokenizer=tokenizer
    )
    collator = CaptionCollator(processor, max_length=args.max_length)
    # Base shapes with GPT-2's vocabulary size, as a real DistilGPT2 decoder would have; the synthetic
    # tokenizer's ids are all below it.
    model = build_ours("causal", projector_dropout=0.0, prefix_pool_size=args.prefix_pool_size).train()
    assert len(tokenizer) <= GPT2_VOCAB
    model.vision_model.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    uncached_loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=collator)

    with tempfile.TemporaryDirectory() as cache_root:
        start = time.perf_counter()
        cache = ImageFeatureCache.build_or_load(cache_root, model, processor.image_processor, dataset)
        build_seconds = time.perf_counter() - start
        print(f"cache build (encoder over {args.num_images} images, written to disk): {build_seconds:.1f} s", flush=True)
        cached_loader = DataLoader(
            cache.dataset(dataset), batch_size=args.batch_size, collate_fn=CachedFeatureCollator(collator, cache)
        )
        times = {"uncached": [], "cached": []}
        for repeat in range(args.repeats):
            for name, loader in (("uncached", uncached_loader), ("cached", cached_loader)):
                seconds = run_epoch(model, optimizer, loader, cached=name == "cached")
                times[name].append(seconds)
                print(f"  [round {repeat + 1}/{args.repeats}] {name} epoch: {seconds:.1f} s", flush=True)

    uncached, cached = median(times["uncached"]), median(times["cached"])
    print(f"\nprefix_pool_size {args.prefix_pool_size}, {args.num_images} images, batch {args.batch_size}, medians of {args.repeats} alternating epochs each")
    print_table(
        ["epoch", "seconds", "images/s", "speed-up vs uncached"],
        [
            ["uncached (every epoch)", f"{uncached:.1f}", f"{args.num_images / uncached:.2f}", "1.00"],
            ["cached, first (build + epoch)", f"{build_seconds + cached:.1f}",
             f"{args.num_images / (build_seconds + cached):.2f}", f"{uncached / (build_seconds + cached):.2f}"],
            ["cached, later epochs", f"{cached:.1f}", f"{args.num_images / cached:.2f}", f"{uncached / cached:.2f}"],
        ],
    )


if __name__ == "__main__":
    main()
