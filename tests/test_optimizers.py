"""`--optimizer muon`: which parameters Muon takes, that every parameter is optimised exactly once, that a
checkpoint carries Muon's state (a resumed run ends on the same weights), and errors for bad input."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_captioner
from vitgpt2_caption.optimizers import build_optimizers, muon_parameter_names

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_accelerate  # noqa: E402
from test_train_accelerate import TINY  # noqa: E402


def ids(params):
    return [id(p) for p in params]


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model, _ = make_tiny_captioner()
    names = muon_parameter_names(model)
    expected_kinds = ("attention.q_proj", "attention.o_proj", "mlp.fc1", "projector.linear_1", "projector.linear_2",
                      "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    for kind in expected_kinds:
        assert any(kind in name for name in names), f"no {kind} matrix went to Muon: {sorted(names)}"
    assert all(name.endswith(".weight") for name in names)
    # Embeddings (the token embeddings are also the LM head), positions, the patch convolution, [SEP]: AdamW.
    for never in ("wte", "wpe", "lm_head", "position_embeddings", "patch_embeddings", "sep_embedding", "cls_token"):
        assert not any(never in name for name in names), f"{never} went to Muon"

    adamw, muon = build_optimizers(model, "muon", learning_rate=1e-3, weight_decay=0.01)
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, torch.optim.Muon)
    muon_params = [p for group in muon.param_groups for p in group["params"]]
    adamw_params = [p for group in adamw.param_groups for p in group["params"]]
    assert all(p.ndim == 2 for p in muon_params)
    everything = ids(muon_params) + ids(adamw_params)
    assert sorted(everything) == sorted(ids(model.parameters())), "a parameter is missing or optimised twice"
    # Muon at twice AdamW's learning rate unless told; the same decay; biases and norms never decay.
    assert adamw.param_groups[0]["lr"] == 1e-3 and muon.param_groups[0]["lr"] == 2e-3
    _, told = build_optimizers(model, "muon", learning_rate=1e-3, weight_decay=0.01, muon_learning_rate=5e-4)
    assert told.param_groups[0]["lr"] == 5e-4
    assert muon.param_groups[0]["weight_decay"] == 0.01
    no_decay = [g for g in adamw.param_groups if g["weight_decay"] == 0.0][0]["params"]
    assert all(p.ndim < 2 for p in no_decay)


def test_a_frozen_encoder_gives_no_matrix_to_either_optimizer():
    model, _ = make_tiny_captioner()
    model.vision_model.requires_grad_(False)
    optimizers = build_optimizers(model, "muon", learning_rate=1e-3, weight_decay=0.0)
    optimised = {i for opt in optimizers for group in opt.param_groups for i in ids(group["params"])}
    assert not optimised & set(ids(model.vision_model.parameters()))
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}


def test_adamw_is_one_optimizer_over_everything():
    model, _ = make_tiny_captioner()
    (adamw,) = build_optimizers(model, "adamw", learning_rate=1e-3, weight_decay=0.01)
    assert sorted(i for g in adamw.param_groups for i in ids(g["params"])) == sorted(ids(model.parameters()))


def test_unknown_optimizer_is_named_in_the_error():
    model, _ = make_tiny_captioner()
    with pytest.raises(ValueError, match="'sgd'.*adamw, muon"):
        build_optimizers(model, "sgd", learning_rate=1e-3, weight_decay=0.0)


def test_muon_training_resumes_to_the_same_weights(tmp_path):
    """Muon's momentum is in the checkpoint: 4 steps + resume from step 4 to 8 == 8 steps straight."""
    args = [*TINY, "--optimizer", "muon", "--per_device_train_batch_size", "8", "--max_train_steps", "8",
            "--checkpointing_steps", "4", "--checkpoints_total_limit", "3", "--num_test_examples", "4"]
    straight = tmp_path / "straight"
    train_accelerate.main([*args, "--output_dir", str(straight)])
    resumed = tmp_path / "resumed"
    # A run folder as a run killed after step 4 leaves it: its arguments and the step-4 checkpoint.
    shutil.copytree(straight / "checkpoints" / "step_4", resumed / "checkpoints" / "step_4")
    shutil.copy(straight / "training_args.json", resumed / "training_args.json")
    train_accelerate.main([*args, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"])
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resuming: max {(a[name] - b[name]).abs().max()}"
    # And the step really moved the Muon-optimised matrices.
    start = load_file(str(straight / "checkpoints" / "step_4" / "model.safetensors"))
    moved = [n for n in a if "c_fc" in n and n.endswith("weight") and not torch.equal(a[n], start[n])]
    assert moved, "steps 5-8 left the decoder's MLP matrices unchanged"
