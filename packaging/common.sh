# shellcheck shell=bash
# Helpers shared by build-deb.sh, build-rpm.sh and test-packages.sh.
# Sourced, not run.  Expects bash with "set -euo pipefail".

# The checkout this file belongs to.
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# apt_ensure PKG...: install the Debian packages that are missing (as root,
# non-interactively).  Runs "apt-get update" first, and only when something
# is missing, so that a second run needs no network.
apt_ensure() {
	local pkg missing=()
	for pkg in "$@"; do
		if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
			missing+=("$pkg")
		fi
	done
	[ "${#missing[@]}" -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}); run as root to install them"
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Wait for another apt/dpkg run (a parallel test suite) instead of failing.
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# lock_builds: hold target/.packaging.lock until the script exits, so that
# two package builds of this checkout (say, this script and the end-to-end
# suite) do not share target/deb-build or target/rpm-build at the same time.
lock_builds() {
	mkdir -p "$repo_root/target"
	exec 9>"$repo_root/target/.packaging.lock"
	flock 9
}

# Where publish puts the packages: target/packages, or SD_UPDATER_OUT_DIR
# (the end-to-end suite keeps its test-only versions apart there).
out_dir=${SD_UPDATER_OUT_DIR:-$repo_root/target/packages}

# Test-only versions: SD_UPDATER_VERSION_SUFFIX (say "+test1") is appended
# to the version of the staged copy that is built, never to the checkout's.
version_suffix=${SD_UPDATER_VERSION_SUFFIX:-}
case $version_suffix in
'' | [+~]*) ;;
*) die "SD_UPDATER_VERSION_SUFFIX must start with + or ~ (got: $version_suffix)" ;;
esac
case $version_suffix in
*[!A-Za-z0-9.+~]*) die "SD_UPDATER_VERSION_SUFFIX may hold only letters, digits, '.', '+' and '~'" ;;
esac

# publish FILE: copy FILE into the output directory atomically.
publish() {
	local dest=$out_dir/${1##*/}
	mkdir -p "$out_dir"
	cp "$1" "$dest.tmp.$$"
	mv -f "$dest.tmp.$$" "$dest"
	log "wrote $dest"
}

# bump_staged_version DIR NEW: set the crate's version in the staged copy
# DIR (Cargo.toml and Cargo.lock, so that --locked still holds and the
# binary's --version says NEW).  For SD_UPDATER_VERSION_SUFFIX only.
bump_staged_version() {
	local dir=$1 new=$2 old
	old=$(crate_version)
	sed -i "/^\[package\]/,/^\[/s/^version *= *\"$old\"/version = \"$new\"/" "$dir/Cargo.toml"
	sed -i "/^name = \"sd-updater\"\$/{n;s/^version = \"$old\"/version = \"$new\"/}" "$dir/Cargo.lock"
	grep -q "^version = \"$new\"" "$dir/Cargo.toml" || die "could not set version $new in $dir/Cargo.toml"
	grep -A1 '^name = "sd-updater"$' "$dir/Cargo.lock" | grep -q "^version = \"$new\"" ||
		die "could not set version $new in $dir/Cargo.lock"
}

# use_rust_toolchain: put the rustup toolchain first in PATH and check it.
# Debian 12's own rustc is too old for this crate (rust-version 1.85).
use_rust_toolchain() {
	local cargo_home=${CARGO_HOME:-$HOME/.cargo}
	if [ -x "$cargo_home/bin/cargo" ]; then
		PATH=$cargo_home/bin:$PATH
		export PATH
	fi
	command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
	log "using $(cargo --version)"
}

# crate_version: the version in Cargo.toml's [package] section.
crate_version() {
	sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$repo_root/Cargo.toml" | head -n 1
}

# stage_source DIR: copy the checkout to DIR, keeping modification times so
# that cargo can reuse target/. In a git checkout only tracked files (as they
# are in the work tree) go in, so untracked scratch such as a fuzz corpus
# never ends up in a package; elsewhere everything but target/ and .git.
stage_source() {
	local dir=$1
	rm -rf "$dir"
	mkdir -p "$dir"
	if git -C "$repo_root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		(cd "$repo_root" && git ls-files -z --cached | tar --null -T - -cf -) | tar -C "$dir" -xf -
	else
		tar -C "$repo_root" --exclude=./target --exclude=./.git -cf - . | tar -C "$dir" -xf -
	fi
}
