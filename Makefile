# The README's commands: `make demo` and `make check` (and `make bench`).
# Each installs what is missing (scripts/bootstrap, as root) and builds first.

BUILD ?= build
GUEST := $(BUILD)/guest

.PHONY: all build bootstrap guest qemu10 demo check bench bench-quick clean

all: build

bootstrap:
	@scripts/bootstrap $(BOOTSTRAP_FOR)

build: bootstrap
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD) >/dev/null
	@ninja -C $(BUILD) >/dev/null

guest: bootstrap
	@guest/build.sh $(GUEST)

# QEMU 10.0.2 beside the system's 7.2 (build/qemu10), for tests and bench.
qemu10: bootstrap
	@scripts/qemu10 $(BUILD)/qemu10 >/dev/null

demo: build guest
	@scripts/demo

check: BOOTSTRAP_FOR = check
check: build guest qemu10
	@tests/run

# make bench QEMU=10 runs it on QEMU 10 (build/qemu10); QEMU=PATH on any.
QEMU ?=
QEMU_BIN = $(if $(filter 10,$(QEMU)),$(BUILD)/qemu10/usr/bin/qemu-system-x86_64,$(QEMU))
bench: BOOTSTRAP_FOR = bench
bench: build guest qemu10
	@bench/run $(BENCH_ARGS) $(if $(QEMU_BIN),--qemu $(QEMU_BIN)) \
		$(if $(filter 10,$(QEMU)),$(if $(findstring --quick,$(BENCH_ARGS)),,--out bench/qemu10))

bench-quick: BENCH_ARGS = --quick
bench-quick: bench

clean:
	rm -rf $(BUILD) build-asan build-tsan build-clang build-fuzz
