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
	@# The demo's browser test drives Debian's Chromium; without root it skips and says why.
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Chromium for the demo's browser test (Debian packages chromium, chromium-driver)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "Note: the demo's browser test will skip: it needs 'sudo apt-get install chromium chromium-driver'." >&2; \
	  fi; \
	fi

# The whole pipeline on Fashion-MNIST, on the CPU: tokenizer -> token dataset -> prior -> pipeline folder -> samples.
QUICK = outputs
LAUNCH = $(PYTHON) -m accelerate.commands.launch --config_file recipes/accelerate_configs/cpu.yaml
quickstart: setup
	$(LAUNCH) recipes/train_vqvae.py --config recipes/configs/vqvae_fashion_mnist_quick.yaml --overwrite_output_dir
	$(PYTHON) recipes/encode_dataset.py --vqvae $(QUICK)/vqvae-fashion-mnist-quick --output_dir $(QUICK)/tokens-fashion-mnist-quick \
	  --no_flip_augment
	$(LAUNCH) recipes/train_prior.py --config recipes/configs/prior_fashion_mnist_quick.yaml --overwrite_output_dir
	larp-hf assemble --vqvae $(QUICK)/vqvae-fashion-mnist-quick --prior $(QUICK)/prior-fashion-mnist-quick \
	  --output $(QUICK)/larp-fashion-mnist-quick --guidance-scale 2 --overwrite
	larp-hf generate $(QUICK)/larp-fashion-mnist-quick --num-images 100 --seed 0 --output $(QUICK)/samples-fashion-mnist-quick.png

test: setup
	$(PYTHON) -m pytest
