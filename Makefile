# Top-level entry points (see README.md):
#   make demo   build everything and run the demo under the shim
#   make test   build everything and run the whole test suite (release
#               build, then the debug build, whose overflow checks and
#               debug assertions catch what the release build lets pass)
#   make bench  run the benchmarks
#   make fuzz   random calls on one long-lived domain for FUZZ_SECONDS
#   make install / make uninstall   (PREFIX=/usr/local, DESTDIR= for staging)

SHIM := target/release/libbus1_preload.so
DEBUG_SHIM := $(abspath target/debug/libbus1_preload.so)

FUZZ_SECONDS ?= 600

.PHONY: build build-debug demo test test-rust test-c test-sh test-debug bench fuzz clean install uninstall

build:
	cargo build --release

demo: build
	$(MAKE) -s -C demo
	@dom=$$(mktemp -d /tmp/bus1-demo.XXXXXX) && \
	  BUS1_DOMAIN=$$dom scripts/bus1-run demo/bin/demo; s=$$?; rm -rf $$dom; exit $$s

test: build test-rust test-c test-sh test-debug

test-rust:
	cargo test --release --workspace

test-c: build
	$(MAKE) -s -C tests check check-disk

# Shell tests of the tools around the shim (tests/sh): the C harness,
# install, bus1-run, bus1ctl.
test-sh: build
	tests/sh/run

build-debug:
	cargo build

test-debug: build-debug
	cargo test --workspace
	$(MAKE) -s -C tests check check-disk SHIM=$(DEBUG_SHIM)

# The fuzz group's long-lived mode (tests/fuzz.c), run for FUZZ_SECONDS.
fuzz: build
	$(MAKE) -s -C tests all
	BUS1_FUZZ_SECONDS=$(FUZZ_SECONDS) BUS1_TEST_FILTER=long_lived scripts/run-c-tests $(abspath $(SHIM)) tests/bin/fuzz

bench: build
	$(MAKE) -s -C bench
	cargo build --release -p bus1 --example bench_pingpong
	scripts/bench

clean:
	cargo clean
	$(MAKE) -s -C tests clean
	$(MAKE) -s -C demo clean
	$(MAKE) -s -C bench clean

# ------------------------------------------------------------ install
# Everything goes under $(DESTDIR)$(PREFIX); the files name only
# $(PREFIX) paths, so a staged tree (DESTDIR) works once moved there.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/bus1
PCDIR      ?= $(LIBDIR)/pkgconfig
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' preload/Cargo.toml)
# Every header under uapi/include, in an include directory of bus1's own
# (PREFIX/include/bus1/linux/bus1.h): -I$(INCLUDEDIR)/bus1 finds nothing
# but bus1's headers.
HEADERS    := $(patsubst uapi/include/%,%,$(wildcard uapi/include/linux/*.h))
MAN1       := $(wildcard docs/man/*.1)
MAN7       := $(wildcard docs/man/*.7)
DOCS       := LICENSE README.md $(wildcard docs/*.md)

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/bus1 $(DESTDIR)$(PCDIR) \
	  $(DESTDIR)$(INCLUDEDIR)/bus1/linux $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 \
	  $(DESTDIR)$(DOCDIR)
	install -m 0755 $(SHIM) $(DESTDIR)$(LIBDIR)/bus1/libbus1_preload.so
	install -m 0755 target/release/bus1ctl $(DESTDIR)$(BINDIR)/bus1ctl
	sed 's|^installed_shim=$$|installed_shim="$(LIBDIR)/bus1/libbus1_preload.so"|' scripts/bus1-run \
	  > $(DESTDIR)$(BINDIR)/bus1-run.tmp
	chmod 0755 $(DESTDIR)$(BINDIR)/bus1-run.tmp
	mv $(DESTDIR)$(BINDIR)/bus1-run.tmp $(DESTDIR)$(BINDIR)/bus1-run
	for h in $(HEADERS); do install -m 0644 uapi/include/$$h $(DESTDIR)$(INCLUDEDIR)/bus1/$$h || exit 1; done
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	  -e 's|@BINDIR@|$(BINDIR)|' -e 's|@VERSION@|$(VERSION)|' scripts/bus1.pc.in > $(DESTDIR)$(PCDIR)/bus1.pc
	chmod 0644 $(DESTDIR)$(PCDIR)/bus1.pc
	install -m 0644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(MAN7) $(DESTDIR)$(MANDIR)/man7/
	install -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/

# Removes exactly what install put there, and bus1's own directories.
uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/bus1/libbus1_preload.so $(DESTDIR)$(BINDIR)/bus1ctl \
	  $(DESTDIR)$(BINDIR)/bus1-run $(DESTDIR)$(PCDIR)/bus1.pc \
	  $(addprefix $(DESTDIR)$(INCLUDEDIR)/bus1/,$(HEADERS)) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MAN1))) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man7/,$(notdir $(MAN7))) \
	  $(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOCS)))
	-rmdir $(DESTDIR)$(LIBDIR)/bus1 $(DESTDIR)$(INCLUDEDIR)/bus1/linux $(DESTDIR)$(INCLUDEDIR)/bus1 \
	  $(DESTDIR)$(DOCDIR) 2>/dev/null
