"""The training job end to end: tiny model, synthetic data, CPU, real processes.

- `main([...])` in-process gives a complete model folder, log, loss curve, test gallery and results.
- Two real CPU processes (gloo) and gradient accumulation train exactly like one big batch.
- A run killed with SIGKILL (after a checkpoint, or in the middle of writing one) resumes with `latest`
  to the same final weights as a run that was never interrupted.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "train_accelerate.py")
sys.path.insert(0, str(REPO))

import train_accelerate  # noqa: E402

TINY = [
    "--model_size", "tiny", "--num_train_examples", "64", "--num_validation_examples", "8", "--num_test_examples", "8",
    "--max_eval_samples", "8", "--per_device_eval_batch_size", "8", "--max_caption_length", "24",
    "--eval_steps", "0", "--compute_meteor", "false", "--logging_steps", "1", "--num_warmup_steps", "2",
    "--num_gallery_images", "4", "--seed", "0",
]
# Dropout off and fixed-length captions: the runs we compare must compute the same function.
DETERMINISTIC = ["--projector_dropout", "0", "--decoder_dropout", "0", "--pad_to_max_length"]


def env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def command(args, num_processes=1):
    if num_processes == 1:
        return [sys.executable, SCRIPT, *args]
    # DESIGN.md: `--cpu --num_processes 2` silently runs one process; this runs two real ones over gloo.
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", free_port(), SCRIPT, *args,
    ]


def run(args, num_processes=1, extra_env=None):
    result = subprocess.run(
        command(args, num_processes), env={**env(), "ACCELERATE_USE_CPU": "1", **(extra_env or {})},
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def step_losses(output_dir):
    records = [json.loads(line) for line in open(Path(output_dir) / "train_log.jsonl")]
    return [r["loss"] for r in records if "loss" in r]


def weights(output_dir):
    return load_file(str(Path(output_dir) / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs: max {(wa[name] - wb[name]).abs().max()}"


# ------------------------------------------------------------------------------------------------------


def test_main_writes_a_complete_model_folder(tmp_path, monkeypatch):
    from transformers import AutoModel

    import vitgpt2_caption.hub

    pushed = []
    monkeypatch.setattr(vitgpt2_caption.hub, "push_model_folder", lambda *a, **k: pushed.append(a))
    out = tmp_path / "run"
    train_accelerate.main([*TINY, "--output_dir", str(out), "--max_train_steps", "4",
                           "--per_device_train_batch_size", "8", "--eval_steps", "2", "--checkpointing_steps", "2",
                           "--push_to_hub", "--hub_model_id", "me/tiny", "--report_to", "tensorboard"])
    assert pushed == [(str(out), "me/tiny")]
    assert list(out.rglob("events.out.tfevents.*")), "--report_to tensorboard wrote no event file"
    for name in ("model.safetensors", "config.json", "modeling_vitgpt2_caption.py", "tokenizer.json",
                 "training_args.json", "train_log.jsonl", "loss_curve.png", "test_gallery.png", "test_results.json",
                 "best/model.safetensors", "checkpoints/step_4/training_state.json"):
        assert (out / name).exists(), name
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "ViTGPT2CaptionModel"
    assert [r["step"] for r in map(json.loads, open(out / "train_log.jsonl")) if "loss" in r] == [1, 2, 3, 4]
    results = json.load(open(out / "test_results.json"))
    assert results["num_test_images"] == 8
    assert 0.0 <= results["fraction_names_exact_objects"] <= 1.0
    assert "fraction_names_exact_objects_zeroed_image" in results and "fraction_ended_with_eos" in results


def test_refuses_a_foreign_non_empty_output_dir(tmp_path):
    (tmp_path / "precious.txt").write_text("not a training run")
    with pytest.raises(FileExistsError, match="overwrite_output_dir"):
        train_accelerate.main([*TINY, "--output_dir", str(tmp_path), "--max_train_steps", "1"])
    assert (tmp_path / "precious.txt").exists()


def test_two_processes_and_accumulation_match_one_big_batch(tmp_path):
    common = [*TINY, *DETERMINISTIC, "--max_train_steps", "4", "--checkpointing_steps", "0"]
    run([*common, "--output_dir", str(tmp_path / "big"), "--per_device_train_batch_size", "8"])
    run([*common, "--output_dir", str(tmp_path / "ddp"), "--per_device_train_batch_size", "4"], num_processes=2)
    run([*common, "--output_dir", str(tmp_path / "accum"), "--per_device_train_batch_size", "4",
         "--gradient_accumulation_steps", "2"])
    big = step_losses(tmp_path / "big")
    assert len(big) == 4
    for other in ("ddp", "accum"):
        losses = step_losses(tmp_path / other)
        assert len(losses) == 4, other
        # Step 1 checks the loss; steps 2-4 check that the updates (gradients, lr) were the same too.
        assert max(abs(a - b) for a, b in zip(big, losses)) < 1e-5, (other, big, losses)
    ddp_args = json.load(open(tmp_path / "ddp" / "training_args.json"))
    assert ddp_args["num_processes"] == 2 and ddp_args["per_device_train_batch_size"] == 4


# ------------------------------------------------------------------------------------------------------
# Interruption: SIGKILL, then --resume_from_checkpoint latest. Dropout stays ON: its RNG must resume too.
# ------------------------------------------------------------------------------------------------------

RESUME = [*TINY, "--max_train_steps", "30", "--per_device_train_batch_size", "8", "--checkpointing_steps", "4"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    run([*RESUME, "--output_dir", str(out)])
    return out


def kill_when(args, ready, extra_env=None, timeout=300):
    """Start a run and SIGKILL it as soon as `ready()` is true; fail if it ends by itself first."""
    process = subprocess.Popen(command(args), env={**env(), **(extra_env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not ready():
            assert process.poll() is None, "the run finished before it could be interrupted"
            assert time.time() < deadline, "timed out waiting to interrupt the run"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL


def logged_step(out):
    try:
        lines = (out / "train_log.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_killed_run_resumes_to_the_same_weights(tmp_path, uninterrupted):
    out = tmp_path / "run"
    kill_when([*RESUME, "--output_dir", str(out)],
              lambda: logged_step(out) >= 10 and (out / "checkpoints" / "step_8" / "training_state.json").exists())
    assert not (out / "model.safetensors").exists()  # it really stopped mid-training
    result = run([*RESUME, "--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    assert "Resuming from" in result.stdout + result.stderr
    assert_same_weights(out, uninterrupted)
    # The log is continuous: the killed run's steps after the checkpoint were replaced, not duplicated.
    steps = [r["step"] for r in map(json.loads, open(out / "train_log.jsonl")) if "loss" in r]
    assert steps == list(range(1, 31))
    assert step_losses(out) == step_losses(uninterrupted)


def test_kill_during_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, uninterrupted):
    out = tmp_path / "run"
    checkpoints = out / "checkpoints"
    # The env var only makes each save sleep before its atomic rename (a wider window to kill in).
    kill_when([*RESUME, "--output_dir", str(out)],
              lambda: (checkpoints / "step_8.tmp" / "training_state.json").exists(),
              extra_env={train_accelerate.SLOW_SAVE_ENV: "5"})
    assert (checkpoints / "step_8.tmp").exists() and not (checkpoints / "step_8").exists()
    assert [p.name for p in train_accelerate_checkpoints(out)] == ["step_4"]
    result = run([*RESUME, "--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    assert "step_4" in result.stdout + result.stderr
    assert not (checkpoints / "step_8.tmp").exists()  # the half-written save was cleaned up
    assert_same_weights(out, uninterrupted)


def train_accelerate_checkpoints(out):
    return [Path(p) for p in train_accelerate.list_checkpoints(str(out))]


def test_nan_loss_stops_with_the_step(tmp_path):
    # An absurd learning rate blows the weights up within a few steps.
    with pytest.raises(FloatingPointError, match=r"optimizer step \d+"):
        train_accelerate.main([*TINY, "--output_dir", str(tmp_path / "run"), "--max_train_steps", "20",
                               "--per_device_train_batch_size", "8", "--learning_rate", "1e30",
                               "--num_warmup_steps", "0", "--max_grad_norm", "1e30", "--checkpointing_steps", "1"])
    for checkpoint in train_accelerate.list_checkpoints(str(tmp_path / "run")):
        state = load_file(os.path.join(checkpoint, "model.safetensors"))
        assert all(torch.isfinite(t).all() for t in state.values()), checkpoint


def test_cached_image_features_train_like_the_encoder(tmp_path):
    """--cache_image_features: same per-step losses as running the frozen encoder every step (2 epochs)."""
    common = [*TINY, *DETERMINISTIC, "--per_device_train_batch_size", "16", "--num_train_epochs", "2",
              "--checkpointing_steps", "0", "--num_test_examples", "4"]
    train_accelerate.main([*common, "--output_dir", str(tmp_path / "plain")])
    cache_dir = tmp_path / "features"
    train_accelerate.main([*common, "--output_dir", str(tmp_path / "cached"), "--cache_image_features",
                           "--image_feature_cache_dir", str(cache_dir)])
    plain, cached = step_losses(tmp_path / "plain"), step_losses(tmp_path / "cached")
    assert len(plain) == len(cached) == 8
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(plain), rtol=0, atol=1e-5)
    assert list(cache_dir.rglob("*.safetensors")), "no feature shards were written"
    with pytest.raises(ValueError, match="frozen encoder"):
        train_accelerate.main([*common, "--output_dir", str(tmp_path / "unfrozen"), "--cache_image_features",
                               "--no_freeze_encoder", "--image_feature_cache_dir", str(cache_dir)])


def test_every_flag_is_documented_in_the_readme():
    """Must-show 6: README's Train table lists every flag of `train_accelerate.py`, and --help describes each."""
    sys.path.insert(0, str(REPO))
    import train_accelerate

    parser_actions = train_accelerate.build_parser()._actions
    readme = (REPO / "README.md").read_text()
    # README's flag tables: | `--flag` | `default` | help |
    readme_defaults = dict(re.findall(r"^\| `(--[a-z_]+)` \| `([^`]*)` \|", readme, flags=re.MULTILINE))
    for action in parser_actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert flag in readme_defaults, f"{flag} is missing from README.md's flag tables"
                assert action.help, f"{flag} has no help text"
                default = "" if action.default == argparse.SUPPRESS else str(action.default)
                assert readme_defaults[flag] == default, f"README.md gives {flag} the default {readme_defaults[flag]!r}, the parser {default!r}"
