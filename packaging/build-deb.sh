#!/usr/bin/env bash
# Build the Debian package from this checkout:
#   target/packages/sd-updater_<version>_<arch>.deb
# Runs as root on Debian 12 with the Rust toolchain from rustup; installs the
# Debian build tools it needs.  The source is copied to target/deb-build/ and
# built there with dpkg-buildpackage (debian/rules runs cargo build --release
# --locked, sharing the checkout's target/ directory).
#
# Environment: DEB_BUILD_OPTIONS is passed on, with "nocheck" added unless
# SD_UPDATER_DEB_CHECK=1 (cargo test runs in .ci/run already).
# SD_UPDATER_VERSION_SUFFIX (say "+test1") builds a higher, test-only
# version from a staged copy; SD_UPDATER_OUT_DIR puts the package elsewhere
# than target/packages (see packaging/common.sh).
set -euo pipefail

# shellcheck source=packaging/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

apt_ensure build-essential debhelper dpkg-dev
use_rust_toolchain

cd "$repo_root"
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
[ "$version" = "$(crate_version)" ] ||
	die "debian/changelog version $version differs from Cargo.toml's $(crate_version)"
arch=$(dpkg-architecture -q DEB_HOST_ARCH)

lock_builds
build_dir=$repo_root/target/deb-build
base_version=$version
version=$version$version_suffix
src_dir=$build_dir/sd-updater-$version
rm -rf "$build_dir"
stage_source "$src_dir"
if [ -n "$version_suffix" ]; then
	bump_staged_version "$src_dir" "$version"
	# A changelog entry of its own, on top of the real ones.
	{
		printf 'sd-updater (%s) unstable; urgency=medium\n\n' "$version"
		printf '  * Test-only rebuild of %s (SD_UPDATER_VERSION_SUFFIX).\n\n' "$base_version"
		printf ' -- %s  %s\n\n' "$(sed -n 's/^ -- \(.*>\)  .*/\1/p' debian/changelog | head -n 1)" \
			"$(date -R)"
		cat debian/changelog
	} >"$src_dir/debian/changelog"
fi

options=${DEB_BUILD_OPTIONS:-}
if [ "${SD_UPDATER_DEB_CHECK:-0}" != 1 ]; then
	options="nocheck${options:+ $options}"
fi

log "building sd-updater $version for $arch"
(
	cd "$src_dir"
	CARGO_TARGET_DIR=$repo_root/target/deb-cargo DEB_BUILD_OPTIONS=$options \
		dpkg-buildpackage --build=binary --no-sign
)

deb=sd-updater_${version}_${arch}.deb
[ -f "$build_dir/$deb" ] || die "dpkg-buildpackage did not produce $deb"
publish "$build_dir/$deb"
