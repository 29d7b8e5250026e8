"""Publish a model folder on the Hugging Face Hub: stage, verify in a fresh process, then upload.

The model folder is only read. Everything published is first copied into a temporary staging folder with the
rendered card (README.md) and the evaluation results, and that exact folder must load and caption in a fresh
Python process that cannot import `vitgpt2_caption` (what a user of the Hub repo gets) before anything is
uploaded. The token comes from `HF_TOKEN` or the saved login (`hf auth login`); it is never passed on the
command line, printed or written (the staged files are checked for it).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .model_card import load_eval_summary, render_model_card


class HubPushError(RuntimeError):
    """A push that could not be done; the message says why and what to do. The model folder is untouched."""


@dataclass
class PushResult:
    repo_id: str
    files: list[str] = field(default_factory=list)  # staged file names, as uploaded
    dry_run_dir: Optional[str] = None
    commit_url: Optional[str] = None
    pr_url: Optional[str] = None


# Top-level files of a training run that are not part of the model (checkpoint folders are skipped anyway).
NOT_PUBLISHED = {"training_state.json", "train_log.jsonl", "README.md"}

# Runs under `python -I` in an empty working directory with the package made unimportable.
VERIFY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["vitgpt2_caption"] = None  # any import of the package now fails
    import numpy as np
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline

    folder = sys.argv[1]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    ids = model.generate(**processor(images=[image], return_tensors="pt"), max_new_tokens=4)
    caption = processor.batch_decode(ids, skip_special_tokens=True)[0]
    piped = pipeline("image-to-text", model=folder, trust_remote_code=True)(image, max_new_tokens=4)
    assert isinstance(piped[0]["generated_text"], str), piped
    print(json.dumps({"model_class": type(model).__name__, "caption": caption, "pipeline": piped}))
    """
)


def stage_model_folder(
    model_dir: str, staging_dir: str, repo_id: str, *, revision: Optional[str] = None, metrics_path: Optional[str] = None
) -> list[str]:
    """Copy what gets published into `staging_dir`: the folder's top-level files, README.md (the card), metrics.json.

    Subfolders (checkpoints, `best/`, logs) and the training job's bookkeeping files are left out.
    Returns the staged file names.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise HubPushError(f"{str(model_dir)!r} is not a model folder (no config.json); pass the folder save_pretrained wrote.")
    if not list(model_dir.glob("*.safetensors")):
        raise HubPushError(f"{str(model_dir)!r} has no *.safetensors weights.")
    staging_dir = Path(staging_dir)
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in NOT_PUBLISHED:
            shutil.copy2(path, staging_dir / path.name)
    if metrics_path is not None:
        shutil.copy2(metrics_path, staging_dir / "metrics.json")
    summary = load_eval_summary(str(staging_dir), _read_json(staging_dir / "training_args.json"))
    card = render_model_card(str(staging_dir), repo_id, metrics=summary, revision=revision)
    card.save(staging_dir / "README.md")
    return sorted(path.name for path in staging_dir.iterdir())


def verify_staged_folder(staged_dir: str, timeout: int = 600) -> dict:
    """Load the staged folder with AutoModel, AutoProcessor and the pipeline in a fresh process; caption an image."""
    with tempfile.TemporaryDirectory(prefix="vitgpt2-verify-") as scratch:
        # No PYTHONPATH, no token, no network: only what the Hub repo will hold can make this pass.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=os.path.join(scratch, "modules"), TRANSFORMERS_VERBOSITY="error")
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", VERIFY_SCRIPT, os.path.abspath(staged_dir)],
                cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise HubPushError(f"The staged folder did not load and caption within {timeout} s; nothing was uploaded.") from error
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise HubPushError(
            "The staged folder does not load and caption in a fresh Python process (without vitgpt2_caption); "
            f"nothing was uploaded.\n{tail}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def push_model_folder(
    model_dir: str,
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    create_pr: bool = False,
    commit_message: Optional[str] = None,
    dry_run_dir: Optional[str] = None,
    metrics_path: Optional[str] = None,
    api=None,
) -> PushResult:
    """Stage `model_dir` with its card, verify it in a fresh process, then upload it to `repo_id` (or, with
    `dry_run_dir`, write the staged folder there and upload nothing).

    Args:
        revision: the branch to commit to (created from main when missing); default main.
        create_pr: open a pull request instead of committing (not with `revision`).
        metrics_path: an evaluation `metrics.json` to publish (default: the one in `model_dir`, if any).
        api: an `HfApi`-like object (`create_repo`, `create_branch`, `upload_folder`); default a real `HfApi()`.

    Raises:
        HubPushError: with a one-paragraph reason (bad folder, failed verification, no token, network or
            permission error). The model folder is never modified.
    """
    if revision and create_pr:
        raise ValueError("Pass either `revision` (commit to a branch) or `create_pr` (open a pull request), not both.")
    if "/" not in repo_id:
        raise HubPushError(f"repo_id must be 'owner/name', got {repo_id!r}.")
    if dry_run_dir is not None and os.path.exists(dry_run_dir) and (not os.path.isdir(dry_run_dir) or os.listdir(dry_run_dir)):
        raise HubPushError(f"--dry_run folder {dry_run_dir!r} exists and is not empty; choose an empty or new folder.")

    from huggingface_hub import HfApi, get_token

    token = get_token()  # only to check for it here; HfApi finds it by itself
    if dry_run_dir is None and api is None and not token:
        raise HubPushError("No Hugging Face token: run `hf auth login` or set HF_TOKEN, then try again.")
    with tempfile.TemporaryDirectory(prefix="vitgpt2-stage-") as staging:
        files = stage_model_folder(model_dir, staging, repo_id, revision=revision, metrics_path=metrics_path)
        _check_no_token(staging, token)
        verify_staged_folder(staging)
        if dry_run_dir is not None:
            shutil.copytree(staging, dry_run_dir, dirs_exist_ok=True)
            return PushResult(repo_id=repo_id, files=files, dry_run_dir=dry_run_dir)
        commit = _upload(api or HfApi(), staging, repo_id, private, revision, create_pr, commit_message)
    return PushResult(
        repo_id=repo_id, files=files, commit_url=getattr(commit, "commit_url", None), pr_url=getattr(commit, "pr_url", None)
    )


def _upload(api, folder, repo_id, private, revision, create_pr, commit_message):
    step = "create the repository"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            step = f"create branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = "upload the folder"
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or "Upload vitgpt2-caption model",
        )
    except Exception as error:  # network, HTTP and auth errors come in many types; all end the push the same way
        raise HubPushError(f"Could not {step} for {repo_id!r}: {_explain(error)}") from None


def _explain(error: Exception) -> str:
    # One line, never the token: HTTP errors carry the URL and status, not the Authorization header.
    status = getattr(getattr(error, "response", None), "status_code", None)
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    if status in (401, 403):
        return f"the Hub refused the token (HTTP {status}). Check `hf auth whoami`, or set HF_TOKEN to a write token."
    from huggingface_hub import constants

    if status is None and any(word in type(error).__name__.lower() for word in ("connect", "timeout", "network")):
        return f"cannot reach {constants.ENDPOINT} ({type(error).__name__}: {first_line}). Check the network / HF_ENDPOINT."
    return f"{type(error).__name__}: {first_line}"


def _check_no_token(folder: str, token: Optional[str]) -> None:
    if not token:
        return
    for path in Path(folder).iterdir():
        if token.encode() in path.read_bytes():
            raise HubPushError(f"The staged file {path.name} contains your Hub token; refusing to publish it.")


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
