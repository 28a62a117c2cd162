# pwb: prompt workbench. `make help` lists the targets.
#
# Layers are built as static libraries so the tree's architecture is also the link graph:
# a layer may only use the layers to its right in LINK_ORDER.

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -march=native
CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE -g $(OPT) -fopenmp -Wall -Wextra -Wshadow -Wno-unused-parameter \
           -Wformat=2 -Isrc -MMD -MP $(EXTRA_CFLAGS)
PKGS    := sqlite3 libcurl libcjson libpcre2-8 libcrypto libutf8proc libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CRIT_LIBS  := $(shell pkg-config --libs criterion 2>/dev/null)
LDLIBS  += $(PKG_LIBS) -fopenmp -lm -lpthread
CFLAGS  += $(PKG_CFLAGS)

LINK_ORDER := serve run report llm tune engine task store util
LAYERS     := cli $(LINK_ORDER)
layer_src   = $(wildcard src/$(1)/*.c)
layer_obj   = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(call layer_src,$(1)))
LIBS        := $(foreach l,$(LINK_ORDER),$(if $(call layer_src,$(l)),$(BUILD)/lib/libpwb_$(l).a))

# The layers a layer's tests link (itself and what it may use).
DEPS_util   := util
DEPS_engine := engine util
DEPS_tune   := tune engine util
DEPS_task   := task util
DEPS_store  := store util
DEPS_llm    := llm tune engine util
DEPS_report := report store task util
DEPS_serve  := serve llm tune engine util
DEPS_run    := $(filter-out serve,$(LINK_ORDER))
DEPS_cli    := $(LINK_ORDER)
deplibs      = $(foreach l,$(DEPS_$(1)),$(if $(call layer_src,$(l)),$(BUILD)/lib/libpwb_$(l).a))

PWB        := $(BUILD)/pwb
FAKELLM    := $(BUILD)/fakellm
TEST_LAYERS := $(patsubst tests/unit/%/,%,$(sort $(dir $(wildcard tests/unit/*/*.c))))
UNIT_BINS  := $(foreach l,$(TEST_LAYERS),$(BUILD)/tests/unit_$(l))
INTEG_BIN  := $(BUILD)/tests/integration
TEST_BINS  := $(UNIT_BINS) $(if $(wildcard tests/integration/*.c),$(INTEG_BIN))

.PHONY: all deps test unit integration asan bench demo published model clean help fuzz check-deps install
all: check-deps $(PWB) pwb

help:
	@echo "make            build ./pwb"
	@echo "make test       build and run every test (unit, reference, integration)"
	@echo "make asan       the same tests under AddressSanitizer + UBSan (build-asan/)"
	@echo "make model      fetch SmolLM2-135M-Instruct (GGUF) into models/, sha256 checked"
	@echo "                (MODEL=gemma3-270m: Gemma 3 270M, Q4_K_M GGUF)"
	@echo "make demo       run suites/demo.json on the local engine and write reports/demo.md"
	@echo "make bench      harness and engine benchmarks (bench/run.sh; results in bench/out/)"
	@echo "make published  the published comparisons, both models (reports/*.md, ~12 h on 2 cores, resumable)"
	@echo "make install    install pwb, its templates, cards, suites, docs and man page under PREFIX (/usr/local)"
	@echo "make deps       install missing Debian -dev packages (as root) or say which"
	@echo "make clean      remove build outputs"

check-deps:
	@sh scripts/deps.sh --check

deps:
	@sh scripts/deps.sh --install

pwb: $(PWB)
	@ln -sf $(PWB) pwb

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

define LAYER_LIB
$(BUILD)/lib/libpwb_$(1).a: $(call layer_obj,$(1))
	@mkdir -p $$(dir $$@)
	@rm -f $$@
	ar rcs $$@ $$^
endef
$(foreach l,$(LINK_ORDER),$(eval $(call LAYER_LIB,$(l))))

$(PWB): $(call layer_obj,cli) $(LIBS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(call layer_obj,cli) $(LIBS) $(LDLIBS)

$(FAKELLM): tests/server/fakellm.c $(BUILD)/lib/libpwb_util.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/lib/libpwb_util.a $(LDLIBS)

$(BUILD)/tests/obj/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -c $< -o $@

define UNIT_TEST
$(BUILD)/tests/unit_$(1): $(patsubst tests/%.c,$(BUILD)/tests/obj/%.o,$(wildcard tests/unit/$(1)/*.c)) $(call deplibs,$(1))
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) -o $$@ $$^ $(LDLIBS) $(CRIT_LIBS)
endef
$(foreach l,$(TEST_LAYERS),$(eval $(call UNIT_TEST,$(l))))

$(INTEG_BIN): $(patsubst tests/%.c,$(BUILD)/tests/obj/%.o,$(wildcard tests/integration/*.c)) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) $(CRIT_LIBS)

# Tests find the shared models/datasets through PWB_SHARED (default ../shared) and the built
# binaries through PWB_BIN / PWB_FAKELLM.
PWB_SHARED ?= $(abspath ../shared)
export PWB_SHARED
# The shared data folder is pwb's default data path (after $PWB_DATA_PATH): no export needed.
$(BUILD)/obj/task/catalog.o: CFLAGS += -DPWB_DEFAULT_DATA_PATH='"$(PWB_SHARED)/datasets"'
$(BUILD)/obj/task/catalog.o: Makefile
TEST_ENV = PWB_BIN=$(abspath $(PWB)) PWB_FAKELLM=$(abspath $(FAKELLM)) PWB_ROOT=$(abspath .) \
           PWB_DATA_PATH=$(PWB_SHARED)/datasets PWB_DB= OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive

test: check-deps $(PWB) $(FAKELLM) $(TEST_BINS)
	@sh scripts/run-tests.sh "$(TEST_ENV)" $(TEST_BINS)

unit: check-deps $(FAKELLM) $(UNIT_BINS)
	@sh scripts/run-tests.sh "$(TEST_ENV)" $(UNIT_BINS)

integration: check-deps $(PWB) $(FAKELLM) $(INTEG_BIN)
	@sh scripts/run-tests.sh "$(TEST_ENV)" $(INTEG_BIN)

# The reference-value suites run full SmolLM2 forward passes over hundreds of prompts; under ASan
# that takes far too long, and the same code paths are exercised by the engine's own unit tests.
ASAN_FILTER ?= !(reference)/*
asan:
	PWB_TEST_FILTER='$(ASAN_FILTER)' LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	  $(MAKE) BUILD=build-asan OPT="-O1 -march=native -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" test

# make model [MODEL=smollm2-135m|gemma3-270m]: the known models are listed in scripts/fetch-model.sh.
MODEL_DIR := models
MODEL     ?= smollm2-135m
model:
	@sh scripts/fetch-model.sh $(MODEL_DIR) $(MODEL)

# pwb finds the shared datasets by itself (the build's default data folder, below).
RUN_ENV = OMP_WAIT_POLICY=passive

# The two-model suites need Gemma 3 too.
published: all model
	@sh scripts/fetch-model.sh $(MODEL_DIR) gemma3-270m
	$(RUN_ENV) ./scripts/published.sh

# The README's commands read the default database (results/pwb.db): the demo writes it.
demo: all model
	$(RUN_ENV) ./pwb run suites/demo.json
	./pwb report -o reports/demo.md
	@echo "wrote reports/demo.md"

BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
$(BUILD)/bench/%: bench/%.c $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIBS) $(LDLIBS)

bench: all $(FAKELLM) $(BENCH_BINS) $(INTEG_BIN) model
	@PWB_BIN=$(abspath $(PWB)) PWB_FAKELLM=$(abspath $(FAKELLM)) BENCH_DIR=$(abspath $(BUILD)/bench) \
	  PWB_SHARED=$(PWB_SHARED) sh bench/run.sh

clean:
	rm -rf build build-asan pwb

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# make install PREFIX=DIR (DESTDIR for packaging): pwb finds share/pwb beside its bin/.
PREFIX  ?= /usr/local
SHARE   := $(DESTDIR)$(PREFIX)/share/pwb
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(SHARE)/templates $(SHARE)/datasets $(SHARE)/suites $(SHARE)/prices \
	  $(DESTDIR)$(PREFIX)/share/doc/pwb $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(PWB) $(DESTDIR)$(PREFIX)/bin/pwb
	install -m 644 templates/*.tmpl $(SHARE)/templates
	install -m 644 datasets/*.json $(SHARE)/datasets
	install -m 644 suites/*.json $(SHARE)/suites
	install -m 644 prices/prices.json $(SHARE)/prices
	install -m 644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/pwb
	install -m 644 docs/pwb.1 $(DESTDIR)$(PREFIX)/share/man/man1
	@echo "installed $(DESTDIR)$(PREFIX)/bin/pwb (data in $(SHARE))"
