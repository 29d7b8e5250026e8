"""Measured gains of ours' output-preserving speed-ups, each A/B in ONE process (alternating, medians).

    python benchmarks/speedups.py [--only beam_prefill beam_reorder prefix_sharing_cache gelu fused_adamw
                                          inference_mode] [--repeats 3]

- beam_prefill: generate() prefills the decoder once per image and repeats the cache per beam
  (modeling_vitgpt2_caption `_expand_inputs_for_generation` / `image_repeats`), vs GenerationMixin's default
  of repeating the image features first (the prefill then runs num_beams times). Batch 8, beam 3, 20 tokens.
  Sequences must be identical.
- beam_reorder: the beam-search cache reorder by advanced indexing (modeling `_reorder_cache`) vs the cache's
  own `index_select` (~20x slower on CPU in torch 2.13). Batch 8, beam 3, 20 tokens. Sequences must be identical.
- prefix_sharing_cache: generate() with PrefixSharingCacheLayer (keys/values appended into spare capacity; beam
  reorders skip the image prefix that all beams of an image share) vs transformers' DynamicLayer (a concatenation
  per step, a full gather per beam-search step). Batch 8, beam 3 and greedy, 20 tokens. Sequences must be identical.
- gelu: GPT-2's `gelu_new` (tanh GELU written as 6 elementwise ops) vs `gelu_pytorch_tanh` (the same formula,
  one fused kernel): a config change, same weights. Training step, batch 8, frozen encoder; max |loss diff|.
- fused_adamw: `torch.optim.AdamW(fused=True)` (supported on CPU) vs the default per-parameter loop;
  same update rule. Training step as above.
- inference_mode: generate() under `torch.inference_mode()` vs the current `torch.no_grad()`. Batch 8, greedy.
"""

import argparse
import os
import sys

import torch
from transformers import GenerationMixin

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import build_ours, median, run_alternating, setup_threads  # noqa: E402
from training_step import make_batch, ours_inputs  # noqa: E402

from vitgpt2_caption import ViTGPT2CaptionModel  # noqa: E402
from vitgpt2_caption.modeling_vitgpt2_caption import PrefixSharingCacheLayer  # noqa: E402

FORCED = dict(max_new_tokens=20, min_new_tokens=20)


def report(name, results, a, b, note=""):
    ta, tb = median(results[a]["seconds"]), median(results[b]["seconds"])
    print(f"==> {name}: {a} {ta:.2f} s, {b} {tb:.2f} s, speed-up {ta / tb:.2f}x {note}", flush=True)


def beam_prefill(repeats):
    model = build_ours().eval()
    pixel_values = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ours_expand = ViTGPT2CaptionModel._expand_inputs_for_generation
    outputs = {}

    def run(name, expand):
        def fn():
            ViTGPT2CaptionModel._expand_inputs_for_generation = expand
            try:
                outputs[name] = model.generate(pixel_values=pixel_values, num_beams=3, **FORCED)
            finally:
                ViTGPT2CaptionModel._expand_inputs_for_generation = ours_expand
        return fn

    results = run_alternating(
        {"prefill per beam": run("prefill per beam", GenerationMixin._expand_inputs_for_generation),
         "prefill per image": run("prefill per image", ours_expand)},
        repeats=repeats,
    )
    same = torch.equal(outputs["prefill per beam"], outputs["prefill per image"])
    report("beam_prefill (batch 8, beam 3)", results, "prefill per beam", "prefill per image", f"same sequences: {same}")


def beam_reorder(repeats):
    model = build_ours().eval()
    pixel_values = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ours_reorder = ViTGPT2CaptionModel._reorder_cache
    outputs = {}

    def default_reorder(self, cache, beam_idx):
        cache.reorder_cache(beam_idx)  # the cache's own index_select
        return cache

    def run(name, reorder):
        def fn():
            ViTGPT2CaptionModel._reorder_cache = reorder
            model.generation_cache_layer_class = None  # both sides on DynamicLayer: the reorder alone
            try:
                outputs[name] = model.generate(pixel_values=pixel_values, num_beams=3, **FORCED)
            finally:
                ViTGPT2CaptionModel._reorder_cache = ours_reorder
                del model.generation_cache_layer_class
        return fn

    results = run_alternating({"index_select": run("index_select", default_reorder),
                               "indexing": run("indexing", ours_reorder)}, repeats=repeats)
    same = torch.equal(outputs["index_select"], outputs["indexing"])
    report("beam_reorder (batch 8, beam 3)", results, "index_select", "indexing", f"same sequences: {same}")


def prefix_sharing_cache(repeats):
    model = build_ours().eval()
    pixel_values = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for label, strategy in (("beam 3", dict(num_beams=3)), ("greedy", dict(num_beams=1))):
        outputs = {}

        def run(name, layer_class):
            def fn():
                model.generation_cache_layer_class = layer_class  # instance attribute: this model only
                outputs[name] = model.generate(pixel_values=pixel_values, **strategy, **FORCED)
            return fn

        results = run_alternating({"DynamicLayer": run("DynamicLayer", None),
                                   "PrefixSharingCacheLayer": run("PrefixSharingCacheLayer", PrefixSharingCacheLayer)},
                                  repeats=repeats)
        same = torch.equal(outputs["DynamicLayer"], outputs["PrefixSharingCacheLayer"])
        report(f"prefix_sharing_cache (batch 8, {label})", results, "DynamicLayer", "PrefixSharingCacheLayer",
               f"same sequences: {same}")


def training_ab(name, repeats, variant):
    """variant(model, fused) -> None configures the B side; A is the default."""
    inputs = make_batch(8, 20)
    trainers = {}
    for side in ("default", name):
        torch.manual_seed(0)
        model = build_ours().train()
        model.vision_model.requires_grad_(False)
        fused = False
        if side == name:
            fused = variant(model)
        params = [p for p in model.parameters() if p.requires_grad]
        trainers[side] = (model, torch.optim.AdamW(params, lr=1e-4, fused=fused or None), ours_inputs(*inputs))
    losses = {side: [] for side in trainers}

    def step(side):
        def fn():
            model, optimizer, batch = trainers[side]
            torch.manual_seed(len(losses[side]))  # same dropout masks on both sides
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses[side].append(loss.item())
        return fn

    results = run_alternating({side: step(side) for side in trainers}, repeats=repeats)
    diff = max(abs(a - b) for a, b in zip(losses["default"], losses[name]))
    report(f"{name} (training step, batch 8, frozen encoder)", results, "default", name,
           f"max |loss diff| over {len(losses[name])} steps: {diff:.2e}")


def use_fused_gelu(model):
    from transformers.activations import ACT2FN

    model.config.text_config.activation_function = "gelu_pytorch_tanh"
    for block in model.language_model.transformer.h:
        block.mlp.act = ACT2FN["gelu_pytorch_tanh"]
    return False


def inference_mode(repeats):
    model = build_ours().eval()
    pixel_values = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    generate = ViTGPT2CaptionModel.generate.__wrapped__  # the undecorated method
    outputs = {}

    def run(name, context):
        def fn():
            with context():
                outputs[name] = generate(model, pixel_values=pixel_values, **FORCED)
        return fn

    results = run_alternating({"no_grad": run("no_grad", torch.no_grad),
                               "inference_mode": run("inference_mode", torch.inference_mode)}, repeats=repeats)
    same = torch.equal(outputs["no_grad"], outputs["inference_mode"])
    report("inference_mode (batch 8, greedy)", results, "no_grad", "inference_mode", f"same sequences: {same}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=["beam_prefill", "beam_reorder", "prefix_sharing_cache", "gelu", "fused_adamw",
                                                   "inference_mode"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    for name in args.only:
        print(f"\n{name}", flush=True)
        if name == "beam_reorder":
            beam_reorder(args.repeats)
        elif name == "prefix_sharing_cache":
            prefix_sharing_cache(args.repeats)
        elif name == "beam_prefill":
            beam_prefill(args.repeats)
        elif name == "gelu":
            training_ab("gelu", args.repeats, use_fused_gelu)
        elif name == "fused_adamw":
            training_ab("fused_adamw", args.repeats, lambda model: True)
        elif name == "inference_mode":
            inference_mode(args.repeats)


if __name__ == "__main__":
    main()
