#!/usr/bin/env bash
# Turn built packages into package repositories, signed with a throw-away
# test key:
#   target/repo/apt  an apt repository (apt-ftparchive), suite "sd-updater",
#                    component "main", InRelease and Release.gpg signed;
#                    the public key as sd-updater-test.gpg for signed-by=
#   target/repo/rpm  a dnf/yum repository (createrepo_c), repomd.xml signed
#                    (detached, armored); the public key as RPM-GPG-KEY-sd-updater-test
#
# Usage: packaging/build-repo.sh [PACKAGES_DIR [OUT_DIR]]
#   PACKAGES_DIR  where the .deb and .rpm files are (default target/packages)
#   OUT_DIR       replaced by the repositories (default target/repo)
#
# Every run makes a new key in a temporary GNUPGHOME and forgets it: the
# repositories are for tests and local use, not for publishing.  Runs as
# root on Debian and installs apt-utils, gnupg and createrepo-c if missing.
set -euo pipefail

# shellcheck source=packaging/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pkg_dir=${1:-$repo_root/target/packages}
out=${2:-$repo_root/target/repo}
suite=sd-updater
key_name="sd-updater test repository <sd-updater-test@localhost>"

apt_ensure apt-utils gnupg createrepo-c

shopt -s nullglob
debs=("$pkg_dir"/*.deb)
rpms=("$pkg_dir"/*.rpm)
shopt -u nullglob
[ "${#debs[@]}" -gt 0 ] || [ "${#rpms[@]}" -gt 0 ] || die "no .deb or .rpm in $pkg_dir"

gnupghome=$(mktemp -d)
trap 'gpgconf --homedir "$gnupghome" --kill all 2>/dev/null || true; rm -rf "$gnupghome"' EXIT
export GNUPGHOME=$gnupghome
gpg --batch --quiet --passphrase '' --quick-gen-key "$key_name" ed25519 sign 1d 2>/dev/null
fpr=$(gpg --batch --with-colons --list-secret-keys | awk -F: '$1 == "fpr" { print $10; exit }')
[ -n "$fpr" ] || die "gpg made no key"
sign() { gpg --batch --quiet --yes --local-user "$fpr" "$@"; }

rm -rf "$out.new"
mkdir -p "$out.new"

# --- apt ----------------------------------------------------------------------
if [ "${#debs[@]}" -gt 0 ]; then
	apt_dir=$out.new/apt
	mkdir -p "$apt_dir/pool/main"
	cp "${debs[@]}" "$apt_dir/pool/main/"
	mapfile -t arches < <(for d in "${debs[@]}"; do dpkg-deb -f "$d" Architecture; done | sort -u)
	for a in "${arches[@]}"; do
		[ "$a" = all ] && continue
		mkdir -p "$apt_dir/dists/$suite/main/binary-$a"
		(cd "$apt_dir" && apt-ftparchive --arch "$a" packages pool/main) \
			>"$apt_dir/dists/$suite/main/binary-$a/Packages"
		gzip -9nk "$apt_dir/dists/$suite/main/binary-$a/Packages"
	done
	apt-ftparchive \
		-o APT::FTPArchive::Release::Origin=sd-updater-test \
		-o APT::FTPArchive::Release::Label=sd-updater-test \
		-o APT::FTPArchive::Release::Suite="$suite" \
		-o APT::FTPArchive::Release::Codename="$suite" \
		-o APT::FTPArchive::Release::Architectures="${arches[*]}" \
		-o APT::FTPArchive::Release::Components=main \
		release "$apt_dir/dists/$suite" >"$apt_dir/Release.tmp"
	mv "$apt_dir/Release.tmp" "$apt_dir/dists/$suite/Release"
	sign --clearsign -o "$apt_dir/dists/$suite/InRelease" "$apt_dir/dists/$suite/Release"
	sign --detach-sign -o "$apt_dir/dists/$suite/Release.gpg" "$apt_dir/dists/$suite/Release"
	gpg --batch --export "$fpr" >"$apt_dir/sd-updater-test.gpg"
fi

# --- rpm ----------------------------------------------------------------------
if [ "${#rpms[@]}" -gt 0 ]; then
	rpm_dir=$out.new/rpm
	mkdir -p "$rpm_dir"
	cp "${rpms[@]}" "$rpm_dir/"
	createrepo_c --quiet "$rpm_dir"
	sign --detach-sign --armor -o "$rpm_dir/repodata/repomd.xml.asc" "$rpm_dir/repodata/repomd.xml"
	gpg --batch --armor --export "$fpr" >"$rpm_dir/RPM-GPG-KEY-sd-updater-test"
fi

chmod -R a+rX "$out.new"
rm -rf "$out"
mv "$out.new" "$out"

cat <<EOF
Repositories in $out (signed by key $fpr, valid for one day):
EOF
if [ "${#debs[@]}" -gt 0 ]; then
	cat <<EOF

apt (Debian): copy or serve $out/apt, then on the machine
  install -m 0644 $out/apt/sd-updater-test.gpg /usr/share/keyrings/sd-updater-test.gpg
  echo 'deb [signed-by=/usr/share/keyrings/sd-updater-test.gpg] file:$out/apt $suite main' \\
    >/etc/apt/sources.list.d/sd-updater-test.list
  apt-get update && apt-get install sd-updater
(an http:// URL of a web server serving $out/apt works the same way)
EOF
fi
if [ "${#rpms[@]}" -gt 0 ]; then
	cat <<EOF

dnf (Fedora/RHEL): the packages themselves are not signed, the metadata is
  cat >/etc/yum.repos.d/sd-updater-test.repo <<REPO
  [sd-updater-test]
  name=sd-updater test repository
  baseurl=file://$out/rpm
  repo_gpgcheck=1
  gpgcheck=0
  gpgkey=file://$out/rpm/RPM-GPG-KEY-sd-updater-test
  REPO
  dnf install sd-updater
EOF
fi
