#!/usr/bin/env bash
# Build the RPM package from this checkout:
#   target/packages/sd-updater-<version>-<release>.<arch>.rpm
# Runs as root on Debian 12 with the Rust toolchain from rustup; installs rpm
# with apt.  rpmbuild runs rpm/sd-updater.spec in target/rpm-build/, and its
# %build runs cargo build --release --locked in target/rpm-cargo, its own
# cargo target dir: rpm and dpkg set different CFLAGS and paths, and a
# shared one would make each build invalidate the other.
# SD_UPDATER_VERSION_SUFFIX and SD_UPDATER_OUT_DIR: as for build-deb.sh.
set -euo pipefail

# shellcheck source=packaging/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

apt_ensure build-essential rpm
use_rust_toolchain

cd "$repo_root"
spec=rpm/sd-updater.spec
# (_sourcedir: %pre reads Source1, packaging/sd-updater.sysusers, when parsed.)
version=$(rpmspec -q --srpm --qf '%{VERSION}' --define "_sourcedir $repo_root/packaging" "$spec")
[ "$version" = "$(crate_version)" ] ||
	die "$spec version $version differs from Cargo.toml's $(crate_version)"

lock_builds
top=$repo_root/target/rpm-build
rm -rf "$top"
mkdir -p "$top/SOURCES" "$top/SPECS"
base_version=$version
version=$version$version_suffix
stage_source "$top/stage/sd-updater-$version"
cp "$spec" "$top/SPECS/"
if [ -n "$version_suffix" ]; then
	bump_staged_version "$top/stage/sd-updater-$version" "$version"
	sed -i "s/^\(Version: *\)$base_version\$/\1$version/" "$top/SPECS/sd-updater.spec"
fi
tar -C "$top/stage" -czf "$top/SOURCES/sd-updater-$version.tar.gz" "sd-updater-$version"
cp packaging/sd-updater.sysusers "$top/SOURCES/"

# --nodeps: Debian's rpm database is empty, so the BuildRequires (which are
# for Fedora/RHEL) cannot be checked; the tools come from apt and rustup.
# __brp_compress: Debian's brp-compress is a bash script that rpm runs with
# /bin/sh (dash), where it fails and leaves the man page uncompressed.
log "building sd-updater $version"
CARGO_TARGET_DIR=$repo_root/target/rpm-cargo rpmbuild -bb --nodeps \
	--define "_topdir $top" \
	--define "__brp_compress bash %{_rpmconfigdir}/brp-compress %{?_prefix}" \
	"$top/SPECS/sd-updater.spec"

found=0
for rpm in "$top"/RPMS/*/sd-updater-"$version"-*.rpm; do
	[ -f "$rpm" ] || continue
	publish "$rpm"
	found=1
done
[ "$found" = 1 ] || die "rpmbuild did not produce a package"
