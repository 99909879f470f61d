# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each runs the setup script first (it installs only what is missing) and builds.
JOBS ?= $(shell nproc)
BUILD ?= build
# The second torch line (DESIGN.md §6): the PyPI torch wheel's LibTorch, from the virtual
# environment scripts/setup.sh keeps outside the repository (preset torch-wheel).
WHEEL_BUILD ?= build-torch2
WHEEL_PYTHON = $(shell bash scripts/setup.sh --print-wheel-venv)/bin/python
# Prints how long a step took: $(call timed,what,command).
timed = start=$$(date +%s); $(2); rc=$$?; echo "make: $(1) took $$(( $$(date +%s) - start )) s"; exit $$rc

.PHONY: setup configure build configure-wheel build-wheel test demo stress sanitize fuzz clean

setup:
	@$(call timed,setup,bash scripts/setup.sh)

configure: setup
	@cmake --preset default -S . >/dev/null

build: configure
	@$(call timed,build (Debian LibTorch line),cmake --build $(BUILD) -j $(JOBS))

configure-wheel: setup
	@QUICKSAVE_WHEEL_PYTHON=$(WHEEL_PYTHON) cmake --preset torch-wheel -S . >/dev/null

build-wheel: configure-wheel
	@$(call timed,build (torch wheel line),cmake --build $(WHEEL_BUILD) -j $(JOBS))

# Both torch lines; the second line's tests run even when the first line's fail.
test: build build-wheel
	@status=0; \
	( $(call timed,tests (Debian LibTorch line),cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 1200 -LE stress) ) || status=1; \
	( $(call timed,tests (torch wheel line),cd $(WHEEL_BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 1800 -LE stress) ) || status=1; \
	exit $$status

demo: build
	@bash scripts/demo.sh $(BUILD)

# The long crash test (1000 SIGKILLs) and other stress runs.
stress: build
	@cd $(BUILD) && ctest --output-on-failure -L stress

# AddressSanitizer+UBSan and ThreadSanitizer builds of the tests (not part of `make test`).
sanitize: setup
	cmake --preset asan >/dev/null && cmake --build build-asan -j $(JOBS) && (cd build-asan && ctest --output-on-failure -j $(JOBS) -LE 'install|long|stress')
	cmake --preset tsan >/dev/null && cmake --build build-tsan -j $(JOBS) && (cd build-tsan && TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp" ctest --output-on-failure -j $(JOBS) -LE 'install|long|stress')

# libFuzzer (clang) for FUZZ_SECONDS on each target: the header, index and pickle readers.
# Each grows its own working corpus under build-fuzz/, seeded from tests/fuzz/; a crashing input
# is written to build-fuzz/<target>-crash-<hash> (add it to the seeds once fixed).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = header_fuzz:corpus index_fuzz:corpus_index pickle_fuzz:corpus_pickle protocol_fuzz:corpus_protocol
fuzz: setup
	cmake --preset fuzz >/dev/null && cmake --build build-fuzz --target $(foreach t,$(FUZZ_TARGETS),$(firstword $(subst :, ,$(t))))
	@set -e; for t in $(FUZZ_TARGETS); do \
	  target=$${t%%:*}; seeds=$${t#*:}; \
	  mkdir -p build-fuzz/$$seeds && cp tests/fuzz/$$seeds/* build-fuzz/$$seeds/; \
	  echo "== $$target for $(FUZZ_SECONDS) s"; \
	  build-fuzz/tests/fuzz/$$target -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -artifact_prefix=build-fuzz/$$target- build-fuzz/$$seeds; \
	done

clean:
	rm -rf $(BUILD) $(WHEEL_BUILD) build-asan build-tsan build-fuzz
