"""Publish a model folder on the Hugging Face Hub with its model card and evaluation results.

    python push_to_hub.py --model_dir outputs/demo --repo_id you/vitgpt2-caption-demo --dry_run staged/
    python push_to_hub.py --model_dir outputs/demo --repo_id you/vitgpt2-caption-demo --private

Stages the folder (model files + README.md card + metrics.json) in a temporary directory, checks that it
loads and captions in a fresh Python process that cannot import vitgpt2_caption, and only then creates the
repository (if needed) and uploads. `--dry_run OUT` writes the staged folder to OUT and uploads nothing.
The token comes from HF_TOKEN or `hf auth login`; it is never taken as an argument.
"""

import argparse
import sys

from vitgpt2_caption.hub import HubPushError, push_model_folder


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="The model folder (save_pretrained output); only read.")
    parser.add_argument("--repo_id", required=True, help="owner/name of the Hub model repository.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private (if it is new).")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--revision", default=None, help="Commit to this branch (created if missing) instead of main.")
    target.add_argument("--create_pr", action="store_true", help="Open a pull request instead of committing.")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--metrics", default=None, help="An evaluation metrics.json to publish (default: the model folder's).")
    parser.add_argument("--dry_run", metavar="OUT", default=None, help="Write the staged folder to OUT; upload nothing.")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = push_model_folder(
            args.model_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            create_pr=args.create_pr,
            commit_message=args.commit_message,
            dry_run_dir=args.dry_run,
            metrics_path=args.metrics,
        )
    except HubPushError as error:
        print(f"push_to_hub: error: {error}", file=sys.stderr)
        return 1
    if result.dry_run_dir:
        print(f"Dry run: staged {len(result.files)} files in {result.dry_run_dir} (verified; nothing uploaded):")
        print("  " + ", ".join(result.files))
    else:
        print(f"Uploaded {len(result.files)} files to {result.pr_url or result.commit_url or args.repo_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
