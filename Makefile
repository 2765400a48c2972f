# The README's two commands. Each one installs what it needs first.
PYTHON ?= python3
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: setup quickstart test

setup:
	$(PYTHON) -m pip install --quiet -e ".[test]"
	@if [ -z "$$LARP_FASHION_MNIST_DIR" ] && [ ! -d "$(FASHION_MNIST_DIR)" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST is missing. Install it with 'sudo apt-get install dataset-fashion-mnist', or set" \
	      "LARP_FASHION_MNIST_DIR to a folder holding its IDX files (train-images-idx3-ubyte.gz, ...)." >&2; \
	    exit 1; \
	  fi; \
	fi

quickstart: setup
	$(PYTHON) -m accelerate.commands.launch --config_file recipes/accelerate_configs/cpu.yaml \
	  recipes/train_vqvae.py --config recipes/configs/vqvae_fashion_mnist_quick.yaml --overwrite_output_dir

test: setup
	$(PYTHON) -m pytest
