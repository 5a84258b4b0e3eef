#!/usr/bin/env bash
# End-to-end tests of sd-updater: the built .deb installed into a
# Debian system booted with real systemd (systemd-nspawn), driven with
# systemctl and journalctl, read by a real Prometheus; and the .rpm installed
# the same way with rpm.
#
# Usage: tests/e2e/run.sh [--dist bookworm|trixie|all] [--no-build] [--keep]
#                         [--only "N N ..."]
#   --dist      the Debian release to boot (default bookworm, systemd 252;
#               trixie has systemd 257; "all" runs the suite on both, side
#               by side, logs in target/e2e/DIST/)
#   --no-build  use target/packages/ as it is instead of running
#               packaging/build-deb.sh and packaging/build-rpm.sh first
#               (packages older than the sources are refused)
#   --keep      keep the work directory and the (stopped) container roots,
#               in a tmpfs still mounted at WORK/ct, for debugging
#   --only      run only these scenarios, for example --only "5 6" (1 is
#               added when needed: it boots the container of 2-10 and 12-16)
#
# Runs as root on Debian 12 and installs what it needs with apt (debootstrap,
# systemd-container, prometheus, python3, jq, curl, gcc, zstd, and apt-utils,
# gnupg and createrepo-c for packaging/build-repo.sh); the containers get
# prometheus-node-exporter and acl from their own release.  The minimal root
# file system is built once with debootstrap from the mirror the host's apt
# uses and cached in /var/cache/sd-updater-e2e/ (E2E_CACHE_DIR); delete the
# tarball to rebuild it.  E2E_MIRROR overrides the mirror.  The containers'
# apt keeps its downloads in the same directory.  Container roots live in a
# tmpfs (E2E_TMPFS=0: on disk under /var/tmp), unmounted at the end.
#
# Prints "1..N", then one "ok N - name" or "not ok N - name: reason" line per
# scenario, then "P passed, F failed"; exits 1 if anything failed.  Each
# scenario's trace, with the unit's journal after a failure, is kept in
# target/e2e/.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$E2E_DIR/lib.sh"

DISTS=(bookworm)
BUILD=1
ONLY=""
LOG_DIR=""
while [ $# -gt 0 ]; do
	case $1 in
	--dist)
		[ $# -ge 2 ] || die "--dist needs a value"
		case $2 in
		all) DISTS=(bookworm trixie) ;;
		bookworm | trixie) DISTS=("$2") ;;
		*) die "unknown --dist $2 (bookworm, trixie or all)" ;;
		esac
		shift 2
		;;
	--no-build) BUILD=0; shift ;;
	--log-dir)
		# (internal: where a child run of --dist all keeps its logs)
		[ $# -ge 2 ] || die "--log-dir needs a value"
		LOG_DIR=$2
		shift 2
		;;
	--keep) E2E_KEEP=1; shift ;;
	--only)
		[ $# -ge 2 ] || die "--only needs a value"
		ONLY=" $2 "
		shift 2
		;;
	-h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
export E2E_KEEP=${E2E_KEEP:-0}

[ "$(id -u)" -eq 0 ] || die "run as root (containers, apt)"

CACHE_DIR=${E2E_CACHE_DIR:-/var/cache/sd-updater-e2e}
PYTHON=/usr/bin/python3 # Debian's, not whatever python3 is first in PATH
TARGETS=/var/lib/sd-updater/targets.json
CONF=/etc/default/sd-updater
if [ -z "$LOG_DIR" ]; then
	LOG_DIR=$REPO/target/e2e
	rm -rf "$LOG_DIR"
fi
mkdir -p "$LOG_DIR"
WORK=$(mktemp -d /var/tmp/sd-updater-e2e.XXXXXX)
mkdir -p "$WORK/pids" "$WORK/ct"
export WORK LOG_DIR CACHE_DIR PYTHON

# Teardown, whatever happened: every helper process (the background
# preparation of container b among them), then every container, each by the
# PID recorded when it was started.
teardown() {
	local d f
	for f in "$WORK"/pids/*.pid; do
		case $f in
		*/run-*.pid)
			# A child run of --dist all: it tears its own containers
			# down on SIGTERM, once its current command returns.
			stop_spawned "$(basename "$f" .pid)" 120
			;;
		*) [ -f "$f" ] && stop_spawned "$(basename "$f" .pid)" ;;
		esac
	done
	for d in "$WORK"/ct/*/; do
		[ -d "$d" ] && ct_stop "$(basename "$d")"
	done
	if [ -e "$WORK/ct.tmpfs" ] && [ "$E2E_KEEP" != 1 ]; then
		umount "$WORK/ct" || log "cannot unmount $WORK/ct"
		rm -f "$WORK/ct.tmpfs"
	fi
	if [ "$E2E_KEEP" = 1 ]; then
		log "kept $WORK (if $WORK/ct is a tmpfs, umount it when done)"
	else
		rm -rf "$WORK"
	fi
}
trap teardown EXIT
trap 'log "error: line $LINENO: $BASH_COMMAND failed"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

SUITE_START=$(now_ms)

# ---------------------------------------------------------------------------
# Host preparation
# ---------------------------------------------------------------------------

apt_ensure debootstrap systemd-container prometheus python3 jq curl gcc libc6-dev procps util-linux zstd \
	apt-utils gnupg createrepo-c

if [ "$BUILD" = 1 ]; then
	log "building the packages (packaging/build-deb.sh, packaging/build-rpm.sh)"
	"$REPO/packaging/build-deb.sh" >"$LOG_DIR/build-deb.log" 2>&1 ||
		die "packaging/build-deb.sh failed; see $LOG_DIR/build-deb.log"
	"$REPO/packaging/build-rpm.sh" >"$LOG_DIR/build-rpm.log" 2>&1 ||
		die "packaging/build-rpm.sh failed; see $LOG_DIR/build-rpm.log"
fi
VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$REPO/Cargo.toml" | head -n 1)
DEB=$REPO/target/packages/sd-updater_${VERSION}_$(dpkg --print-architecture).deb
RPM=$(find "$REPO/target/packages" -maxdepth 1 -name "sd-updater-$VERSION-*.$(uname -m).rpm" | sort | tail -n 1)
[ -f "$DEB" ] || die "no $DEB (run packaging/build-deb.sh, or drop --no-build)"
[ -n "$RPM" ] || die "no sd-updater-$VERSION-*.rpm in target/packages (run packaging/build-rpm.sh)"
if [ "$BUILD" = 0 ]; then
	# --no-build must not test packages older than the sources.
	newer=$(
		cd "$REPO" || exit 0
		find src systemd debian packaging rpm Cargo.toml Cargo.lock \
			\( -newer "$DEB" -o -newer "$RPM" \) -print 2>/dev/null | head -n 3 | tr '\n' ' '
	) || true
	[ -z "$newer" ] || die "target/packages is older than $newer; rebuild them (drop --no-build)"
fi
# Scenario 16 upgrades to a higher, test-only version of the same sources
# (SD_UPDATER_VERSION_SUFFIX), built apart in target/e2e-packages.
DEB_NEXT=$REPO/target/e2e-packages/sd-updater_${VERSION}+e2e1_$(dpkg --print-architecture).deb
if [ -z "$ONLY" ] || [[ " $ONLY " == *" 16 "* ]]; then
	if [ ! -f "$DEB_NEXT" ] || [ "$DEB" -nt "$DEB_NEXT" ]; then
		log "building the test-only version ${VERSION}+e2e1 (packaging/build-deb.sh)"
		SD_UPDATER_VERSION_SUFFIX=+e2e1 SD_UPDATER_OUT_DIR=$REPO/target/e2e-packages \
			"$REPO/packaging/build-deb.sh" >"$LOG_DIR/build-deb-next.log" 2>&1 ||
			die "packaging/build-deb.sh with SD_UPDATER_VERSION_SUFFIX=+e2e1 failed; see $LOG_DIR/build-deb-next.log"
	fi
fi
export DEB_NEXT
log "testing ${DEB#"$REPO"/} and ${RPM#"$REPO"/}"


# ---------------------------------------------------------------------------
# Helpers about the agent in container $CT
# ---------------------------------------------------------------------------

# configure [VAR=value...]: /etc/default/sd-updater becomes the packaged file
# plus the test inventory, a long interval (so that only a reload or a
# restart refreshes, unless a scenario says otherwise) and the given values.
configure() { conf_text "$@" | in_ct tee "$CONF" >/dev/null; }

conf_text() {
	local kv
	cat "$WORK/default.orig"
	printf '\n# Set by the sd-updater e2e suite.\n'
	printf 'INVENTORY_URL=%s\n' "$(inv_url)"
	printf 'UPDATE_INTERVAL=1h\n'
	for kv in "$@"; do printf '%s\n' "$kv"; done
}

main_pid() { unit_prop MainPID; }
is_active() { [ "$(unit_prop ActiveState)" = active ]; }
targets_file() { printf '%s%s\n' "$(ct_root)" "$TARGETS"; }

# targets: the sorted targets of the file, one a line (empty if unreadable).
targets() { jq -r '.[].targets[]' "$(targets_file)" 2>/dev/null | sort; }
target_count() { targets | grep -c . || true; }

# expect_sensors N [FIRST]: the targets that inv_sensors N FIRST gives.
expect_sensors() { jq -nr --argjson n "$1" --argjson f "${2:-0}" 'range($f; $f + $n) | "sensor_\(.):9100"' | sort; }

# targets_are sensors N [FIRST] | targets_are list TARGET...: the file holds
# exactly those targets.  (Compared by checksum, which keeps the traces short.)
targets_are() {
	local want
	case $1 in
	sensors) want=$(expect_sensors "$2" "${3:-0}" | md5sum) ;;
	list) shift; want=$(printf '%s\n' "$@" | sort | md5sum) ;;
	esac
	[ "$(targets | md5sum)" = "$want" ]
}

# Conditions for wait_until, evaluated afresh on every poll.
state_is() { [ "$(unit_prop ActiveState)" = "$1" ]; }
status_matches() { unit_prop StatusText | grep -Eq "$1"; }
nrestarts_above() { [ "$(unit_prop NRestarts)" -gt "$1" ]; }

# spawn_failure SINCE_US [UNIT]: prints systemd's first message since SINCE_US
# saying it could not spawn the unit's process at all, before any exec: the
# executor race of systemd 257 here ("Failed to spawn executor"), or
# status=219/CGROUP (the process could not join the unit's cgroup, seen with
# systemd 252 and 257 here after "Failed to kill control group ...
# Input/output error").  Empty if there is none.
spawn_failure() {
	in_ct journalctl -u "${2:-sd-updater.service}" -o json --no-pager |
		jq -r -s --argjson s "$1" '[.[] | select((.__REALTIME_TIMESTAMP | tonumber) >= $s)
			| select(.MESSAGE | tostring | test("Failed to spawn executor|status=219/CGROUP"))
			| .MESSAGE | tostring] | first // empty'
}

# start_unit VERB [UNIT]: systemctl VERB UNIT (sd-updater.service), retried
# once when systemd itself could not spawn the process.  systemd 257 in this container sometimes fails
# a start right after a stop with "Failed to spawn executor: No such file or
# directory" (Result=resources), before the agent's binary is even executed;
# that is systemd's race, not the agent's, and a second start works.
start_unit() {
	local since unit=${2:-sd-updater.service} spawn_failed
	since=$(now_us)
	in_ct systemctl "$1" "$unit" && return 0
	spawn_failed=$(spawn_failure "$since" "$unit")
	[ -n "$spawn_failed" ] || return 1
	log "systemd could not spawn the process of $unit (not the agent): $spawn_failed; starting once more"
	in_ct systemctl reset-failed "$unit" || true
	sleep 0.5
	in_ct systemctl start "$unit"
}

# restart_agent: restarts the unit and waits until it is active again.
restart_agent() {
	start_unit restart || fail "systemctl restart sd-updater failed (the agent said: $(agent_said))"
	wait_until 10 is_active || fail "sd-updater not active after restart (ActiveState=$(unit_prop ActiveState); the agent said: $(agent_said))"
}

# now_us: the current time in microseconds, as the journal counts it (the
# container shares the host's clock).
now_us() { echo $(($(date +%s%N) / 1000)); }

# journal SINCE_US: the unit's journal entries (JSON, one a line) from SINCE_US
# on; the agent's own and systemd's about the unit.
journal() {
	in_ct journalctl -u sd-updater.service -o json --no-pager |
		jq -c --argjson s "$1" 'select((.__REALTIME_TIMESTAMP | tonumber) >= $s)'
}

# journal_has SINCE_US JQ_FILTER: some entry since SINCE_US matches the filter.
journal_has() {
	journal "$1" | jq -e -s "map(select($2)) | length > 0" >/dev/null
}

# journal_count SINCE_US JQ_FILTER: how many entries since SINCE_US match.
journal_count() { journal "$1" | jq -s "map(select($2)) | length"; }
journal_count_at_least() { [ "$(journal_count "$2" "$3")" -ge "$1" ]; }

agent_msg() { printf '.SYSLOG_IDENTIFIER == "sd-updater" and (.MESSAGE | tostring | test("%s"))' "$1"; }

# stat_in_ct PATH: "owner mode" of a path inside the container.
stat_in_ct() { in_ct stat -c '%U %a' "$1"; }

# pkg_status: dpkg's status of sd-updater in the container ("" if unknown).
pkg_status() { in_ct dpkg-query -W -f="\${Status}" sd-updater 2>/dev/null || true; }

# agent_ready N [FIRST]: the precondition of most scenarios, so that each can
# also run alone (--only): the package is installed with the suite's plain
# configuration, the agent is active, and the inventory and targets.json hold
# sensors FIRST .. FIRST+N-1.
agent_ready() {
	need_ct
	[ "$(pkg_status)" = "install ok installed" ] || fail "sd-updater is not installed (scenario 1 failed?)"
	[ -s "$WORK/default.orig" ] || in_ct cat "$CONF" >"$WORK/default.orig"
	inv_sensors "$1" "${2:-0}"
	if [ "$(in_ct cat "$CONF" | md5sum)" != "$(conf_text | md5sum)" ]; then
		configure
		restart_agent
	fi
	is_active || restart_agent
	if ! targets_are sensors "$1" "${2:-0}"; then
		in_ct systemctl reload sd-updater.service || fail "precondition: systemctl reload failed"
	fi
	wait_until 10 targets_are sensors "$1" "${2:-0}" ||
		fail "precondition: targets.json does not hold the $1 sensors ($(target_count) targets)"
}

# agent_said: the agent's last journal line, for failure messages.
agent_said() { in_ct journalctl -u sd-updater.service -t sd-updater -n 1 -o cat --no-pager 2>/dev/null || true; }

dump_diagnostics() {
	ct_running "$CT" || return 0
	echo "---- systemctl status sd-updater"
	in_ct systemctl status --no-pager --full sd-updater.service 2>&1 || true
	echo "---- journalctl -u sd-updater (last 80)"
	in_ct journalctl -u sd-updater.service --no-pager -n 80 -o short-precise 2>&1 || true
	echo "---- targets file"
	head -c 2000 "$(targets_file)" 2>&1 || true
}

# ---------------------------------------------------------------------------
# Scenarios.  Each runs in a subshell with "set -e"; fail ends it with a
# reason.  Container a carries scenarios 1-10 and 12-16, container b scenario 11.
# ---------------------------------------------------------------------------

s_install() {
	ct_create a "$DIST" || fail "cannot create the container root"
	ct_boot a || fail "the container did not boot"
	cp "$DEB" "$(ct_root)/opt/e2e/sd-updater.deb"
	in_ct apt-get update -qq || fail "apt-get update in the container failed"
	in_ct apt-get install -y /opt/e2e/sd-updater.deb ||
		fail "apt-get install -y sd-updater.deb failed on the minimal system"
	[ "$(pkg_status)" = "install ok installed" ] || fail "dpkg does not list sd-updater as installed: $(pkg_status)"
	in_ct getent passwd sd-updater >/dev/null || fail "no sd-updater user after install"
	in_ct getent group sd-updater >/dev/null || fail "no sd-updater group after install"
	local shell
	shell=$(in_ct getent passwd sd-updater | cut -d: -f7)
	case $shell in */nologin | /bin/false) ;; *) fail "sd-updater user has a login shell: $shell" ;; esac
	[ "$(in_ct systemctl is-enabled sd-updater.service)" = enabled ] ||
		fail "sd-updater.service is not enabled after install"
	wait_until 10 is_active ||
		fail "sd-updater.service is not active after install (ActiveState=$(unit_prop ActiveState); the agent said: $(agent_said))"
	[ "$(stat_in_ct /var/lib/sd-updater)" = "sd-updater 755" ] ||
		fail "/var/lib/sd-updater is $(stat_in_ct /var/lib/sd-updater), expected 'sd-updater 755'"
	in_ct cat "$CONF" >"$WORK/default.orig" || fail "no $CONF after install"
}

s_configure() {
	need_ct
	inv_sensors 100
	configure
	restart_agent
	wait_until 10 targets_are sensors 100 ||
		fail "targets.json does not hold the 100 sensors (it has $(target_count) targets)"
	local active
	active=$(in_ct systemctl is-active sd-updater.service) || true
	[ "$active" = active ] || fail "systemctl is-active says '$active'"
	local owner_mode
	owner_mode=$(stat_in_ct "$TARGETS")
	[ "$owner_mode" = "sd-updater 644" ] || fail "targets.json is '$owner_mode', expected 'sd-updater 644'"
	jq -e '.[0].labels == {"__metrics_path__": "/metrics", "job": "sensors", "environment": "production"}' \
		"$(targets_file)" >/dev/null || fail "targets.json has unexpected labels: $(jq -c '.[0].labels' "$(targets_file)")"
	# No temp file is left next to it.
	local left
	left=$(in_ct find /var/lib/sd-updater -mindepth 1 ! -name targets.json ! -name '*.prom')
	[ -z "$left" ] || fail "stray files in /var/lib/sd-updater: $left"
}

# The hardening lines of the unit and the probe checks that prove each.
# Columns: directive, probe check (tests/e2e/probe.c), its result under the
# unit's sandbox, and its result without the sandbox (the control, which shows
# that the check can fail).  "*" in the control column: the container itself
# (systemd-nspawn's own capability set, seccomp filter and read-only /sys)
# already refuses it, so only the sandboxed result and systemd's view of the
# property (systemctl show) say something there.
HARDENING_CHECKS='
NoNewPrivileges         nnp           1                 0
# control: the bounding set of the container
CapabilityBoundingSet   capbnd        00000000000000c0  *
ProtectSystem           write_usr     EROFS             ok
ProtectSystem           write_etc     EROFS             ok
ProtectSystem           write_var     EROFS             ok
ProtectSystem           rw_root       ro                rw
ReadWritePaths          rw_state      rw                rw
ProtectHome             home_marker   EACCES|ENOENT     ok
PrivateTmp              tmp_marker    ENOENT            ok
PrivateTmp              vartmp_marker ENOENT            ok
PrivateDevices          dev_marker    ENOENT            ok
PrivateMounts           mnt_ns        differs           same
PrivateIPC              ipc_ns        differs           same
ProtectHostname         uts_ns        differs           same
ProtectProc             proc_pid1     ENOENT            ok
ProcSubset              proc_cpuinfo  ENOENT            ok
# control: nspawn mounts /sys and /sys/fs/cgroup read-only
ProtectKernelTunables   rw_sys        ro                *
ProtectControlGroups    rw_cgroup     ro                *
# control: nspawn drops CAP_SYS_MODULE and CAP_SYSLOG
ProtectKernelModules    finit_module  EPERM             *
ProtectKernelLogs       syslog        EPERM             *
ProtectKernelLogs       dev_kmsg      ENOENT|EACCES     *
# control: nspawn filters adjtimex without CAP_SYS_TIME
ProtectClock            adjtimex      EPERM             *
RestrictAddressFamilies af_unix       ok                ok
RestrictAddressFamilies af_inet       ok                ok
RestrictAddressFamilies af_inet6      ok                ok
RestrictAddressFamilies af_netlink    EAFNOSUPPORT      ok
RestrictAddressFamilies af_packet     EAFNOSUPPORT      ok
RestrictNamespaces      unshare_user  EPERM             ok
RestrictNamespaces      unshare_net   EPERM             ok
RestrictRealtime        sched_fifo    EPERM             ok
RestrictSUIDSGID        chmod_suid    EPERM             ok
LockPersonality         personality   EPERM             ok
# seccomp answers EPERM; systemd 257 uses PR_SET_MDWE of the kernel: EACCES
MemoryDenyWriteExecute  mmap_wx       EPERM|EACCES      ok
MemoryDenyWriteExecute  mprotect_x    EPERM|EACCES      ok
SystemCallArchitectures int80         EPERM|signal31    ok
SystemCallFilter        setpriority   EPERM             ok
SystemCallFilter        setrlimit     EPERM             ok
SystemCallFilter        fchown        EPERM             ok
SystemCallFilter        setuid_drop   ok                ok
SystemCallErrorNumber   setpriority   EPERM             ok
# control: the default umask is 0022 too
UMask                   umask         0022              *
'
# [Service] lines about the life cycle and resource limits, not the sandbox.
LIFECYCLE_KEYS=" Type NotifyAccess ExecStartPre ExecStart ExecReload WatchdogSec Restart RestartSec RestartPreventExitStatus TimeoutStopSec Environment EnvironmentFile MemoryMax "

# matches VALUE ALTERNATIVES: VALUE is one of the |-separated alternatives.
matches() {
	local alt alts
	IFS='|' read -ra alts <<<"$2"
	for alt in "${alts[@]}"; do
		if [ "$alt" = '*' ] || [ "$alt" = "$1" ]; then return 0; fi
	done
	return 1
}

s_privileges() {
	agent_ready 100
	# Every finding is collected, so that one run shows all of them.
	local problems=()
	problem() {
		problems+=("$*")
		log "PROBLEM: $*"
	}
	local pid status uid gid
	pid=$(main_pid)
	[ "$pid" -gt 0 ] || fail "no main PID"
	status=$(in_ct cat "/proc/$pid/status")
	uid=$(in_ct id -u sd-updater)
	gid=$(in_ct id -g sd-updater)
	field() { printf '%s\n' "$status" | sed -n "s/^$1:[[:space:]]*//p" | tr -s ' \t' ' '; }
	[ "$(field Uid)" = "$uid $uid $uid $uid" ] || problem "main PID $pid has Uid '$(field Uid)', expected sd-updater ($uid) four times"
	[ "$(field Gid)" = "$gid $gid $gid $gid" ] || problem "main PID $pid has Gid '$(field Gid)', expected sd-updater ($gid) four times"
	case " $(field Groups) " in *" 0 "*) problem "main PID $pid is still in group 0: Groups '$(field Groups)'" ;; esac
	local cap
	for cap in CapInh CapPrm CapEff CapAmb; do
		[ "$(field "$cap")" = 0000000000000000 ] || problem "main PID $pid has $cap $(field "$cap"), expected none"
	done
	[ "$(field CapBnd)" = 00000000000000c0 ] ||
		problem "main PID $pid has CapBnd $(field CapBnd), expected CAP_SETUID and CAP_SETGID only (00000000000000c0)"
	[ "$(field NoNewPrivs)" = 1 ] || problem "main PID $pid has NoNewPrivs '$(field NoNewPrivs)', expected 1"
	[ "$(field Seccomp)" = 2 ] || problem "main PID $pid has Seccomp '$(field Seccomp)', expected 2 (filter)"
	# Its mounts: a read-only tree with the state directory writable, and a
	# /proc that shows only its own processes.
	local mounts
	mounts=$(in_ct cat "/proc/$pid/mountinfo")
	printf '%s\n' "$mounts" | awk '$5 == "/" { split($6, o, ","); if (o[1] == "ro") found = 1 } END { exit !found }' ||
		problem "the agent's / is not mounted read-only (ProtectSystem=strict)"
	printf '%s\n' "$mounts" | awk '$5 == "/var/lib/sd-updater" { split($6, o, ","); if (o[1] == "rw") found = 1 } END { exit !found }' ||
		problem "the agent's /var/lib/sd-updater is not a read-write mount (ReadWritePaths=)"
	printf '%s\n' "$mounts" | awk '$5 == "/proc" && /hidepid=invisible/ && /subset=pid/ { found = 1 } END { exit !found }' ||
		problem "the agent's /proc is not mounted with hidepid=invisible,subset=pid"
	local ns
	for ns in mnt ipc uts; do
		[ "$(in_ct readlink "/proc/$pid/ns/$ns")" != "$(in_ct readlink /proc/1/ns/$ns)" ] ||
			problem "the agent shares PID 1's $ns namespace"
	done

	# systemd accepts every line of the installed unit.
	local verify
	# (--man=no: minbase has no man; the packaging tests check the page.)
	verify=$(in_ct systemd-analyze verify --man=no sd-updater.service 2>&1 >/dev/null) ||
		problem "systemd-analyze verify sd-updater.service failed: $verify"
	[ -z "$verify" ] || problem "systemd-analyze verify sd-updater.service printed: $verify"

	# Every sandbox line of the installed unit must have a probe check.
	local fragment unit_keys key
	fragment=$(unit_prop FragmentPath)
	in_ct cat "$fragment" >"$WORK/unit.service"
	unit_keys=$(awk '/^\[/ { s = $0; next } s == "[Service]" && /^[A-Za-z]/ { sub(/=.*/, ""); print }' "$WORK/unit.service" | sort -u)
	for key in $unit_keys; do
		case $LIFECYCLE_KEYS in *" $key "*) continue ;; esac
		printf '%s\n' "$HARDENING_CHECKS" | awk -v k="$key" '$1 == k { f = 1 } END { exit !f }' ||
			problem "the unit's $key= line has no check in tests/e2e (add one to HARDENING_CHECKS)"
		# systemd took the line as written: a yes/no line shows the same
		# value, any other a non-empty one.
		local want got
		want=$(sed -n "s/^$key=//p" "$WORK/unit.service" | tail -n 1)
		got=$(unit_prop "$key")
		case $want in
		yes | true | on | 1) [ "$got" = yes ] || problem "systemctl show has $key=$got, the unit says $want" ;;
		no | false | off | 0) [ "$got" = no ] || problem "systemctl show has $key=$got, the unit says $want" ;;
		*) [ -n "$got" ] || problem "systemctl show has no value for $key (the unit says $want)" ;;
		esac
	done

	# The probe, under a copy of the unit's sandbox and without it.
	cp "$WORK/probe" "$(ct_root)/opt/e2e/probe"
	local args
	args="$(in_ct readlink /proc/1/ns/mnt) $(in_ct readlink /proc/1/ns/ipc) $(in_ct readlink /proc/1/ns/uts)"
	{
		printf '[Unit]\nDescription=sd-updater e2e sandbox probe\n\n[Service]\n'
		printf 'Type=oneshot\nExecStart=/opt/e2e/probe %s\nStandardOutput=truncate:/run/sd-e2e-sandboxed.out\n' "$args"
		awk -v skip="$LIFECYCLE_KEYS" '
			/^\[/ { s = $0; next }
			s != "[Service]" || !/^[A-Za-z]/ { next }
			{ k = $0; sub(/=.*/, "", k); if (index(skip, " " k " ") && k != "EnvironmentFile") next; print }
		' "$WORK/unit.service"
	} | in_ct tee /run/systemd/system/sd-e2e-sandboxed.service >/dev/null
	printf '[Unit]\nDescription=sd-updater e2e probe control\n\n[Service]\nType=oneshot\nExecStart=/opt/e2e/probe %s\nStandardOutput=truncate:/run/sd-e2e-control.out\n' "$args" |
		in_ct tee /run/systemd/system/sd-e2e-control.service >/dev/null
	in_ct sh -c 'touch /root/.sd-e2e-marker /tmp/.sd-e2e-marker /var/tmp/.sd-e2e-marker /dev/.sd-e2e-marker'
	in_ct systemctl daemon-reload
	in_ct systemctl start sd-e2e-sandboxed.service || fail "the sandboxed probe unit failed: $(in_ct systemctl status --no-pager sd-e2e-sandboxed.service | tail -n 5)"
	in_ct systemctl start sd-e2e-control.service || fail "the control probe unit failed"
	in_ct sh -c 'rm -f /root/.sd-e2e-marker /tmp/.sd-e2e-marker /var/tmp/.sd-e2e-marker /dev/.sd-e2e-marker'
	in_ct cat /run/sd-e2e-sandboxed.out >"$WORK/probe-sandboxed.out"
	in_ct cat /run/sd-e2e-control.out >"$WORK/probe-control.out"
	echo "---- probe results (sandboxed | control)"
	paste "$WORK/probe-sandboxed.out" "$WORK/probe-control.out"
	local directive check want_s want_c got_s got_c
	while read -r directive check want_s want_c; do
		case $directive in '' | '#'*) continue ;; esac
		grep -q "^$directive=" "$WORK/unit.service" || continue
		got_s=$(sed -n "s/^$check=//p" "$WORK/probe-sandboxed.out")
		got_c=$(sed -n "s/^$check=//p" "$WORK/probe-control.out")
		matches "$got_s" "$want_s" ||
			problem "$directive: $check is '${got_s:-missing}' under the unit's sandbox, expected $want_s"
		matches "$got_c" "$want_c" ||
			problem "$directive: $check is '${got_c:-missing}' without the sandbox, expected $want_c (so the check proves nothing)"
	done <<<"$HARDENING_CHECKS"
	in_ct rm -f /run/systemd/system/sd-e2e-sandboxed.service /run/systemd/system/sd-e2e-control.service
	in_ct systemctl daemon-reload

	# And the agent still works under all of it.
	inv_sensors 100 0
	local since
	since=$(now_us)
	in_ct systemctl reload sd-updater.service || fail "systemctl reload failed"
	wait_until 10 journal_has "$since" "$(agent_msg 'Successfully fetched 100 sensors|Targets unchanged .100 targets from 100 sensors')" ||
		fail "the agent did not fetch under its sandbox"
	is_active || fail "sd-updater is not active"
	if [ "${#problems[@]}" -gt 0 ]; then
		fail "$(printf '%s; ' "${problems[@]}" | sed 's/; $//')"
	fi
}

s_journal() {
	agent_ready 100
	# Two invalid entries and a duplicate on top of the 100 sensors, and a
	# password in the URL that must never reach the journal.
	inv_set "$(jq -nc '[range(100) | "sensor_\(.)"] + ["bad/name", "", "sensor_7"]')"
	local url
	url=$(inv_url | sed 's|^http://|http://e2e:s3cr3t-pw@|')
	configure "INVENTORY_URL=$url"
	local since
	since=$(now_us)
	restart_agent
	local written='.SYSLOG_IDENTIFIER == "sd-updater" and (.MESSAGE | test("^Successfully updated targets file|^Targets unchanged"))'
	wait_until 10 journal_has "$since" "$written" || fail "no write or unchanged entry in the journal after the restart"
	journal "$since" >"$WORK/journal.json"
	local agent
	agent=$(jq -c 'select(.SYSLOG_IDENTIFIER == "sd-updater")' "$WORK/journal.json")
	[ -n "$agent" ] || fail "no entries with SYSLOG_IDENTIFIER=sd-updater"
	printf '%s\n' "$agent" | jq -e -s 'all(._TRANSPORT == "journal")' >/dev/null ||
		fail "some agent entries did not come through the native journal protocol: $(printf '%s\n' "$agent" | jq -r 'select(._TRANSPORT != "journal") | ._TRANSPORT + ": " + (.MESSAGE | tostring)' | head -n 3)"
	printf '%s\n' "$agent" | jq -e -s 'all(.SYSLOG_PID == ._PID and (.PRIORITY | test("^[0-7]$")) and (.CODE_FILE | type == "string"))' >/dev/null ||
		fail "agent entries lack SYSLOG_PID/PRIORITY/CODE_FILE"
	entry() { printf '%s\n' "$agent" | jq -c "select(.MESSAGE | test(\"$1\"))" | tail -n 1; }
	local fetched wrote start
	start=$(entry '^Starting sd-updater')
	[ -n "$start" ] || fail "no 'Starting sd-updater' entry"
	printf '%s\n' "$start" | jq -e '.INVENTORY_URL | test("\\*\\*\\*@127.0.0.1")' >/dev/null ||
		fail "the start entry's INVENTORY_URL is not redacted: $(printf '%s\n' "$start" | jq -r .INVENTORY_URL)"
	# An unchanged cycle logs only its one line, with the fetch details.
	fetched=$(entry '^Successfully fetched|^Targets unchanged')
	[ -n "$fetched" ] || fail "no 'Successfully fetched' or 'Targets unchanged' entry"
	printf '%s\n' "$fetched" | jq -e '.SENSOR_COUNT == "103" and .ATTEMPT == "1" and (.DURATION_MS | test("^[0-9]+$")) and ((.INVENTORY_URL // "http://e2e:***@") | test("^http://e2e:\\*\\*\\*@"))' >/dev/null ||
		fail "the fetch entry has the wrong fields (want SENSOR_COUNT=103 ATTEMPT=1 DURATION_MS INVENTORY_URL redacted): $fetched"
	wrote=$(printf '%s\n' "$agent" | jq -c "select($written)" | tail -n 1)
	printf '%s\n' "$wrote" | jq -e '.TARGET_COUNT == "100" and .SENSOR_COUNT == "103" and .INVALID_COUNT == "2"
		and .ADDED == "0" and .REMOVED == "0" and (.CHANGED | test("^(true|false)$"))
		and .ATTEMPT == "1" and (.DURATION_MS | test("^[0-9]+$")) and .TARGETS_FILE == "/var/lib/sd-updater/targets.json"' >/dev/null ||
		fail "the write entry has the wrong fields (want TARGET_COUNT=100 SENSOR_COUNT=103 INVALID_COUNT=2 ADDED=0 REMOVED=0 CHANGED ATTEMPT DURATION_MS TARGETS_FILE): $wrote"
	printf '%s\n' "$agent" | jq -e -s 'map(select(.MESSAGE | test("^Dropping invalid sensor entry"))) | length == 2 and all(.ERROR | type == "string")' >/dev/null ||
		fail "expected two 'Dropping invalid sensor entry' entries with ERROR"
	if in_ct journalctl -u sd-updater.service -o json --no-pager | grep -q 's3cr3t-pw'; then
		fail "the inventory password appears in the journal"
	fi
	# STATUS= in systemctl status.
	local status_text
	status_text=$(unit_prop StatusText)
	printf '%s\n' "$status_text" | grep -Eq '^100 targets, updated' ||
		fail "StatusText is '$status_text', expected '100 targets, updated ...'"
	in_ct systemctl status --no-pager sd-updater.service | grep -Fq "Status: \"$status_text" ||
		in_ct systemctl status --no-pager sd-updater.service | grep -Eq 'Status: "100 targets, updated' ||
		fail "systemctl status does not show the agent's STATUS= text"
	if in_ct systemctl status --no-pager sd-updater.service | grep -q 's3cr3t-pw'; then
		fail "the inventory password appears in systemctl status"
	fi
	inv_sensors 100
	configure
	restart_agent
}

s_reload() {
	agent_ready 100
	local pid restarts
	pid=$(main_pid)
	restarts=$(unit_prop NRestarts)
	# Watch ActiveState the whole time: "reloading" is fine, anything else
	# (deactivating, failed, activating) is not.
	(
		set +x
		while :; do
			unit_prop ActiveState
			sleep 0.05
		done
	) >"$WORK/states" 2>/dev/null &
	local watcher=$!
	printf '%s\n' "$watcher" >"$WORK/pids/state-watcher.pid"
	inv_sensors 120 50
	local since
	since=$(now_us)
	in_ct systemctl reload sd-updater.service || fail "systemctl reload sd-updater failed"
	wait_until 5 targets_are sensors 120 50 ||
		fail "within 5 s of the reload targets.json does not hold the new list ($(target_count) targets)"
	wait_until 5 journal_has "$since" "$(agent_msg '^Received SIGHUP') and .SIGNAL == \"SIGHUP\"" ||
		fail "the journal does not show the forced refresh (Received SIGHUP, SIGNAL=SIGHUP)"
	wait_until 5 journal_has "$since" "$(agent_msg '^Successfully updated targets file') and .ADDED == \"70\" and .REMOVED == \"50\"" ||
		fail "no write entry with ADDED=70 REMOVED=50 after the reload"
	sleep 0.5
	stop_spawned state-watcher
	local bad
	bad=$(sort -u "$WORK/states" | grep -vxE 'active|reloading' || true)
	[ -z "$bad" ] || fail "the service left active during the reload: ActiveState was $(echo "$bad" | tr '\n' ' ')"
	[ "$(main_pid)" = "$pid" ] || fail "the main PID changed during the reload ($pid -> $(main_pid))"
	[ "$(unit_prop NRestarts)" = "$restarts" ] || fail "NRestarts changed during the reload"
	wait_until 5 status_matches '^120 targets, ' ||
		fail "STATUS= after the reload is '$(unit_prop StatusText)', expected '120 targets, ...'"
}

WATCHDOG_DROPIN=/etc/systemd/system/sd-updater.service.d/e2e-watchdog.conf

s_watchdog() {
	agent_ready 100
	in_ct mkdir -p "${WATCHDOG_DROPIN%/*}"
	printf '[Service]\nWatchdogSec=2s\n' | in_ct tee "$WATCHDOG_DROPIN" >/dev/null
	in_ct systemctl daemon-reload
	restart_agent
	[ "$(unit_prop WatchdogUSec)" = 2s ] || fail "the drop-in did not set WatchdogSec=2s (WatchdogUSec=$(unit_prop WatchdogUSec))"
	local pid restarts since
	pid=$(main_pid)
	restarts=$(unit_prop NRestarts)
	# A healthy agent keeps the watchdog happy.
	sleep 3
	if [ "$(main_pid)" != "$pid" ] || [ "$(unit_prop NRestarts)" != "$restarts" ]; then
		fail "the agent was restarted while healthy with WatchdogSec=2s (its pings do not arrive)"
	fi
	since=$(now_us)
	in_ct kill -STOP "$pid"
	wait_until 30 nrestarts_above "$restarts" ||
		fail "NRestarts stayed at $restarts for 30 s after freezing the agent"
	wait_until 5 journal_has "$since" '(.MESSAGE | tostring | test("[Ww]atchdog timeout"))' ||
		fail "systemd did not report a watchdog timeout"
	wait_until 15 is_active || fail "the agent did not come back (ActiveState=$(unit_prop ActiveState))"
	[ "$(main_pid)" != "$pid" ] || fail "the main PID did not change"
	in_ct test ! -d "/proc/$pid" || fail "the frozen process $pid is still there"
	wait_until 10 status_matches '^100 targets, updated' ||
		fail "the restarted agent is not healthy: STATUS='$(unit_prop StatusText)'"
	targets_are sensors 100 || fail "targets.json changed across the watchdog restart"
	in_ct rm -f "$WATCHDOG_DROPIN"
	in_ct systemctl daemon-reload
	restart_agent
}

s_outage() {
	agent_ready 100
	configure UPDATE_INTERVAL=2 RETRY_ATTEMPTS=2 RETRY_BACKOFF=0.2 HTTP_TIMEOUT=2
	restart_agent
	local before since pid
	before=$(stat -c '%i %Y %s' "$(targets_file)")$(sha256sum <"$(targets_file)")
	pid=$(main_pid)
	since=$(now_us)
	inv_stop
	# Two failed cycles at least, with retries.
	wait_until 15 journal_count_at_least 2 "$since" "$(agent_msg '^Failed to fetch inventory:')" ||
		fail "the journal does not show two failed cycles within 15 s of stopping the inventory"
	wait_until 5 journal_has "$since" "$(agent_msg '^Failed to fetch inventory from .*retrying in') and (.ERROR | type == \"string\") and .ATTEMPT == \"1\"" ||
		fail "no retry warning with its delay ('retrying in', ERROR, ATTEMPT)"
	wait_until 5 journal_has "$since" "$(agent_msg '^Failed to fetch inventory: .*next attempt at [0-9:]+ UTC') and .PRIORITY == \"3\" and (.ERROR | type == \"string\") and .ATTEMPT == \"3\"" ||
		fail "no failed-cycle error with its next attempt time (ERROR, ATTEMPT=3, PRIORITY=3)"
	is_active || fail "the service left active during the outage (ActiveState=$(unit_prop ActiveState))"
	[ "$(main_pid)" = "$pid" ] || fail "the agent was restarted during the outage"
	[ "$(stat -c '%i %Y %s' "$(targets_file)")$(sha256sum <"$(targets_file)")" = "$before" ] ||
		fail "targets.json changed during the outage"
	unit_prop StatusText | grep -q 'unreachable\|fail' ||
		fail "STATUS= does not report the outage: '$(unit_prop StatusText)'"
	# Back, with a different list: the next cycle picks it up on its own.
	inv_sensors 120 50
	since=$(now_us)
	inv_start || fail "the fake inventory did not restart"
	wait_until 10 targets_are sensors 120 50 || fail "no recovery within 10 s of restoring the inventory"
	wait_until 5 journal_has "$since" "$(agent_msg '^Successfully fetched 120 sensors')" || fail "no successful fetch in the journal after the recovery"
	wait_until 5 status_matches '^120 targets, updated' ||
		fail "STATUS= after the recovery is '$(unit_prop StatusText)'"
	[ "$(main_pid)" = "$pid" ] || fail "the agent was restarted during the outage"
	configure
	restart_agent
}

s_bad_config() {
	agent_ready 100
	local restarts since
	restarts=$(unit_prop NRestarts)
	configure UPDATE_INTERVAL=abc
	since=$(now_us)
	if in_ct systemctl restart sd-updater.service; then
		fail "systemctl restart succeeded with UPDATE_INTERVAL=abc"
	fi
	wait_until 10 state_is failed || fail "ActiveState is $(unit_prop ActiveState), expected failed"
	[ "$(unit_prop ExecMainStatus)" = 78 ] || fail "ExecMainStatus is $(unit_prop ExecMainStatus), expected 78"
	[ "$(unit_prop Result)" = exit-code ] || fail "Result is $(unit_prop Result), expected exit-code"
	# One automatic restart is systemd's, not the agent's, only when systemd
	# could not spawn the first process: the second one then exited 78.
	local spawn_failed
	if [ "$(unit_prop NRestarts)" != "$restarts" ]; then
		spawn_failed=$(spawn_failure "$since")
		if [ -z "$spawn_failed" ] || [ "$(unit_prop NRestarts)" != $((restarts + 1)) ]; then
			fail "NRestarts rose from $restarts to $(unit_prop NRestarts) before the unit failed (systemd's spawn failures: '${spawn_failed:-none}')"
		fi
		log "systemd could not spawn the first process (not the agent): $spawn_failed; counting restarts from $(unit_prop NRestarts)"
		restarts=$(unit_prop NRestarts)
	fi
	# No restart loop: still failed, and not restarted, after RestartSec.
	local restart_sec wait_s
	restart_sec=$(unit_prop RestartUSec)
	case $restart_sec in
	*ms) wait_s=1 ;;
	*min) wait_s=$((${restart_sec%min} * 60)) ;;
	*s) wait_s=${restart_sec%s} ;;
	*) fail "cannot read RestartUSec '$restart_sec'" ;;
	esac
	[[ $wait_s =~ ^[0-9]+$ ]] || fail "cannot read RestartUSec '$restart_sec'"
	sleep $((wait_s + 1))
	[ "$(unit_prop ActiveState)" = failed ] || fail "after RestartSec the unit is $(unit_prop ActiveState), not failed: it restarts"
	[ "$(unit_prop NRestarts)" = "$restarts" ] || fail "NRestarts rose from $restarts to $(unit_prop NRestarts): a restart loop"
	wait_until 5 journal_has "$since" '._SYSTEMD_UNIT == "sd-updater.service" and (.MESSAGE | tostring | test("UPDATE_INTERVAL"))' ||
		fail "no journal line of the unit names UPDATE_INTERVAL"
	log "journal: $(journal "$since" | jq -r 'select(.MESSAGE | tostring | test("UPDATE_INTERVAL")) | .MESSAGE' | head -n 1)"
	configure
	in_ct systemctl reset-failed sd-updater.service
	restart_agent
}

s_stop() {
	agent_ready 100
	local before
	before=$(sha256sum <"$(targets_file)")
	# Stop while a request hangs: the agent must not wait for it.
	rm -f "$WORK/inventory.json.hung"
	touch "$WORK/inventory.json.hang"
	# --no-block: systemctl reload waits for the agent's READY=1, which comes
	# only after the refresh, and this one hangs.
	in_ct systemctl reload --no-block sd-updater.service
	wait_until 5 test -e "$WORK/inventory.json.hung" || fail "the reload did not reach the inventory"
	local t0 ms since
	since=$(now_us)
	t0=$(now_ms)
	in_ct systemctl stop sd-updater.service || fail "systemctl stop failed"
	ms=$(($(now_ms) - t0))
	rm -f "$WORK/inventory.json.hang" "$WORK/inventory.json.hung"
	log "systemctl stop took $ms ms"
	[ "$(unit_prop ActiveState)" = inactive ] || fail "ActiveState after stop is $(unit_prop ActiveState)"
	[ "$(unit_prop Result)" = success ] || fail "Result after stop is $(unit_prop Result), expected success"
	[ "$(unit_prop ExecMainCode)/$(unit_prop ExecMainStatus)" = 1/0 ] ||
		fail "the agent did not exit 0 by itself (ExecMainCode=$(unit_prop ExecMainCode), ExecMainStatus=$(unit_prop ExecMainStatus))"
	[ "$ms" -lt 2000 ] || fail "systemctl stop took $ms ms while a request hung (expected under 2 s)"
	wait_until 5 journal_has "$since" "$(agent_msg '^Received SIGTERM, stopping') and .SIGNAL == \"SIGTERM\"" ||
		fail "the journal does not show the agent handling SIGTERM"
	local left
	left=$(in_ct find /var/lib/sd-updater -mindepth 1 ! -name targets.json ! -name '*.prom')
	[ -z "$left" ] || fail "files left in /var/lib/sd-updater after stop: $left"
	[ "$(sha256sum <"$(targets_file)")" = "$before" ] || fail "targets.json changed during the stop"
	start_unit start || fail "systemctl start after stop failed (the agent said: $(agent_said))"
	wait_until 10 is_active || fail "sd-updater not active after start"
}

s_upgrade_remove() {
	agent_ready 100
	local invocation conf_sum
	invocation=$(unit_prop InvocationID)
	conf_sum=$(in_ct sha256sum "$CONF")
	in_ct apt-get install -y --reinstall /opt/e2e/sd-updater.deb || fail "reinstalling the package failed"
	wait_until 10 is_active || fail "sd-updater not active after the upgrade"
	[ "$(unit_prop InvocationID)" != "$invocation" ] || fail "the agent was not restarted by the upgrade"
	[ "$(in_ct sha256sum "$CONF")" = "$conf_sum" ] || fail "the upgrade changed $CONF"
	in_ct sh -c "! ls $CONF.dpkg-* 2>/dev/null" || fail "the upgrade left $(in_ct sh -c "ls $CONF.dpkg-*")"
	wait_until 10 status_matches '^100 targets, updated' || fail "the upgraded agent is not healthy: $(unit_prop StatusText)"

	in_ct apt-get remove -y sd-updater || fail "apt-get remove failed"
	[ "$(unit_prop ActiveState)" != active ] || fail "sd-updater is still active after apt-get remove"
	if in_ct sh -c 'cat /proc/[0-9]*/comm 2>/dev/null' | grep -qx sd-updater; then
		fail "an sd-updater process is still running after apt-get remove"
	fi
	in_ct test -f "$CONF" || fail "apt-get remove removed the configuration (only purge should)"

	in_ct apt-get purge -y sd-updater || fail "apt-get purge failed"
	if in_ct test -e "$CONF"; then fail "$CONF is still there after purge"; fi
	if in_ct test -e /var/lib/sd-updater; then fail "/var/lib/sd-updater is still there after purge"; fi
	case $(pkg_status) in
	*installed* | *config-files*) fail "dpkg still knows sd-updater after purge: $(pkg_status)" ;;
	esac
}

# Container b for scenario 11 boots and gets rpm from apt in the background
# while scenarios 1-10 run; it writes $WORK/ct/b.ready (or b.failed: why).
prepare_rpm_container() {
	local CT=b why=""
	rm -f "$WORK/ct/b.ready" "$WORK/ct/b.failed"
	if ! ct_create b "$DIST"; then
		why="cannot create the container root"
	elif ! ct_boot b; then
		why="the container did not boot"
	elif ! in_ct apt-get update -qq; then
		why="apt-get update in the container failed"
	elif ! in_ct apt-get install -y rpm; then
		why="apt-get install rpm failed"
	fi
	if [ -n "$why" ]; then
		printf '%s\n' "$why" >"$WORK/ct/b.failed"
	else
		touch "$WORK/ct/b.ready"
	fi
}

rpm_container_settled() { [ -e "$WORK/ct/b.ready" ] || [ -e "$WORK/ct/b.failed" ]; }

s_rpm() {
	local CT=b
	wait_until 300 rpm_container_settled || fail "container b was not ready after 5 minutes (see prepare-b.log)"
	[ ! -e "$WORK/ct/b.failed" ] || fail "$(cat "$WORK/ct/b.failed") (see prepare-b.log)"
	cp "$RPM" "$(ct_root)/opt/e2e/sd-updater.rpm"
	if in_ct getent passwd sd-updater >/dev/null; then fail "precondition: the user exists before rpm -i"; fi
	in_ct rpm -i --nodeps /opt/e2e/sd-updater.rpm || fail "rpm -i --nodeps failed"
	in_ct getent passwd sd-updater >/dev/null || fail "the rpm scriptlets did not create the sd-updater user"
	in_ct test -f /etc/sysconfig/sd-updater || fail "no /etc/sysconfig/sd-updater"
	{
		in_ct cat /etc/sysconfig/sd-updater
		printf '\nINVENTORY_URL=%s\nUPDATE_INTERVAL=1h\n' "$(inv_url)"
	} >"$WORK/sysconfig"
	in_ct tee /etc/sysconfig/sd-updater <"$WORK/sysconfig" >/dev/null
	start_unit start || fail "systemctl start sd-updater failed (the agent said: $(agent_said))"
	wait_until 10 is_active || fail "sd-updater is not active"
	wait_until 10 targets_are sensors 100 ||
		fail "targets.json does not hold the inventory's 100 sensors ($(target_count) targets)"
	[ "$(stat_in_ct "$TARGETS")" = "sd-updater 644" ] || fail "targets.json is '$(stat_in_ct "$TARGETS")', expected 'sd-updater 644'"
	[ "$(in_ct stat -c %U "/proc/$(main_pid)")" = sd-updater ] || fail "the agent does not run as sd-updater"
	ct_stop b
}

# Prometheus on the host.
PROM_DIR() { printf '%s\n' "$WORK/prometheus"; }
prom_api() { curl -fsS --max-time 5 "http://127.0.0.1:$(cat "$WORK/prometheus.port")$1"; }
prom_has_samples() { [ "$(prom_api '/api/v1/query?query=e2e_sensor_up' | jq '.data.result | length')" -ge "$1" ]; }

# prom_targets_are "PORT..." : the active targets are exactly these fake
# sensors, all healthy and with the configured labels.
prom_targets_are() {
	local want got
	want=$(for p in $1; do echo "127.0.0.1:$p"; done | sort | tr '\n' ' ')
	got=$(prom_api /api/v1/targets?state=active | jq -r '.data.activeTargets[]
		| select(.health == "up" and .labels.job == "e2e-sensors" and .labels.site == "lab"
		         and .discoveredLabels.__metrics_path__ == "/metrics")
		| .labels.instance' | sort | tr '\n' ' ')
	[ "$got" = "$want" ] &&
		[ "$(prom_api /api/v1/targets?state=active | jq '.data.activeTargets | length')" = "$(echo "$1" | wc -w)" ]
}

s_prometheus() {
	need_ct
	# The agent again (scenario 10 purged it).
	if [ "$(pkg_status)" != "install ok installed" ]; then
		in_ct apt-get install -y /opt/e2e/sd-updater.deb || fail "installing the package again failed"
	fi
	in_ct cat "$CONF" >"$WORK/default.orig"
	# Three fake sensors; the inventory names the first two.
	rm -f "$WORK/sensors.ports"
	spawn sensors "$PYTHON" "$E2E_DIR/fakes.py" sensors --count 3 --port-file "$WORK/sensors.ports"
	wait_port_file "$WORK/sensors.ports" || fail "the fake sensors did not start"
	local p1 p2 p3
	{ read -r p1; read -r p2; read -r p3; } <"$WORK/sensors.ports"
	inv_set "[\"127.0.0.1:$p1\", \"127.0.0.1:$p2\"]"
	configure TARGET_LABELS=job=e2e-sensors,site=lab
	restart_agent
	wait_until 10 targets_are list "127.0.0.1:$p1" "127.0.0.1:$p2" ||
		fail "targets.json does not name the two sensors"

	local dir port
	dir=$(PROM_DIR)
	mkdir -p "$dir/data"
	port=$("$PYTHON" "$E2E_DIR/fakes.py" free-port)
	printf '%s\n' "$port" >"$WORK/prometheus.port"
	cat >"$dir/prometheus.yml" <<-EOF
		# Written by tests/e2e/run.sh: Prometheus reads the file the agent
		# writes inside the container.
		global:
		  scrape_interval: 1s
		  scrape_timeout: 1s
		scrape_configs:
		  - job_name: sd-updater
		    file_sd_configs:
		      - files:
		          - $(targets_file)
		        refresh_interval: 1s
	EOF
	promtool check config "$dir/prometheus.yml" || fail "promtool check config failed on the configuration reading targets.json"
	spawn prometheus prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
		--web.listen-address="127.0.0.1:$port"
	wait_until 30 prom_api /-/ready >/dev/null || fail "Prometheus did not become ready on 127.0.0.1:$port"
	wait_until 30 prom_targets_are "$p1 $p2" ||
		fail "Prometheus does not show the two sensors up with job=e2e-sensors, site=lab: $(prom_api /api/v1/targets?state=active | jq -c '[.data.activeTargets[] | {instance: .labels.instance, health, labels}]')"
	# The inventory changes: sensor 1 goes, sensor 3 comes.
	inv_set "[\"127.0.0.1:$p2\", \"127.0.0.1:$p3\"]"
	in_ct systemctl reload sd-updater.service || fail "systemctl reload failed"
	wait_until 10 targets_are list "127.0.0.1:$p2" "127.0.0.1:$p3" ||
		fail "targets.json did not follow the inventory change"
	wait_until 30 prom_targets_are "$p2 $p3" ||
		fail "Prometheus's targets did not follow the change: $(prom_api /api/v1/targets?state=active | jq -c '[.data.activeTargets[] | {instance: .labels.instance, health}]')"
	# And the sensors' samples arrive.
	wait_until 10 prom_has_samples 2 ||
		fail "no e2e_sensor_up samples in Prometheus"
	promtool check config "$dir/prometheus.yml" || fail "promtool check config failed after the change"
	stop_spawned prometheus
	stop_spawned sensors
}

# prom_start CONFIG: runs Prometheus on the host with the configuration file
# CONFIG (checked with promtool first) on a free port; waits until ready.
prom_start() {
	local dir port
	dir=$(PROM_DIR)
	mkdir -p "$dir/data"
	port=$("$PYTHON" "$E2E_DIR/fakes.py" free-port)
	printf '%s\n' "$port" >"$WORK/prometheus.port"
	promtool check config "$1" || fail "promtool check config failed on $1"
	spawn prometheus prometheus --config.file="$1" --storage.tsdb.path="$dir/data" \
		--web.listen-address="127.0.0.1:$port"
	wait_until 30 prom_api /-/ready >/dev/null || fail "Prometheus did not become ready on 127.0.0.1:$port"
}

# prom_query PROMQL: the values of an instant query, one "labels value" a line.
prom_query() {
	prom_api "/api/v1/query?query=$(jq -rn --arg q "$1" '$q | @uri')" |
		jq -r '.data.result[] | "\(.metric | del(.__name__) | to_entries | map("\(.key)=\(.value)") | join(",")) \(.value[1])"'
}
# prom_value_is PROMQL VALUE: the query has exactly one result, VALUE.
prom_value_is() { [ "$(prom_query "$1" | awk '{ print $NF }')" = "$2" ]; }

# ---------------------------------------------------------------------------
# Instances of sd-updater@.service
# ---------------------------------------------------------------------------

inst_file() { printf '%s/var/lib/sd-updater/%s.json\n' "$(ct_root)" "$1"; }
inst_targets() { jq -r '.[].targets[]' "$(inst_file "$1")" 2>/dev/null | sort; }
inst_count() { inst_targets "$1" | grep -c . || true; }
# inst_targets_are NAME N FIRST: instance NAME's file holds those sensors.
inst_targets_are() { [ "$(inst_targets "$1" | md5sum)" = "$(expect_sensors "$2" "$3" | md5sum)" ]; }
inst_prop() { in_ct systemctl show -p "$2" --value "sd-updater@$1.service"; }
inst_active() { [ "$(inst_prop "$1" ActiveState)" = active ]; }
inst_journal() {
	in_ct journalctl -u "sd-updater@$1.service" -o json --no-pager |
		jq -c --argjson s "$2" 'select((.__REALTIME_TIMESTAMP | tonumber) >= $s)'
}
inst_journal_has() { inst_journal "$1" "$2" | jq -e -s "map(select($3)) | length > 0" >/dev/null; }
inst_said() { in_ct journalctl -u "sd-updater@$1.service" -n 3 -o cat --no-pager 2>/dev/null | tr '\n' ' ' || true; }

# inst_configure NAME [VAR=value...]: /etc/sd-updater/NAME.env names
# inventory NAME, a long interval, labels job=NAME and the given values.
inst_configure() {
	local name=$1 kv
	shift
	{
		printf '# Written by the sd-updater e2e suite.\n'
		printf 'INVENTORY_URL=%s\nUPDATE_INTERVAL=1h\nTARGET_LABELS=job=%s\n' "$(ninv_url "$name")" "$name"
		for kv in "$@"; do printf '%s\n' "$kv"; done
	} | in_ct tee "/etc/sd-updater/$name.env" >/dev/null
}

# inst_ready NAME N FIRST [VAR=value...]: instance NAME runs with its own
# inventory of sensors FIRST .. FIRST+N-1 and has written them.
inst_ready() {
	local name=$1 n=$2 first=$3
	shift 3
	ninv_sensors "$name" "$n" "$first"
	ninv_running "$name" || ninv_start "$name" || fail "inventory $name did not start"
	inst_configure "$name" "$@"
	in_ct systemctl enable "sd-updater@$name.service" 2>/dev/null || fail "systemctl enable sd-updater@$name failed"
	start_unit restart "sd-updater@$name.service" || fail "systemctl restart sd-updater@$name failed: $(inst_said "$name")"
	wait_until 10 inst_active "$name" || fail "sd-updater@$name is not active: $(inst_said "$name")"
	wait_until 10 inst_targets_are "$name" "$n" "$first" ||
		fail "/var/lib/sd-updater/$name.json does not hold the $n sensors ($(inst_count "$name") targets)"
}

# metrics_supported: the installed agent knows METRICS_FILE and SOURCE_NAME.
metrics_supported() {
	local c
	c=$(in_ct env -i /usr/bin/sd-updater --check-config 2>/dev/null) || return 1
	grep -q '^METRICS_FILE=' <<<"$c" && grep -q '^SOURCE_NAME=' <<<"$c"
}

s_instances() {
	agent_ready 100
	local plain_pid plain_sum since left
	plain_pid=$(main_pid)
	plain_sum=$(sha256sum <"$(targets_file)")
	in_ct test -f /etc/sd-updater/example.env || fail "no /etc/sd-updater/example.env"
	# Leftovers of crashed writers (a dead PID): each instance removes its
	# own at start-up, and only its own.
	local n
	for n in one two targets; do
		in_ct sh -c "echo partial >/var/lib/sd-updater/.$n.json.tmp.999999.00000000000000a1 &&
			chown sd-updater: /var/lib/sd-updater/.$n.json.tmp.999999.00000000000000a1"
	done
	in_ct systemctl stop sd-updater@one.service sd-updater@two.service 2>/dev/null || true
	since=$(now_us)
	inst_ready one 30 0
	in_ct test ! -e /var/lib/sd-updater/.one.json.tmp.999999.00000000000000a1 ||
		fail "sd-updater@one left its own stale temp file"
	in_ct test -e /var/lib/sd-updater/.two.json.tmp.999999.00000000000000a1 ||
		fail "sd-updater@one removed the temp file of two.json"
	in_ct test -e /var/lib/sd-updater/.targets.json.tmp.999999.00000000000000a1 ||
		fail "sd-updater@one removed the temp file of targets.json"
	inst_ready two 40 1000
	in_ct test ! -e /var/lib/sd-updater/.two.json.tmp.999999.00000000000000a1 ||
		fail "sd-updater@two left its own stale temp file"
	in_ct test -e /var/lib/sd-updater/.targets.json.tmp.999999.00000000000000a1 ||
		fail "sd-updater@two removed the temp file of targets.json"
	in_ct rm -f /var/lib/sd-updater/.targets.json.tmp.999999.00000000000000a1
	[ "$(in_ct systemctl is-enabled sd-updater@one.service)" = enabled ] || fail "sd-updater@one is not enabled"
	jq -e '.[0].labels.job == "one"' "$(inst_file one)" >/dev/null || fail "one.json does not have the labels of one.env"
	jq -e '.[0].labels.job == "two"' "$(inst_file two)" >/dev/null || fail "two.json does not have the labels of two.env"
	[ "$(stat_in_ct /var/lib/sd-updater/one.json)" = "sd-updater 644" ] || fail "one.json is $(stat_in_ct /var/lib/sd-updater/one.json)"

	# Each instance logs as itself.
	local written='.SYSLOG_IDENTIFIER == "sd-updater" and (.MESSAGE | test("^Successfully updated targets file"))'
	wait_until 5 inst_journal_has one "$since" "$written and .TARGETS_FILE == \"/var/lib/sd-updater/one.json\" and ._SYSTEMD_UNIT == \"sd-updater@one.service\"" ||
		fail "journalctl -u sd-updater@one does not show its write of one.json"
	if inst_journal one "$since" | jq -e -s 'map(select(.TARGETS_FILE == "/var/lib/sd-updater/two.json")) | length > 0' >/dev/null; then
		fail "journalctl -u sd-updater@one shows entries about two.json"
	fi
	if metrics_supported; then
		inst_journal_has one "$since" "$written and .SOURCE_NAME == \"one\"" ||
			fail "sd-updater@one's entries lack SOURCE_NAME=one"
		log "journal: sd-updater@one's entries carry SOURCE_NAME=one"
	else
		log "the installed agent has no SOURCE_NAME yet; not checked"
	fi
	wait_until 5 status_matches_inst one '^30 targets, ' || fail "sd-updater@one STATUS is '$(inst_prop one StatusText)'"

	# Reloading one refreshes it alone.
	ninv_sensors one 35 0
	ninv_sensors two 45 1000
	local two_pid
	two_pid=$(inst_prop two MainPID)
	since=$(now_us)
	in_ct systemctl reload sd-updater@one.service || fail "systemctl reload sd-updater@one failed"
	wait_until 5 inst_targets_are one 35 0 || fail "the reload of sd-updater@one did not refresh one.json"
	sleep 1
	inst_targets_are two 40 1000 || fail "reloading sd-updater@one changed two.json"
	if inst_journal_has two "$since" '.MESSAGE | tostring | test("SIGHUP")'; then
		fail "reloading sd-updater@one reached sd-updater@two"
	fi
	[ "$(inst_prop two MainPID)" = "$two_pid" ] || fail "sd-updater@two was restarted"
	in_ct systemctl reload sd-updater@two.service || fail "systemctl reload sd-updater@two failed"
	wait_until 5 inst_targets_are two 45 1000 || fail "the reload of sd-updater@two did not refresh two.json"

	# One inventory goes away: its instance keeps its last good file, the
	# other instance carries on.
	inst_configure one UPDATE_INTERVAL=2 RETRY_ATTEMPTS=0 HTTP_TIMEOUT=1
	start_unit restart sd-updater@one.service || fail "systemctl restart sd-updater@one failed: $(inst_said one)"
	wait_until 10 inst_active one || fail "sd-updater@one is not active after the restart"
	local one_sum
	one_sum=$(sha256sum <"$(inst_file one)")
	since=$(now_us)
	ninv_stop one
	wait_until 15 inst_journal_has one "$since" '.SYSLOG_IDENTIFIER == "sd-updater" and (.MESSAGE | test("^Failed to fetch inventory:"))' ||
		fail "sd-updater@one does not report its inventory outage"
	ninv_sensors two 50 1000
	in_ct systemctl reload sd-updater@two.service || fail "systemctl reload sd-updater@two failed during one's outage"
	wait_until 5 inst_targets_are two 50 1000 || fail "sd-updater@two did not refresh during one's outage"
	if inst_journal_has two "$since" '.MESSAGE | tostring | test("^Failed")'; then
		fail "sd-updater@two reports failures during one's outage"
	fi
	[ "$(sha256sum <"$(inst_file one)")" = "$one_sum" ] || fail "one.json changed during its outage"
	inst_active one || fail "sd-updater@one left active during its outage"
	since=$(now_us)
	ninv_start one || fail "inventory one did not come back"
	wait_until 15 inst_journal_has one "$since" '.SYSLOG_IDENTIFIER == "sd-updater" and (.MESSAGE | test("^Targets unchanged|^Successfully"))' ||
		fail "sd-updater@one did not recover after its inventory came back"
	inst_configure one
	start_unit restart sd-updater@one.service || fail "systemctl restart sd-updater@one failed: $(inst_said one)"

	# The example configuration reads every instance's file.
	promtool check config "$REPO/packaging/prometheus-example.yml" >"$WORK/promtool.out" 2>&1 ||
		fail "promtool check config packaging/prometheus-example.yml: $(tail -n 2 "$WORK/promtool.out")"

	# The plain unit did not notice any of this.
	[ "$(main_pid)" = "$plain_pid" ] || fail "sd-updater.service was restarted"
	[ "$(sha256sum <"$(targets_file)")" = "$plain_sum" ] || fail "targets.json changed"
	left=$(in_ct find /var/lib/sd-updater -mindepth 1 ! -name targets.json ! -name one.json ! -name two.json ! -name '*.prom')
	[ -z "$left" ] || fail "stray files in /var/lib/sd-updater: $left"
}

status_matches_inst() { inst_prop "$1" StatusText | grep -Eq "$2"; }

# node_exporter in the container, on a port of its own (both releases run
# side by side on the host's network).
NE_PORT_FILE() { printf '%s\n' "$WORK/node-exporter.port"; }
ne_metrics() { curl -fsS --max-time 5 "http://127.0.0.1:$(cat "$(NE_PORT_FILE)")/metrics"; }

s_node_exporter() {
	agent_ready 100
	inst_ready one 30 0
	inst_ready two 40 1000
	# Debian's node_exporter, kept from starting on :9100 while installing.
	in_ct sh -c 'printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d'
	in_ct apt-get install -y prometheus-node-exporter >/dev/null || fail "apt-get install prometheus-node-exporter failed"
	in_ct rm -f /usr/sbin/policy-rc.d
	# Where it reads textfiles: its --help shows the default it was built with.
	local dir help
	help=$(in_ct prometheus-node-exporter --help 2>&1 || true)
	# (1.5 prints --collector.textfile.directory="DIR", 1.9 DIR ... as it
	# takes several.)
	dir=$(printf '%s\n' "$help" | sed -n 's/.*--collector\.textfile\.directory="\{0,1\}\([^" ]*\).*/\1/p' | head -n 1)
	log "prometheus-node-exporter $(in_ct dpkg-query -W -f="\${Version}" prometheus-node-exporter) reads textfiles from '$dir'"
	[ "$dir" = /var/lib/prometheus/node-exporter ] ||
		fail "Debian's node_exporter reads textfiles from '$dir', not /var/lib/prometheus/node-exporter"
	local port
	port=$("$PYTHON" "$E2E_DIR/fakes.py" free-port)
	printf '%s\n' "$port" >"$(NE_PORT_FILE)"
	printf 'ARGS="--web.listen-address=127.0.0.1:%s"\n' "$port" | in_ct tee /etc/default/prometheus-node-exporter >/dev/null
	in_ct systemctl restart prometheus-node-exporter.service || fail "node_exporter did not start"
	wait_until 15 ne_metrics >/dev/null || fail "node_exporter does not answer on 127.0.0.1:$port"

	metrics_supported || fail "the installed agent has no METRICS_FILE/SOURCE_NAME (the metrics work is not merged)"
	# The one step sd-updater(8) documents for node_exporter installed
	# later: a restart links each unit's metrics file into its directory.
	local u f
	for u in sd-updater.service sd-updater@one.service sd-updater@two.service; do
		start_unit restart "$u" || fail "systemctl restart $u failed"
	done
	for f in sd-updater.prom sd-updater@one.prom sd-updater@two.prom; do
		wait_until 10 in_ct test -s "/var/lib/sd-updater/$f" || fail "no /var/lib/sd-updater/$f"
		[ "$(stat_in_ct "/var/lib/sd-updater/$f")" = "sd-updater 644" ] ||
			fail "$f is $(stat_in_ct "/var/lib/sd-updater/$f"), expected 'sd-updater 644'"
		[ "$(in_ct readlink "/var/lib/prometheus/node-exporter/$f")" = "/var/lib/sd-updater/$f" ] ||
			fail "/var/lib/prometheus/node-exporter/$f is not a link to /var/lib/sd-updater/$f: $(in_ct ls -l /var/lib/prometheus/node-exporter/ | tr '\n' ' ')"
	done
	# The agent had nothing to complain about while preparing its files.
	if in_ct journalctl -u 'sd-updater*' -p warning -o cat --no-pager | grep -q 'metrics file'; then
		fail "warnings about the metrics file: $(in_ct journalctl -u 'sd-updater*' -p warning -o cat --no-pager | grep 'metrics file' | head -n 1)"
	fi
	wait_until 10 sh -c "curl -fsS --max-time 5 http://127.0.0.1:$port/metrics | grep -q '^sd_updater_targets{.*source=\"one\"'" ||
		fail "node_exporter does not serve sd_updater_targets{source=\"one\"}"
	if ne_metrics | grep -q '^node_textfile_scrape_error 1'; then
		fail "node_exporter reports a textfile scrape error"
	fi

	# A real Prometheus scrapes node_exporter.
	cat >"$WORK/prometheus-node.yml" <<-EOF2
		global:
		  scrape_interval: 1s
		  scrape_timeout: 1s
		scrape_configs:
		  - job_name: node
		    static_configs:
		      - targets: ['127.0.0.1:$port']
	EOF2
	prom_start "$WORK/prometheus-node.yml"
	wait_until 30 prom_value_is 'sd_updater_targets{source="one"}' 30 ||
		fail "Prometheus: sd_updater_targets{source=\"one\"} is '$(prom_query 'sd_updater_targets{source="one"}')', expected 30"
	wait_until 10 prom_value_is 'sd_updater_targets{source="two"}' 40 ||
		fail "Prometheus: sd_updater_targets{source=\"two\"} is '$(prom_query 'sd_updater_targets{source="two"}')', expected 40"
	wait_until 10 prom_value_is 'sd_updater_targets{source="targets"}' 100 ||
		fail "Prometheus: sd_updater_targets{source=\"targets\"} is '$(prom_query 'sd_updater_targets{source="targets"}')', expected 100"
	prom_value_is 'sd_updater_stale{source="one"}' 0 || fail "sd_updater_stale{source=\"one\"} is '$(prom_query 'sd_updater_stale{source="one"}')' before the outage"
	log "Prometheus: $(prom_query '{__name__=~"sd_updater_.*", source="one"}' | tr '\n' ';')"

	# An outage of inventory one: one goes stale, two stays current.
	inst_configure one UPDATE_INTERVAL=2 RETRY_ATTEMPTS=0 HTTP_TIMEOUT=1
	start_unit restart sd-updater@one.service || fail "systemctl restart sd-updater@one failed: $(inst_said one)"
	wait_until 10 inst_active one || fail "sd-updater@one is not active"
	ninv_stop one
	wait_until 60 prom_value_is 'sd_updater_stale{source="one"}' 1 ||
		fail "sd_updater_stale{source=\"one\"} did not go to 1 during the outage: $(prom_query 'sd_updater_stale')"
	prom_value_is 'sd_updater_stale{source="two"}' 0 || fail "sd_updater_stale{source=\"two\"} is not 0 during one's outage"
	prom_value_is 'sd_updater_targets{source="one"}' 30 || fail "sd_updater_targets{source=\"one\"} changed during the outage"
	local two_before
	two_before=$(prom_query 'sd_updater_last_success_timestamp_seconds{source="two"}' | awk '{ print $NF }')
	ninv_sensors two 41 1000
	in_ct systemctl reload sd-updater@two.service
	wait_until 10 prom_value_is 'sd_updater_targets{source="two"}' 41 ||
		fail "sd-updater@two's metrics did not follow its reload during one's outage"
	[ "$(prom_query 'sd_updater_last_success_timestamp_seconds{source="two"}' | awk '{ print $NF }')" != "$two_before" ] ||
		fail "sd_updater_last_success_timestamp_seconds{source=\"two\"} did not move"
	ninv_start one || fail "inventory one did not come back"
	wait_until 60 prom_value_is 'sd_updater_stale{source="one"}' 0 ||
		fail "sd_updater_stale{source=\"one\"} did not go back to 0: $(prom_query 'sd_updater_stale')"
	inst_configure one
	start_unit restart sd-updater@one.service || fail "systemctl restart sd-updater@one failed: $(inst_said one)"
	stop_spawned prometheus
}

STRICT_DROPIN=/etc/systemd/system/sd-updater.service.d/strict.conf

# exposure UNIT: "systemd-analyze security UNIT" in the container.
exposure() {
	in_ct systemd-analyze security --no-pager "$1" 2>&1 |
		sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p'
}

s_strict() {
	agent_ready 100
	local before after pid status since
	before=$(exposure sd-updater.service)
	in_ct mkdir -p "${STRICT_DROPIN%/*}"
	in_ct cp /usr/share/doc/sd-updater/examples/strict.conf "$STRICT_DROPIN" ||
		fail "the package has no /usr/share/doc/sd-updater/examples/strict.conf"
	in_ct systemctl daemon-reload
	restart_agent
	after=$(exposure sd-updater.service)
	in_ct systemd-analyze security --no-pager sd-updater.service >"$LOG_DIR/exposure-strict-$DIST.txt" 2>&1 || true
	log "systemd-analyze security sd-updater.service on $DIST (systemd $(in_ct systemctl --version | awk 'NR == 1 { print $2 }')): $before by default, $after with strict.conf"
	printf 'default %s\nstrict %s\n' "$before" "$after" >"$LOG_DIR/exposure-$DIST.txt"
	[ -n "$after" ] || fail "no exposure level from systemd-analyze security"
	awk -v e="$after" 'BEGIN { exit !(e <= 1.1) }' || fail "exposure with strict.conf is $after, above 1.1"
	pid=$(main_pid)
	status=$(in_ct cat "/proc/$pid/status")
	field() { printf '%s\n' "$status" | sed -n "s/^$1:[[:space:]]*//p" | tr -s ' \t' ' '; }
	local uid
	uid=$(in_ct id -u sd-updater)
	[ "$(field Uid)" = "$uid $uid $uid $uid" ] || fail "the agent runs with Uid '$(field Uid)'"
	[ "$(field CapBnd)" = 0000000000000000 ] || fail "CapBnd is $(field CapBnd), expected empty"
	[ "$(field CapEff)" = 0000000000000000 ] || fail "CapEff is $(field CapEff)"
	[ "$(field NoNewPrivs)" = 1 ] || fail "NoNewPrivs is $(field NoNewPrivs)"
	[ "$(in_ct readlink "/proc/$pid/ns/user")" != "$(in_ct readlink /proc/1/ns/user)" ] ||
		fail "the agent shares PID 1's user namespace (PrivateUsers=yes)"
	# It works: a reload refreshes, the file and the metrics are written.
	local prom=/var/lib/sd-updater/sd-updater.prom prom_before=""
	in_ct test -e "$prom" && prom_before=$(in_ct stat -c %Y.%i "$prom")
	inv_sensors 110 0
	since=$(now_us)
	in_ct systemctl reload sd-updater.service || fail "systemctl reload failed under strict.conf"
	wait_until 10 targets_are sensors 110 0 || fail "targets.json not refreshed under strict.conf ($(target_count) targets)"
	[ "$(stat_in_ct "$TARGETS")" = "sd-updater 644" ] || fail "targets.json is $(stat_in_ct "$TARGETS")"
	if journal_has "$since" "$(agent_msg '^Dropped privileges')"; then
		fail "the agent dropped privileges itself under strict.conf"
	fi
	if metrics_supported; then
		wait_until 10 sh -c "[ \"\$(nsenter -t $(cat "$WORK/ct/$CT/init.pid") -a stat -c %Y.%i $prom 2>/dev/null)\" != '$prom_before' ]" ||
			fail "$prom was not rewritten under strict.conf"
		log "metrics written under strict.conf: $prom"
	else
		log "metrics not checked under strict.conf (no METRICS_FILE support)"
	fi
	in_ct rm -f "$STRICT_DROPIN"
	in_ct systemctl daemon-reload
	restart_agent
}

# The README's operator quick start, command by command as
# tests/readme-commands.sh prints it, on a system without the package: apt
# installs it from the signed test repository, and the suite's fake
# inventory stands in for the README's example URL.
s_readme() {
	local cmd since spawn_failed example='https://inventory.example.com/inventory'
	need_ct
	in_ct apt-get purge -y sd-updater >/dev/null || fail "apt-get purge failed"
	repo_publish yes "$DEB"
	printf 'deb [signed-by=/etc/apt/keyrings/sd-updater-test.gpg] file:/opt/e2e/repo sd-updater main\n' |
		in_ct tee /etc/apt/sources.list.d/sd-updater-test.list >/dev/null
	in_ct apt-get update >"$WORK/apt-update.out" 2>&1 || fail "apt-get update with the test repository failed: $(tail -n 3 "$WORK/apt-update.out")"
	inv_sensors 100
	while IFS= read -r cmd; do
		cmd=${cmd//"$example"/$(inv_url)}
		if [ "$cmd" = "cat /var/lib/sd-updater/targets.json" ]; then
			wait_until 10 targets_are sensors 100 ||
				fail "after the README's commands targets.json has $(target_count) targets, not the 100 sensors"
		fi
		log "README: $cmd"
		since=$(now_us)
		in_ct sh -c "$cmd" </dev/null && continue
		# Once more, only when systemd could not spawn the agent at all.
		case $cmd in systemctl*) spawn_failed=$(spawn_failure "$since") ;; *) spawn_failed= ;; esac
		[ -n "$spawn_failed" ] || fail "README command failed: $cmd"
		log "systemd could not spawn the process (not the agent): $spawn_failed; once more"
		in_ct systemctl reset-failed sd-updater.service || true
		sleep 0.5
		in_ct sh -c "$cmd" </dev/null || fail "README command failed twice: $cmd"
	done < <("$REPO/tests/readme-commands.sh" operator)
}

# Package versions for the repository scenario: the one under test and a
# higher, test-only one built with SD_UPDATER_VERSION_SUFFIX.
NEXT_SUFFIX=+e2e1

# repo_publish KEYRING_TOO DEB...: build a signed apt repository of these
# packages with packaging/build-repo.sh and put it at /opt/e2e/repo in the
# container; its key goes to /etc/apt/keyrings too unless KEYRING_TOO=no.
repo_publish() {
	local keyring=$1 d
	shift
	d=$(mktemp -d "$WORK/repo.XXXXXX")
	mkdir -p "$d/pkgs"
	cp "$@" "$d/pkgs/"
	"$REPO/packaging/build-repo.sh" "$d/pkgs" "$d/out" >>"$LOG_DIR/build-repo-$DIST.log" 2>&1 ||
		fail "packaging/build-repo.sh failed; see build-repo-$DIST.log"
	in_ct rm -rf /opt/e2e/repo
	cp -a "$d/out/apt" "$(ct_root)/opt/e2e/repo"
	if [ "$keyring" = yes ]; then
		in_ct mkdir -p /etc/apt/keyrings
		in_ct install -m 0644 /opt/e2e/repo/sd-updater-test.gpg /etc/apt/keyrings/sd-updater-test.gpg
	fi
	rm -rf "$d"
}

pkg_version() { in_ct dpkg-query -W -f="\${Version}" sd-updater 2>/dev/null || true; }

# watch_start / watch_check WHAT: a watcher on the host reads targets.json
# every 2 ms; after WHAT it must have seen the file at every read, always
# with the same content.
watch_start() {
	rm -f "$WORK/watch.out"
	spawn watcher "$PYTHON" "$E2E_DIR/fakes.py" watch --file "$(targets_file)" --out "$WORK/watch.out" --interval 0.002
	wait_until 5 test -s "$WORK/watch.out" || fail "the targets.json watcher did not start"
}
watch_check() {
	stop_spawned watcher
	local r
	r=$(cat "$WORK/watch.out")
	log "watcher during $1: $r"
	case $r in
	*" missing=0 errors=0 contents=1 "*) ;;
	*) fail "targets.json went missing or changed during $1 ($r)" ;;
	esac
}

s_apt_repo() {
	need_ct
	[ -f "$DEB_NEXT" ] || fail "no test-only package $DEB_NEXT"
	# A clean start: the package goes, with its configuration.
	in_ct apt-get purge -y sd-updater >/dev/null || fail "apt-get purge failed"
	local old=$VERSION new=$VERSION$NEXT_SUFFIX since
	repo_publish yes "$DEB"
	printf 'deb [signed-by=/etc/apt/keyrings/sd-updater-test.gpg] file:/opt/e2e/repo sd-updater main\n' |
		in_ct tee /etc/apt/sources.list.d/sd-updater-test.list >/dev/null
	in_ct apt-get update >"$WORK/apt-update.out" 2>&1 || fail "apt-get update with the test repository failed: $(tail -n 3 "$WORK/apt-update.out")"
	in_ct apt-get install -y sd-updater || fail "apt-get install sd-updater from the repository failed"
	[ "$(pkg_version)" = "$old" ] || fail "installed $(pkg_version), expected $old"
	grep -qF 'file:/opt/e2e/repo sd-updater/main' <<<"$(in_ct apt-cache policy sd-updater)" ||
		fail "apt-cache policy does not show the repository: $(in_ct apt-cache policy sd-updater)"

	# The agent serves a live inventory of two fake sensors to Prometheus.
	in_ct cat "$CONF" >"$WORK/default.orig"
	rm -f "$WORK/sensors.ports"
	spawn sensors "$PYTHON" "$E2E_DIR/fakes.py" sensors --count 2 --port-file "$WORK/sensors.ports"
	wait_port_file "$WORK/sensors.ports" || fail "the fake sensors did not start"
	local p1 p2
	{ read -r p1; read -r p2; } <"$WORK/sensors.ports"
	inv_set "[\"127.0.0.1:$p1\", \"127.0.0.1:$p2\"]"
	configure TARGET_LABELS=job=e2e-sensors,site=lab
	in_ct sh -c 'echo "# Edited by the e2e suite: kept across upgrades." >>/etc/sd-updater/example.env'
	restart_agent
	wait_until 10 targets_are list "127.0.0.1:$p1" "127.0.0.1:$p2" || fail "targets.json does not name the two sensors"
	# An instance too: the upgrade restarts it into the new binary.
	inst_ready one 30 0
	local sums
	sums=$(in_ct sha256sum "$CONF" /etc/sd-updater/example.env /etc/sd-updater/one.env)
	cat >"$WORK/prometheus-upgrade.yml" <<-EOF2
		global:
		  scrape_interval: 1s
		  scrape_timeout: 1s
		scrape_configs:
		  - job_name: sd-updater
		    file_sd_configs:
		      - files: ['$(targets_file)']
		        refresh_interval: 1s
	EOF2
	prom_start "$WORK/prometheus-upgrade.yml"
	wait_until 30 prom_targets_are "$p1 $p2" || fail "Prometheus does not show the two sensors up before the upgrade"

	# The higher version appears in the repository.  Signed by a new key:
	# apt must refuse it until it has that key.
	repo_publish no "$DEB" "$DEB_NEXT"
	# (apt 2.6 fails with NO_PUBKEY; apt 3.0 warns that sqv could not
	# verify the signature and keeps the lists it had.)
	in_ct apt-get update >"$WORK/apt-update.out" 2>&1 || true
	grep -qiE 'NO_PUBKEY|not signed|BADSIG|signature|Missing key' "$WORK/apt-update.out" ||
		fail "apt-get update said nothing about the signature of the new key: $(grep -E '^(W|E):' "$WORK/apt-update.out" | head -n 2 | tr '\n' ' ')"
	grep -qxF "  Candidate: $old" <<<"$(in_ct apt-cache policy sd-updater)" ||
		fail "apt offers a version from a repository signed by a key it does not know: $(in_ct apt-cache policy sd-updater | tr '\n' ' ')"
	log "apt with the old key: $(grep -iE 'NO_PUBKEY|not signed|BADSIG|signature|Missing key' "$WORK/apt-update.out" | head -n 1)"
	in_ct install -m 0644 /opt/e2e/repo/sd-updater-test.gpg /etc/apt/keyrings/sd-updater-test.gpg
	in_ct apt-get update >"$WORK/apt-update.out" 2>&1 || fail "apt-get update failed: $(tail -n 3 "$WORK/apt-update.out")"
	grep -qxF "  Candidate: $new" <<<"$(in_ct apt-cache policy sd-updater)" ||
		fail "apt does not offer $new: $(in_ct apt-cache policy sd-updater | tr '\n' ' ')"

	local pid inst_pid t0
	pid=$(main_pid)
	inst_pid=$(inst_prop one MainPID)
	since=$(now_us)
	t0=$(now_ms)
	watch_start
	in_ct apt-get upgrade -y >"$WORK/apt-upgrade.out" 2>&1 || fail "apt-get upgrade failed: $(tail -n 5 "$WORK/apt-upgrade.out")"
	wait_until 10 is_active || fail "sd-updater not active after the upgrade: $(agent_said)"
	wait_until 10 status_matches '^2 targets, updated' || fail "the upgraded agent is not healthy: $(unit_prop StatusText)"
	sleep 2
	watch_check "apt-get upgrade"
	log "apt-get upgrade and the restart took $(elapsed_s "$t0") s"
	[ "$(pkg_version)" = "$new" ] || fail "after apt-get upgrade dpkg has $(pkg_version), expected $new"
	[ "$(in_ct /usr/bin/sd-updater --version)" = "sd-updater $new" ] || fail "sd-updater --version says '$(in_ct /usr/bin/sd-updater --version)'"
	[ "$(main_pid)" != "$pid" ] || fail "the service was not restarted by the upgrade (MainPID $pid)"
	journal_has "$since" "$(agent_msg '^Starting sd-updater')" || fail "no 'Starting sd-updater' in the journal after the upgrade"
	[ "$(in_ct readlink "/proc/$(main_pid)/exe")" = /usr/bin/sd-updater ] || fail "the service does not run /usr/bin/sd-updater"
	wait_until 10 inst_active one || fail "sd-updater@one is not active after the upgrade"
	[ "$(inst_prop one MainPID)" != "$inst_pid" ] || fail "sd-updater@one was not restarted by the upgrade"
	[ "$(in_ct sha256sum "$CONF" /etc/sd-updater/example.env /etc/sd-updater/one.env)" = "$sums" ] ||
		fail "the upgrade changed the configuration files"
	in_ct sh -c "! ls /etc/default/sd-updater.dpkg-* /etc/sd-updater/*.dpkg-* 2>/dev/null" ||
		fail "the upgrade left $(in_ct sh -c 'ls /etc/default/sd-updater.dpkg-* /etc/sd-updater/*.dpkg-* 2>/dev/null')"
	grep -q 'Edited by the e2e suite' "$(ct_root)/etc/sd-updater/example.env" || fail "example.env lost its edit"
	targets_are list "127.0.0.1:$p1" "127.0.0.1:$p2" || fail "targets.json changed across the upgrade"
	prom_targets_are "$p1 $p2" || fail "Prometheus's targets are not both up after the upgrade"
	local window=$((($(now_ms) - t0) / 1000 + 3))
	prom_value_is "count(min_over_time(up{job=\"e2e-sensors\"}[${window}s]) == 1)" 2 ||
		fail "a sensor was not up the whole time in Prometheus: $(prom_query "min_over_time(up{job=\"e2e-sensors\"}[${window}s])" | tr '\n' ';')"

	# And back to the version before.
	pid=$(main_pid)
	watch_start
	in_ct apt-get install -y --allow-downgrades "sd-updater=$old" >"$WORK/apt-downgrade.out" 2>&1 ||
		fail "apt-get install sd-updater=$old --allow-downgrades failed: $(tail -n 5 "$WORK/apt-downgrade.out")"
	wait_until 10 is_active || fail "sd-updater not active after the downgrade: $(agent_said)"
	wait_until 10 status_matches '^2 targets, updated' || fail "the downgraded agent is not healthy: $(unit_prop StatusText)"
	sleep 2
	watch_check "the downgrade"
	[ "$(pkg_version)" = "$old" ] || fail "after the downgrade dpkg has $(pkg_version)"
	[ "$(in_ct /usr/bin/sd-updater --version)" = "sd-updater $old" ] || fail "after the downgrade sd-updater --version says '$(in_ct /usr/bin/sd-updater --version)'"
	[ "$(main_pid)" != "$pid" ] || fail "the service was not restarted by the downgrade"
	[ "$(in_ct sha256sum "$CONF" /etc/sd-updater/example.env /etc/sd-updater/one.env)" = "$sums" ] ||
		fail "the downgrade changed the configuration files"
	prom_targets_are "$p1 $p2" || fail "Prometheus's targets are not both up after the downgrade"
	stop_spawned prometheus
	stop_spawned sensors
}

# ---------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------

SCENARIOS=(
	"install:s_install:install the .deb on a minimal system"
	"configure:s_configure:configure and restart"
	"privileges:s_privileges:privileges and hardening"
	"journal:s_journal:journal fields and STATUS="
	"reload:s_reload:reload"
	"watchdog:s_watchdog:watchdog"
	"outage:s_outage:inventory outage"
	"bad-config:s_bad_config:bad configuration"
	"stop:s_stop:stop"
	"upgrade-remove:s_upgrade_remove:upgrade, remove and purge"
	"rpm:s_rpm:rpm"
	"prometheus:s_prometheus:a real Prometheus"
	"instances:s_instances:two instances of sd-updater@.service side by side"
	"node-exporter:s_node_exporter:metrics through Debian's node_exporter into Prometheus"
	"strict:s_strict:the strict drop-in"
	"apt-repo:s_apt_repo:install from a signed apt repository, upgrade and downgrade"
	"readme:s_readme:the README's operator quick start"
)

# run_parallel: --dist all.  One child run per release, side by side (their
# containers, fake servers, Prometheus and ports are all their own); then
# their results, numbered on.
run_parallel() {
	local d pid rc lines k i total=0 passed=0 failed=0
	for d in "${DISTS[@]}"; do
		mkdir -p "$LOG_DIR/$d"
		if [ -n "$ONLY" ]; then
			"$E2E_DIR/run.sh" --dist "$d" --no-build --log-dir "$LOG_DIR/$d" --only "$ONLY" \
				</dev/null >"$WORK/out-$d" 2> >(tee "$LOG_DIR/$d/run.stderr" | sed -u "s/^/[$d] /" >&2) &
		else
			"$E2E_DIR/run.sh" --dist "$d" --no-build --log-dir "$LOG_DIR/$d" \
				</dev/null >"$WORK/out-$d" 2> >(tee "$LOG_DIR/$d/run.stderr" | sed -u "s/^/[$d] /" >&2) &
		fi
		printf '%s\n' "$!" >"$WORK/pids/run-$d.pid"
	done
	for d in "${DISTS[@]}"; do
		pid=$(cat "$WORK/pids/run-$d.pid")
		rc=0
		wait "$pid" || rc=$?
		rm -f "$WORK/pids/run-$d.pid"
		printf '%s\n' "$rc" >"$WORK/rc-$d"
	done
	echo "1..$((${#SCENARIOS[@]} * ${#DISTS[@]}))"
	for d in "${DISTS[@]}"; do
		lines=$(awk -v off="$total" -v d="$d" '
			match($0, /^(ok|not ok) [0-9]+ - /) {
				head = substr($0, 1, RLENGTH); rest = substr($0, RLENGTH + 1)
				n = head; gsub(/[^0-9]/, "", n)
				st = head; sub(/ [0-9]+ - $/, "", st)
				printf "%s %d - %s: %s\n", st, n + off, d, rest
			}' "$WORK/out-$d")
		[ -z "$lines" ] || printf '%s\n' "$lines"
		k=$(printf '%s' "$lines" | grep -c '^' || true)
		passed=$((passed + $(printf '%s\n' "$lines" | grep '^ok ' | grep -vc '# SKIP' || true)))
		failed=$((failed + $(printf '%s\n' "$lines" | grep -c '^not ok ' || true)))
		for ((i = k + 1; i <= ${#SCENARIOS[@]}; i++)); do
			echo "not ok $((total + i)) - $d: scenario $i did not run: the $d run stopped (exit $(cat "$WORK/rc-$d")); see target/e2e/$d/run.stderr"
			failed=$((failed + 1))
		done
		total=$((total + ${#SCENARIOS[@]}))
	done
	log "suite took $(elapsed_s "$SUITE_START") s; logs in ${LOG_DIR#"$REPO"/}/"
	echo "$passed passed, $failed failed"
	if [ "$failed" != 0 ]; then exit 1; fi
	exit 0
}

if [ "${#DISTS[@]}" -gt 1 ]; then
	run_parallel
fi
DIST=${DISTS[0]}
export DIST

# The container roots live in a tmpfs: unpacking, apt and removal are several
# times faster than on this machine's disk.  E2E_TMPFS=0 keeps them on disk.
if [ "${E2E_TMPFS:-1}" = 1 ]; then
	mount -t tmpfs -o "size=${E2E_TMPFS_SIZE:-4g},mode=0755" sd-updater-e2e "$WORK/ct"
	touch "$WORK/ct.tmpfs"
fi

gcc -static -O2 -Wall -o "$WORK/probe" "$E2E_DIR/probe.c" 2>"$LOG_DIR/probe-build.log" ||
	die "cannot build tests/e2e/probe.c; see $LOG_DIR/probe-build.log"

# The fake inventory keeps running for the whole suite; scenario 7 stops and
# restarts it on the same port.
inv_sensors 100
inv_start || die "the fake inventory did not start; see $LOG_DIR/inventory.log"
log "fake inventory at $(inv_url)"

PASSED=0
FAILED=0
N=0
echo "1..${#SCENARIOS[@]}"

run_scenario() {
	local n=$1 slug=$2 fn=$3 name=$4 logf start rc reason
	logf=$LOG_DIR/$(printf '%02d' "$n")-$DIST-$slug.log
	rm -f "$WORK/reason"
	start=$(now_ms)
	set +e
	(
		set -eE -o pipefail
		trap 'printf "unexpected failure (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >"$WORK/reason"' ERR
		exec >>"$logf" 2>&1 3>&2
		# The trace goes to fd 3, so that capturing a command's stderr
		# does not capture the trace of the functions it calls.
		BASH_XTRACEFD=3
		PS4='+ ${EPOCHREALTIME#*??????} ${LINENO}: '
		set -x
		"$fn"
	)
	rc=$?
	set -e
	if [ "$rc" = 0 ]; then
		PASSED=$((PASSED + 1))
		echo "ok $n - $name ($(elapsed_s "$start") s)"
	else
		FAILED=$((FAILED + 1))
		reason=$(head -n 1 "$WORK/reason" 2>/dev/null || echo "exit status $rc")
		echo "not ok $n - $name: $reason ($(elapsed_s "$start") s)"
		if [ "$slug" = rpm ]; then
			CT=b dump_diagnostics >>"$logf" 2>&1 || true
		else
			dump_diagnostics >>"$logf" 2>&1 || true
		fi
	fi
}

# Scenarios 2-10 and 12-17 run in the container that scenario 1 boots.
if [ -n "$ONLY" ] && [[ $ONLY != *" 1 "* ]] && [[ $ONLY =~ \ ([2-9]|10|1[2-7])\  ]]; then
	log "--only: adding scenario 1, which boots the container the others need"
	ONLY=" 1$ONLY"
fi
CT=a
rootfs_tarball "$DIST" >/dev/null || die "no $DIST root file system"
if [ -z "$ONLY" ] || [[ $ONLY == *" 11 "* ]]; then
	spawn prepare-b prepare_rpm_container
fi
for s in "${SCENARIOS[@]}"; do
	N=$((N + 1))
	IFS=: read -r slug fn name <<<"$s"
	if [ -n "$ONLY" ] && [[ $ONLY != *" $N "* ]]; then
		echo "ok $N - $name # SKIP not selected"
		continue
	fi
	run_scenario "$N" "$slug" "$fn" "$name"
done
ct_stop a
stop_spawned prepare-b
ct_stop b

log "suite took $(elapsed_s "$SUITE_START") s; logs in ${LOG_DIR#"$REPO"/}/"
echo "$PASSED passed, $FAILED failed"
if [ "$FAILED" != 0 ]; then exit 1; fi
