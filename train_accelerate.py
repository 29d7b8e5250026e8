#!/usr/bin/env python
"""Train a vitgpt2-caption captioner with Accelerate, on one process or many, surviving interruption.

    accelerate launch train_accelerate.py --output_dir outputs/demo            # synthetic default
    accelerate launch train_accelerate.py --dataset data/coco --encoder_name_or_path google/vit-base-patch16-224-in21k \
        --decoder_name_or_path distilgpt2 --output_dir outputs/coco            # pretrained parts, real data
    accelerate launch train_accelerate.py --output_dir outputs/demo --resume_from_checkpoint latest

Mixed precision, CPU/GPU and the process count come from `accelerate launch`; plain `python` is one process.

The output folder is a complete model folder (weights, config, remote code, processor) plus
`training_args.json`, `train_log.jsonl`, `loss_curve.png`, `best/` (the best model by validation CIDEr),
`checkpoints/step_N/` (resumable state) and, at the end, `test_results.json` and `test_gallery.png`.

Loss: each optimizer step's loss is the mean token cross-entropy over the WHOLE global batch (all
accumulated micro-batches on all processes), not a mean of per-micro-batch means. So 2 processes x batch 4,
or 2 accumulation steps x batch 4, train exactly like batch 8 on one process. This needs the step's
micro-batches up front (to count their tokens), so an epoch's last incomplete accumulation window is dropped.
"""

import argparse
import functools
import itertools
import json
import logging
import math
import os
import shutil
import time

import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, GradientAccumulationPlugin, set_seed
from huggingface_hub import constants as hf_constants
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import SchedulerType, get_scheduler

from vitgpt2_caption import MODEL_SIZES, ViTGPT2CaptionModel, ViTGPT2CaptionProcessor, build_captioner
from vitgpt2_caption.caption_collator import CaptionCollator
from vitgpt2_caption.caption_datasets import load_caption_dataset
from vitgpt2_caption.caption_evaluation import evaluate_captions, write_gallery_png
from vitgpt2_caption.caption_metrics import compute_caption_metrics
from vitgpt2_caption.caption_tokenizer import train_caption_tokenizer
from vitgpt2_caption import synthetic
from vitgpt2_caption.feature_cache import CachedFeatureCollator, ImageFeatureCache, forward_with_cached_features
from vitgpt2_caption.optimizers import OPTIMIZERS, build_optimizers

logger = get_logger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.json"
ARGS_FILE = "training_args.json"
LOG_FILE = "train_log.jsonl"
# Tests only: seconds to sleep inside a checkpoint save, before its atomic rename, so that a test can kill
# the run mid-save for sure. It widens the window; it changes nothing else.
SLOW_SAVE_ENV = "VITGPT2_CAPTION_TEST_SLOW_SAVE"


def str2bool(value):
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="synthetic", help="A caption folder/file, a Hub dataset name, or `synthetic` (generated on the fly).")
    g.add_argument("--dataset_format", default=None, help="imagefolder, mini_coco, coco, karpathy, hub or synthetic (None: detected).")
    g.add_argument("--image_dir", default=None, help="Where the images are, for coco / karpathy / mini_coco annotations.")
    g.add_argument("--synthetic_image_size", type=int, default=112, help="Synthetic data only: image side in pixels (the processor then resizes to the encoder's input size).")
    g.add_argument("--num_train_examples", type=int, default=12000, help="Synthetic data only: training images.")
    g.add_argument("--num_validation_examples", type=int, default=200, help="Synthetic data only: validation images.")
    g.add_argument("--num_test_examples", type=int, default=200, help="Synthetic data only: held-out test images.")
    g.add_argument("--max_eval_samples", type=int, default=200, help="Validation images used for metrics and loss.")
    g.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes (image decoding and preprocessing).")

    g = p.add_argument_group("model")
    g.add_argument("--model_name_or_path", default=None, help="Continue training a captioning model folder (or Hub repo).")
    g.add_argument("--encoder_name_or_path", default=None, help="ViT/DeiT checkpoint for the encoder (None: random init at --model_size).")
    g.add_argument("--decoder_name_or_path", default=None, help="GPT-2 checkpoint for the decoder and its tokenizer (None: random init + a tokenizer trained on the captions).")
    g.add_argument("--model_size", default="demo", choices=sorted(MODEL_SIZES), help="Random-init shapes when no checkpoint is given: tiny, demo (the CPU demo), small, or base = ViT-B/16 at 224 + DistilGPT2's shape.")
    g.add_argument("--tokenizer_vocab_size", type=int, default=1000, help="Vocabulary of the tokenizer trained on the captions (no --decoder_name_or_path).")
    g.add_argument("--freeze_encoder", type=str2bool, nargs="?", const=True, default=True, help="Freeze the vision encoder, as the original did (right for a pretrained encoder). `--freeze_encoder false` or `--no_freeze_encoder` trains it (`make demo` does: its encoder starts random).")
    g.add_argument("--no_freeze_encoder", dest="freeze_encoder", action="store_false", default=argparse.SUPPRESS, help="Train the vision encoder too.")
    g.add_argument("--projector_dropout", type=float, default=None, help="Projector dropout for a new model (None: the config's 0.5).")
    g.add_argument("--decoder_dropout", type=float, default=None, help="Set GPT-2's residual, embedding and attention dropout (None: unchanged, 0.1 for a new decoder).")
    g.add_argument("--prefix_attention", default=None, choices=["causal", "bidirectional"], help="New models: how image prefix positions attend.")
    g.add_argument("--prefix_pool_size", type=int, default=None, help="New models: average-pool the encoder's patch grid k x k before the projector (None/1: every patch; 2: ViT-B/16's 196 patches -> 49, a 4x shorter decoder prefix).")
    g.add_argument("--max_caption_length", type=int, default=32, help="Tokens per caption including BOS and EOS (training cut, and max_new_tokens when captioning).")
    g.add_argument("--cache_image_features", type=str2bool, nargs="?", const=True, default=False, help="Frozen encoder only: compute the encoder's outputs once, keep them on disk (keyed by the encoder's weights, the image preprocessing and the dataset), and run only the projector and decoder in later epochs.")
    g.add_argument("--image_feature_cache_dir", default=None, help="Where --cache_image_features stores features (default: $HF_HOME/vitgpt2_caption/image_features).")
    g.add_argument("--pad_to_max_length", action="store_true", help="Pad every caption to --max_caption_length (fixed shapes; used by the equivalence tests).")

    g = p.add_argument_group("optimisation")
    g.add_argument("--per_device_train_batch_size", type=int, default=32, help="Images per process per micro-batch.")
    g.add_argument("--per_device_eval_batch_size", type=int, default=64, help="Images per process for validation and test captioning.")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Micro-batches per optimizer step.")
    g.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS, help="adamw, or muon: Muon (torch >= 2.9) for the weight matrices inside the encoder, projector and decoder blocks, AdamW for embeddings, biases and norms (`make demo` uses it: far faster from scratch).")
    g.add_argument("--learning_rate", type=float, default=1e-3, help="Peak AdamW learning rate after warmup.")
    g.add_argument("--muon_learning_rate", type=float, default=None, help="--optimizer muon: Muon's peak learning rate, on the same schedule (update scaled to AdamW's RMS; None: 2 x --learning_rate).")
    g.add_argument("--weight_decay", type=float, default=0.01, help="Decoupled weight decay (never on biases and LayerNorm weights).")
    g.add_argument("--lr_scheduler_type", default="cosine", choices=[t.value for t in SchedulerType], help="Learning-rate schedule after warmup.")
    g.add_argument("--num_warmup_steps", type=int, default=100, help="Optimizer steps of linear warmup.")
    g.add_argument("--num_train_epochs", type=int, default=6, help="Passes over the training images (one caption per image per pass).")
    g.add_argument("--max_train_steps", type=int, default=None, help="Overrides --num_train_epochs.")
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm.")
    g.add_argument("--seed", type=int, default=42, help="Seed for the weights, the data order, the caption choice and the synthetic data.")

    g = p.add_argument_group("output, evaluation, checkpoints")
    g.add_argument("--output_dir", required=True, help="The model folder to write (plus logs, checkpoints, test results).")
    g.add_argument("--overwrite_output_dir", action="store_true", help="Allow a non-empty --output_dir that is not a run of this job.")
    g.add_argument("--logging_steps", type=int, default=10, help="Log the training loss every N optimizer steps.")
    g.add_argument("--eval_steps", type=int, default=500, help="Validation loss, COCO metrics and sample captions every N steps (0: only at the end).")
    g.add_argument("--compute_meteor", type=str2bool, nargs="?", const=True, default=True, help="Include METEOR (needs Java; a JVM start costs seconds per evaluation).")
    g.add_argument("--num_beams", type=int, default=1, help="Beam width for validation and test captions.")
    g.add_argument("--checkpointing_steps", type=int, default=500, help="Save a resumable checkpoint every N steps (0: never).")
    g.add_argument("--checkpoints_total_limit", type=int, default=2, help="Keep at most this many checkpoints.")
    g.add_argument("--resume_from_checkpoint", default=None, help="A checkpoint folder, or `latest` (the newest in --output_dir).")
    g.add_argument("--num_gallery_images", type=int, default=16, help="Test images in test_gallery.png.")
    g.add_argument("--with_tracking", action="store_true", help="Log to trackers (see --report_to).")
    g.add_argument("--report_to", default=None, help="tensorboard, wandb, ... or all (implies --with_tracking).")
    g.add_argument("--push_to_hub", action="store_true", help="Upload the final model folder to --hub_model_id.")
    g.add_argument("--hub_model_id", default=None, help="owner/name of the Hub repo for --push_to_hub.")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)

    if args.report_to:
        args.with_tracking = True
    elif args.with_tracking:
        args.report_to = "tensorboard"
    if args.checkpoints_total_limit < 1:
        p.error("--checkpoints_total_limit must be at least 1.")
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id.")
    if args.model_name_or_path and (args.encoder_name_or_path or args.decoder_name_or_path):
        p.error("--model_name_or_path continues a whole captioner; do not combine it with --encoder/--decoder_name_or_path.")
    return args


# --------------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------------


def check_output_dir(args):
    """Never silently overwrite something that is not a run of this job."""
    if not os.path.isdir(args.output_dir) or not os.listdir(args.output_dir):
        return
    previous_run = os.path.exists(os.path.join(args.output_dir, ARGS_FILE))
    if not previous_run and not args.overwrite_output_dir:
        raise FileExistsError(
            f"--output_dir {args.output_dir!r} is not empty and is not a previous run of train_accelerate.py "
            "(no training_args.json). Choose another folder or pass --overwrite_output_dir."
        )


def build_model(args, train_captions):
    if args.model_name_or_path:
        model = ViTGPT2CaptionModel.from_pretrained(args.model_name_or_path)
        processor = ViTGPT2CaptionProcessor.from_pretrained(args.model_name_or_path)
        processor.max_caption_length = args.max_caption_length
        model.generation_config.max_new_tokens = args.max_caption_length
    else:
        tokenizer = None
        if args.decoder_name_or_path is None:
            # A few hundred caption words do not need GPT-2's 50k vocabulary (mostly dead embeddings).
            tokenizer = train_caption_tokenizer(train_captions, vocab_size=args.tokenizer_vocab_size)
        config_kwargs = {}
        if args.projector_dropout is not None:
            config_kwargs["projector_dropout"] = args.projector_dropout
        if args.prefix_attention is not None:
            config_kwargs["prefix_attention"] = args.prefix_attention
        if args.prefix_pool_size is not None:
            config_kwargs["prefix_pool_size"] = args.prefix_pool_size
        model, processor = build_captioner(
            args.encoder_name_or_path,
            args.decoder_name_or_path,
            model_size=args.model_size,
            tokenizer=tokenizer,
            max_caption_length=args.max_caption_length,
            **config_kwargs,
        )
    if args.decoder_dropout is not None:
        text_config = model.language_model.config
        text_config.resid_pdrop = text_config.embd_pdrop = text_config.attn_pdrop = args.decoder_dropout
        for module in model.language_model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = args.decoder_dropout
    if args.freeze_encoder:
        model.vision_model.requires_grad_(False)
    return model, processor


def call_model(model, batch, **kwargs):
    return model(**batch, **kwargs)


def cached_image_features(args, accelerator, model, processor, train_dataset, collator):
    """Training rows and collate function that read the frozen encoder's outputs from the on-disk cache."""
    if not args.freeze_encoder:
        raise ValueError("--cache_image_features needs a frozen encoder (--freeze_encoder): features must not change.")
    model.vision_model.to(accelerator.device)  # build the cache on the accelerator when there is one
    cache_root = args.image_feature_cache_dir or os.path.join(hf_constants.HF_HOME, "vitgpt2_caption", "image_features")
    cache = ImageFeatureCache.build_or_load(
        cache_root, model, processor.image_processor, train_dataset,
        batch_size=args.per_device_eval_batch_size, accelerator=accelerator, log=logger.info,
    )
    return cache.dataset(train_dataset), CachedFeatureCollator(collator, cache)


# --------------------------------------------------------------------------------------------------
# Checkpoints: step_N.tmp is written, then renamed to step_N, so a crash mid-save leaves older ones whole.
# --------------------------------------------------------------------------------------------------


def list_checkpoints(output_dir):
    folder = os.path.join(output_dir, CHECKPOINTS)
    if not os.path.isdir(folder):
        return []
    found = [
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.startswith("step_") and not name.endswith(".tmp") and os.path.exists(os.path.join(folder, name, STATE_FILE))
    ]
    return sorted(found, key=lambda path: int(os.path.basename(path).split("_")[1]))


def save_checkpoint(accelerator, args, state):
    final = os.path.join(args.output_dir, CHECKPOINTS, f"step_{state['step']}")
    tmp = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)  # model, optimizer, scheduler, sampler, RNG states of every process
    if accelerator.is_main_process:
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(state, f)
        time.sleep(float(os.environ.get(SLOW_SAVE_ENV, 0)))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # atomic on one filesystem: the checkpoint exists whole or not at all
        for old in list_checkpoints(args.output_dir)[: -args.checkpoints_total_limit or None]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resolve_checkpoint(args):
    if args.resume_from_checkpoint != "latest":
        return args.resume_from_checkpoint
    checkpoints = list_checkpoints(args.output_dir)
    if not checkpoints:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint in {args.output_dir}/{CHECKPOINTS}.")
    return checkpoints[-1]


# --------------------------------------------------------------------------------------------------
# Evaluation and logging
# --------------------------------------------------------------------------------------------------


def caption_pixel_batch(model, processor, pixel_values, num_beams, max_new_tokens, zero_image=False):
    """(captions, ended_with_eos) for a batch; `zero_image` is the prefix-only ablation."""
    image_embeds = model.get_image_features(pixel_values)
    if zero_image:
        image_embeds = torch.zeros_like(image_embeds)
    ids = model.generate(image_embeds=image_embeds, num_beams=num_beams, max_new_tokens=max_new_tokens)
    new_tokens = ids[:, 1:]  # generation starts from BOS
    ended = (new_tokens == processor.tokenizer.eos_token_id).any(dim=1)
    return processor.batch_decode(ids), ended


@torch.no_grad()
def validation_loss(accelerator, model, eval_dataloader):
    """Mean token cross-entropy per validation image, gathered over the processes."""
    model.eval()
    losses = []
    for batch in eval_dataloader:
        loss = model(**batch).loss
        losses.append(accelerator.gather_for_metrics(loss.repeat(len(batch["input_ids"]))))
    model.train()
    return torch.cat(losses).mean().item()


def evaluate(accelerator, model, processor, eval_dataloader, eval_dataset, args):
    """Validation loss and COCO caption metrics (the captioning is `caption_evaluation.evaluate_captions`)."""
    results = {"eval_loss": validation_loss(accelerator, model, eval_dataloader)}
    metrics, rows = evaluate_captions(
        model, processor, eval_dataset, accelerator, num_beams=args.num_beams, max_new_tokens=args.max_caption_length,
        batch_size=args.per_device_eval_batch_size, use_java=None if args.compute_meteor else False,
    )
    results.update(metrics)
    predictions = [row["caption"] for row in rows]
    if "objects" in eval_dataset.column_names:
        # Synthetic data: the quality bar of the demo, tracked during training as well as at the end.
        results["fraction_names_exact_objects"] = synthetic.fraction_naming_exact_objects(predictions, eval_dataset["objects"])
    results["samples"] = [{"truth": row["references"][0], "caption": row["caption"]} for row in rows[:3]]
    return results


def append_log(accelerator, args, record):
    if accelerator.is_main_process:
        with open(os.path.join(args.output_dir, LOG_FILE), "a") as f:
            f.write(json.dumps(record) + "\n")


def plot_loss_curve(output_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in open(os.path.join(output_dir, LOG_FILE))]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    for points, label in ((train, "train loss"), (evals, "validation loss")):
        if points:
            ax.plot(*zip(*points), label=label, marker="o" if label.startswith("val") else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("token cross-entropy")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "loss_curve.png"), dpi=100)
    plt.close(fig)


def caption_test_images(model, processor, test_dataset, args):
    """Main process, after training: print image id / truth / caption, write test_results.json and the gallery."""

    model.eval()
    collator = CaptionCollator(processor, max_length=args.max_caption_length)
    has_objects = "objects" in test_dataset.column_names
    captions, ablated, ended = [], [], []
    with torch.no_grad():
        for start in range(0, len(test_dataset), args.per_device_eval_batch_size):
            rows = test_dataset.select(range(start, min(start + args.per_device_eval_batch_size, len(test_dataset))))
            pixel_values = collator(list(rows))["pixel_values"].to(model.device)
            batch_captions, batch_ended = caption_pixel_batch(model, processor, pixel_values, args.num_beams, args.max_caption_length)
            batch_ablated, _ = caption_pixel_batch(model, processor, pixel_values, args.num_beams, args.max_caption_length, zero_image=True)
            captions += batch_captions
            ablated += batch_ablated
            ended += batch_ended.tolist()

    print(f"\nTest captions ({len(captions)} held-out images):")
    for row, caption in zip(test_dataset, captions):
        print(f"  {row['image_id']}\n    truth:   {row['captions'][0]}\n    caption: {caption}")
    results = {
        "num_test_images": len(captions),
        "fraction_ended_with_eos": sum(ended) / len(ended),
        "metrics": compute_caption_metrics(captions, list(test_dataset["captions"]), use_java=None if args.compute_meteor else False),
    }
    if has_objects:
        # The synthetic quality bar: a caption names exactly the drawn objects (colour + shape, nothing extra),
        # and the same model with zeroed image features (language prior only) must do far worse.
        objects = test_dataset["objects"]
        results["fraction_names_exact_objects"] = synthetic.fraction_naming_exact_objects(captions, objects)
        results["fraction_names_exact_objects_zeroed_image"] = synthetic.fraction_naming_exact_objects(ablated, objects)
    results["captions"] = [
        {"image_id": row["image_id"], "truth": row["captions"][0], "caption": c, "zeroed_image_caption": a}
        for row, c, a in zip(test_dataset, captions, ablated)
    ]
    with open(os.path.join(args.output_dir, "test_results.json"), "w") as f:
        json.dump(results, f, indent=1)
    gallery = test_dataset.select(range(min(args.num_gallery_images, len(test_dataset))))
    if len(gallery):
        write_gallery_png(
            [{**row, "caption": caption, "references": row["captions"]} for row, caption in zip(gallery, captions)],
            os.path.join(args.output_dir, "test_gallery.png"), max_images=args.num_gallery_images,
        )
    return results


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator(
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=args.gradient_accumulation_steps,
            # We only ever run whole accumulation windows (see the module docstring), so the window, not the
            # end of the dataloader, decides when gradients sync.
            sync_with_dataloader=False,
        ),
        # A sampler reseeded by set_epoch(epoch): the data order is a function of (seed, epoch), so a resumed
        # run sees exactly the batches the interrupted one would have.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        log_with=args.report_to if args.with_tracking else None,
        project_dir=args.output_dir,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if not accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
    check_output_dir(args)  # on every process: one that raised alone would leave the others waiting
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(args.seed)

    # ---- data ----
    synthetic_kwargs = dict(
        num_train=args.num_train_examples, num_validation=args.num_validation_examples, num_test=args.num_test_examples,
        image_size=args.synthetic_image_size,
    )
    with accelerator.main_process_first():
        dataset = load_caption_dataset(
            args.dataset, dataset_format=args.dataset_format, image_dir=args.image_dir, seed=args.seed,
            synthetic_kwargs=synthetic_kwargs,
        )
    train_dataset = dataset["train"]
    eval_dataset = dataset["validation"].select(range(min(args.max_eval_samples, len(dataset["validation"]))))

    # ---- model ----
    train_captions = [caption for captions in train_dataset["captions"] for caption in captions]
    model, processor = build_model(args, train_captions)
    model.train()

    # Fixed-length captions (--pad_to_max_length) give every batch the same shapes; the tests need that.
    padded = functools.partial(processor, padding="max_length") if args.pad_to_max_length else processor
    collator = CaptionCollator(padded, max_length=args.max_caption_length, seed=args.seed)
    train_rows, train_collate = train_dataset, collator
    if args.cache_image_features:
        train_rows, train_collate = cached_image_features(args, accelerator, model, processor, train_dataset, collator)
    generator = torch.Generator().manual_seed(args.seed)
    train_dataloader = DataLoader(
        train_rows, shuffle=True, batch_size=args.per_device_train_batch_size, collate_fn=train_collate,
        drop_last=True, num_workers=args.dataloader_num_workers, generator=generator,
    )
    eval_dataloader = DataLoader(
        eval_dataset, batch_size=args.per_device_eval_batch_size, num_workers=args.dataloader_num_workers,
        collate_fn=CaptionCollator(padded, args.max_caption_length, seed=args.seed),
    )
    # AdamW's fused kernel (one pass over all parameters, same update rule) is 1.16x faster per frozen-encoder step
    # at base shapes on CPU (benchmarks/speedups.py --only fused_adamw); torch has it for CPU and CUDA only.
    optimizers = build_optimizers(model, args.optimizer, args.learning_rate, args.weight_decay,
                                  fused=accelerator.device.type in ("cpu", "cuda"), muon_learning_rate=args.muon_learning_rate)

    # Steps are counted after sharding; prepare() below splits the training batches over the processes.
    batches_per_epoch = len(train_dataloader) // accelerator.num_processes
    steps_per_epoch = batches_per_epoch // args.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise ValueError("Fewer training batches than one optimizer step needs; lower the batch size or accumulation.")
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    args.num_train_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    # The prepared scheduler steps once per process per optimizer step (accelerate's convention). One schedule per
    # optimizer (AdamW, and Muon with --optimizer muon), the same shape for both.
    lr_schedulers = [
        get_scheduler(
            args.lr_scheduler_type, optimizer=optimizer,
            num_warmup_steps=args.num_warmup_steps * accelerator.num_processes,
            num_training_steps=args.max_train_steps * accelerator.num_processes,
        )
        for optimizer in optimizers
    ]
    model, train_dataloader, eval_dataloader, *prepared = accelerator.prepare(
        model, train_dataloader, eval_dataloader, *optimizers, *lr_schedulers
    )
    optimizers, lr_schedulers = prepared[: len(optimizers)], prepared[len(optimizers) :]

    if args.with_tracking:
        accelerator.init_trackers("vitgpt2_caption", {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()})

    # ---- resume ----
    completed_steps, start_epoch, resume_batches, best_cider = 0, 0, 0, -1.0
    if args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(args)
        accelerator.print(f"Resuming from {checkpoint}")
        accelerator.load_state(checkpoint)
        with open(os.path.join(checkpoint, STATE_FILE)) as f:
            state = json.load(f)
        completed_steps, start_epoch, resume_batches = state["step"], state["epoch"], state["batch_in_epoch"]
        best_cider = state.get("best_cider", best_cider)
    if accelerator.is_main_process:
        if completed_steps == 0:
            # A fresh start in a previous run's folder: its log and checkpoints would mix with ours.
            for stale in (LOG_FILE, CHECKPOINTS, "best"):
                path = os.path.join(args.output_dir, stale)
                shutil.rmtree(path) if os.path.isdir(path) else (os.path.exists(path) and os.remove(path))
        else:
            # Forget what the interrupted run logged after its checkpoint.
            log_path = os.path.join(args.output_dir, LOG_FILE)
            if os.path.exists(log_path):
                kept = [l for l in open(log_path) if json.loads(l)["step"] <= completed_steps]
                with open(log_path, "w") as f:
                    f.writelines(kept)
        for name in os.listdir(os.path.join(args.output_dir, CHECKPOINTS)) if os.path.isdir(os.path.join(args.output_dir, CHECKPOINTS)) else []:
            if name.endswith(".tmp"):  # a save that was interrupted
                shutil.rmtree(os.path.join(args.output_dir, CHECKPOINTS, name))
        with open(os.path.join(args.output_dir, ARGS_FILE), "w") as f:
            saved = {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for k, v in vars(args).items()}
            json.dump({**saved, "num_processes": accelerator.num_processes}, f, indent=1)

    # ---- summary ----
    total_batch_size = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("***** Running training *****")
    logger.info(f"  Num examples = {len(train_dataset)}  (validation {len(eval_dataset)}, test {len(dataset['test'])})")
    logger.info(f"  Num epochs = {args.num_train_epochs}, steps per epoch = {steps_per_epoch}")
    logger.info(f"  Per-device batch = {args.per_device_train_batch_size}, processes = {accelerator.num_processes}, "
                f"accumulation = {args.gradient_accumulation_steps}: total batch size = {total_batch_size}")
    logger.info(f"  Total optimization steps = {args.max_train_steps}")
    logger.info(f"  Trainable parameters = {trainable:,} of {total:,} (encoder frozen: {args.freeze_encoder})")

    # ---- loop ----
    progress = tqdm(range(args.max_train_steps), initial=completed_steps, disable=not accelerator.is_local_main_process)
    last_log_time, samples_since_log = time.time(), 0
    window = args.gradient_accumulation_steps
    for epoch in range(start_epoch, args.num_train_epochs):
        if completed_steps >= args.max_train_steps:
            break
        collator.set_epoch(epoch)  # which of each image's captions this epoch uses
        train_dataloader.set_epoch(epoch)  # the shuffle order
        skip = resume_batches if epoch == start_epoch else 0
        loader = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        batches = iter(loader)
        for step_in_epoch in range(skip // window, steps_per_epoch):
            micro_batches = list(itertools.islice(batches, window))
            # Tokens the loss is averaged over: the whole global batch (see the module docstring).
            num_tokens = sum((b["labels"][:, 1:] != -100).sum() for b in micro_batches)
            num_tokens = accelerator.reduce(num_tokens.to(accelerator.device), "sum")
            step_loss = 0.0
            for batch in micro_batches:
                with accelerator.accumulate(model):
                    forward = forward_with_cached_features if args.cache_image_features else call_model
                    loss = forward(model, batch, num_items_in_batch=num_tokens).loss  # this micro-batch's share
                    # Undo DDP's mean over processes and accelerate's division by the accumulation steps.
                    accelerator.backward(loss * accelerator.num_processes * window)
                    step_loss = step_loss + loss.detach()
            step_loss = accelerator.reduce(step_loss, "sum").item()
            if not math.isfinite(step_loss):
                # Before optimizer.step(): the weights (and every saved checkpoint) are still finite.
                good = list_checkpoints(args.output_dir)
                raise FloatingPointError(
                    f"Loss is {step_loss} at optimizer step {completed_steps + 1} (epoch {epoch}); stopping. "
                    f"Last good checkpoint: {good[-1] if good else 'none'}."
                )
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            for optimizer, lr_scheduler in zip(optimizers, lr_schedulers):
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            completed_steps += 1
            progress.update(1)
            samples_since_log += total_batch_size

            if completed_steps % args.logging_steps == 0 or completed_steps == args.max_train_steps or completed_steps <= 3:
                now = time.time()
                record = {"step": completed_steps, "epoch": epoch, "loss": step_loss, "lr": lr_schedulers[0].get_last_lr()[0],
                          "grad_norm": float(grad_norm), "samples_per_second": samples_since_log / (now - last_log_time)}
                last_log_time, samples_since_log = now, 0
                append_log(accelerator, args, record)
                progress.set_postfix(loss=f"{step_loss:.4f}")
                if args.with_tracking:
                    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=completed_steps)

            if (args.eval_steps and completed_steps % args.eval_steps == 0) or completed_steps == args.max_train_steps:
                results = evaluate(accelerator, model, processor, eval_dataloader, eval_dataset, args)
                accelerator.print(f"step {completed_steps}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, float)))
                for sample in results["samples"]:
                    accelerator.print(f"    {sample['caption']!r}  (truth: {sample['truth']!r})")
                append_log(accelerator, args, {"step": completed_steps, "epoch": epoch, **results})
                if args.with_tracking:
                    accelerator.log({k: v for k, v in results.items() if isinstance(v, float)}, step=completed_steps)
                if accelerator.is_main_process and results.get("CIDEr", -1.0) > best_cider:
                    best_cider = results["CIDEr"]
                    save_model_folder(accelerator, model, processor, os.path.join(args.output_dir, "best"))
            # After the evaluation, so that the checkpoint knows the best CIDEr so far.
            if args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0:
                batch_in_epoch = (step_in_epoch + 1) * window
                save_checkpoint(accelerator, args, {"step": completed_steps, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                                                    "best_cider": best_cider})

            if completed_steps >= args.max_train_steps:
                break

    progress.close()

    # ---- the final model folder ----
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_model_folder(accelerator, model, processor, args.output_dir)
        plot_loss_curve(args.output_dir)
        results = caption_test_images(accelerator.unwrap_model(model), processor, dataset["test"], args)
        summary = {k: v for k, v in results.items() if k not in ("captions", "metrics")}
        print(json.dumps(summary, indent=1))
        if args.push_to_hub:
            from vitgpt2_caption.hub import push_model_folder

            push_model_folder(args.output_dir, args.hub_model_id)
    accelerator.wait_for_everyone()
    if args.with_tracking:
        accelerator.end_training()
    return model


def save_model_folder(accelerator, model, processor, folder):
    """A complete model folder (weights, config, remote code, processor). Call on the main process."""
    os.makedirs(folder, exist_ok=True)
    accelerator.unwrap_model(model).save_pretrained(folder)
    processor.save_pretrained(folder)


if __name__ == "__main__":
    main()
