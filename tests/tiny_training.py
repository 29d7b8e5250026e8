"""A freshly trained tiny captioner for the evaluation and publishing tests: a few AdamW steps on synthetic data."""

import functools
import json
from pathlib import Path

import torch

from conftest import make_tiny_captioner


@functools.lru_cache(maxsize=None)
def trained_tiny_model_folder(base_dir, steps=25, seed=0):
    """`base_dir/trained-tiny`: trained once per test session (pass pytest's basetemp), shared by the test files."""
    return train_tiny_model_folder(Path(base_dir) / "trained-tiny", steps=steps, seed=seed)


def train_tiny_model_folder(folder, steps=25, seed=0):
    """Train a tiny captioner for `steps` AdamW steps on 32 synthetic images; save a complete model folder.

    Also writes `training_args.json` as the training job does, so the model card has hyperparameters to show.
    """
    from vitgpt2_caption.caption_collator import CaptionCollator
    from vitgpt2_caption.synthetic import generate_synthetic_dataset

    torch.manual_seed(seed)
    model, processor = make_tiny_captioner(seed=seed)
    rows = list(generate_synthetic_dataset(num_train=32, num_validation=0, num_test=0, seed=seed)["train"])
    collator = CaptionCollator(processor, max_length=16, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        collator.set_epoch(step)
        model(**collator(rows[(step * 16) % 32:][:16])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    args = {"dataset": "synthetic", "model_size": "tiny", "learning_rate": 1e-2, "max_train_steps": steps,
            "per_device_train_batch_size": 16, "seed": seed, "output_dir": str(folder)}
    (folder / "training_args.json").write_text(json.dumps(args, indent=1))
    return folder
