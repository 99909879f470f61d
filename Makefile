# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each runs the setup script first (it installs only what is missing) and builds.
JOBS ?= $(shell nproc)
BUILD ?= build

.PHONY: setup configure build test demo stress sanitize fuzz clean

setup:
	@bash scripts/setup.sh

configure: setup
	@cmake --preset default -S . >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 1200 -LE stress

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
# Each grows its own working corpus under build-fuzz/, seeded from tests/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = header_fuzz:corpus index_fuzz:corpus_index pickle_fuzz:corpus_pickle
fuzz: setup
	cmake --preset fuzz >/dev/null && cmake --build build-fuzz --target $(foreach t,$(FUZZ_TARGETS),$(firstword $(subst :, ,$(t))))
	@set -e; for t in $(FUZZ_TARGETS); do \
	  target=$${t%%:*}; seeds=$${t#*:}; \
	  mkdir -p build-fuzz/$$seeds && cp tests/fuzz/$$seeds/* build-fuzz/$$seeds/; \
	  echo "== $$target for $(FUZZ_SECONDS) s"; \
	  build-fuzz/tests/fuzz/$$target -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 build-fuzz/$$seeds; \
	done

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
