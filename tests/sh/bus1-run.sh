#!/usr/bin/env bash
# scripts/bus1-run in the source tree: found through a symbolic link from
# any directory, it preloads target/release/libbus1_preload.so by an
# absolute path (a later cd does not lose it); BUS1_PRELOAD overrides it,
# made absolute too; bad uses fail with 2 (usage) or 127 (no shim).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
shim=$(readlink -f "$root/target/release/libbus1_preload.so")
[ -f "$shim" ] || fail "build the shim first"

mkdir "$tmp/bin" "$tmp/work"
ln -s "$root/scripts/bus1-run" "$tmp/bin/bus1-run"
cd "$tmp/work"
got=$(PATH=$tmp/bin:$PATH LD_PRELOAD= bus1-run sh -c 'cd / && printf %s "$LD_PRELOAD"')
[ "$got" = "$shim" ] || fail "LD_PRELOAD is '$got'"

# a program that opens the device after changing directory works
export BUS1_DOMAIN=$tmp/domain
PATH=$tmp/bin:$PATH bus1-run sh -c "cd / && exec '$root/target/release/bus1ctl' --help" >/dev/null || fail "bus1ctl under bus1-run"
cat >"$tmp/open.c" <<'C'
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(void)
{
	if (chdir("/") != 0)
		return 3;
	int fd = open("/dev/bus1", O_RDWR);
	printf("%s\n", fd >= 0 ? "peer" : "no peer");
	return fd >= 0 ? 0 : 1;
}
C
cc -o "$tmp/open" "$tmp/open.c"
[ "$(PATH=$tmp/bin:$PATH bus1-run "$tmp/open")" = peer ] || fail "no peer under bus1-run"

# libraries already preloaded stay, after the shim
got=$(LD_PRELOAD=/nonexistent-but-named.so "$tmp/bin/bus1-run" sh -c 'printf %s "$LD_PRELOAD"' 2>/dev/null)
[ "$got" = "$shim:/nonexistent-but-named.so" ] || fail "LD_PRELOAD is '$got'"

# BUS1_PRELOAD, relative, is made absolute
cp "$shim" "$tmp/work/other.so"
got=$(BUS1_PRELOAD=other.so LD_PRELOAD= "$tmp/bin/bus1-run" sh -c 'printf %s "$LD_PRELOAD"')
[ "$got" = "$tmp/work/other.so" ] || fail "LD_PRELOAD is '$got'"

# -- ends the options
got=$(LD_PRELOAD= "$tmp/bin/bus1-run" -- sh -c 'printf %s "$LD_PRELOAD"')
[ "$got" = "$shim" ] || fail "with --: '$got'"

# usage errors and a missing shim
status=0; "$tmp/bin/bus1-run" >/dev/null 2>&1 || status=$?
[ $status -eq 2 ] || fail "no command: status $status"
status=0; BUS1_PRELOAD=$tmp/missing.so "$tmp/bin/bus1-run" true 2>/dev/null || status=$?
[ $status -eq 127 ] || fail "missing shim: status $status"
mkdir "$tmp/with space"
cp "$shim" "$tmp/with space/s.so"
status=0; BUS1_PRELOAD="$tmp/with space/s.so" "$tmp/bin/bus1-run" true 2>/dev/null || status=$?
[ $status -eq 127 ] || fail "a path with a space: status $status"
"$tmp/bin/bus1-run" --help | grep -q '^usage: bus1-run' || fail "--help"
echo "bus1-run works through links and from anywhere"
