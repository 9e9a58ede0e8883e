# shellcheck shell=bash
# Linux VMs from Debian packages, for scripts that boot them under QEMU
# (softroce/softroce.sh and benchvm/bench-vm.sh). Source it after setting:
#   DVM_DL    where downloaded .debs are cached (shared: target/softroce/dl)
#   DVM_PKG   where unpacked packages go
#   DVM_SAY   a function name that prints progress (optional, default echo)
# and call, in order:
#   dvm_kernel MODULES...   sets DVM_KDEB, DVM_KVER, DVM_VMLINUZ (the kernel
#                           linux-image-amd64 points at, or the newest cached)
#   dvm_busybox             sets DVM_BUSYBOX (from busybox-static)
#   dvm_copy_with_libs DEST FILE...   the shared libraries ldd names
#   dvm_add_modules ROOT MODULES...   plain .ko files in ROOT/lib/mod and
#                           their load order in ROOT/lib/modules.order
#   dvm_pack ROOT OUT       a gzipped newc cpio of ROOT (busybox's cpio)
# Packages are fetched with `apt-get download` (not installed) and unpacked
# with dpkg-deb; nothing here needs root.

DVM_APT_UPDATED=0
dvm_say() { "${DVM_SAY:-echo}" "$@"; }
dvm_die() {
    echo "error: $*" >&2
    exit 1
}
dvm_apt_update() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ "$DVM_APT_UPDATED" = 0 ]; then
        $sudo apt-get update -qq
        DVM_APT_UPDATED=1
    fi
}

# dvm_fetch NAME: the cached .deb of package NAME, downloaded if missing.
dvm_fetch() {
    local f
    mkdir -p "$DVM_DL"
    f=$(find "$DVM_DL" -maxdepth 1 -name "$1_*_amd64.deb" | sort | tail -1)
    if [ -z "$f" ]; then
        dvm_say "downloading $1 (apt-get download)" >&2
        if ! (cd "$DVM_DL" && apt-get download -qq "$1" >/dev/null 2>&1); then
            dvm_apt_update >&2
            (cd "$DVM_DL" && apt-get download -qq "$1" >/dev/null) || dvm_die "apt-get download $1 failed"
        fi
        f=$(find "$DVM_DL" -maxdepth 1 -name "$1_*_amd64.deb" | sort | tail -1)
        [ -n "$f" ] || dvm_die "apt-get download $1 left no $DVM_DL/$1_*_amd64.deb"
    fi
    echo "$f"
}

# dvm_unpack DEB DIR [MEMBER-PATTERNS...]: extracts once (the .deb's name and
# the patterns are the cache key), everything or only the matching members.
dvm_unpack() {
    local deb=$1 dir=$2 key
    shift 2
    key="$(basename "$deb") $*"
    if [ -f "$dir/.from" ] && [ "$(cat "$dir/.from")" = "$key" ]; then
        return
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ $# -eq 0 ]; then
        dpkg-deb -x "$deb" "$dir"
    else
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --wildcards --wildcards-match-slash "$@"
    fi
    echo "$key" >"$dir/.from"
}

dvm_kernel() {
    local kpkg m patterns
    mkdir -p "$DVM_DL" "$DVM_PKG"
    DVM_KDEB=$(find "$DVM_DL" -maxdepth 1 -name 'linux-image-[0-9]*-amd64_*_amd64.deb' | sort | tail -1)
    if [ -z "$DVM_KDEB" ]; then
        kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ && !k {k = $2} END {print k}')
        if [ -z "$kpkg" ]; then
            dvm_apt_update
            kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ && !k {k = $2} END {print k}')
        fi
        [ -n "$kpkg" ] || dvm_die "cannot tell which linux-image-*-amd64 package linux-image-amd64 depends on"
        DVM_KDEB=$(dvm_fetch "$kpkg")
    fi
    patterns=('./boot/vmlinuz-*')
    for m in "$@"; do patterns+=("*/$m.ko*"); done
    dvm_unpack "$DVM_KDEB" "$DVM_PKG/kernel" "${patterns[@]}"
    DVM_KVER=$(basename "$(find "$DVM_PKG/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -1)")
    DVM_VMLINUZ=$DVM_PKG/kernel/boot/vmlinuz-$DVM_KVER
    [ -f "$DVM_VMLINUZ" ] || dvm_die "no vmlinuz-$DVM_KVER in $(basename "$DVM_KDEB")"
}

dvm_busybox() {
    dvm_unpack "$(dvm_fetch busybox-static)" "$DVM_PKG/busybox"
    DVM_BUSYBOX=$DVM_PKG/busybox/bin/busybox
    [ -x "$DVM_BUSYBOX" ] || dvm_die "no busybox in the busybox-static package"
}

dvm_copy_with_libs() {
    local dest=$1 f lib
    shift
    for f in "$@"; do
        { ldd "$f" 2>/dev/null || true; } | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' |
            while read -r lib; do
                [ -f "$lib" ] || continue
                mkdir -p "$dest$(dirname "$lib")"
                [ -f "$dest$lib" ] || cp -L "$lib" "$dest$lib"
            done
    done
}

dvm_add_modules() {
    local root=$1 m ko
    shift
    mkdir -p "$root/lib/mod"
    : >"$root/lib/modules.order"
    for m in "$@"; do
        ko=$(find "$DVM_PKG/kernel/lib/modules/$DVM_KVER" -name "$m.ko*" | head -1)
        [ -n "$ko" ] || dvm_die "module $m not in $(basename "$DVM_KDEB")"
        # busybox insmod wants plain .ko files (newer kernels ship .ko.xz).
        case "$ko" in
            *.ko) cp "$ko" "$root/lib/mod/$m.ko" ;;
            *.ko.xz) xz -dc "$ko" >"$root/lib/mod/$m.ko" ;;
            *.ko.zst) zstd -qdc "$ko" >"$root/lib/mod/$m.ko" ;;
            *) dvm_die "module $ko: unknown compression" ;;
        esac
        echo "$m" >>"$root/lib/modules.order"
    done
}

dvm_pack() {
    local root=$1 out=$2 bb
    bb=$(realpath "$DVM_BUSYBOX")
    # The host may have no cpio; busybox's writes newc.
    (cd "$root" && find . | "$bb" cpio -o -H newc 2>/dev/null) | gzip -1 >"$out.tmp"
    mv "$out.tmp" "$out"
}
