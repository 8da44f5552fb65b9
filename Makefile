# Two entry points: `make demo` (set up + short FixMatch run on the embedded digits) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# torch. Where there is no NVIDIA GPU (Linux without nvidia-smi or the NVIDIA driver), PyTorch's CPU-only
# build from TORCH_INDEX (a few hundred MB instead of several GB of CUDA libraries); if that index cannot
# be reached or lacks TORCH_SPEC, whatever pip finds (on Linux: the CUDA build). Both are overridable:
#   make demo TORCH_INDEX=                 # pip's own choice
#   make demo TORCH_SPEC='torch>=2.11'     # another release
TORCH_SPEC ?= torch==2.13.0
CPU_INDEX := https://download.pytorch.org/whl/cpu
HAS_NVIDIA := $(shell { command -v nvidia-smi || ls /proc/driver/nvidia; } >/dev/null 2>&1 && echo yes)
TORCH_INDEX ?= $(if $(HAS_NVIDIA),,$(if $(filter Linux,$(shell uname -s)),$(CPU_INDEX)))
# an unreachable index fails in seconds, not after pip's default retries
INDEX_TRY := --retries 1 --timeout 15

.PHONY: demo test lint setup torch clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@$(MAKE) --no-print-directory torch
	$(BIN)/pip install -q -e '.[dev]'
	@echo "venv: $(VENV) is $$(du -sh $(VENV) | cut -f1)"
	touch $(STAMP)

setup: $(STAMP)

torch:  # (re)install torch into the venv: the CPU build from TORCH_INDEX when set, else what pip finds
	@if [ -n "$(TORCH_INDEX)" ] && $(BIN)/pip install -q $(INDEX_TRY) --index-url "$(TORCH_INDEX)" "$(TORCH_SPEC)" 2>/dev/null; then \
	  echo "torch: asked $(TORCH_INDEX) for $(TORCH_SPEC)"; \
	else \
	  if [ -n "$(TORCH_INDEX)" ]; then echo "torch: $(TORCH_INDEX) could not be used; installing what pip finds"; fi; \
	  $(BIN)/pip install -q "$(TORCH_SPEC)"; \
	fi
	@$(BIN)/python -c "import torch; c = torch.version.cuda; print('torch: installed', torch.__version__, '(CUDA ' + c + ' build)' if c else '(CPU-only build)')"

demo: $(STAMP)
	$(BIN)/fixmatch train

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples dev
	$(BIN)/ruff format --check src tests benchmarks examples dev
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs
