"""Training-step throughput: ours vs VisionEncoderDecoder vs GIT-base at base shapes, random weights, ONE process.

    python benchmarks/training_step.py [--batch_size 8] [--caption_length 20] [--repeats 3] [--threads 2]
    python benchmarks/training_step.py --device cuda --dtype bfloat16 --batch_size 128   # on an NVIDIA GPU

A step is forward + backward + AdamW step + zero_grad, on the same pixels and captions for all models,
with the encoder frozen (`requires_grad_(False)`) and unfrozen. The candidates run alternately (one
warm-up round, then `--repeats`); medians are reported.

Model FLOPs per sample are counted with `torch.utils.flop_counter.FlopCounterMode` over one forward +
backward (matmuls, convolutions and SDPA; elementwise work and the optimizer are not counted, as usual for
"model FLOPs"). The achieved fraction is (FLOPs per step / step time) / the matmul rate measured in the
same run (CPU: fp32 2048 x 2048, same threads; GPU: 8192 x 8192 in the step's dtype).

`--dtype bfloat16` is mixed precision as `accelerate launch --mixed_precision bf16` does it: fp32 weights and
optimizer, forward and loss under `torch.autocast(dtype=torch.bfloat16)`.
"""

import argparse
import functools
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    DTYPES,
    GPT2_VOCAB,
    add_device_arguments,
    build_git,
    build_vision_encoder_decoder,
    matmul_gflops,
    median,
    memory_column,
    ours_variant_builders,
    print_table,
    run_alternating,
    setup_threads,
)


def make_batch(batch_size, caption_length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, 224, 224, generator=generator)
    # [BOS, caption..., EOS]: ids below GIT's vocabulary (30522) so every model reads the same tokens.
    input_ids = torch.randint(1000, 30000, (batch_size, caption_length), generator=generator)
    return pixel_values, input_ids


def ours_inputs(pixel_values, input_ids):
    ids = input_ids.clone()
    ids[:, 0] = GPT2_VOCAB - 1  # BOS
    labels = ids.clone()
    labels[:, 0] = -100
    return dict(pixel_values=pixel_values, input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)


def ved_inputs(pixel_values, input_ids):
    # VisionEncoderDecoder shifts the labels right itself (decoder_start_token_id first).
    return dict(pixel_values=pixel_values, labels=input_ids[:, 1:].clone())


def git_inputs(pixel_values, input_ids):
    ids = input_ids.clone()
    ids[:, 0] = 101  # [CLS], GIT's BOS
    return dict(pixel_values=pixel_values, input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone())


MODELS = {
    **{name: (build, ours_inputs, lambda m: m.vision_model) for name, build in ours_variant_builders().items()},
    "ved": (build_vision_encoder_decoder, ved_inputs, lambda m: m.encoder),
    "git": (build_git, git_inputs, lambda m: m.git.image_encoder),
}


class Trainer:
    def __init__(self, name, inputs, freeze_encoder, device="cpu", dtype=torch.float32, compile=False):
        build, make_inputs, encoder_of = MODELS[name]
        torch.manual_seed(0)
        self.model = build().train().to(device)
        encoder_of(self.model).requires_grad_(not freeze_encoder)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-5)
        self.inputs = {key: value.to(device) for key, value in make_inputs(*inputs).items()}
        device_type = torch.device(device).type
        self.precision = functools.partial(torch.autocast, device_type, dtype=dtype, enabled=dtype != torch.float32)
        # What `accelerate launch --dynamo_backend inductor` does to the model in accelerator.prepare.
        self.forward = torch.compile(self.model) if compile else self.model

    def step(self):
        with self.precision():
            loss = self.forward(**self.inputs).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def flops(self):
        counter = FlopCounterMode(display=False)
        with counter:
            with self.precision():
                loss = self.model(**self.inputs).loss
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--caption_length", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["ours-causal", "ours-bidirectional", "ours-causal-pool2", "ved", "git"],
                        choices=sorted(MODELS))
    parser.add_argument("--modes", nargs="+", default=["frozen", "unfrozen"], choices=["frozen", "unfrozen"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flops_batch_size", type=int, default=1,
                        help="batch size of the one FLOP-counting step (FLOPs per sample do not depend on it)")
    add_device_arguments(parser, "float32, or bfloat16 = autocast mixed precision (fp32 weights).")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every model (as `accelerate launch --dynamo_backend inductor`); "
                             "the warm-up round then includes compilation.")
    args = parser.parse_args(argv)
    setup_threads(args.threads, args.device)
    dtype = DTYPES[args.dtype]
    on_device = dict(device=args.device, dtype=dtype)
    measure_rate = functools.partial(matmul_gflops, dtype=dtype, device=args.device)

    inputs = make_batch(args.batch_size, args.caption_length)
    rate_before = measure_rate()
    print(f"{args.dtype} matmul rate on {args.device}: {rate_before:.1f} GFLOP/s", flush=True)

    rows = []
    for mode in args.modes:
        trainers = {
            name: Trainer(name, inputs, freeze_encoder=mode == "frozen", compile=args.compile, **on_device)
            for name in args.models
        }
        # FLOPs per sample are linear in the batch: count them on a small batch, a separate model (cheap).
        small = make_batch(args.flops_batch_size, args.caption_length)
        flops = {
            name: Trainer(name, small, freeze_encoder=mode == "frozen", **on_device).flops()
            * args.batch_size / args.flops_batch_size
            for name in args.models
        }
        for name in args.models:
            print(f"  {name}: {flops[name] / args.batch_size / 1e9:.1f} GFLOP/sample (forward + backward)", flush=True)
        print(f"\nencoder {mode}, batch {args.batch_size}, caption length {args.caption_length}", flush=True)
        results = run_alternating({name: t.step for name, t in trainers.items()}, repeats=args.repeats,
                                  device=args.device)
        rate = measure_rate()
        print(f"{args.dtype} matmul rate after this mode: {rate:.1f} GFLOP/s", flush=True)
        rate = median([rate_before, rate])
        reference = median(results[args.models[0]]["seconds"])
        for name in args.models:
            seconds = median(results[name]["seconds"])
            achieved = flops[name] / seconds / 1e9
            rows.append([
                mode, name, f"{args.batch_size / seconds:.3f}", f"{seconds:.3f}", f"{seconds / reference:.2f}",
                f"{flops[name] / args.batch_size / 1e9:.1f}", f"{achieved:.1f}", f"{achieved / rate:.0%}",
                f"{median(results[name]['peak_bytes']) / 2**20:.0f}",
            ])
            print("  result:", " | ".join(str(c) for c in rows[-1]), flush=True)
        del trainers
    print(
        f"\n{args.device}, {args.dtype}{', torch.compile' if args.compile else ''}, batch {args.batch_size}; "
        f"medians of {args.repeats} alternating repeats; ratio = time / {args.models[0]} time (> 1: ours faster); "
        f"fraction = achieved model GFLOP/s / measured {args.dtype} matmul GFLOP/s on {args.device}"
    )
    print_table(
        ["encoder", "model", "samples/s", "s/step", f"time / {args.models[0]}", "GFLOP/sample",
         "achieved GFLOP/s", "of matmul rate", memory_column(args.device)],
        rows,
    )


if __name__ == "__main__":
    main()
