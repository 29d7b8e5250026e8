"""Where a generate() call's time goes: ours vs VisionEncoderDecoder, phase by phase, in ONE process.

    python benchmarks/generation_phases.py [--batch_size 8] [--repeats 3] [--threads 2]

Phases (base shapes, random weights, medians of alternating repeats):
- encoder: ours' ViT + projector (`get_image_features`) vs VED's ViT;
- first decoder call over the image: ours' prefill (the decoder reads [image prefix, SEP, BOS]) vs VED's first
  decoder step (BOS with cross-attention over the encoder output, which computes the cross-attention keys/values);
- the whole beam-3 generate (20 new tokens forced). What is left after the first two is the decode steps.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import build_ours, build_vision_encoder_decoder, median, run_alternating, setup_threads  # noqa: E402

FORCED = dict(num_beams=3, max_new_tokens=20, min_new_tokens=20)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    ours, ved = build_ours().eval(), build_vision_encoder_decoder().eval()
    pixel_values = torch.randn(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    bos = torch.full((args.batch_size, 1), ours.config.bos_token_id)
    with torch.no_grad():
        image_embeds = ours.get_image_features(pixel_values)
        encoder_states = ved.encoder(pixel_values=pixel_values).last_hidden_state

    def phases():
        return {
            "encoder": (lambda: ours.get_image_features(pixel_values), lambda: ved.encoder(pixel_values=pixel_values)),
            "first decoder call": (
                lambda: ours(input_ids=bos, image_embeds=image_embeds, use_cache=True),
                lambda: ved.decoder(input_ids=bos, encoder_hidden_states=encoder_states, use_cache=True),
            ),
            "beam-3 generate": (
                lambda: ours.generate(pixel_values=pixel_values, **FORCED),
                lambda: ved.generate(pixel_values=pixel_values, **FORCED),
            ),
        }

    rows = []
    for phase, (ours_fn, ved_fn) in phases().items():
        print(f"\n{phase}", flush=True)
        results = run_alternating({"ours": torch.no_grad()(ours_fn), "ved": torch.no_grad()(ved_fn)},
                                  repeats=args.repeats, measure_memory=False)
        rows.append((phase, median(results["ours"]["seconds"]), median(results["ved"]["seconds"])))
    print(f"\nbatch {args.batch_size}, medians of {args.repeats} alternating repeats")
    print("| phase | ours s | VED s |\n| --- | --- | --- |")
    for phase, ours_s, ved_s in rows:
        print(f"| {phase} | {ours_s:.2f} | {ved_s:.2f} |")


if __name__ == "__main__":
    main()
