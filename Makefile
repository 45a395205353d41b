# hw9: the two commands are `make lab` and `make test`; both run `make setup` first.
SHELL := /bin/bash
ROOT := $(CURDIR)
export HW9_ROOT := $(ROOT)
export JUPYTER_PATH := $(ROOT)/jupyter
# Must equal .cargo/config.toml's value: any change of LIBTORCH reruns torch-sys's C++ build.
export LIBTORCH := $(ROOT)/.venv/lib/python3.11/site-packages/torch
export LD_LIBRARY_PATH := $(LIBTORCH)/lib$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))
PY := $(ROOT)/.venv/bin/python
LAB_PORT ?= 8888

.PHONY: setup lab tensorboard test test-fast lint fmt test-rust test-notebooks test-handout hub-setup test-hub bench-hub gradescope handout written notebooks release fixtures bench-compare corpus doctor clean-cache

setup:
	@bash tools/setup.sh

## Opens JupyterLab on notebooks/ (prints the URL with its token).
lab: setup
	@echo "JupyterLab: open the URL below, then a notebook on the kernel \"Rust (hw9)\". Ctrl-C stops it."
	@$(ROOT)/.venv/bin/jupyter lab --notebook-dir=notebooks --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.ip=127.0.0.1 $(if $(CI),--no-browser,) $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

## TensorBoard on the notebooks' training runs (notebooks/**/runs), at http://localhost:6006.
TB_PORT ?= 6006
tensorboard: setup
	@$(ROOT)/.venv/bin/tensorboard --logdir notebooks --port $(TB_PORT) --bind_all $(TB_ARGS)

## Every test: the crate's cargo tests, then the notebooks through nbclient on the hw9 kernel.
## (Setup for tests also installs headless Chromium, which renders the HTML attention view.)
test:
	@HW9_SETUP_TESTS=1 bash tools/setup.sh
	@$(MAKE) --no-print-directory lint test-rust test-notebooks $(if $(wildcard notebooks/solutions),test-handout test-hub,)

## The format and lint gates (part of make test): rustfmt and clippy on the Rust workspace,
## ruff (pinned in requirements.txt) on the Python tools and tests.
lint:
	@cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	$(ROOT)/.venv/bin/ruff format --check tools tests $(wildcard deploy)
	$(ROOT)/.venv/bin/ruff check tools tests $(wildcard deploy)

## Formats everything the lint gates check.
fmt:
	cargo fmt --all
	$(ROOT)/.venv/bin/ruff format tools tests $(wildcard deploy)
	$(ROOT)/.venv/bin/ruff check --fix tools tests $(wildcard deploy)

## The edit loop (about 2-3 minutes once built; no setup, no notebooks): the lint gates and the
## unit tests beside the code (`cargo test --lib` of every crate of the workspace).
test-fast: lint
	cargo test --locked --workspace --lib

test-rust:
	cargo test --locked --workspace
	@# The crate as the student handout builds it (no reference answers): no public function answers a TODO.
	cargo test --locked --no-default-features --test api_probe

test-notebooks:
	$(PY) -m pytest -v --durations=12 -p no:cacheprovider tests/setup tests/notebooks

## The student handout, unpacked: its own `make test` passes, and the solutions pass its public
## checks (about 15 minutes: it sets the handout up from scratch). Repository only.
test-handout:
	$(PY) -m pytest -v -p no:cacheprovider tests/handout

## A class's JupyterHub on this machine, serving the student handout (as root; deploy/README.md).
HUB_ROOT ?= /srv/hw9
hub-setup:
	@[ -d deploy ] || { echo "hub-setup runs from the hw9 repository (the student handout has no deploy/)"; exit 1; }
	bash deploy/setup-hub.sh $(HUB_ROOT)

## The hub for real: deploy/setup-hub.sh into HW9_HUB_TEST_ROOT (kept between runs, outside the
## clone), then two students log in, run the setup check and stay apart (tests/hub). Repository only.
HW9_HUB_TEST_ROOT ?= /srv/hw9-hub-test
test-hub:
	@if [ ! -d deploy ]; then echo "test-hub SKIPPED: the student handout has no deploy/ (repository only)"; \
	elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "test-hub SKIPPED: node and npm are not installed (JupyterHub's proxy is an npm package)"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "test-hub SKIPPED: it creates Unix accounts for its two students: run make test-hub as root"; \
	else bash deploy/setup-hub.sh $(HW9_HUB_TEST_ROOT) && \
	  HW9_HUB_TEST_ROOT=$(HW9_HUB_TEST_ROOT) $(HW9_HUB_TEST_ROOT)/venv/bin/python -m pytest -v -s -p no:cacheprovider tests/hub; fi

## N students starting at once on the hub (N = 5, 10, 20): the figures in BENCHMARKS.md.
bench-hub:
	@[ -d deploy ] || { echo "bench-hub runs from the hw9 repository (the student handout has no deploy/)"; exit 1; }
	bash deploy/setup-hub.sh $(HW9_HUB_TEST_ROOT)
	$(HW9_HUB_TEST_ROOT)/venv/bin/python tools/bench_hub.py --root $(HW9_HUB_TEST_ROOT) --users 5 10 20

## Executes every solution notebook headless (quick profile) into build/notebooks/solutions/.
notebooks: setup
	HW9_PROFILE=quick $(PY) tools/nbrun.py --out build/notebooks/solutions notebooks/solutions/*.ipynb

## Writes the student notebooks (notebooks/*.ipynb) from the solution sources.
release:
	cargo run -q --bin hw9 -- release

## Every written question with your answer, from the notebooks, into written/written.md and
## written/written.html (open it in a browser and print to PDF); lists the unanswered ones.
written:
	cargo run -q --bin hw9 -- written --notebooks notebooks --out written

## The student handout (no answers): build/handout/hw9/ and build/handout/hw9-handout.tar.gz, and
## the grader's files (autograder expected outputs, points) in build/handout/grader/.
handout:
	cargo run -q --bin hw9 -- handout --out build/handout

## One Gradescope autograder zip per assignment into build/gradescope/: each re-runs the uploads'
## code against the student handout's crate (its setup.sh provisions Rust, libtorch, a warm build).
gradescope: handout
	cargo build --release --locked -p hw9-grade
	target/release/hw9-grade bundle --handout build/handout/hw9 --out build/gradescope

## Rewrites the reference fixtures with PyTorch (needs the tool venv: see environment.md).
TOOL_VENV ?= $(HOME)/.cache/hw9/tool-venv
fixtures:
	@[ -x $(TOOL_VENV)/bin/python ] || { echo "no tool venv at $(TOOL_VENV): python3 -m venv $(TOOL_VENV) && $(TOOL_VENV)/bin/pip install torch==2.13.0 safetensors numpy transformers==5.24.0 rouge-score==0.1.2 gguf==0.19.0 accelerate==1.15.0"; exit 1; }
	$(TOOL_VENV)/bin/python tools/gen_fixtures.py

## hw9's training steps against the same models in PyTorch eager, in alternating back-to-back
## rounds (about 25 minutes on 2 cores; needs the tool venv). The figures in BENCHMARKS.md.
bench-compare:
	@[ -x $(TOOL_VENV)/bin/python ] || { echo "no tool venv at $(TOOL_VENV): see environment.md"; exit 1; }
	cargo build --release -q --bin hw9
	$(TOOL_VENV)/bin/python tools/bench_pairs.py vit-mae --rounds 8
	$(TOOL_VENV)/bin/python tools/bench_pairs.py summarizer --size cpu --rounds 8 --steps 25 --warmup 5
	$(TOOL_VENV)/bin/python tools/bench_pairs.py summarizer --size full --rounds 6 --steps 5 --warmup 2

## Rebuilds assets/corpus/debian-descriptions.jsonl.gz from apt's English descriptions (needs root
## for apt-get update; the committed file is what everyone trains on).
corpus:
	apt-get -o Acquire::Languages=en update -q
	mkdir -p build
	/usr/lib/apt/apt-helper cat-file "$$(ls -S /var/lib/apt/lists/*_main_i18n_Translation-en* | head -n1)" > build/Translation-en
	cargo run -q --bin hw9 -- corpus --from build/Translation-en

## Checks the installation and prints a fix per problem.
doctor:
	@if cargo build -q --bin hw9 2>/dev/null && target/debug/hw9 --version >/dev/null 2>&1; then target/debug/hw9 doctor; \
	else echo "(hw9 cannot be built or started without a working libtorch: the checks that need none follow)"; \
	cargo run -q -p hw9-env --bin hw9-doctor; fi

clean-cache:
	rm -rf .cache/evcxr
