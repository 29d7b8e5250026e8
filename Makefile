# Every target does its own set-up on a fresh machine: virtual environments, installs, Java for METEOR.
PYTHON ?= python3
VENV ?= .venv
OLDEST_VENV ?= .venv-oldest
# torch first, from its pinned CPU wheel, so no later resolver step reaches for a CUDA build.
TORCH = torch==2.13.0
# `accelerate launch` without `--cpu` sets OMP_NUM_THREADS=1 unless told otherwise: give torch every core.
LAUNCH = $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
	--num_cpu_threads_per_process $(shell nproc)

.PHONY: demo test test-newest test-oldest java clean

$(VENV)/.installed: setup.cfg pyproject.toml constraints/newest.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(TORCH)
	$(VENV)/bin/pip install -q -c constraints/newest.txt -e ".[test,tracking]"
	touch $@

$(OLDEST_VENV)/.installed: setup.cfg pyproject.toml constraints/oldest.txt
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install -q $(TORCH)
	$(OLDEST_VENV)/bin/pip install -q -c constraints/oldest.txt transformers huggingface_hub tokenizers accelerate \
		datasets evaluate safetensors pillow numpy pytest
	$(OLDEST_VENV)/bin/pip install -q --no-deps -e .
	touch $@

# METEOR runs on Java (pycocoevalcap); install a headless JRE when none is there and we may.
java:
	@command -v java >/dev/null 2>&1 || { \
		echo "Java not found: installing default-jre-headless (needed for METEOR)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null) \
		|| echo "WARNING: could not install Java; METEOR is left out and its tests skip"; }

test-newest: $(VENV)/.installed java
	$(VENV)/bin/python -m pytest -q

test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m pytest -q -m compat -p no:cacheprovider tests/test_generation.py tests/test_remote_code.py

test: test-newest test-oldest

# Muon trains this from-scratch model to the synthetic quality bar (>= 90% exact-object captions) in 2,500 steps,
# where AdamW needs ~3x the images (README, Train).
demo: $(VENV)/.installed
	$(LAUNCH) train_accelerate.py --output_dir outputs/demo --no_freeze_encoder --projector_dropout 0 --decoder_dropout 0 \
		--optimizer muon --max_train_steps 2500 $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(OLDEST_VENV) outputs
