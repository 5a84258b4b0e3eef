# Infrastructure of the end-to-end suite: host tools, the cached root file
# system, booted containers, helper processes, polling and assertions.
# Sourced by tests/e2e/run.sh; not run on its own.
#
# State lives in files under $WORK (not in shell variables) because every
# scenario runs in a subshell: whatever a scenario starts (a container, a
# fake server) is recorded under $WORK/pids or $WORK/ct, and the EXIT trap
# of run.sh stops all of it by PID.
# shellcheck shell=bash

log() { printf '%s e2e: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# fail MESSAGE: ends the current scenario with MESSAGE as its reason.
fail() {
	printf '%s\n' "$*" >"$WORK/reason"
	log "FAIL: $*"
	exit 1
}

# ---------------------------------------------------------------------------
# Host tools
# ---------------------------------------------------------------------------

# apt_ensure PKG...: installs the missing Debian packages.  apt-get update runs
# only when something is missing.  Services of installed packages (Debian's
# prometheus ships one) are kept from starting with a temporary policy-rc.d:
# the suite runs its own Prometheus.
apt_ensure() {
	local pkg missing=()
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' ||
			missing+=("$pkg")
	done
	[ "${#missing[@]}" -eq 0 ] && return 0
	log "installing on the host: ${missing[*]}"
	local policy=/usr/sbin/policy-rc.d made_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# sd-updater e2e: no service starts during this install\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		made_policy=1
	fi
	local rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
				--no-install-recommends "${missing[@]}" >/dev/null
	} || rc=$?
	[ "$made_policy" = 1 ] && rm -f "$policy"
	[ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed"
}

# host_mirror: the Debian archive the host's apt already uses (E2E_MIRROR
# overrides it): the first "deb" source, in sources.list or a deb822 .sources
# file, whose suite is the host's own codename.
host_mirror() {
	if [ -n "${E2E_MIRROR:-}" ]; then
		printf '%s\n' "$E2E_MIRROR"
		return
	fi
	local codename files=() f
	codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
	[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release; set E2E_MIRROR"
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && files+=("$f")
	done
	[ "${#files[@]}" -gt 0 ] || die "no apt sources found; set E2E_MIRROR"
	local uri
	uri=$(awk -v want="$codename" '
		function emit(types, uris, suites, enabled,   t, u, s, nt, nu, ns, i, j, k) {
			if (enabled == "no") return
			nt = split(types, t, " "); nu = split(uris, u, " "); ns = split(suites, s, " ")
			for (i = 1; i <= nt; i++) if (t[i] == "deb")
				for (j = 1; j <= ns; j++) if (s[j] == want)
					for (k = 1; k <= nu; k++) { print u[k]; exit }
		}
		FILENAME ~ /\.sources$/ {
			if ($0 ~ /^[ \t]*$/) { emit(types, uris, suites, enabled); types = uris = suites = enabled = ""; next }
			if ($0 ~ /^#/) next
			key = tolower($1)
			val = $0; sub(/^[^:]*:[ \t]*/, "", val)
			if (key == "types:") types = val
			else if (key == "uris:") uris = val
			else if (key == "suites:") suites = val
			else if (key == "enabled:") enabled = val
			next
		}
		FNR == 1 && types != "" { emit(types, uris, suites, enabled); types = uris = suites = enabled = "" }
		/^[ \t]*deb[ \t]/ {
			line = $0; sub(/^[ \t]*deb[ \t]+/, "", line)
			if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
			split(line, w, /[ \t]+/)
			if (w[2] == want) { print w[1]; exit }
		}
		END { emit(types, uris, suites, enabled) }
	' "${files[@]}" | head -n 1)
	[ -n "$uri" ] || die "no Debian mirror for $codename in the host's apt sources; set E2E_MIRROR"
	printf '%s\n' "$uri"
}

# ---------------------------------------------------------------------------
# Root file systems
# ---------------------------------------------------------------------------

# rootfs_tarball DIST: prints the cached tarball (zstd) of a minimal DIST system,
# building it with debootstrap when it is missing.
rootfs_tarball() {
	local dist=$1 arch tarball build
	arch=$(dpkg --print-architecture)
	tarball=$CACHE_DIR/rootfs-$dist-$arch.tar.zst
	mkdir -p "$CACHE_DIR"
	(
		# One builder at a time; a second run waits and then reuses it.
		flock 9
		if [ -s "$tarball" ]; then
			exit 0
		fi
		local mirror
		mirror=$(host_mirror)
		log "building the $dist root file system from $mirror (cached in $tarball)"
		build=$(mktemp -d "$CACHE_DIR/build-$dist.XXXXXX")
		if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates \
			"$dist" "$build/root" "$mirror" >"$LOG_DIR/debootstrap-$dist.log" 2>&1; then
			rm -rf "$build"
			die "debootstrap $dist failed; see $LOG_DIR/debootstrap-$dist.log"
		fi
		tar -C "$build/root" --zstd -cf "$build/rootfs.tar.zst" .
		mv "$build/rootfs.tar.zst" "$tarball"
		rm -rf "$build"
	) 9>"$CACHE_DIR/.lock-$dist" >&2 || return 1
	printf '%s\n' "$tarball"
}

# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------
# A container NAME has its root in $WORK/ct/NAME/root, the nspawn PID in
# $WORK/ct/NAME/nspawn.pid and its systemd's PID (as seen from the host) in
# $WORK/ct/NAME/init.pid.  $CT names the container that in_ct talks to.

ct_root() { printf '%s\n' "$WORK/ct/$CT/root"; }

# ct_create NAME DIST: a fresh root file system from the cached tarball of
# DIST, with apt pointed at the host's mirror.
ct_create() {
	local dir=$WORK/ct/$1 dist=$2 tarball mirror
	tarball=$(rootfs_tarball "$dist") || return 1
	mirror=$(host_mirror)
	rm -rf "$dir"
	mkdir -p "$dir/root"
	tar -C "$dir/root" --zstd -xf "$tarball"
	printf '%s\n' "$dist" >"$dir/dist"
	printf 'deb %s %s main\n' "$mirror" "$dist" >"$dir/root/etc/apt/sources.list"
	# Stop apt from asking questions or installing recommends.
	printf 'APT::Install-Recommends "false";\n' >"$dir/root/etc/apt/apt.conf.d/90sd-e2e"
	mkdir -p "$dir/root/opt/e2e"
}

# ct_boot NAME: boots the container with systemd as its PID 1 and waits until
# it is up (running or degraded).  Its apt keeps downloaded packages in
# $CACHE_DIR/apt-DIST-NAME, so that later runs need not download them again.
ct_boot() {
	local name=$1 dir=$WORK/ct/$1 machine pid init="" _ state="" archives
	machine=sde2e-$$-$name
	archives=$CACHE_DIR/apt-$(cat "$dir/dist")-$name
	mkdir -p "$archives/partial"
	setsid systemd-nspawn --register=no --keep-unit --console=passive \
		--machine="$machine" -D "$dir/root" --bind="$archives:/var/cache/apt/archives" -b \
		</dev/null >"$LOG_DIR/nspawn-$name.log" 2>&1 &
	pid=$!
	printf '%s\n' "$pid" >"$dir/nspawn.pid"
	for _ in $(seq 1 100); do
		init=$(pgrep -P "$pid" -x systemd || true)
		[ -n "$init" ] && break
		kill -0 "$pid" 2>/dev/null || { log "systemd-nspawn exited; see $LOG_DIR/nspawn-$name.log"; return 1; }
		sleep 0.1
	done
	[ -n "$init" ] || { log "no systemd under systemd-nspawn (pid $pid)"; return 1; }
	printf '%s\n' "$init" >"$dir/init.pid"
	for _ in $(seq 1 60); do
		state=$(CT=$name in_ct timeout 5 systemctl is-system-running --wait 2>/dev/null || true)
		case $state in
		running | degraded) break ;;
		esac
		sleep 0.5
	done
	case $state in
	running) ;;
	degraded)
		log "container $name is degraded:"
		CT=$name in_ct systemctl --failed --no-legend >&2 || true
		;;
	*)
		log "container $name did not boot (state: ${state:-none})"
		return 1
		;;
	esac
	log "container $name booted (systemd pid $init on the host)"
}

# ct_stop NAME: powers the container off (SIGTERM to nspawn asks its systemd
# to shut down), kills it if that takes too long, removes its root.
ct_stop() {
	local name=$1 dir=$WORK/ct/$1 pid _
	if [ -f "$dir/nspawn.pid" ]; then
		pid=$(cat "$dir/nspawn.pid")
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 1 150); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			if kill -0 "$pid" 2>/dev/null; then
				log "container $name did not power off in 15 s; killing it"
				kill -KILL "$pid" 2>/dev/null || true
				sleep 0.5
			fi
		fi
		rm -f "$dir/nspawn.pid" "$dir/init.pid"
	fi
	[ "${E2E_KEEP:-0}" = 1 ] || rm -rf "$dir"
}

ct_running() {
	local dir=$WORK/ct/${1:-$CT}
	[ -f "$dir/nspawn.pid" ] && [ -f "$dir/init.pid" ] && kill -0 "$(cat "$dir/init.pid")" 2>/dev/null
}

# in_ct CMD...: runs CMD inside container $CT, in all its namespaces, with a
# clean environment.
in_ct() {
	local init
	init=$(cat "$WORK/ct/$CT/init.pid") || return 1
	nsenter -t "$init" -a env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
		SYSTEMD_PAGER='' SYSTEMD_COLORS=0 "$@"
}

# need_ct: fails the scenario early when container $CT is not up.
need_ct() {
	ct_running "$CT" || fail "container $CT is not running (an earlier scenario failed)"
}

# unit_prop NAME [UNIT]: one property of a unit, as systemctl show has it.
unit_prop() { in_ct systemctl show -p "$1" --value "${2:-sd-updater.service}"; }

# ---------------------------------------------------------------------------
# Helper processes on the host
# ---------------------------------------------------------------------------

# spawn NAME CMD...: starts CMD in the background with its output in
# $LOG_DIR/NAME.log and records its PID for teardown.
spawn() {
	local name=$1
	shift
	"$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
	printf '%s\n' "$!" >"$WORK/pids/$name.pid"
}

# stop_spawned NAME [SECONDS]: SIGTERM, then SIGKILL after SECONDS (5);
# waits until it is gone.
stop_spawned() {
	local f=$WORK/pids/$1.pid pid _
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 $((${2:-5} * 10))); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

# wait_port_file FILE: waits until a fake server wrote its port(s).
wait_port_file() {
	wait_until 10 test -s "$1" || return 1
}

# ---------------------------------------------------------------------------
# The fake inventory on the host's loopback
# ---------------------------------------------------------------------------

# inv_set JSON: what the inventory answers from now on (atomic replace).
inv_set() {
	printf '%s\n' "$1" >"$WORK/inventory.json.new"
	mv "$WORK/inventory.json.new" "$WORK/inventory.json"
}

# inv_sensors N [FIRST]: the inventory names sensor_FIRST .. sensor_(FIRST+N-1).
inv_sensors() {
	inv_set "$(jq -nc --argjson n "$1" --argjson f "${2:-0}" '[range($f; $f + $n) | "sensor_\(.)"]')"
}

# inv_start: starts the inventory, on its previous port if it had one.
inv_start() {
	local port=0
	[ -s "$WORK/inventory.port" ] && port=$(cat "$WORK/inventory.port")
	rm -f "$WORK/inventory.port.new"
	spawn inventory "$PYTHON" "$E2E_DIR/fakes.py" inventory --data "$WORK/inventory.json" \
		--port "$port" --port-file "$WORK/inventory.port.new"
	wait_port_file "$WORK/inventory.port.new" || return 1
	mv "$WORK/inventory.port.new" "$WORK/inventory.port"
}

inv_stop() { stop_spawned inventory; }
inv_url() { printf 'http://127.0.0.1:%s/inventory\n' "$(cat "$WORK/inventory.port")"; }

# ---------------------------------------------------------------------------
# Polling and small checks
# ---------------------------------------------------------------------------

# wait_until SECONDS CMD...: polls CMD every 0.2 s until it succeeds.
wait_until() {
	local limit=$1 end
	shift
	end=$(($(date +%s%N) + limit * 1000000000))
	while :; do
		"$@" && return 0
		[ "$(date +%s%N)" -lt "$end" ] || return 1
		sleep 0.2
	done
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# elapsed_s START_MS: seconds since START_MS, one decimal.
elapsed_s() {
	local d=$(($(now_ms) - $1))
	printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}

# ---------------------------------------------------------------------------
# More inventories, one per instance of sd-updater@.service: the same fake
# server under another NAME, its data in $WORK/inv-NAME.json.
# ---------------------------------------------------------------------------

ninv_set() {
	printf '%s\n' "$2" >"$WORK/inv-$1.json.new"
	mv "$WORK/inv-$1.json.new" "$WORK/inv-$1.json"
}

# ninv_sensors NAME N [FIRST]: like inv_sensors, for inventory NAME.
ninv_sensors() {
	ninv_set "$1" "$(jq -nc --argjson n "$2" --argjson f "${3:-0}" '[range($f; $f + $n) | "sensor_\(.)"]')"
}

# ninv_start NAME: starts inventory NAME, on its previous port if it had one.
ninv_start() {
	local port=0
	[ -s "$WORK/inv-$1.port" ] && port=$(cat "$WORK/inv-$1.port")
	rm -f "$WORK/inv-$1.port.new"
	spawn "inv-$1" "$PYTHON" "$E2E_DIR/fakes.py" inventory --data "$WORK/inv-$1.json" \
		--port "$port" --port-file "$WORK/inv-$1.port.new"
	wait_port_file "$WORK/inv-$1.port.new" || return 1
	mv "$WORK/inv-$1.port.new" "$WORK/inv-$1.port"
}

ninv_stop() { stop_spawned "inv-$1"; }
ninv_running() { [ -f "$WORK/pids/inv-$1.pid" ] && kill -0 "$(cat "$WORK/pids/inv-$1.pid")" 2>/dev/null; }
ninv_url() { printf 'http://127.0.0.1:%s/inventory\n' "$(cat "$WORK/inv-$1.port")"; }
