#!/bin/busybox sh
# /init of the IB-unaware Linux domU of step `linux-domu` (packed by
# xentest/xen-test.sh into /domu/initrd.gz in dom0): the stock Debian kernel
# with the standard Xen netfront, busybox-static and this script, nothing
# that knows about InfiniBand. It reaches the ibguests through dom0 (vif,
# routed) and the back end's gateway (ibgw0).
#
# Its settings come from the kernel command line (the scenario writes them):
#   xentest.ip=10.78.0.2/24 xentest.gw=10.78.0.1
#   xentest.ping=10.77.0.2 xentest.url=http://10.77.0.3/
# It prints its results on its console (hvc0), between markers the scenario
# looks for in xenconsoled's log:
#   LINUX-DOMU: ...                    progress lines
#   LINUX-DOMU-PING-BEGIN/-END rc=N    busybox ping's output
#   LINUX-DOMU-WGET-BEGIN/-END rc=N bytes=N, then the page as
#   LINUX-DOMU-PAGE| lines
#   LINUX-DOMU-DONE                    last; then it powers off.
# No `set -e`: this is PID 1; every failure is printed and the script goes on
# to LINUX-DOMU-DONE.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp
mount -t tmpfs tmp /tmp

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
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "LINUX-DOMU: $*"; }
done_() {
    echo "LINUX-DOMU-DONE at $(up) s"
    sync
    poweroff -f
    sleep 5
    echo o >/proc/sysrq-trigger
}

IP=$(arg xentest.ip)
GW=$(arg xentest.gw)
PING=$(arg xentest.ping)
URL=$(arg xentest.url)
say "kernel $(uname -r), /init at $(up) s, $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB, $(nproc) vCPU(s); ip=$IP gw=$GW ping=$PING url=$URL"

insmod /lib/mod/xen-netfront.ko || say "insmod xen-netfront failed"
i=0
while [ ! -e /sys/class/net/eth0 ] && [ "$i" -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
if [ ! -e /sys/class/net/eth0 ]; then
    say "no eth0 60 s after loading xen-netfront; interfaces: $(echo /sys/class/net/*)"
    done_
fi
ip link set lo up
ip addr add "$IP" dev eth0
ip link set eth0 up
ip route add default via "$GW"
say "eth0 $(cat /sys/class/net/eth0/address) driver $(basename "$(readlink /sys/class/net/eth0/device/driver)") $(ip -o -4 addr show eth0 | awk '{print $4}'), default via $GW, at $(up) s"

echo "LINUX-DOMU-PING-BEGIN $PING"
ping -c 3 -w 20 "$PING" 2>&1
echo "LINUX-DOMU-PING-END rc=$?"

echo "LINUX-DOMU-WGET-BEGIN $URL"
# busybox 1.35's static wget crashes (SIGSEGV) with -T: use timeout.
timeout 30 wget -q -O /tmp/page "$URL" 2>/tmp/wget.err
rc=$?
sed 's/^/LINUX-DOMU-WGET-ERR| /' /tmp/wget.err
echo "LINUX-DOMU-WGET-END rc=$rc bytes=$(if [ -f /tmp/page ]; then wc -c </tmp/page; else echo 0; fi)"
[ -f /tmp/page ] && sed 's/^/LINUX-DOMU-PAGE| /' /tmp/page

done_
