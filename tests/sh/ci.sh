#!/usr/bin/env bash
# .ci/run's decisions (BUS1_CI_PLAN=1: print the plan, change nothing):
# Rust from rustup when cargo is missing or older than the workspace's
# rust-version, never the distribution's; Debian packages for what is
# missing, installed only as root and never through sudo; then exactly
# `make test`.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
setpriv=$(command -v setpriv)
chmod 755 "$tmp"

! grep -qw sudo "$root/.ci/run" || fail ".ci/run mentions sudo"
grep -q '^exec make test$' "$root/.ci/run" || fail ".ci/run does not end in make test"
grep -qx '`make test`' <(grep -o '`make test`' "$root/README.md" | head -n1) || fail "README has no make test"

# A PATH with only the named tools (and a fake cargo of version $1).
setup() {
    local dir=$tmp/bin.$RANDOM v=$1
    shift
    mkdir "$dir"
    for t in bash sed dirname id "$@"; do
        ln -s "$(command -v "$t")" "$dir/$t"
    done
    if [ "$v" != none ]; then
        printf '#!/bin/sh\necho "cargo %s (0000000 2020-01-01)"\n' "$v" >"$dir/cargo"
        chmod +x "$dir/cargo"
    fi
    chmod -R a+rX "$dir"
    echo "$dir"
}
all_tools="cc make pkg-config groff curl"
plan() { HOME=$tmp/home PATH=$1 BUS1_CI_PLAN=1 bash "$root/.ci/run" 2>&1; }

need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$root/Cargo.toml")
out=$(plan "$(setup 1.63.0 $all_tools)")
echo "$out"
grep -q "installing Rust stable with rustup (cargo is cargo 1.63.0 .*needs $need)" <<<"$out" || fail "old cargo kept"
! grep -qE '^\.ci/run: installing ([a-z0-9.+-]+ )*(cargo|rustc)( |$)' <<<"$out" || fail "the distribution's Rust installed"
grep -q "running make test" <<<"$out" || fail "no make test"

out=$(plan "$(setup none $all_tools)")
grep -q "installing Rust stable with rustup (cargo is missing" <<<"$out" || fail "no cargo: $out"

for v in "$need.0" 1.100.0 2.0.0; do
    out=$(plan "$(setup "$v" $all_tools)")
    ! grep -q rustup <<<"$out" || fail "cargo $v replaced: $out"
    [ "$out" = ".ci/run: running make test" ] || fail "cargo $v: $out"
done

# missing tools: installed as root, named (and nothing run) otherwise
bin=$(setup "$need.0" make groff)
out=$(plan "$bin")
grep -q "installing gcc libc6-dev pkg-config curl" <<<"$out" && fail "curl wanted without rustup"
grep -q "installing gcc libc6-dev pkg-config$" <<<"$out" || fail "root: $out"
status=0
out=$(HOME=$tmp/home PATH=$bin BUS1_CI_PLAN=1 "$setpriv" --reuid=65534 --regid=65534 --clear-groups bash "$root/.ci/run" 2>&1) || status=$?
[ $status -eq 1 ] || fail "not root: status $status: $out"
grep -q "missing: gcc libc6-dev pkg-config; install them" <<<"$out" || fail "not root: $out"
! grep -q "running make test" <<<"$out" || fail "not root: ran make test"

# rustup needs curl
out=$(plan "$(setup 1.63.0 cc make pkg-config groff)")
grep -q "installing curl ca-certificates" <<<"$out" || fail "no curl for rustup: $out"
echo "CI plans as expected"
