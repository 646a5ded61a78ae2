#!/usr/bin/env bash
# make install into a temporary prefix, then build and run a client with
# nothing but the installed files: pkg-config --cflags bus1 for the
# header, bus1-run (through a symbolic link, from another directory) for
# the shim, bus1ctl for a look at the domain. make uninstall leaves
# nothing behind. A staged install (DESTDIR) names only PREFIX paths.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v pkg-config >/dev/null || { echo "pkg-config is not installed"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "FAIL: $*"; exit 1; }

make -s -C "$root" install PREFIX="$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "make install"; }

# what is installed, with which modes
mode() { stat -c %a "$prefix/$1"; }
for f in bin/bus1-run bin/bus1ctl lib/bus1/libbus1_preload.so; do
    [ "$(mode $f)" = 755 ] || fail "$f: mode $(mode $f)"
done
for f in include/bus1/linux/bus1.h lib/pkgconfig/bus1.pc share/man/man1/bus1-run.1 \
    share/man/man1/bus1ctl.1 share/man/man7/bus1.7 share/doc/bus1/LICENSE \
    share/doc/bus1/design.md share/doc/bus1/reference.md; do
    [ "$(mode $f)" = 644 ] || fail "$f: mode $(mode $f)"
done

# the header comes from bus1's own include directory, which holds nothing
# else: the system's kernel headers stay visible
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cflags=$(pkg-config --cflags bus1 | sed "s/ *$//")
[ "$cflags" = "-I$prefix/include/bus1" ] || fail "cflags: $cflags"
[ "$(cd "$prefix/include/bus1" && find . -type f)" = "./linux/bus1.h" ] || fail "other files in the include directory"
[ "$(pkg-config --variable=preload bus1)" = "$prefix/lib/bus1/libbus1_preload.so" ] || fail "preload variable"
[ "$(pkg-config --modversion bus1)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/preload/Cargo.toml")" ] || fail "version"

# a client built from outside the source tree, with only those cflags
mkdir "$tmp/src"
cp "$root/demo/demo.c" "$tmp/src/client.c"
cd "$tmp/src"
# shellcheck disable=SC2086
cc $cflags -o client client.c || fail "building the client"
# shellcheck disable=SC2086
cc $cflags -M client.c | tr -s ' \\' '\n' | grep -qx "$prefix/include/bus1/linux/bus1.h" || fail "the installed header was not used"
# the same header gives the final ABI's layout with BUS1_ABI_FINAL
cat >"$tmp/final.c" <<'C'
#include <linux/bus1.h>
_Static_assert(sizeof(struct bus1_cmd_recv) == 72, "the final RECV");
_Static_assert(BUS1_CMD_RECV == 0xC0489650u, "the final RECV number");
int main(void) { return 0; }
C
# shellcheck disable=SC2086
cc $cflags -DBUS1_ABI_FINAL -o "$tmp/final" "$tmp/final.c" || fail "the final ABI from the installed header"

# bus1-run through a link in PATH, from another directory; the client
# changes directory before it starts, and still finds the shim
mkdir "$tmp/bin" "$tmp/elsewhere"
ln -s "$prefix/bin/bus1-run" "$tmp/bin/b1"
cd "$tmp/elsewhere"
export BUS1_DOMAIN=$tmp/domain
PATH=$tmp/bin:$PATH b1 sh -c "cd / && exec '$tmp/src/client'" >"$tmp/demo.out" 2>&1 || { cat "$tmp/demo.out"; fail "the client under bus1-run"; }
cat "$tmp/demo.out"
grep -q "received NODE_DESTROY" "$tmp/demo.out" || fail "the client did not get through"
preload=$(PATH=$tmp/bin:$PATH b1 sh -c 'cd / && printf %s "$LD_PRELOAD"')
[ "$preload" = "$prefix/lib/bus1/libbus1_preload.so" ] || fail "LD_PRELOAD is $preload"

# the client left nothing behind: no domain for bus1ctl to show
status=0
"$prefix/bin/bus1ctl" status >/dev/null 2>&1 || status=$?
[ $status -eq 3 ] || fail "a domain is left after the client: status $status"

# bus1ctl, installed, sees a domain in use ($BUS1_DOMAIN, which the client
# above left empty: a shell under bus1-run holds a peer on descriptor 3)
# (bus1ctl itself runs without the shim, which would show its inherited
# peer descriptor as the device)
PATH=$tmp/bin:$PATH b1 sh -c "exec 3<>/dev/bus1 && exec env -u LD_PRELOAD '$prefix/bin/bus1ctl' --json status" >"$tmp/status.json" ||
    { cat "$tmp/status.json"; fail "bus1ctl status"; }
grep -q "\"domain\": \"$BUS1_DOMAIN\"" "$tmp/status.json" || fail "bus1ctl looked elsewhere"
grep -q '"serial": 1,' "$tmp/status.json" || fail "the shell's peer is not listed"
tr -d ' \n' <"$tmp/status.json" | grep -q '"pids":\[[0-9]' || fail "nobody holds the shell's peer"
# the shell's process ended by exec, which leaves its peer to be torn down
# later: gc does it at once, and then removes the unused domain's memory
"$prefix/bin/bus1ctl" --json gc >"$tmp/gc.json" || fail "bus1ctl gc"
tr -d ' \n' <"$tmp/gc.json" | grep -q '"peers_torn_down":1,.*"memory_removed":true' || { cat "$tmp/gc.json"; fail "gc"; }
status=0
"$prefix/bin/bus1ctl" status >/dev/null 2>&1 || status=$?
[ $status -eq 3 ] || fail "a domain is left after gc: status $status"
[ "$(ls "$BUS1_DOMAIN")" = memory ] || [ -z "$(ls "$BUS1_DOMAIN")" ] || fail "files left: $(ls "$BUS1_DOMAIN")"

# uninstall removes every file, and bus1's own directories
make -s -C "$root" uninstall PREFIX="$prefix" >"$tmp/uninstall.log" 2>&1 || { cat "$tmp/uninstall.log"; fail "make uninstall"; }
left=$(find "$prefix" ! -type d)
[ -z "$left" ] || fail "left after uninstall: $left"
left=$(find "$prefix" -name '*bus1*')
[ -z "$left" ] || fail "left after uninstall: $left"

# a staged install names PREFIX, not the staging directory
stage=$tmp/stage
make -s -C "$root" install DESTDIR="$stage" PREFIX=/opt/bus1 >"$tmp/stage.log" 2>&1 || { cat "$tmp/stage.log"; fail "staged install"; }
grep -qx 'prefix=/opt/bus1' "$stage/opt/bus1/lib/pkgconfig/bus1.pc" || fail "staged bus1.pc"
grep -qx 'installed_shim="/opt/bus1/lib/bus1/libbus1_preload.so"' "$stage/opt/bus1/bin/bus1-run" || fail "staged bus1-run"
! grep -rq "$stage" "$stage/opt/bus1/lib/pkgconfig" "$stage/opt/bus1/bin/bus1-run" || fail "the staging directory leaked into a file"
make -s -C "$root" uninstall DESTDIR="$stage" PREFIX=/opt/bus1 >/dev/null 2>&1 || fail "staged uninstall"
left=$(find "$stage" ! -type d)
[ -z "$left" ] || fail "left after staged uninstall: $left"
echo "installed, used and uninstalled"
