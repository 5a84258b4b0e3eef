#!/usr/bin/env bash
# Tests of the .deb and .rpm packages: both build, lintian and
# rpmlint pass, "systemd-analyze verify" of the installed units prints nothing
# on stderr, the units' security exposure is within its threshold (with and
# without packaging/examples/strict.conf), sd-updater@.service keeps the
# sandbox of sd-updater.service, the payloads hold every file at its FHS
# path, and packaging/build-repo.sh makes signed repositories of them.
#
# Runs as root on Debian 12 with the Rust toolchain from rustup, and installs
# the Debian packages it needs (apt-get update first).  The .deb is installed,
# checked and purged inside a private mount namespace whose /etc, /usr and
# /var are throw-away overlays, so the machine itself is left unchanged.
#
# Prints one "ok - ..." or "not ok - ..." line per check, then
# "N passed, M failed"; exits 1 if anything failed.
#
# Environment:
#   SD_UPDATER_MAX_EXPOSURE  highest accepted "systemd-analyze security"
#                            exposure (default 2.0: the floor on systemd 252
#                            for a unit that starts as root and drops
#                            privileges itself)
#   SD_UPDATER_MAX_STRICT_EXPOSURE  the same with strict.conf (default 1.1)
set -euo pipefail

# shellcheck source=packaging/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

max_exposure=${SD_UPDATER_MAX_EXPOSURE:-2.0}
unit_src=$repo_root/systemd/sd-updater.service
template_src=$repo_root/systemd/sd-updater@.service

passed=0
failed=0
ok() {
	printf 'ok - %s\n' "$1"
	passed=$((passed + 1))
}
not_ok() {
	printf 'not ok - %s\n' "$1"
	failed=$((failed + 1))
	if [ -n "${2:-}" ] && [ -s "$2" ]; then
		tail -n 25 "$2" | sed 's/^/#   /'
	fi
}
# check DESCRIPTION COMMAND...: run COMMAND, ok if it succeeds.
check() {
	local desc=$1
	shift
	if "$@" >"$work/out" 2>&1; then
		ok "$desc"
	else
		not_ok "$desc" "$work/out"
	fi
}
# in_list FILE LINE: FILE has exactly LINE as one of its lines.
in_list() { grep -qxF -- "$2" "$1"; }
# output_is EXPECTED COMMAND...: COMMAND prints exactly EXPECTED.
output_is() {
	local got
	got=$("${@:2}") || return 1
	[ "$got" = "$1" ] || { printf 'got: %s\n' "$got"; return 1; }
}
# quiet_success COMMAND...: COMMAND succeeds and writes nothing to stderr.
quiet_success() {
	local rc=0
	"$@" 2>"$work/stderr" || rc=$?
	cat "$work/stderr"
	[ "$rc" -eq 0 ] && [ ! -s "$work/stderr" ]
}

# ---------------------------------------------------------------------------
# Inside the sandbox: a private mount namespace with overlays on /etc, /usr
# and /var.  Prints its own ok/not ok lines, which the caller counts.
# ---------------------------------------------------------------------------
sandbox_overlays() {
	local scratch d
	scratch=$(mktemp -d)
	mount -t tmpfs sd-updater-test "$scratch"
	for d in etc usr var; do
		mkdir -p "$scratch/$d.upper" "$scratch/$d.work"
		mount -t overlay sd-updater-test \
			-o "lowerdir=/$d,upperdir=$scratch/$d.upper,workdir=$scratch/$d.work" "/$d"
	done
	# Never touch the real system: stop unless all three are overlays.
	for d in etc usr var; do
		[ "$(findmnt -n -o FSTYPE --mountpoint "/$d")" = overlay ] || die "/$d is not an overlay"
	done
}

sandbox_deb() {
	local deb=$1 default=/etc/default/sd-updater unit var value
	sandbox_overlays
	check "deb: dpkg -i installs the package" dpkg -i "$deb"
	check "deb: postinst created the system user (home /var/lib/sd-updater, no login shell)" \
		bash -c 'getent passwd sd-updater | grep -qE "^sd-updater:x:[0-9]+:[0-9]+:[^:]*:/var/lib/sd-updater:/usr/sbin/nologin$"'
	check "deb: postinst created the sd-updater group" getent group sd-updater
	check "deb: postinst created /var/lib/sd-updater owned by sd-updater:sd-updater, mode 755" \
		output_is "sd-updater:sd-updater 755" stat -c '%U:%G %a' /var/lib/sd-updater
	check "deb: postinst enabled the unit (multi-user.target.wants)" \
		test -L /etc/systemd/system/multi-user.target.wants/sd-updater.service
	unit=$(dpkg -L sd-updater 2>/dev/null | grep '/systemd/system/sd-updater\.service$' || true)
	check "deb: systemd-analyze verify sd-updater.service (installed at $unit): exit 0, empty stderr" \
		quiet_success systemd-analyze verify sd-updater.service
	check "deb: systemd-analyze verify sd-updater@example.service: exit 0, empty stderr" \
		quiet_success systemd-analyze verify sd-updater@example.service
	check "deb: the template unit is not enabled by itself" \
		bash -c "! ls /etc/systemd/system/multi-user.target.wants/ | grep -q '^sd-updater@'"
	check "deb: /etc/sd-updater/example.env sets nothing (every line blank or a comment)" \
		bash -c "! grep -vE '^(#.*)?$' /etc/sd-updater/example.env"
	check "deb: man -w sd-updater finds the man page in section 8" \
		output_is /usr/share/man/man8/sd-updater.8.gz man -w 8 sd-updater
	check "deb: /usr/bin/sd-updater --version is the package version" \
		output_is "sd-updater $(dpkg-query -W -f='${Version}' sd-updater 2>/dev/null)" /usr/bin/sd-updater --version
	# The conffile lists every variable the installed agent has (the names
	# its --check-config prints), commented out, with the agent's default:
	# uncommenting all of them changes nothing in --check-config.
	local settings=() config_vars=()
	if env -i /usr/bin/sd-updater --check-config >"$work/effective" 2>"$work/err"; then
		mapfile -t config_vars < <(sed -n 's/=.*//p' "$work/effective")
		[ "${#config_vars[@]}" -gt 0 ] ||
			not_ok "deb: sd-updater --check-config names the variables" "$work/effective"
		for var in "${config_vars[@]}"; do
			# (An empty value is a default too: METRICS_FILE, SOURCE_NAME.)
			if grep -q "^#$var=" "$default"; then
				value=$(sed -n "s/^#$var=//p" "$default" | head -n 1)
				settings+=("$var=$value")
			else
				not_ok "deb: $default lists #$var=<default>"
			fi
		done
		check "deb: $default's commented values are the agent's defaults (--check-config)" \
			output_is "$(cat "$work/effective")" env -i "${settings[@]}" /usr/bin/sd-updater --check-config
	else
		not_ok "deb: sd-updater --check-config succeeds without configuration" "$work/err"
	fi
	check "deb: $default sets nothing (every line blank or a comment)" \
		bash -c "! grep -vE '^(#.*)?$' '$default'"
	echo '[]' >/var/lib/sd-updater/targets.json
	check "deb: dpkg --purge succeeds" dpkg --purge sd-updater
	check "deb: purge removed /var/lib/sd-updater" test ! -e /var/lib/sd-updater
	check "deb: purge removed $default" test ! -e "$default"
	check "deb: purge removed /etc/sd-updater (no instance files in it)" test ! -e /etc/sd-updater
	check "deb: purge removed the enable symlink" \
		test ! -e /etc/systemd/system/multi-user.target.wants/sd-updater.service
}

sandbox_rpm() {
	local rpm=$1
	sandbox_overlays
	check "rpm: payload unpacks onto the system (rpm2cpio | cpio)" \
		bash -c "cd / && rpm2cpio '$rpm' | cpio -idm --quiet"
	check "rpm: systemd-analyze verify /usr/lib/systemd/system/sd-updater.service: exit 0, empty stderr" \
		quiet_success systemd-analyze verify /usr/lib/systemd/system/sd-updater.service
	check "rpm: systemd-analyze verify sd-updater@example.service: exit 0, empty stderr" \
		quiet_success systemd-analyze verify sd-updater@example.service
}

# in_sandbox deb|rpm PACKAGE: run sandbox_deb/sandbox_rpm in a private mount
# namespace and count the checks it reports.
in_sandbox() {
	local line rc=0
	unshare --mount --propagation private "$0" --sandbox "$1" "$2" \
		>"$work/sandbox" 2>"$work/sandbox-err" || rc=$?
	while IFS= read -r line; do
		case $line in
		"ok - "*) ok "${line#ok - }" ;;
		"not ok - "*) not_ok "${line#not ok - }" ;;
		*) printf '%s\n' "$line" ;;
		esac
	done <"$work/sandbox"
	[ "$rc" -eq 0 ] || not_ok "$1: sandbox exited with status $rc" "$work/sandbox-err"
}

if [ "${1:-}" = --sandbox ]; then
	work=$(mktemp -d)
	"sandbox_$2" "$3"
	exit 0
fi

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
start=$SECONDS
[ "$(id -u)" -eq 0 ] || die "run as root (installs build tools, uses mount namespaces)"
apt_ensure build-essential debhelper dpkg-dev lintian rpm rpmlint cpio man-db groff-base \
	mandoc systemd procps util-linux shellcheck apt-utils gnupg gpgv createrepo-c
use_rust_toolchain

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
logs=$repo_root/target/packages-test
mkdir -p "$logs"
cd "$repo_root"

version=$(crate_version)
deb=$repo_root/target/packages/sd-updater_${version}_$(dpkg-architecture -q DEB_HOST_ARCH).deb
rpm_release=$(rpmspec -q --srpm --qf '%{RELEASE}' --define "_sourcedir $repo_root/packaging" \
	rpm/sd-updater.spec)
rpm=$repo_root/target/packages/sd-updater-$version-$rpm_release.$(rpm --eval '%{_arch}').rpm
# The packages must come from this run's builds, not from an earlier one.
touch "$work/stamp"
sleep 1

# --- Builds -----------------------------------------------------------------
deb_built=0 rpm_built=0
if packaging/build-deb.sh >"$logs/build-deb.log" 2>&1 && [ "$deb" -nt "$work/stamp" ]; then
	deb_built=1
	ok "deb builds: target/packages/${deb##*/}"
else
	not_ok "deb builds: target/packages/${deb##*/} (log: target/packages-test/build-deb.log)" "$logs/build-deb.log"
fi
if packaging/build-rpm.sh >"$logs/build-rpm.log" 2>&1 && [ "$rpm" -nt "$work/stamp" ]; then
	rpm_built=1
	ok "rpm builds: target/packages/${rpm##*/}"
else
	not_ok "rpm builds: target/packages/${rpm##*/} (log: target/packages-test/build-rpm.log)" "$logs/build-rpm.log"
fi

# --- Static checks of the shared files ----------------------------------------
# exposure_of UNIT_FILE: "systemd-analyze security" of a unit file.
exposure_of() {
	systemd-analyze security --offline=true "$1" 2>&1 |
		sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p'
}
# check_exposure NAME UNIT_FILE MAX
check_exposure() {
	local exposure
	exposure=$(exposure_of "$2")
	if [ -z "$exposure" ]; then
		not_ok "systemd-analyze security $1: no exposure level found"
	elif awk -v e="$exposure" -v m="$3" 'BEGIN { exit !(e <= m) }'; then
		ok "systemd-analyze security --offline=true $1: exposure $exposure <= $3"
	else
		not_ok "systemd-analyze security --offline=true $1: exposure $exposure <= $3"
	fi
}
check_exposure sd-updater.service "$unit_src" "$max_exposure"
# (The template under an instance name: offline analysis needs one.)
mkdir -p "$work/units"
cp "$template_src" "$work/units/sd-updater@example.service"
check_exposure sd-updater@.service "$work/units/sd-updater@example.service" "$max_exposure"
# The strict drop-in, appended to the unit (offline analysis reads no
# drop-in directory): the e2e suite measures the installed one as well.
{
	cat "$unit_src"
	sed -n '/^\[Service\]/,$p' packaging/examples/strict.conf
} >"$work/units/sd-updater.service"
check_exposure "sd-updater.service with packaging/examples/strict.conf" \
	"$work/units/sd-updater.service" "${SD_UPDATER_MAX_STRICT_EXPOSURE:-1.1}"

# hardening_lines UNIT_FILE: the unit's [Service] settings, without the ones
# that are meant to differ between the plain unit and the template (which
# files it reads and writes).
hardening_lines() {
	awk '/^\[/ { s = $0; next } s == "[Service]" && /^[A-Za-z]/' "$1" |
		grep -vE '^(Environment|EnvironmentFile)='
}
check "sd-updater@.service has the same [Service] settings as sd-updater.service (but for its files)" \
	diff <(hardening_lines "$unit_src") <(hardening_lines "$template_src")
check "sd-updater@.service: its [Unit] and [Install] sections match sd-updater.service's (but Description)" \
	diff <(awk '/^\[/ { s = $0 } s != "[Service]"' "$unit_src" | grep -vE '^(#|Description=)') \
	<(awk '/^\[/ { s = $0 } s != "[Service]"' "$template_src" | grep -vE '^(#|Description=)')
check "man page: groff -man -ww reports no warnings" \
	bash -c "[ -z \"\$(groff -man -Tutf8 -ww -z packaging/sd-updater.8 2>&1)\" ]"
check "shellcheck: packaging/*.sh debian/sd-updater.{postinst,prerm,postrm}" \
	shellcheck -x packaging/build-deb.sh packaging/build-rpm.sh packaging/build-repo.sh \
	packaging/test-packages.sh packaging/common.sh debian/sd-updater.postinst \
	debian/sd-updater.prerm debian/sd-updater.postrm
check "man page: mandoc -Tlint reports nothing" \
	bash -c "[ -z \"\$(mandoc -Tlint packaging/sd-updater.8 2>&1)\" ]"

# --- Debian package -----------------------------------------------------------
if [ "$deb_built" = 1 ]; then
	check "lintian --fail-on error,warning" \
		lintian --fail-on error,warning "$deb"
	dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's,^\./,/,' >"$work/deb-files"
	if in_list "$work/deb-files" /lib/systemd/system/sd-updater.service; then
		deb_unit=/lib/systemd/system/sd-updater.service # debhelper < 13.15 (Debian 12)
	else
		deb_unit=/usr/lib/systemd/system/sd-updater.service
	fi
	for f in /usr/bin/sd-updater "$deb_unit" "${deb_unit%.service}@.service" \
		/usr/lib/sysusers.d/sd-updater.conf /etc/sd-updater/example.env \
		/usr/share/doc/sd-updater/examples/strict.conf \
		/usr/lib/tmpfiles.d/sd-updater.conf /etc/default/sd-updater \
		/usr/share/man/man8/sd-updater.8.gz /usr/share/doc/sd-updater/prometheus-example.yml \
		/usr/share/doc/sd-updater/copyright; do
		check "deb payload: $f" in_list "$work/deb-files" "$f"
	done
	# dh_compress gzips documentation larger than 4 kB.
	check "deb payload: /usr/share/doc/sd-updater/README.md(.gz)" \
		grep -qxE '/usr/share/doc/sd-updater/README\.md(\.gz)?' "$work/deb-files"
	dpkg-deb -c "$deb" | awk '$6 == "./usr/bin/sd-updater" { print $1, $2 }' >"$work/deb-bin"
	check "deb payload: /usr/bin/sd-updater is root:root 0755" \
		in_list "$work/deb-bin" "-rwxr-xr-x root/root"
	dpkg-deb -I "$deb" conffiles >"$work/conffiles" 2>&1 || true
	check "deb conffiles: /etc/default/sd-updater" in_list "$work/conffiles" /etc/default/sd-updater
	check "deb conffiles: /etc/sd-updater/example.env" in_list "$work/conffiles" /etc/sd-updater/example.env
	dpkg-deb -x "$deb" "$work/deb-root"
	check "deb unit is systemd/sd-updater.service unchanged" cmp "$unit_src" "$work/deb-root$deb_unit"
	check "deb template unit is systemd/sd-updater@.service unchanged" \
		cmp "$template_src" "$work/deb-root${deb_unit%.service}@.service"
	check "deb examples/strict.conf is packaging/examples/strict.conf" \
		cmp packaging/examples/strict.conf "$work/deb-root/usr/share/doc/sd-updater/examples/strict.conf"
	check "deb depends on procps (/bin/kill for ExecReload)" \
		bash -c "dpkg-deb -f '$deb' Depends | tr ',' '\n' | grep -qx ' *procps'"
	in_sandbox deb "$deb"
else
	not_ok "deb checks skipped: no package"
fi

# --- RPM package --------------------------------------------------------------
if [ "$rpm_built" = 1 ]; then
	if rpmlint -c rpm/rpmlint.toml -r rpm/sd-updater.rpmlintrc "$rpm" >"$work/out" 2>&1; then
		ok "rpmlint: $(grep -o '[0-9]* errors, [0-9]* warnings' "$work/out" || echo passed)"
		grep -E '^[^ ]+: [EW]: ' "$work/out" | sed 's/^/#   /' || true
	else
		not_ok "rpmlint" "$work/out"
	fi
	rpm -qp --qf '[%{FILENAMES}\t%{FILEUSERNAME}:%{FILEGROUPNAME}\t%{FILEMODES:perms}\t%{FILEFLAGS:fflags}\n]' \
		"$rpm" >"$work/rpm-files"
	cut -f1 "$work/rpm-files" >"$work/rpm-paths"
	for f in /usr/bin/sd-updater /usr/lib/systemd/system/sd-updater.service \
		/usr/lib/systemd/system/sd-updater@.service /usr/share/doc/sd-updater/examples/strict.conf \
		/usr/lib/sysusers.d/sd-updater.conf /usr/lib/tmpfiles.d/sd-updater.conf \
		/etc/sysconfig/sd-updater /usr/share/doc/sd-updater/README.md \
		/usr/share/doc/sd-updater/prometheus-example.yml /usr/share/licenses/sd-updater/LICENSE; do
		check "rpm payload: $f" in_list "$work/rpm-paths" "$f"
	done
	check "rpm payload: /usr/share/man/man8/sd-updater.8.gz" \
		in_list "$work/rpm-paths" /usr/share/man/man8/sd-updater.8.gz
	check "rpm payload: /usr/bin/sd-updater is root:root -rwxr-xr-x" \
		grep -qxP '/usr/bin/sd-updater\troot:root\t-rwxr-xr-x\t' "$work/rpm-files"
	check "rpm payload: /var/lib/sd-updater is a directory owned by sd-updater:sd-updater" \
		grep -qxP '/var/lib/sd-updater\tsd-updater:sd-updater\tdrwxr-xr-x\t' "$work/rpm-files"
	check "rpm: /etc/sysconfig/sd-updater is %config(noreplace)" \
		grep -qxP '/etc/sysconfig/sd-updater\troot:root\t-rw-r--r--\tcn' "$work/rpm-files"
	check "rpm: /etc/sd-updater/example.env is %config(noreplace)" \
		grep -qxP '/etc/sd-updater/example.env\troot:root\t-rw-r--r--\tcn' "$work/rpm-files"
	check "rpm: /etc/sd-updater is a directory of the package" \
		grep -qP '^/etc/sd-updater\troot:root\tdrwxr-xr-x\t' "$work/rpm-files"
	rpm2cpio "$rpm" | (mkdir -p "$work/rpm-root" && cd "$work/rpm-root" && cpio -idm --quiet)
	check "rpm unit is systemd/sd-updater.service unchanged" \
		cmp "$unit_src" "$work/rpm-root/usr/lib/systemd/system/sd-updater.service"
	check "rpm template unit is systemd/sd-updater@.service unchanged" \
		cmp "$template_src" "$work/rpm-root/usr/lib/systemd/system/sd-updater@.service"
	check "rpm and deb ship the same examples (packaging/examples)" \
		diff <(find "$work/rpm-root/usr/share/doc/sd-updater/examples" -type f -printf '%f\n' | sort) \
		<(find "$work/deb-root/usr/share/doc/sd-updater/examples" -type f -printf '%f\n' | sed 's/\.gz$//' | sort)
	check "rpm and deb ship the same example instance file" \
		cmp "$work/rpm-root/etc/sd-updater/example.env" "$work/deb-root/etc/sd-updater/example.env"
	check "rpm and deb ship the same configuration file" \
		cmp "$work/rpm-root/etc/sysconfig/sd-updater" "$work/deb-root/etc/default/sd-updater"
	rpm -qp --scripts "$rpm" >"$work/scripts"
	check "rpm scriptlets: no unexpanded macro left" bash -c "! grep -n '%' '$work/scripts'"
	check "rpm %pre creates the user with systemd-sysusers or useradd" \
		grep -qE 'systemd-sysusers|useradd' "$work/scripts"
	check "rpm %post runs systemd-tmpfiles --create sd-updater.conf" \
		grep -q 'systemd-tmpfiles --create sd-updater.conf' "$work/scripts"
	check "rpm %post/%preun/%postun handle sd-updater.service (preset, disable, restart)" \
		bash -c "grep -qE 'install-system-units sd-updater.service|preset sd-updater.service' '$work/scripts' &&
			grep -qE 'remove-system-units sd-updater.service|disable --now sd-updater.service' '$work/scripts' &&
			grep -qE 'mark-restart-system-units sd-updater.service|try-restart sd-updater.service' '$work/scripts'"
	check "rpm requires /usr/bin/kill (ExecReload)" \
		bash -c "rpm -qp --requires '$rpm' | grep -qx '/usr/bin/kill'"
	in_sandbox rpm "$rpm"
else
	not_ok "rpm checks skipped: no package"
fi

# --- Repositories -------------------------------------------------------------
if [ "$deb_built" = 1 ] && [ "$rpm_built" = 1 ]; then
	mkdir -p "$work/pkgs"
	cp "$deb" "$rpm" "$work/pkgs/"
	if packaging/build-repo.sh "$work/pkgs" "$work/repo" >"$logs/build-repo.log" 2>&1; then
		ok "build-repo.sh builds the apt and dnf repositories"
		rel=$work/repo/apt/dists/sd-updater
		check "apt repository: InRelease is signed by the exported key (gpgv)" \
			gpgv --keyring "$work/repo/apt/sd-updater-test.gpg" "$rel/InRelease"
		check "apt repository: Release.gpg is signed by the exported key (gpgv)" \
			gpgv --keyring "$work/repo/apt/sd-updater-test.gpg" "$rel/Release.gpg" "$rel/Release"
		check "apt repository: Packages lists sd-updater $version" \
			grep -qx "Version: $version" "$rel/main/binary-$(dpkg-architecture -q DEB_HOST_ARCH)/Packages"
		check "dnf repository: repodata/repomd.xml and its signature" \
			bash -c "test -s '$work/repo/rpm/repodata/repomd.xml' && gpg --homedir '$work' --batch -q --import '$work/repo/rpm/RPM-GPG-KEY-sd-updater-test' 2>/dev/null && gpg --homedir '$work' --batch -q --verify '$work/repo/rpm/repodata/repomd.xml.asc' '$work/repo/rpm/repodata/repomd.xml'"
	else
		not_ok "build-repo.sh builds the apt and dnf repositories (log: target/packages-test/build-repo.log)" "$logs/build-repo.log"
	fi
fi

printf '# took %ds\n' "$((SECONDS - start))"
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
