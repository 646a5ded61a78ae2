# Top-level entry points (see README.md):
#   make demo   build everything and run the demo under the shim
#   make test   build everything and run the whole test suite (release
#               build, then the debug build, whose overflow checks and
#               debug assertions catch what the release build lets pass)
#   make bench  run the benchmarks

SHIM := target/release/libbus1_preload.so
DEBUG_SHIM := $(abspath target/debug/libbus1_preload.so)

.PHONY: build build-debug demo test test-rust test-c test-debug bench clean

build:
	cargo build --release

demo: build
	$(MAKE) -s -C demo
	@dom=$$(mktemp -d /tmp/bus1-demo.XXXXXX) && \
	  BUS1_DOMAIN=$$dom scripts/bus1-run demo/bin/demo; s=$$?; rm -rf $$dom; exit $$s

test: build test-rust test-c test-debug

test-rust:
	cargo test --release --workspace

test-c: build
	$(MAKE) -s -C tests check check-disk

build-debug:
	cargo build

test-debug: build-debug
	cargo test --workspace
	$(MAKE) -s -C tests check check-disk SHIM=$(DEBUG_SHIM)

bench: build
	$(MAKE) -s -C bench
	cargo build --release -p bus1 --example bench_pingpong
	scripts/bench

clean:
	cargo clean
	$(MAKE) -s -C tests clean
	$(MAKE) -s -C demo clean
	$(MAKE) -s -C bench clean
