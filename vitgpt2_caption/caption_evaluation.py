"""Caption a dataset split with a model, over one or many processes, and score it with the COCO caption metrics.

Library code for `evaluate_captions.py` and the training job's validation:

- `generate_captions`: batched `generate()` sharded by `accelerate`; every process gets back every prediction,
  each image exactly once (`gather_for_metrics` drops the samples an uneven last batch repeats).
- `evaluate_captions`: the above + `compute_caption_metrics` (computed once, on the main process, and shared).
- `evaluate_model_folder`: the whole evaluation job for a saved model folder, writing `metrics.json`,
  `predictions.jsonl` and `gallery.png`.
- `write_gallery_png`: a grid of images with their generated and reference captions.
"""

import json
import os
import textwrap
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader

from .caption_metrics import compute_caption_metrics
from .caption_collator import _decode_image


class _PixelCollator:
    """Indices of dataset rows -> `pixel_values` + the indices (as a tensor, so they can be gathered)."""

    def __init__(self, dataset, processor):
        self.dataset = dataset
        self.processor = processor

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        images = [_decode_image(image).convert("RGB") for image in self.dataset[indices]["image"]]
        pixel_values = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "indices": torch.tensor(indices, dtype=torch.long)}


@torch.no_grad()
def generate_captions(
    model,
    processor,
    dataset,
    accelerator: Optional[Accelerator] = None,
    *,
    num_beams: int = 1,
    max_new_tokens: Optional[int] = None,
    batch_size: int = 8,
    num_workers: int = 0,
) -> list[dict[str, Any]]:
    """Caption every row of `dataset` (columns `image`, `captions`, `image_id`), sharded over the processes.

    Args:
        model: a `ViTGPT2CaptionModel`, possibly wrapped by `accelerator.prepare` (it is unwrapped).
        processor: its `ViTGPT2CaptionProcessor`.
        dataset: a `datasets.Dataset` split, e.g. from `load_caption_dataset(...)["test"]`.
        accelerator: shards the rows over its processes; `None` makes a single-process one.
        num_beams, max_new_tokens: decoding settings (`None` keeps the generation config's length).
        batch_size: images per process per `generate()` call.

    Returns:
        On every process, one `{"index", "image_id", "caption", "references"}` per row, in dataset order.
    """
    accelerator = accelerator or Accelerator()
    model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval().to(accelerator.device)
    # The loader yields row indices; gathering them (not strings) tells us which caption belongs to which row.
    loader = DataLoader(
        list(range(len(dataset))),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_PixelCollator(dataset, processor),
    )
    loader = accelerator.prepare_data_loader(loader)  # even_batches: every process gets as many batches
    pad_token_id = model.generation_config.pad_token_id
    generate_kwargs = {"num_beams": num_beams}
    if max_new_tokens is not None:
        generate_kwargs["max_new_tokens"] = max_new_tokens

    all_indices, all_sequences = [], []
    for batch in loader:
        sequences = model.generate(pixel_values=batch["pixel_values"], **generate_kwargs)  # (B, T_proc)
        # Each process stops at its own longest caption; pad to a common length before gathering.
        sequences = accelerator.pad_across_processes(sequences, dim=1, pad_index=pad_token_id)
        # gather_for_metrics drops the rows repeated to even out the last batch, so no image counts twice.
        indices, sequences = accelerator.gather_for_metrics((batch["indices"], sequences))
        all_indices.extend(indices.tolist())
        all_sequences.extend(sequences.cpu())
    if was_training:
        model.train()

    if sorted(all_indices) != list(range(len(dataset))):
        raise RuntimeError(
            f"Gathered {len(all_indices)} captions for {len(dataset)} images "
            f"({len(set(all_indices))} distinct): the evaluation loader dropped or repeated images."
        )
    captions = processor.batch_decode(all_sequences, skip_special_tokens=True) if all_sequences else []
    by_index = dict(zip(all_indices, captions))
    image_ids, references = dataset["image_id"], dataset["captions"]
    return [
        {"index": i, "image_id": str(image_ids[i]), "caption": by_index[i].strip(), "references": references[i]}
        for i in range(len(dataset))
    ]


def evaluate_captions(
    model,
    processor,
    dataset,
    accelerator: Optional[Accelerator] = None,
    *,
    num_beams: int = 1,
    max_new_tokens: Optional[int] = None,
    batch_size: int = 8,
    use_java: Optional[bool] = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """`generate_captions` + the COCO caption metrics. Returns `(metrics, rows)`, the same on every process.

    The metrics are computed on the main process only (METEOR and the PTB tokenizer start a JVM each) and
    broadcast, so every process takes the same decisions from them (e.g. which checkpoint is best).
    """
    accelerator = accelerator or Accelerator()
    rows = generate_captions(
        model, processor, dataset, accelerator, num_beams=num_beams, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    metrics = [None]
    if accelerator.is_main_process:
        metrics[0] = compute_caption_metrics(
            [row["caption"] for row in rows], [row["references"] for row in rows], use_java=use_java
        )
    if accelerator.num_processes > 1:
        broadcast_object_list(metrics)
    return metrics[0], rows


def write_gallery_png(rows: list[dict[str, Any]], path: str, *, max_images: int = 16, columns: int = 4) -> str:
    """Draw up to `max_images` rows (`image`, `caption`, `references`, optional `image_id`) as a PNG grid.

    Uses matplotlib's Agg canvas directly (no pyplot), so it works headless and leaves no global figure state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(rows)[:max_images]
    if not rows:
        raise ValueError("write_gallery_png needs at least one row.")
    columns = min(columns, len(rows))
    grid_rows = -(-len(rows) // columns)
    # Each cell: a ~3.6 in image with ~1.6 in of caption text under it (hence the bottom margin and hspace).
    height = 5.4 * grid_rows
    figure = Figure(figsize=(4.2 * columns, height))
    FigureCanvasAgg(figure)
    for position, row in enumerate(rows):
        axes = figure.add_subplot(grid_rows, columns, position + 1)
        axes.imshow(_decode_image(row["image"]).convert("RGB"))
        axes.set_xticks([])
        axes.set_yticks([])
        if row.get("image_id") is not None:
            axes.set_title(_shorten(str(row["image_id"]), 40), fontsize=8)
        lines = ["generated: " + _wrap(row["caption"])]
        lines += ["ref: " + _wrap(reference) for reference in list(row.get("references") or [])[:3]]
        axes.text(0.0, -0.04, "\n".join(lines), transform=axes.transAxes, va="top", ha="left", fontsize=7)
    figure.subplots_adjust(left=0.02, right=0.98, top=1 - 0.3 / height, bottom=1.6 / height, wspace=0.08, hspace=0.5)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=80)
    return path


def _wrap(text: str, width: int = 48) -> str:
    return "\n    ".join(textwrap.wrap(text, width) or [""])


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def load_model_folder(model_dir: str):
    """(model, processor) from a saved folder, with this package's classes (no remote code needed)."""
    from .modeling_vitgpt2_caption import ViTGPT2CaptionModel
    from .processing_vitgpt2_caption import ViTGPT2CaptionProcessor

    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"{model_dir!r} is not a model folder (no config.json).")
    return ViTGPT2CaptionModel.from_pretrained(model_dir).eval(), ViTGPT2CaptionProcessor.from_pretrained(model_dir)


def load_eval_split(
    dataset: str = "synthetic",
    *,
    split: str = "test",
    dataset_format: Optional[str] = None,
    image_dir: Optional[str] = None,
    max_samples: Optional[int] = None,
    seed: int = 42,
):
    """One split of a caption source, cut to its first `max_samples` rows."""
    from .caption_datasets import load_caption_dataset

    kwargs = {}
    if (dataset_format or ("synthetic" if dataset == "synthetic" else None)) == "synthetic":
        # Synthetic rows are drawn per (seed, split, index): generating only the split we need gives the same rows.
        sizes = {"num_train": 0, "num_validation": 0, "num_test": 0}
        sizes[f"num_{split}"] = max_samples if max_samples is not None else 200
        kwargs["synthetic_kwargs"] = sizes
    splits = load_caption_dataset(dataset, dataset_format=dataset_format, image_dir=image_dir, seed=seed, **kwargs)
    if split not in splits:
        raise ValueError(f"No split {split!r} in {dataset!r}; it has {sorted(splits)}.")
    rows = splits[split]
    if max_samples is not None:
        rows = rows.select(range(min(max_samples, len(rows))))
    if len(rows) == 0:
        raise ValueError(f"Split {split!r} of {dataset!r} is empty.")
    return rows


def evaluate_model_folder(
    model_dir: str,
    dataset: str = "synthetic",
    *,
    split: str = "test",
    dataset_format: Optional[str] = None,
    image_dir: Optional[str] = None,
    num_beams: int = 3,
    max_new_tokens: Optional[int] = 32,
    batch_size: int = 8,
    max_samples: Optional[int] = None,
    output_dir: Optional[str] = None,
    gallery_size: int = 16,
    accelerator: Optional[Accelerator] = None,
    use_java: Optional[bool] = None,
) -> dict[str, Any]:
    """Evaluate a saved model folder on a dataset split; the main process writes the results to `output_dir`.

    Files (when `output_dir` is given): `metrics.json` (what this function returns), `predictions.jsonl`
    (`image_id`, `caption`, `references`; one line per image, sorted by image id) and `gallery.png`.
    Returns, on every process: `{"metrics", "dataset", "split", "num_images", "decoding"}`.
    """
    accelerator = accelerator or Accelerator()
    model, processor = load_model_folder(model_dir)
    rows_dataset = load_eval_split(
        dataset, split=split, dataset_format=dataset_format, image_dir=image_dir, max_samples=max_samples
    )
    metrics, rows = evaluate_captions(
        model, processor, rows_dataset, accelerator,
        num_beams=num_beams, max_new_tokens=max_new_tokens, batch_size=batch_size, use_java=use_java,
    )
    summary = {
        "metrics": metrics,
        "dataset": dataset,
        "split": split,
        "num_images": len(rows),
        "decoding": {"num_beams": num_beams, "max_new_tokens": max_new_tokens},
    }
    if output_dir is not None and accelerator.is_main_process:
        write_evaluation_outputs(output_dir, summary, rows, rows_dataset, gallery_size=gallery_size)
    accelerator.wait_for_everyone()
    return summary


def write_evaluation_outputs(output_dir: str, summary: dict, rows: list[dict], dataset, gallery_size: int = 16) -> None:
    """`metrics.json`, `predictions.jsonl` (sorted by image id) and `gallery.png` (first rows by image id)."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as file:
        json.dump(summary, file, indent=2)
        file.write("\n")
    ordered = sorted(rows, key=lambda row: (row["image_id"], row["index"]))
    with open(os.path.join(output_dir, "predictions.jsonl"), "w", encoding="utf-8") as file:
        for row in ordered:
            line = {"image_id": row["image_id"], "caption": row["caption"], "references": row["references"]}
            file.write(json.dumps(line, ensure_ascii=False) + "\n")
    if gallery_size > 0 and ordered:
        shown = ordered[:gallery_size]
        images = dataset[[row["index"] for row in shown]]["image"]
        write_gallery_png(
            [{**row, "image": image} for row, image in zip(shown, images)],
            os.path.join(output_dir, "gallery.png"),
            max_images=gallery_size,
        )
