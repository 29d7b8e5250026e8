"""The evaluation job gives the same results over 2 real CPU processes as over 1, each image exactly once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_images
from tiny_training import trained_tiny_model_folder

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = Path(sys.executable).parent / "accelerate"
NUM_IMAGES = 7  # odd, with 2 images per batch: the 2-process run's last batch is uneven (padded by accelerate)


def _free_port():
    # Another test run on this machine may hold accelerate's default port 29500.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_evaluation(model_dir, output_dir, num_processes):
    if num_processes == 1:
        launcher = [sys.executable]
    else:
        # `--cpu --num_processes 2` silently runs one process; this form runs two gloo processes (DESIGN.md).
        launcher = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(num_processes),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", str(_free_port())]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, str(ROOT / "evaluate_captions.py"), "--model_dir", str(model_dir), "--output_dir", str(output_dir),
         "--split", "test", "--max_samples", str(NUM_IMAGES), "--per_device_eval_batch_size", "2",
         "--num_beams", "2", "--max_new_tokens", "12"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"on {num_processes} process(es)" in proc.stdout
    return json.loads((output_dir / "metrics.json").read_text()), (output_dir / "predictions.jsonl").read_text()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tmp_path_factory):
    model_dir = trained_tiny_model_folder(str(tmp_path_factory.getbasetemp()))
    metrics_1, predictions_1 = run_evaluation(model_dir, tmp_path / "one", 1)
    metrics_2, predictions_2 = run_evaluation(model_dir, tmp_path / "two", 2)

    assert metrics_2 == metrics_1
    assert predictions_2 == predictions_1
    assert metrics_1["num_images"] == NUM_IMAGES and metrics_1["split"] == "test"
    assert metrics_1["decoding"] == {"num_beams": 2, "max_new_tokens": 12}
    assert set(metrics_1["metrics"]) >= {"Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr", "seed_bleu_1"}
    assert metrics_1["metrics"]["Bleu_1"] > 0  # the trained model writes words of the captions: not all zeros

    lines = [json.loads(line) for line in predictions_1.splitlines()]
    image_ids = [line["image_id"] for line in lines]
    assert len(lines) == NUM_IMAGES and len(set(image_ids)) == NUM_IMAGES  # every image once, none twice
    assert image_ids == sorted(image_ids)
    assert all(line["references"] and isinstance(line["caption"], str) for line in lines)
    for run in ("one", "two"):
        assert (tmp_path / run / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_captions_in_process_matches_generate(saved_captioner):
    """One process: rows in dataset order, captions equal to processor + generate on each batch."""
    import datasets

    from vitgpt2_caption.caption_evaluation import generate_captions

    _, model, processor = saved_captioner
    images = make_images(5)
    rows = datasets.Dataset.from_dict(
        {"image": images, "captions": [["a red circle"]] * 5, "image_id": [f"img{i}" for i in range(5)]},
        features=datasets.Features({"image": datasets.Image(), "captions": datasets.List(datasets.Value("string")),
                                    "image_id": datasets.Value("string")}),
    )
    from accelerate.state import AcceleratorState

    result = generate_captions(model, processor, rows, num_beams=2, max_new_tokens=5, batch_size=2)
    AcceleratorState._reset_state(reset_partial_state=True)  # later tests may build an Accelerator of their own
    expected = processor.batch_decode(
        model.generate(**processor(images=images[:2], return_tensors="pt"), num_beams=2, max_new_tokens=5),
        skip_special_tokens=True,
    )
    assert [row["index"] for row in result] == list(range(5))
    assert [row["image_id"] for row in result] == [f"img{i}" for i in range(5)]
    assert [row["caption"] for row in result[:2]] == [text.strip() for text in expected]


def test_gallery_needs_rows(tmp_path):
    from vitgpt2_caption.caption_evaluation import write_gallery_png

    with pytest.raises(ValueError):
        write_gallery_png([], tmp_path / "gallery.png")
    path = write_gallery_png(
        [{"image": image, "caption": "a caption", "references": ["a reference"]} for image in make_images(3)],
        str(tmp_path / "gallery.png"),
    )
    assert Path(path).stat().st_size > 0
