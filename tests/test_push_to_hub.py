"""push_to_hub.py: the staged folder (card + metrics + model) is verified, dry runs upload nothing, uploads make
the expected calls, failures are clear, the model folder is never modified and the token never leaks."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tiny_training import trained_tiny_model_folder

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_secret_test_token_123"

FRESH_LOAD = textwrap.dedent(
    """
    import json, sys
    sys.modules["vitgpt2_caption"] = None
    try:
        import vitgpt2_caption
    except ImportError:
        pass
    else:
        raise SystemExit("vitgpt2_caption is importable")
    from PIL import Image
    from transformers import AutoModel, pipeline
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    captioner = pipeline("image-to-text", model=sys.argv[1], trust_remote_code=True)
    print(json.dumps({"module": type(model).__module__,
                      "pipeline": captioner(Image.new("RGB", (40, 30), "red"), max_new_tokens=5)}))
    """
)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A freshly trained tiny model folder and an evaluation metrics.json (written elsewhere, passed with --metrics)."""
    from vitgpt2_caption.caption_evaluation import evaluate_model_folder

    model_dir = trained_tiny_model_folder(str(tmp_path_factory.getbasetemp()))
    eval_dir = tmp_path_factory.mktemp("eval")
    from accelerate.state import AcceleratorState

    evaluate_model_folder(str(model_dir), "synthetic", split="test", max_samples=5, num_beams=2, max_new_tokens=12,
                          output_dir=str(eval_dir), gallery_size=0)
    AcceleratorState._reset_state(reset_partial_state=True)  # later tests may build an Accelerator of their own
    return model_dir, eval_dir / "metrics.json"


def folder_hashes(folder):
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(folder).rglob("*")) if path.is_file()
    }


def run_cli(*args, **env_overrides):
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1", **env_overrides}
    return subprocess.run([sys.executable, str(ROOT / "push_to_hub.py"), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_no_token(*texts, folder=None):
    for text in texts:
        assert TOKEN not in text
    for path in Path(folder).rglob("*") if folder else ():
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_dry_run_stages_a_verified_folder_with_its_card(published, tmp_path):
    from huggingface_hub import ModelCard

    model_dir, metrics_file = published
    before = folder_hashes(model_dir)
    out = tmp_path / "staged"
    proc = run_cli("--model_dir", model_dir, "--repo_id", "someone/tiny-captioner", "--metrics", metrics_file,
                   "--revision", "v1", "--dry_run", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing uploaded" in proc.stdout
    assert folder_hashes(model_dir) == before
    assert_no_token(proc.stdout, proc.stderr, folder=out)

    staged = {path.name for path in out.iterdir()}
    assert staged >= {"README.md", "metrics.json", "model.safetensors", "config.json", "tokenizer.json",
                      "processor_config.json", "modeling_vitgpt2_caption.py", "pipeline_vitgpt2_caption.py"}
    card = ModelCard.load(out / "README.md")  # parses the YAML front matter
    assert card.data.pipeline_tag == "image-to-text"
    assert card.data.library_name == "transformers"
    assert card.data.license == "apache-2.0"
    metrics = json.loads(metrics_file.read_text())
    cider = next(result for result in card.data.eval_results if result.metric_type == "cider")
    assert cider.metric_value == pytest.approx(metrics["metrics"]["CIDEr"], abs=1e-6)
    assert cider.dataset_split == "test" and cider.task_type == "image-to-text"
    assert {result.metric_name for result in card.data.eval_results} >= {"BLEU-4", "ROUGE-L", "CIDEr-D"}
    assert 'revision = "v1"' in card.text and "trust_remote_code=True" in card.text
    assert "`learning_rate`" in card.text  # hyperparameters from training_args.json
    assert str(model_dir) not in card.text  # local paths stay private

    # The staged folder is all a Hub user gets: it loads in a process that cannot import the package.
    (tmp_path / "elsewhere").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    fresh = subprocess.run([sys.executable, "-I", "-c", FRESH_LOAD, str(out)], cwd=tmp_path / "elsewhere", env=env,
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    result = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules")
    assert isinstance(result["pipeline"][0]["generated_text"], str)

    # A second dry run into the now non-empty folder is refused before anything happens.
    again = run_cli("--model_dir", model_dir, "--repo_id", "someone/tiny-captioner", "--dry_run", out)
    assert again.returncode != 0 and "not empty" in again.stderr and "Traceback" not in again.stderr


def test_unreachable_hub_fails_clearly_and_changes_nothing(published):
    model_dir, _ = published
    before = folder_hashes(model_dir)
    proc = run_cli("--model_dir", model_dir, "--repo_id", "someone/tiny-captioner",
                   HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on port 9
    assert proc.returncode != 0
    assert "cannot reach http://127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_token(proc.stdout, proc.stderr)
    assert folder_hashes(model_dir) == before


def test_missing_token_fails_before_staging(published):
    model_dir, _ = published
    proc = run_cli("--model_dir", model_dir, "--repo_id", "someone/tiny-captioner", HF_TOKEN="",
                   HF_HOME=str(model_dir.parent / "no-login"))  # no saved login either
    assert proc.returncode != 0 and "No Hugging Face token" in proc.stderr and "Traceback" not in proc.stderr


class FakeApi:
    """Records the calls an `HfApi` would get, and the files the upload would send."""

    def __init__(self, calls):
        self.calls = calls

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {path.name: path.read_bytes() for path in Path(folder_path).iterdir()}
        self.calls.append(("upload_folder", repo_id, {**kwargs, "files": files}))
        return None


def test_upload_calls(published, monkeypatch):
    from vitgpt2_caption import hub

    model_dir, metrics_file = published
    before = folder_hashes(model_dir)
    calls = []
    real_verify = hub.verify_staged_folder
    monkeypatch.setattr(hub, "verify_staged_folder", lambda folder: calls.append(("verify",)) or real_verify(folder))
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    result = hub.push_model_folder(model_dir, "someone/tiny-captioner", private=True, revision="dev",
                                   commit_message="first upload", metrics_path=metrics_file, api=FakeApi(calls))
    assert [call[0] for call in calls] == ["verify", "create_repo", "create_branch", "upload_folder"]
    assert calls[1] == ("create_repo", "someone/tiny-captioner", {"private": True, "exist_ok": True})
    assert calls[2] == ("create_branch", "someone/tiny-captioner", {"branch": "dev", "exist_ok": True})
    _, repo_id, upload = calls[3]
    assert repo_id == "someone/tiny-captioner"
    assert upload["revision"] == "dev" and upload["create_pr"] is False
    assert upload["commit_message"] == "first upload"
    files = upload["files"]
    assert set(files) == set(result.files)
    expected = {name for name in os.listdir(model_dir)} | {"README.md", "metrics.json"}
    assert set(files) == expected
    for name in os.listdir(model_dir):
        assert files[name] == (model_dir / name).read_bytes()
    assert files["metrics.json"] == metrics_file.read_bytes()
    assert all(TOKEN.encode() not in content for content in files.values())
    assert folder_hashes(model_dir) == before

    # A pull request instead of a branch commit (verification stubbed: it was exercised above).
    calls.clear()
    monkeypatch.setattr(hub, "verify_staged_folder", lambda folder: calls.append(("verify",)))
    hub.push_model_folder(model_dir, "someone/tiny-captioner", create_pr=True, api=FakeApi(calls))
    assert [call[0] for call in calls] == ["verify", "create_repo", "upload_folder"]
    assert calls[1][2] == {"private": False, "exist_ok": True}
    assert calls[2][2]["create_pr"] is True and calls[2][2]["revision"] is None
    assert calls[2][2]["commit_message"]


def test_failed_verification_uploads_nothing(published, monkeypatch):
    from vitgpt2_caption import hub

    def broken(folder):
        raise hub.HubPushError("does not load")

    calls = []
    monkeypatch.setattr(hub, "verify_staged_folder", broken)
    with pytest.raises(hub.HubPushError, match="does not load"):
        hub.push_model_folder(published[0], "someone/tiny-captioner", api=FakeApi(calls))
    assert calls == []


def test_http_errors_become_clear_messages(published, monkeypatch):
    from vitgpt2_caption import hub

    class Response:
        status_code = 401

    class Unauthorized(Exception):
        response = Response()

    class RefusingApi(FakeApi):
        def create_repo(self, repo_id, **kwargs):
            raise Unauthorized("401 Client Error for url https://huggingface.co/api/repos/create")

    monkeypatch.setattr(hub, "verify_staged_folder", lambda folder: None)
    with pytest.raises(hub.HubPushError, match="refused the token") as error:
        hub.push_model_folder(published[0], "someone/tiny-captioner", api=RefusingApi([]))
    assert error.value.__cause__ is None  # no chained traceback for the CLI to print


def test_bad_arguments(tmp_path):
    from vitgpt2_caption import hub

    with pytest.raises(ValueError, match="not both"):
        hub.push_model_folder(tmp_path, "someone/x", revision="dev", create_pr=True, api=FakeApi([]))
    with pytest.raises(hub.HubPushError, match="not a model folder"):
        hub.push_model_folder(tmp_path, "someone/x", api=FakeApi([]))
    with pytest.raises(hub.HubPushError, match="owner/name"):
        hub.push_model_folder(tmp_path, "no-owner", api=FakeApi([]))
