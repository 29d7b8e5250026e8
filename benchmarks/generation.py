"""Generation throughput: ours (both prefix modes) vs VisionEncoderDecoder (ViT-B/16 + 6-layer GPT-2 with
cross-attention) vs GIT-base, all random weights at base shapes, in ONE process with the same threads and inputs.

    python benchmarks/generation.py [--batch_sizes 1 8] [--strategies greedy beam3] [--repeats 3] [--threads 2]
    python benchmarks/generation.py --device cuda --dtype bfloat16 --batch_sizes 8 64   # on an NVIDIA GPU

Every setting forces 20 new tokens (`min_new_tokens = max_new_tokens = 20`) so that no model stops early.
Per setting the candidates run alternately (one warm-up round, then `--repeats` rounds); the table shows
the median captions/s, the ratio ours / peer (> 1: ours faster) and the median peak memory growth during the
call (RSS on CPU, the CUDA allocator on a GPU; see common.py). `--dtype bfloat16` runs every model's weights
and inputs in bf16 (inference, no autocast). Before timing, it prints which attention implementation each
sub-model uses and how many SDPA calls the encoder and the decoder make.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    DTYPES,
    add_device_arguments,
    attention_report,
    build_git,
    build_vision_encoder_decoder,
    median,
    memory_column,
    ours_variant_builders,
    print_table,
    run_alternating,
    setup_threads,
)

STRATEGIES = {"greedy": dict(num_beams=1, do_sample=False), "beam3": dict(num_beams=3, do_sample=False)}


def sdpa_calls(model, encoder, pixel_values, new_tokens=3):
    """SDPA calls made inside the encoder and outside it (decoder) during one generate()."""
    import torch.nn.functional as F

    counts = {"encoder": 0, "decoder": 0}
    where = ["decoder"]
    original = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        counts[where[0]] += 1
        return original(*args, **kwargs)

    hooks = [
        encoder.register_forward_pre_hook(lambda *a: where.__setitem__(0, "encoder")),
        encoder.register_forward_hook(lambda *a: where.__setitem__(0, "decoder")),
    ]
    F.scaled_dot_product_attention = counting
    try:
        model.generate(pixel_values=pixel_values, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    finally:
        F.scaled_dot_product_attention = original
        for hook in hooks:
            hook.remove()
    return counts


BUILDERS = {**ours_variant_builders(), "ved": build_vision_encoder_decoder, "git": build_git}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--models", nargs="+", default=["ours-causal", "ours-bidirectional", "ved", "git"],
                        choices=sorted(BUILDERS))
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    add_device_arguments(parser, "Weights and inputs of every model.")
    args = parser.parse_args(argv)
    setup_threads(args.threads, args.device)
    dtype = DTYPES[args.dtype]

    models = {name: BUILDERS[name]().eval().to(device=args.device, dtype=dtype) for name in args.models}
    encoders = {name: (lambda m: m.vision_model) for name in args.models if name.startswith("ours")}
    encoders.update({"ved": lambda m: m.encoder, "git": lambda m: m.git.image_encoder})
    probe = torch.randn(1, 3, 224, 224).to(device=args.device, dtype=dtype)
    print("\nattention implementation per sub-model, and SDPA calls in generate(3 new tokens, batch 1):")
    for name, model in models.items():
        with torch.no_grad():
            calls = sdpa_calls(model, encoders[name](model), probe)
        print(f"  {name}: {attention_report(model)}  sdpa calls {calls}")

    rows = []
    for batch_size in args.batch_sizes:
        generator = torch.Generator().manual_seed(batch_size)
        pixel_values = torch.randn(batch_size, 3, 224, 224, generator=generator).to(device=args.device, dtype=dtype)
        for strategy in args.strategies:
            kwargs = dict(STRATEGIES[strategy], max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
            print(f"\nbatch {batch_size}, {strategy}, {args.new_tokens} new tokens", flush=True)
            candidates = {
                name: (lambda model=model: model.generate(pixel_values=pixel_values, **kwargs))
                for name, model in models.items()
            }
            results = run_alternating(candidates, repeats=args.repeats, device=args.device)
            reference = median(results[args.models[0]]["seconds"])
            for name in args.models:
                seconds = median(results[name]["seconds"])
                rows.append([
                    batch_size, strategy, name, f"{batch_size / seconds:.3f}", f"{seconds:.3f}",
                    f"{seconds / reference:.2f}", f"{median(results[name]['peak_bytes']) / 2**20:.0f}",
                ])
                print("  result:", " | ".join(str(c) for c in rows[-1]), flush=True)
    print(f"\n{args.device}, {args.dtype}; medians of {args.repeats} alternating repeats; "
          f"ratio = peer time / {args.models[0]} time (> 1: ours faster)")
    print_table(
        ["batch", "strategy", "model", "captions/s", "s/call", f"time / {args.models[0]}", memory_column(args.device)],
        rows,
    )


if __name__ == "__main__":
    main()
