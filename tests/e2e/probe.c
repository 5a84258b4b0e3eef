/*
 * Sandbox probe for the end-to-end suite (tests/e2e/run.sh, scenario 3).
 *
 * It runs inside the booted container twice: once under a copy of the
 * installed sd-updater.service whose sandbox lines are kept verbatim (only
 * Type=, ExecStart= and the restart/watchdog lines are replaced), and once as
 * a plain unit without any of them (the control).  Each check tries one thing
 * a hardening line is meant to forbid and prints "name=result", where result
 * is "ok", an errno name, or a value.  run.sh compares both runs against what
 * each line of the unit promises, so every check can fail.
 *
 * Usage: probe MNT_NS IPC_NS UTS_NS
 *   the namespace links of the container's PID 1 (readlink /proc/1/ns/...),
 *   which the sandboxed probe cannot read itself (ProtectProc=invisible).
 *
 * Built statically on the host: gcc -static -O2 -o probe probe.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errname(int e)
{
	switch (e) {
	case 0: return "ok";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EACCES: return "EACCES";
	case EROFS: return "EROFS";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	case EINVAL: return "EINVAL";
	case ENOSYS: return "ENOSYS";
	case EBADF: return "EBADF";
	case EEXIST: return "EEXIST";
	case ENOTDIR: return "ENOTDIR";
	case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
	default: {
		static char buf[32];
		snprintf(buf, sizeof buf, "errno%d", e);
		return buf;
	}
	}
}

static void report(const char *name, const char *value)
{
	printf("%s=%s\n", name, value);
}

/* Runs fn in a child so that whatever it changes (namespaces, personality,
 * scheduling, credentials) stays there.  The child's result: "ok", an errno
 * name, or "signal N" if the kernel killed it (seccomp kill actions). */
static void in_child(const char *name, int (*fn)(void))
{
	int pipefd[2];
	if (pipe(pipefd) != 0) {
		report(name, "probe-error");
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(pipefd[0]);
		int e = fn();
		(void)!write(pipefd[1], &e, sizeof e);
		_exit(0);
	}
	close(pipefd[1]);
	int e = -1, status = 0;
	ssize_t n = read(pipefd[0], &e, sizeof e);
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	if (WIFSIGNALED(status)) {
		char buf[32];
		snprintf(buf, sizeof buf, "signal%d", WTERMSIG(status));
		report(name, buf);
	} else if (n != (ssize_t)sizeof e) {
		report(name, "probe-error");
	} else {
		report(name, errname(e));
	}
}

/* ---- checks run in a child: return 0 or an errno ---- */

static int try_userns(void) { return unshare(CLONE_NEWUSER) == 0 ? 0 : errno; }
static int try_netns(void) { return unshare(CLONE_NEWNET) == 0 ? 0 : errno; }

static int try_realtime(void)
{
	struct sched_param p = { .sched_priority = 1 };
	return sched_setscheduler(0, SCHED_FIFO, &p) == 0 ? 0 : errno;
}

static int try_personality(void)
{
	/* personality(0xffffffff) only queries; this one changes it. */
	return personality(PER_LINUX32) == -1 ? errno : 0;
}

static int try_nice(void)
{
	/* Lowering one's own priority needs no privilege at all; only the
	 * system call filter (@resources removed) can refuse it. */
	return setpriority(PRIO_PROCESS, 0, 5) == 0 ? 0 : errno;
}

static int try_setrlimit(void)
{
	/* The setrlimit system call itself (glibc's setrlimit() calls
	 * prlimit64, which is not in @resources). */
	struct rlimit r;
	if (getrlimit(RLIMIT_CORE, &r) != 0)
		return errno;
	r.rlim_cur = 0; /* lowering the soft limit is always allowed */
	return syscall(SYS_setrlimit, RLIMIT_CORE, &r) == 0 ? 0 : errno;
}

static int try_setuid_drop(void)
{
	/* The privilege drop the agent performs, to nobody (65534). */
	if (setgroups(0, NULL) != 0)
		return errno;
	if (setresgid(65534, 65534, 65534) != 0)
		return errno;
	if (setresuid(65534, 65534, 65534) != 0)
		return errno;
	return 0;
}

static int try_proc_pid1_as_nobody(void)
{
	/* hidepid= exempts group 0, so look as the agent does: unprivileged. */
	int e = try_setuid_drop();
	if (e)
		return e;
	struct stat st;
	return stat("/proc/1", &st) == 0 ? 0 : errno;
}

static int try_int80(void)
{
#if defined(__x86_64__)
	/* getpid through the i386 entry point (i386 __NR_getpid is 20). */
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
	if (ret < 0)
		return (int)-ret;
	return ret == getpid() ? 0 : EINVAL;
#else
	return ENOSYS;
#endif
}

/* ---- checks run in the probe itself ---- */

static void check_create(const char *name, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd >= 0) {
		close(fd);
		unlink(path);
		report(name, "ok");
	} else {
		report(name, errname(errno));
	}
}

static void check_stat(const char *name, const char *path)
{
	struct stat st;
	report(name, stat(path, &st) == 0 ? "ok" : errname(errno));
}

static void check_rw(const char *name, const char *path)
{
	struct statvfs s;
	if (statvfs(path, &s) != 0)
		report(name, errname(errno));
	else
		report(name, (s.f_flag & ST_RDONLY) ? "ro" : "rw");
}

static void check_ns(const char *name, const char *which, const char *pid1)
{
	char path[64], link[128];
	snprintf(path, sizeof path, "/proc/self/ns/%s", which);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n < 0) {
		report(name, errname(errno));
		return;
	}
	link[n] = 0;
	report(name, strcmp(link, pid1) == 0 ? "same" : "differs");
}

static void check_status_field(const char *name, const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	size_t len = strlen(field);
	if (!f) {
		report(name, errname(errno));
		return;
	}
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, field, len) == 0 && line[len] == ':') {
			char *v = line + len + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			v[strcspn(v, "\n")] = 0;
			report(name, v);
			fclose(f);
			return;
		}
	}
	fclose(f);
	report(name, "missing");
}

static void check_socket(const char *name, int family, int type, int proto)
{
	int fd = socket(family, type, proto);
	if (fd >= 0) {
		close(fd);
		report(name, "ok");
	} else {
		report(name, errname(errno));
	}
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s MNT_NS IPC_NS UTS_NS\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* NoNewPrivileges, CapabilityBoundingSet, UMask */
	report("nnp", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 ? "1" : "0");
	check_status_field("capbnd", "CapBnd");
	check_status_field("umask", "Umask");

	/* ProtectSystem=strict (root owns these, so only a read-only mount
	 * can refuse the write) and ReadWritePaths= */
	check_create("write_usr", "/usr/.sd-e2e-probe");
	check_create("write_etc", "/etc/.sd-e2e-probe");
	check_create("write_var", "/var/cache/.sd-e2e-probe");
	check_rw("rw_root", "/");
	check_rw("rw_state", "/var/lib/sd-updater");

	/* ProtectHome, PrivateTmp, PrivateDevices: markers run.sh created */
	check_stat("home_marker", "/root/.sd-e2e-marker");
	check_stat("tmp_marker", "/tmp/.sd-e2e-marker");
	check_stat("vartmp_marker", "/var/tmp/.sd-e2e-marker");
	check_stat("dev_marker", "/dev/.sd-e2e-marker");

	/* PrivateMounts, PrivateIPC, ProtectHostname */
	check_ns("mnt_ns", "mnt", argv[1]);
	check_ns("ipc_ns", "ipc", argv[2]);
	check_ns("uts_ns", "uts", argv[3]);

	/* ProtectProc=invisible, ProcSubset=pid */
	in_child("proc_pid1", try_proc_pid1_as_nobody);
	check_stat("proc_cpuinfo", "/proc/cpuinfo");

	/* ProtectKernelTunables, ProtectControlGroups */
	check_rw("rw_sys", "/sys");
	check_rw("rw_cgroup", "/sys/fs/cgroup");

	/* ProtectKernelModules: the module syscalls are filtered */
	report("finit_module",
	       syscall(SYS_finit_module, -1, "", 0) == 0 ? "ok" : errname(errno));

	/* ProtectKernelLogs: reading the kernel log buffer size needs no
	 * privilege unless dmesg_restrict is set */
	report("syslog", klogctl(10, NULL, 0) >= 0 ? "ok" : errname(errno));
	check_stat("dev_kmsg", "/dev/kmsg");

	/* ProtectClock: adjtimex with modes=0 only reads the clock state */
	{
		struct timex tx;
		memset(&tx, 0, sizeof tx);
		report("adjtimex", adjtimex(&tx) >= 0 ? "ok" : errname(errno));
	}

	/* RestrictAddressFamilies */
	check_socket("af_unix", AF_UNIX, SOCK_DGRAM, 0);
	check_socket("af_inet", AF_INET, SOCK_STREAM, 0);
	check_socket("af_inet6", AF_INET6, SOCK_STREAM, 0);
	check_socket("af_netlink", AF_NETLINK, SOCK_RAW, 0);
	check_socket("af_packet", AF_PACKET, SOCK_DGRAM, 0);

	/* RestrictNamespaces */
	in_child("unshare_user", try_userns);
	in_child("unshare_net", try_netns);

	/* RestrictRealtime */
	in_child("sched_fifo", try_realtime);

	/* RestrictSUIDSGID: a set-uid bit on a file the probe owns */
	{
		const char *p = "/tmp/.sd-e2e-suid";
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0755);
		if (fd < 0) {
			report("chmod_suid", errname(errno));
		} else {
			int r = fchmod(fd, 04755);
			report("chmod_suid", r == 0 ? "ok" : errname(errno));
			close(fd);
			unlink(p);
		}
	}

	/* LockPersonality */
	in_child("personality", try_personality);

	/* MemoryDenyWriteExecute */
	{
		void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		report("mmap_wx", m == MAP_FAILED ? errname(errno) : "ok");
		if (m != MAP_FAILED)
			munmap(m, 4096);
		m = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED) {
			report("mprotect_x", errname(errno));
		} else {
			report("mprotect_x",
			       mprotect(m, 4096, PROT_READ | PROT_EXEC) == 0 ? "ok" : errname(errno));
			munmap(m, 4096);
		}
	}

	/* SystemCallArchitectures=native */
	in_child("int80", try_int80);

	/* SystemCallFilter=@system-service ~@privileged @resources, @setuid;
	 * SystemCallErrorNumber=EPERM */
	in_child("setpriority", try_nice);
	in_child("setrlimit", try_setrlimit);
	{
		const char *p = "/tmp/.sd-e2e-chown";
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0) {
			report("fchown", errname(errno));
		} else {
			/* chown to oneself: no privilege needed */
			report("fchown", fchown(fd, getuid(), getgid()) == 0 ? "ok" : errname(errno));
			close(fd);
			unlink(p);
		}
	}
	in_child("setuid_drop", try_setuid_drop);
	return 0;
}
