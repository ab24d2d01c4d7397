# PneumoSyft: `make demo` and `make test` create .venv and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed

.PHONY: install system demo demo-federated test lab bench clean

install: system $(STAMP)

# The sandbox that runs researcher code is bubblewrap (Debian package; libseccomp is
# part of the base system); backups of a domain on PostgreSQL use pg_dump (postgresql-client,
# only warned about when missing); the web console's browser tests drive Debian's Chromium
# (Playwright cannot download its own browsers here). Installed once, as root; elsewhere
# it says what to run.
system:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq bubblewrap; \
	  else echo "install bubblewrap first: sudo apt-get install bubblewrap" >&2; exit 1; fi; }
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "the console's browser tests need Chromium: sudo apt-get install chromium" >&2; fi; }
	@command -v pg_dump >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq postgresql-client; \
	  else echo "backups of a domain on PostgreSQL need pg_dump: sudo apt-get install postgresql-client" >&2; fi; }

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m ipykernel install --sys-prefix --name pneumosyft --display-name "PneumoSyft (.venv)" >/dev/null
	@touch $(STAMP)

demo: install
	$(PY) -m demos.single_hospital

demo-federated: install
	$(PY) -m demos.federated

test: install
	$(PY) -m pytest

lab: install
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser --notebook-dir notebooks

bench: install
	$(PY) bench/bench_domain_overhead.py
	$(PY) bench/bench_secret_sharing.py
	$(PY) bench/bench_federated_round.py
	$(PY) bench/bench_federated_job.py
	$(PY) bench/bench_dp.py
	$(PY) bench/bench_upload.py
	$(PY) bench/bench_dicom.py
	$(PY) bench/bench_scale.py
	$(PY) bench/bench_load.py
	$(PY) bench/bench_review.py
	$(PY) bench/bench_backup.py
	$(PY) bench/bench_tls.py
	$(PY) bench/bench_cross_host.py
	$(PY) bench/bench_console.py

clean:
	rm -rf $(VENV) .pytest_cache

# PneumoSyft against Flower, plain and secure (bench/bench_vs_flower.py). Flower gets a venv
# of its own (it needs a newer numpy than syft 0.9.5 allows); ARGS="--n 600" passes options.
FLOWER_VENV  := bench/.flower-venv
FLOWER_STAMP := $(FLOWER_VENV)/.requirements-installed

.PHONY: bench-flower

$(FLOWER_STAMP): bench/flower-requirements.txt
	@test -x $(FLOWER_VENV)/bin/python || $(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install --quiet -r bench/flower-requirements.txt
	@touch $(FLOWER_STAMP)

bench-flower: install $(FLOWER_STAMP)
	$(PY) bench/bench_vs_flower.py $(ARGS)

# Private inference beside CrypTen 0.4.1 (bench/bench_private_inference.py). CrypTen gets a
# venv of its own: its metadata asks for the deprecated `sklearn` package and torchvision, so
# it installs with --no-deps, beside the CPU torch and what it really imports.
CRYPTEN_VENV  := bench/.crypten-venv
CRYPTEN_STAMP := $(CRYPTEN_VENV)/.requirements-installed

.PHONY: bench-crypten

$(CRYPTEN_STAMP): bench/crypten-requirements.txt
	@test -x $(CRYPTEN_VENV)/bin/python || $(PYTHON) -m venv $(CRYPTEN_VENV)
	$(CRYPTEN_VENV)/bin/python -m pip install --quiet -r bench/crypten-requirements.txt
	$(CRYPTEN_VENV)/bin/python -m pip install --quiet --no-deps crypten==0.4.1
	@touch $(CRYPTEN_STAMP)

bench-crypten: install $(CRYPTEN_STAMP)
	$(PY) bench/bench_private_inference.py $(ARGS)
