"""The model card (README.md) of a published model folder, rendered from `model_card.md` with `huggingface_hub`.

Everything on the card comes from files in the model folder: `config.json` (architecture), the safetensors
headers (parameter count), `training_args.json` (what the training job saved) and `metrics.json` (what
`evaluate_captions.py` wrote; the training job's `test_results.json` is the fallback).
"""

import json
import os
import re
from glob import glob
from pathlib import Path
from typing import Any, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

# The card template ships as package data (setup.cfg), so an installed wheel has it too; template_path overrides it.
DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "model_card.md"
TAGS = ["image-captioning", "vision", "vit", "gpt2", "custom_code"]

# metrics.json name -> (model-index metric type, display name).
METRIC_NAMES = {
    "Bleu_1": ("bleu", "BLEU-1"),
    "Bleu_2": ("bleu", "BLEU-2"),
    "Bleu_3": ("bleu", "BLEU-3"),
    "Bleu_4": ("bleu", "BLEU-4"),
    "METEOR": ("meteor", "METEOR"),
    "ROUGE_L": ("rouge", "ROUGE-L"),
    "CIDEr": ("cider", "CIDEr-D"),
    "seed_bleu_1": ("bleu", "seed_bleu_1 (HF evaluate bleu, max_order=1)"),
}
# Training arguments that are about this machine or the upload, not about how the model was trained.
NOT_HYPERPARAMETERS = {
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "push_to_hub", "hub_model_id", "with_tracking",
    "report_to", "logging_steps", "checkpointing_steps", "checkpoints_total_limit", "dataloader_num_workers",
    "num_gallery_images",
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def render_model_card(
    model_dir: str,
    repo_id: str,
    metrics: Optional[dict] = None,
    training_args: Optional[dict] = None,
    revision: Optional[str] = None,
    *,
    license: str = "apache-2.0",
    template_path: Optional[str] = None,
) -> ModelCard:
    """The card for `model_dir` as it will be published at `repo_id`.

    Args:
        model_dir: the model folder (read only).
        repo_id: `owner/name`, used in the usage snippet and as the model name.
        metrics: an evaluation summary (`metrics.json`'s content); default: read from `model_dir`.
        training_args: the training job's arguments; default: `training_args.json` in `model_dir`, if any.
        revision: the revision the usage snippet pins (default `main`, with a note to pin a commit hash).
    """
    config = _read_json(os.path.join(model_dir, "config.json"))
    if config is None:
        raise FileNotFoundError(f"{model_dir!r} is not a model folder (no config.json).")
    training_args = training_args if training_args is not None else _read_json(os.path.join(model_dir, "training_args.json"))
    summary = metrics if metrics is not None else load_eval_summary(model_dir, training_args)
    summary = _normalise_summary(summary, training_args) if summary else None
    training_args = training_args or {}

    base_models = [
        name for name in (training_args.get("encoder_name_or_path"), training_args.get("decoder_name_or_path"))
        if _is_hub_id(name)
    ]
    datasets = [name for name in {training_args.get("dataset"), (summary or {}).get("dataset")} if _is_hub_id(name)
                and name != "synthetic"]
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag="image-to-text",
        license=license,
        tags=TAGS,
        base_model=base_models or None,
        datasets=sorted(datasets) or None,
        metrics=sorted({METRIC_NAMES[name][0] for name in summary["metrics"] if name in METRIC_NAMES}) if summary else None,
        eval_results=_eval_results(summary) if summary else None,
    )
    decoding = (summary or {}).get("decoding", {})
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or DEFAULT_TEMPLATE),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        revision=revision or "main",
        architecture=_architecture(config, model_dir),
        training_args=_hyperparameters(training_args),
        training_dataset=_display_name(training_args.get("dataset", "unknown")),
        metrics=[(METRIC_NAMES.get(name, (None, name))[1], value) for name, value in summary["metrics"].items()]
        if summary else None,
        eval=summary and {**summary, **decoding, "dataset": _display_name(summary.get("dataset", "unknown"))},
        usage_num_beams=decoding.get("num_beams") or 3,
        usage_max_new_tokens=decoding.get("max_new_tokens") or 32,
    )


def load_eval_summary(model_dir: str, training_args: Optional[dict] = None) -> Optional[dict]:
    """`metrics.json` from the folder, else the training job's `test_results.json` (test split), else None."""
    summary = _read_json(os.path.join(model_dir, "metrics.json"))
    if summary:
        return summary
    test_results = _read_json(os.path.join(model_dir, "test_results.json"))
    if test_results and test_results.get("metrics"):
        args = training_args or {}
        return {
            "metrics": test_results["metrics"],
            "dataset": args.get("dataset", "unknown"),
            "split": "test",
            "num_images": test_results.get("num_test_images"),
            "decoding": {"num_beams": args.get("num_beams"), "max_new_tokens": args.get("max_caption_length")},
        }
    return None


def _normalise_summary(summary: dict, training_args: Optional[dict]) -> dict:
    # A bare {metric: value} dict is accepted too; what it does not say is marked unknown.
    if "metrics" not in summary:
        summary = {"metrics": {k: v for k, v in summary.items() if isinstance(v, (int, float))}}
    summary = {"dataset": (training_args or {}).get("dataset", "unknown"), "split": "unknown",
               "num_images": "?", "decoding": {}, **summary}
    summary["metrics"] = {k: float(v) for k, v in summary["metrics"].items() if isinstance(v, (int, float))}
    return summary


def _eval_results(summary: dict) -> list[EvalResult]:
    decoding = summary.get("decoding") or {}
    config = ", ".join(f"{key}={value}" for key, value in decoding.items() if value is not None) or None
    dataset = str(summary.get("dataset", "unknown"))
    return [
        EvalResult(
            task_type="image-to-text",
            task_name="Image captioning",
            dataset_type=dataset if _is_hub_id(dataset) and dataset != "synthetic" else "custom",
            dataset_name=_display_name(dataset),
            dataset_split=str(summary.get("split")),
            metric_type=METRIC_NAMES.get(name, (name.lower(), name))[0],
            metric_name=METRIC_NAMES.get(name, (name, name))[1],
            metric_value=round(value, 6),
            metric_config=config,
        )
        for name, value in summary["metrics"].items()
    ]


def _architecture(config: dict, model_dir: str) -> dict[str, str]:
    vision, text = config.get("vision_config", {}), config.get("text_config", {})
    patches = (vision.get("image_size", 0) // max(vision.get("patch_size", 1), 1)) ** 2
    return {
        "vision": f"{vision.get('model_type', 'vit')}, {vision.get('num_hidden_layers')} layers, "
        f"hidden size {vision.get('hidden_size')}, {vision.get('image_size')} px images in "
        f"{vision.get('patch_size')} px patches ({patches} patches + CLS)",
        "projector": f"Linear({vision.get('hidden_size')} -> {config.get('projector_hidden_size')}) -> "
        f"{config.get('projector_hidden_act', 'gelu').upper()} -> Dropout({config.get('projector_dropout')}) -> "
        f"Linear(-> {text.get('n_embd')})",
        "text": f"{text.get('model_type', 'gpt2')}, {text.get('n_layer')} layers, hidden size {text.get('n_embd')}, "
        f"vocabulary {text.get('vocab_size')}",
        "prefix_attention": config.get("prefix_attention", "causal"),
        "num_parameters": _count_parameters(model_dir),
    }


def _count_parameters(model_dir: str) -> str:
    # Read from the safetensors headers: no weights are loaded.
    from safetensors import safe_open

    total = 0
    for path in sorted(glob(os.path.join(model_dir, "*.safetensors"))):
        with safe_open(path, framework="numpy") as file:
            for key in file.keys():
                count = 1
                for size in file.get_slice(key).get_shape():
                    count *= size
                total += count
    if not total:
        return "unknown"
    return f"{total / 1e6:.1f}M" if total >= 1e5 else f"{total:,}"


def _hyperparameters(training_args: dict) -> list[tuple[str, Any]]:
    rows = []
    for name, value in sorted(training_args.items()):
        if name in NOT_HYPERPARAMETERS or re.search(r"(^|_)token($|_)", name) or value is None:
            continue
        rows.append((name, _display_name(value) if isinstance(value, str) else value))
    return rows


def _display_name(value: Any) -> str:
    # Local paths would publish the trainer's directory layout (and user name); the last component is enough.
    value = str(value)
    if os.path.isabs(value) or value.startswith(("~", "./", "../")):
        return os.path.basename(os.path.normpath(value)) or value
    return value


def _is_hub_id(name: Optional[str]) -> bool:
    return bool(name) and bool(_HUB_ID.fullmatch(str(name))) and not os.path.exists(str(name))


def _read_json(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)
