# The two commands of the README: `make demo` (main job on the embedded default data) and `make test`.
# Both set everything up on a fresh machine (a virtual environment in .venv, pinned by .ci/constraints.txt).
VENV ?= .venv
PY := $(VENV)/bin/python
export ZENML_ANALYTICS_OPT_IN := false
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml .ci/constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c .ci/constraints.txt -e ".[mlops,text,bench,dev,index,s3,timm,clip]"
	touch $@

demo: setup
	$(VENV)/bin/influencegate demo

test: setup
	$(PY) -m pytest -q
	.ci/wheel_check.sh

bench: setup
	$(PY) benchmarks/influence_speed.py
