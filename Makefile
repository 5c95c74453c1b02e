# The two commands of the README: `make demo` and `make test`. Each builds .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint data docs bench bench-gpu bench-richer bench-richer-speed bench-richer-gpu quote-tables device-pack clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# Fashion-MNIST: already on disk, else torchvision's download, else Debian's package.
data: $(STAMP)
	@$(PY) -c "import ppvae; ppvae.data.load('fashion-mnist', split='test')" >/dev/null 2>&1 \
	  && echo "Fashion-MNIST: found" \
	  || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	         echo "Fashion-MNIST: offline, installing Debian's dataset-fashion-mnist"; \
	         apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
	           || { apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; \
	       else \
	         echo "Fashion-MNIST is missing and could not be downloaded. Run:"; \
	         echo "    sudo apt-get install dataset-fashion-mnist"; \
	         echo "or put its four IDX files in a folder and set PPVAE_DATA to it."; exit 1; \
	       fi; }

demo: data
	$(PY) -m ppvae demo --overwrite

# The formatter and the linter first (seconds), then the tests.
lint: $(STAMP)
	$(PY) -m ruff format --check ppvae tests benchmarks
	$(PY) -m ruff check ppvae tests benchmarks

# One pytest worker per core (pytest-xdist), each with its share of the threads (tests/conftest.py).
test: lint data
	$(PY) -m pytest -n auto --dist worksteal

# The documentation site, offline, into site/ (strict: a broken link or reference fails).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo "open site/index.html"

bench: data
	$(PY) benchmarks/train_speed.py --devices 2
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/evidence_speed.py
	$(PY) benchmarks/ais_speed.py
	$(PY) benchmarks/fa_fit.py
	$(PY) benchmarks/streaming_memory.py

# On a machine with a CUDA GPU: the GPU tests, then ppvae against PyTorch there, then the GPU against the CPU.
bench-gpu: data
	$(PY) -m pytest -m gpu
	$(PY) benchmarks/train_speed.py --accelerator cuda --rounds 10
	$(PY) benchmarks/device_speed.py
	$(PY) benchmarks/ais_speed.py --accelerator cuda --images 1000 --steps 20 --rounds 4

# For a GPU machine without internet whose python3 holds PyTorch: .device/ (ignored) gets the wheels of ppvae's
# pure-Python dependencies that such a machine lacks, at the versions installed here, and Fashion-MNIST's files.
# Carry .device there and run `bash benchmarks/gpu_checks.sh`.
DEVICE_WHEELS := pyro-ppl pyro-api lightning-fabric
device-pack: data
	rm -rf .device && mkdir -p .device/wheels .device/data/fashion-mnist
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d .device/wheels \
		$$($(PY) -c "from importlib.metadata import version; print(*(f'{n}=={version(n)}' for n in '$(DEVICE_WHEELS)'.split()))")
	$(PY) -c "from ppvae.data.sources import find_files, resolve_name; \
		print(*(f for split in ('train', 'test') for f in find_files(resolve_name('fashion-mnist'), split, None)))" \
		| xargs cp -t .device/data/fashion-mnist
	du -sh .device

# The richer-models table at full scale (every test image scored by AIS, 20 epochs a row). A run keeps the rows
# its folder already holds with the same settings, so the table can be built a few rows at a time:
# make bench-richer-gpu ROWS="default iwae-5". On a GPU, 16 AIS chains an image; on this project's 2-core CPU,
# 4 chains (45 min to 2 h 20 min a row, by the machine and the row), VampPrior and the IWAE rows first.
# The CPU table's folder is committed (benchmarks/results/richer-cpu, 150 kB a row): machines here keep nothing
# between sessions, so each session measures a few rows more and commits them. A row stopped midway resumes at
# its last finished stage (trained model, IS, each 1,000 images of AIS), kept in the folder's partial/: ignored by
# git, so it helps only where the working tree outlives the run.
RICHER_OUT ?= runs/richer-full
bench-richer-gpu: data
	$(PY) benchmarks/richer_models.py --accelerator cuda --epochs 20 --ais-images 10000 --ais-steps 200 \
		--bdmc-images 100 --out $(RICHER_OUT) $(if $(ROWS),--rows $(ROWS))
RICHER_CPU_ROWS ?= default vamp iwae-5 two-layers-iwae-5 combined two-layers flow-prior flow-guide iwae-50 vamp-iwae-5
RICHER_CPU := benchmarks/richer_models.py --epochs 20 --chains 4 --ais-steps 200 --ais-images 10000 \
	--bdmc-images 100 --out benchmarks/results/richer-cpu
bench-richer: data
	$(PY) $(RICHER_CPU) --rows $(if $(ROWS),$(ROWS),$(RICHER_CPU_ROWS))

# The same table's time-per-epoch column: every row's epoch time side by side, on one machine, in one run.
bench-richer-speed: data
	$(PY) $(RICHER_CPU) --speed

# After a benchmark rewrote its table.md: the same table into every page that quotes it (tests/test_docs.py checks).
quote-tables: $(STAMP)
	$(PY) benchmarks/quote_tables.py

clean:
	rm -rf $(VENV) runs site .pytest_cache
