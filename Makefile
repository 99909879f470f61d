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

# libFuzzer on the header reader for FUZZ_SECONDS (clang).
FUZZ_SECONDS ?= 60
fuzz: setup
	cmake --preset fuzz >/dev/null && cmake --build --preset fuzz
	mkdir -p build-fuzz/corpus && cp tests/fuzz/corpus/* build-fuzz/corpus/
	build-fuzz/tests/fuzz/header_fuzz -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
