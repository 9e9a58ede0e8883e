#!/bin/busybox sh
# shellcheck shell=dash
# /init of the Linux VMs of `make bench-vm` (packed by benchvm/bench-vm.sh).
#
# Loads virtio-net, gives eth0 benchvm.ip/24 (MTU benchvm.mtu), then by the
# kernel command line's `benchvm=ROLE`:
#   serve   the benchmark's Linux peer servers (ibguest-bench __peer):
#           udp-echo on port 7 and tcp-sink on port 9; prints BENCHVM-READY
#           and runs until the host kills the VM
#   client  waits until benchvm.peer answers ping, then runs
#           `tcp-send PEER:9 benchvm.bytes` and
#           `udp-rr PEER:7 benchvm.count benchvm.size`, prints their lines,
#           BENCHVM-DONE, and powers off
# Failures print `BENCHVM-FAIL <what>` (and the VM powers off).
#
# No `set -e`/`set -u`: this is PID 1, and a shell that exits panics the
# kernel.

/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin
export HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp
mount -t tmpfs tmp /tmp

arg() { # the value of NAME=... on the kernel command line
    # shellcheck disable=SC2013 # the command line is words
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1"=*) echo "${w#*=}"; return;; esac
    done
}
finish() {
    echo "BENCHVM-DONE"
    sync
    poweroff -f
}
fatal() {
    echo "BENCHVM-FAIL $*"
    finish
}
ROLE=$(arg benchvm)
IP=$(arg benchvm.ip)
MTU=$(arg benchvm.mtu)
PEER=$(arg benchvm.peer)

# shellcheck disable=SC2013 # one module name a line
for m in $(cat /lib/modules.order); do
    insmod "/lib/mod/$m.ko" || fatal "insmod $m failed"
done
ip link set lo up
ip link set eth0 mtu "${MTU:-1500}" || fatal "ip link set eth0 mtu $MTU"
ip addr add "$IP/24" dev eth0 || fatal "ip addr add $IP/24 dev eth0"
ip link set eth0 up || fatal "ip link set eth0 up"
echo "benchvm: $(uname -r), eth0 $IP/24 mtu $(cat /sys/class/net/eth0/mtu), driver $(basename "$(readlink /sys/class/net/eth0/device/driver)"), clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"

case "$ROLE" in
    serve)
        /bin/ibguest-bench __peer udp-echo "$IP:7" >/tmp/echo.log 2>&1 &
        /bin/ibguest-bench __peer tcp-sink "$IP:9" &
        i=0
        until grep -q listening /tmp/echo.log; do
            i=$((i + 1))
            [ "$i" -lt 100 ] || fatal "udp-echo did not start: $(cat /tmp/echo.log)"
            sleep 0.1
        done
        sleep 0.5
        echo "BENCHVM-READY"
        while :; do sleep 3600; done
        ;;
    client)
        i=0
        until ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; do
            i=$((i + 1))
            [ "$i" -lt 60 ] || fatal "$PEER does not answer ping"
        done
        /bin/ibguest-bench __peer tcp-send "$PEER:9" "$(arg benchvm.bytes)" || fatal "tcp-send failed"
        /bin/ibguest-bench __peer udp-rr "$PEER:7" "$(arg benchvm.count)" "$(arg benchvm.size)" ||
            fatal "udp-rr failed"
        finish
        ;;
    *) fatal "unknown benchvm=$ROLE on the kernel command line" ;;
esac
