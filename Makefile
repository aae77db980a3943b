# The two commands of the README:
#   make book   - set up, run the main job on the built-in data, build the book
#   make test   - set up, run every test (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: setup system-deps test book book-small reproduce clean constraints

setup: system-deps $(STAMP)

# Debian packages: ffmpeg (mp3/m4a fallback decoder), libsndfile, chromium (browser tests).
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ldconfig -p 2>/dev/null | grep -q libsndfile || missing="$$missing libsndfile1"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing (e.g. sudo apt-get install$$missing)"; fi; \
	fi

# The packages go in with uv when it can be had (a fresh set-up in ~15 s instead of pip's 1-3 min),
# else with pip; INSTALLER=pip forces pip. uv does not read pip's configuration, so the
# find-links, index and constraint files pip is configured with (files or PIP_* variables) are
# handed to it; any failure of uv falls back to pip, which installs the same pinned versions.
INSTALLER ?= uv
pip_config = echo "$$pipcfg" | sed -n "s/^[^=]*[.]$(1)='\(.*\)'$$/\1/p" | tr '\n' ' '

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ "$(INSTALLER)" = uv ] && $(PY) -m pip install -q uv 2>/dev/null; then \
	  pipcfg="$$($(PY) -m pip config list 2>/dev/null)"; \
	  links="$$($(call pip_config,find-links))"; extra="$$($(call pip_config,extra-index-url))"; \
	  index="$$($(call pip_config,index-url) | cut -d' ' -f1)"; cons=""; \
	  for c in $$($(call pip_config,constraint)); do [ -f "$$c" ] && cons="$$cons -c $$c"; done; \
	  echo "installing with uv (INSTALLER=pip for pip)"; \
	  UV_FIND_LINKS="$$(echo $$links | tr ' ' ',')" UV_EXTRA_INDEX_URL="$$extra" \
	  UV_INDEX_STRATEGY=unsafe-best-match $${index:+UV_INDEX_URL="$$index"} \
	  $(VENV)/bin/uv pip install -q --python $(PY) -r requirements-dev.txt -c constraints.txt $$cons \
	  || { echo "uv failed: installing with pip"; $(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt; }; \
	else $(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt; fi
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

# Speed of training (reference vs fast), inference and preparation on this machine -> bench.json
bench: setup
	$(PY) -m thesis_lib bench --out bench.json

reproduce: setup
	$(PY) -m thesis_lib reproduce --out runs/reproduce

# The book: the main job (the thesis's run on the built-in data, also copied to
# runs/reproduce), then every chapter executed with its full parameters by papermill
# and built by jupyter-book with warnings as errors; HTML in _build/html,
# per-chapter times in _build/timings.json. A failing cell fails the build.
book: setup
	$(PY) -m thesis_lib book --full --out _build

# The same with small parameters (SMALL=True), what the tests run: a few minutes.
book-small: setup
	$(PY) -m thesis_lib book --small --out _build/small

clean:
	rm -rf _build runs .pytest_cache

constraints: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//' > constraints.txt
