#!/bin/busybox sh
# /init of the xen-test dom0 (packed by xentest/xen-test.sh).
#
# Brings up the Xen side of dom0: mounts, the Xen device modules, xenfs,
# xenstored, xen-init-dom0 and xenconsoled; reports step `boot`; then runs
# the scenario (/scenario.sh, from xentest/scenario.sh) and powers off.
# Every result is one console line `XEN-STEP <id> PASS|FAIL <detail>`; the
# host script collects them. `XEN-PLAN <ids>` comes first, `XEN-DONE` last.
#
# No `set -e`/`set -u` here, on purpose: this is PID 1, and a shell that exits
# panics the kernel. Every command that matters is checked and turns into a
# FAIL line instead; each wait has its own timeout.

/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/lib/xen-4.17/bin
export HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mount -t tmpfs shm /dev/shm
mkdir -p /run/xen /run/xenstored /run/lock /var/lib/xen /var/log/xen/console /etc/xen
# Core dumps land in /run, named after the program; the scenario lists them.
# shellcheck disable=SC3045 # busybox sh has ulimit -c
ulimit -c unlimited
echo '/run/core.%e.%p' >/proc/sys/kernel/core_pattern
T_INIT=$(cut -d' ' -f1 /proc/uptime)

arg() { # the value of NAME=... on the kernel command line
    # shellcheck disable=SC2013 # the command line is words
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1"=*)
            echo "${w#*=}"
            return
            ;;
        esac
    done
}
now() { cut -d' ' -f1 /proc/uptime; }
secs() { cut -d. -f1 /proc/uptime; }
between() { # seconds from uptime $1 to uptime $2, one decimal
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'
}
since() { between "$1" "$(now)"; }
step() { # id PASS|FAIL detail...
    echo "XEN-STEP $*"
}
indent() { sed 's/^/    | /'; }
finish() {
    if [ "$(arg xentest.shell)" = 1 ]; then
        echo "xen-test: dom0 shell (exit to power off)"
        setsid cttyhack sh
    fi
    echo "XEN-DONE"
    sync
    poweroff -f
    sleep 5
    echo o >/proc/sysrq-trigger
}

# The scenario: PLAN (the step ids, boot first) and scenario().
# shellcheck source=scenario.sh
. /scenario.sh
echo "XEN-PLAN $PLAN"
echo "xen-test: dom0 /init at ${T_INIT} s (dom0 uptime), kernel $(uname -r), $(nproc) vCPU(s), $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB"

boot_fail() {
    step boot FAIL "$1"
    [ -f /run/xenstored.log ] && indent </run/xenstored.log
    finish
}

# --- the Xen devices -----------------------------------------------------------
# shellcheck disable=SC2013 # one module name a line
for m in $(cat /lib/modules.order); do
    insmod "/lib/mod/$m.ko" || boot_fail "insmod $m failed"
done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || boot_fail "mount -t xenfs xenfs /proc/xen failed"
grep -q control_d /proc/xen/capabilities 2>/dev/null || boot_fail "/proc/xen/capabilities does not say control_d: not dom0?"
for d in evtchn gntdev gntalloc privcmd xenbus; do
    [ -e "/dev/xen/$d" ] || boot_fail "no /dev/xen/$d after loading the modules"
done

# --- xenstored, dom0's xenstore entries, the console daemon --------------------------
T_XS=$(now)
xenstored --pid-file /run/xenstored.pid >/run/xenstored.log 2>&1 ||
    boot_fail "xenstored failed to start"
i=0
until xenstore-read -s / >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 300 ] || boot_fail "xenstored did not answer within 30 s"
    sleep 0.1
done
T_XS_UP=$(now)
xen-init-dom0 >/run/xen-init-dom0.log 2>&1 || {
    indent </run/xen-init-dom0.log
    boot_fail "xen-init-dom0 failed"
}
xenconsoled --log=guest --log-dir=/var/log/xen/console >/run/xenconsoled.log 2>&1 ||
    boot_fail "xenconsoled failed to start"
xl info >/run/xl-info.txt 2>&1 || {
    indent </run/xl-info.txt
    boot_fail "xl info failed"
}
info() { sed -n "s/^$1 *: //p" /run/xl-info.txt; }
step boot PASS "Xen $(info xen_version), virt_caps: $(info virt_caps); dom0 /init at ${T_INIT} s of dom0 uptime, xenstored answered $(between "$T_XS" "$T_XS_UP") s after its start (at ${T_XS_UP} s), toolstack ready at $(now) s; free $(info free_memory) MiB"

scenario
finish
