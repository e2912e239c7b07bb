# Spaceport developer commands. `make demo` and `make test` are the README's two commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test crd bench images e2e clean gpu-check gpu-check-prepare

$(STAMP): pyproject.toml package.json package-lock.json
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: pip takes the local CPU build instead of a multi-GB CUDA download.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[stages,dev]'
	npm ci --no-audit --no-fund --loglevel=error
	# Compile the CPU training kernels into numba's on-disk cache now, as a C++ extension would be built at
	# install (~50 s), instead of in the first training run.
	@echo "compiling the CPU training kernels into numba's cache (about a minute)"
	$(BIN)/python -m spaceport.stages.train.precompile
	touch $(STAMP)

# setup also installs headless Chromium for the viewer's browser tests (Debian's package; CI runs as root on Debian).
setup: $(STAMP)
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
		else echo "note: no /usr/bin/chromium; install it (Debian: apt-get install chromium) for the viewer tests"; fi; \
	fi

demo: setup
	$(BIN)/spaceport demo --out demo-out

test: setup
	$(BIN)/ruff check operator tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q --durations=15

crd: setup
	$(BIN)/spaceport crd crds/reconstructions.spaceport.dev.yaml charts/spaceport/crds/reconstructions.spaceport.dev.yaml

# Benchmarks (minutes each on 2 cores; every one prints ratios against a reference run in the same script).
bench: setup
	$(BIN)/python bench/sfm.py
	$(BIN)/python bench/sfm_large.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/compress.py
	$(BIN)/python bench/streamed.py
	$(BIN)/python bench/operator_latency.py
	$(BIN)/python bench/operator_load.py

# Container images (needs a Docker engine with BuildKit). STAGE_BUILD_ARGS picks a stage-image variant,
# e.g. the CPU one `make e2e` loads into kind (see images/stage.Dockerfile).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
OPERATOR_IMAGE ?= ghcr.io/spaceport-dev/spaceport-operator:$(VERSION)
STAGE_IMAGE ?= ghcr.io/spaceport-dev/spaceport-stage:$(VERSION)
STAGE_BUILD_ARGS ?=
images:
	$(PY) images/check_pins.py $(STAGE_BUILD_ARGS)
	DOCKER_BUILDKIT=1 docker build -f images/operator.Dockerfile -t $(OPERATOR_IMAGE) .
	DOCKER_BUILDKIT=1 docker build -f images/stage.Dockerfile $(STAGE_BUILD_ARGS) -t $(STAGE_IMAGE) .

# On a machine with an NVIDIA GPU: the CUDA environment from this repo's files, gsplat built for the GPU, the
# GPU tests and bench/train_gpu.py, one table (bench/gpu_check.sh; exit 2 without a usable GPU). A GPU
# machine without network access needs .gpu-check/ from `make gpu-check-prepare` (run where PyPI is reachable).
gpu-check:
	bash bench/gpu_check.sh

gpu-check-prepare: setup
	GPU_CHECK_PYTHON=$(BIN)/python bash bench/gpu_check.sh --prepare

# kind cluster end to end (needs Docker, kind, kubectl and helm): tests/e2e/kind.sh.
e2e:
	bash tests/e2e/kind.sh

clean:
	rm -rf $(VENV) node_modules demo-out
