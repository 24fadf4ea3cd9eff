#!/usr/bin/env bash
# Build the qsnap test guest: a Debian cloud kernel plus a tiny busybox
# initramfs.
#
#   guest/build.sh [OUTDIR]      (default OUTDIR: <repo>/build/guest)
#
# Produces OUTDIR/vmlinuz and OUTDIR/initramfs.img. Boot them with
#
#   qemu-system-x86_64 -accel tcg -m 512 -kernel OUTDIR/vmlinuz \
#       -initrd OUTDIR/initramfs.img -append 'console=ttyS0 quiet' \
#       -serial ... -device virtio-blk-pci,drive=... [second disk]
#
# The guest expects exactly that append line: console=ttyS0 (the shell and
# all output are on the first serial port) and quiet (no boot log there).
#
# What the guest does (see the /init below): mounts the first virtio disk
# (/dev/vda) at /mnt and the second (/dev/vdb) at /mnt2, making an ext2
# filesystem on a disk first only if it is entirely blank; mounts a tmpfs at
# /tmp; prints the line READY on ttyS0; then runs a root shell there with
# prompt "# " forever (respawned if it exits).
#
# The kernel package is only downloaded and unpacked here, never installed.
# Host packages the build needs are installed when missing (needs root).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO_ROOT=$(dirname "$(dirname "$SELF")")
OUT=${1:-$REPO_ROOT/build/guest}

# Debian metapackage that always points at the current cloud kernel; the
# cloud flavour is small and has virtio and ext4 support without much else.
KERNEL_META=linux-image-cloud-amd64
# Modules the guest needs beyond what the kernel has built in: virtio-blk
# disks on the PCI transport, ext4 (which also mounts ext2), and
# virtio-balloon (free page reporting: the balloon tests). Their
# dependencies are added automatically; built-in ones are skipped.
WANTED_MODULES=(virtio_pci virtio_blk ext4 virtio_balloon)

log() { echo "guest/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- Cache --------------------------------------------------------------
# vmlinuz is moved into place last, so its presence marks a complete build.
if [[ -f $OUT/vmlinuz && -f $OUT/initramfs.img &&
      $OUT/vmlinuz -nt $SELF && $OUT/initramfs.img -nt $SELF ]]; then
    echo "guest/build.sh: $OUT is up to date"
    exit 0
fi

# --- Host packages ------------------------------------------------------
APT_UPDATED=0
apt_update_once() {
    if (( ! APT_UPDATED )); then
        log "running apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
}

# Install the given packages if they are not installed yet. The package
# lists are refreshed only when apt does not know a package, because
# apt-get update is slow and usually unnecessary.
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    (( ${#missing[@]} )) || return 0
    (( EUID == 0 )) || die "missing host packages (run as root to install): ${missing[*]}"
    for p in "${missing[@]}"; do
        apt-cache show "$p" >/dev/null 2>&1 || { apt_update_once; break; }
    done
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# busybox-static: the whole guest userland, and it must be static because the
# initramfs has no libc. kmod: depmod, because the kernel .deb does not ship
# modules.dep (it is generated when the package is installed).
need_pkgs busybox-static cpio kmod gzip
DEPMOD=$(PATH=$PATH:/usr/sbin:/sbin command -v depmod) || die "depmod not found"
BUSYBOX=$(dpkg -L busybox-static | grep '/bin/busybox$') || die "busybox-static binary not found"
BUSYBOX=${BUSYBOX%%$'\n'*}

# --- Temp dirs ----------------------------------------------------------
# WORK holds the unpacked kernel package and the initramfs tree. STAGE is in
# OUT itself so the final moves are same-filesystem renames (atomic).
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/qsnap-guest.XXXXXX")
STAGE=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK" "$STAGE"' EXIT
# Turn fatal signals into a normal exit so the EXIT trap cleans up too.
trap 'exit 130' INT TERM HUP

# --- Kernel -------------------------------------------------------------
# Resolve the metapackage to the versioned image package it depends on.
resolve_kernel_pkg() {
    apt-cache depends "$KERNEL_META" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
KPKG=$(resolve_kernel_pkg)
if [[ -z $KPKG ]]; then
    (( EUID == 0 )) || die "apt does not know $KERNEL_META; run apt-get update"
    apt_update_once
    KPKG=$(resolve_kernel_pkg)
fi
[[ -n $KPKG ]] || die "cannot resolve $KERNEL_META to a linux-image package"
KVER=${KPKG#linux-image-}
log "kernel package $KPKG"

# As root, apt drops privileges to _apt for downloads, which cannot write
# into our private mktemp dir; download as root instead of opening it up.
APT_DL_OPTS=()
(( EUID == 0 )) && APT_DL_OPTS=(-o APT::Sandbox::User=root)
(cd "$WORK" && apt-get download -qq "${APT_DL_OPTS[@]}" "$KPKG")
dpkg-deb -x "$WORK"/"$KPKG"_*.deb "$WORK/kpkg"

KROOT=$WORK/kpkg
# Newer kernel packages ship modules under /usr/lib; depmod -b looks in lib/.
if [[ ! -e $KROOT/lib && -d $KROOT/usr/lib/modules ]]; then
    ln -s usr/lib "$KROOT/lib"
fi
[[ -d $KROOT/lib/modules/$KVER ]] || die "no /lib/modules/$KVER in $KPKG"
[[ -f $KROOT/boot/vmlinuz-$KVER ]] || die "no /boot/vmlinuz-$KVER in $KPKG"
MODDIR=$KROOT/lib/modules/$KVER
"$DEPMOD" -b "$KROOT" "$KVER"

# --- Module selection ---------------------------------------------------
# Module names use '_' and '-' interchangeably; compare them normalised.
# norm sets REPLY instead of printing, to avoid a subshell per module.
norm() { REPLY=${1##*/}; REPLY=${REPLY%%.ko*}; REPLY=${REPLY//-/_}; }

declare -A DEPS=() PATH_OF=() BUILTIN=() SEEN=()
while IFS= read -r line; do
    norm "${line%%:*}"
    PATH_OF[$REPLY]=${line%%:*}
    DEPS[$REPLY]=${line#*:}
done < "$MODDIR/modules.dep"
while IFS= read -r mod; do
    norm "$mod"
    BUILTIN[$REPLY]=1
done < "$MODDIR/modules.builtin"

# Depth-first over modules.dep: a module is appended after everything it
# depends on, so LOAD_ORDER is a valid insmod order. Soft dependencies
# (modules.softdep) are not followed: the only relevant one, ext4 -> crc32c,
# matters only for metadata_csum filesystems, and ext4 is built in anyway.
LOAD_ORDER=()
visit() {
    local name=$1 dep
    [[ -n ${SEEN[$name]:-} ]] && return 0
    SEEN[$name]=1
    [[ -n ${BUILTIN[$name]:-} ]] && return 0
    [[ -n ${PATH_OF[$name]:-} ]] || die "module $name not found in $KPKG"
    for dep in ${DEPS[$name]}; do
        norm "$dep"
        visit "$REPLY"
    done
    LOAD_ORDER+=("$name")
}
for m in "${WANTED_MODULES[@]}"; do norm "$m"; visit "$REPLY"; done

# busybox insmod cannot read compressed modules, so they are decompressed
# at build time; fetch the decompressor only if a needed module needs it.
for name in "${LOAD_ORDER[@]}"; do
    case ${PATH_OF[$name]} in
        *.ko.xz)  need_pkgs xz-utils ;;
        *.ko.zst) need_pkgs zstd ;;
    esac
done

# --- Initramfs tree -----------------------------------------------------
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,mnt,mnt2,root,etc,lib/modules}

install -m 0755 "$BUSYBOX" "$ROOT/bin/busybox"
# Applet symlinks are made here rather than with `busybox --install` at boot,
# which saves boot time and keeps the boot silent.
"$BUSYBOX" --list-full | while IFS= read -r applet; do
    [[ $applet == bin/busybox ]] && continue
    ln -sf /bin/busybox "$ROOT/$applet"
done
# Without these, ls -l and id show numeric ids only.
echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOT/etc/passwd"
echo 'root:x:0:' > "$ROOT/etc/group"

# Modules go flat into /lib/modules, plus a list in load order for /init.
: > "$ROOT/etc/modules"
for name in "${LOAD_ORDER[@]}"; do
    src=$MODDIR/${PATH_OF[$name]}
    dst=$ROOT/lib/modules/$name.ko
    case $src in
        *.ko)     cp "$src" "$dst" ;;
        *.ko.xz)  xz -dc "$src" > "$dst" ;;
        *.ko.zst) zstd -qdc "$src" > "$dst" ;;
        *.ko.gz)  gzip -dc "$src" > "$dst" ;;
        *) die "unknown module format: $src" ;;
    esac
    echo "$name" >> "$ROOT/etc/modules"
done
log "modules: ${LOAD_ORDER[*]:-(none, all built in)}"

cat > "$ROOT/init" <<'EOF'
#!/bin/sh
# qsnap test guest init. Keep it quiet: tests parse the serial output.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# "quiet" still lets kernel warnings through; they would interleave with
# command output on the serial console, so only show emergencies there.
# (dmesg in the guest still has everything.)
echo 1 > /proc/sys/kernel/printk

while read -r m; do
    insmod "/lib/modules/$m.ko" || echo "init: error: insmod $m failed"
done < /etc/modules

# RAM-backed scratch space for tests.
mount -t tmpfs -o mode=1777 tmpfs /tmp

# A disk is formatted only if its first MiB is all zeros, so a disk with a
# filesystem that fails to mount for some other reason is never wiped.
mount_disk() {
    dev=$1 dir=$2
    [ -b "$dev" ] || return 0
    mount -t ext4 "$dev" "$dir" 2>/dev/null && return 0
    if cmp -s -n 1048576 "$dev" /dev/zero; then
        mke2fs -F "$dev" >/dev/null 2>&1 &&
            mount -t ext4 "$dev" "$dir" && return 0
    fi
    echo "init: error: cannot mount $dev on $dir"
}
mount_disk /dev/vda /mnt
mount_disk /dev/vdb /mnt2

echo READY

# Interactive root shell on the serial console, forever. setsid + cttyhack
# make ttyS0 the controlling terminal so ^C reaches the foreground command.
# The serial tty reports 0 columns, which busybox's line editor treats as 80
# and then wraps long command echoes with "\r\r\n"; a wide terminal keeps
# the echo of a command byte-identical to what was sent.
stty -F /dev/ttyS0 cols 4096
export PS1='# ' TERM=dumb
while :; do
    setsid cttyhack sh
    sleep 1    # do not spin if the shell cannot start
done
EOF
chmod 0755 "$ROOT/init"

# Pack as newc cpio, root-owned, sorted for stable output. No /dev/console
# node is needed: the kernel unpacks its built-in initramfs (which has one)
# before ours, and /init then mounts devtmpfs over /dev.
(
    cd "$ROOT"
    find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet
) > "$WORK/initramfs.cpio"
gzip -9n < "$WORK/initramfs.cpio" > "$STAGE/initramfs.img"
cp "$KROOT/boot/vmlinuz-$KVER" "$STAGE/vmlinuz"

# --- Publish ------------------------------------------------------------
# Remove the old vmlinuz first and move the new one in last: if the build is
# killed in between, vmlinuz is missing, the cache check fails and the next
# run rebuilds, so a half-updated guest is never used.
rm -f "$OUT/vmlinuz"
mv -f "$STAGE/initramfs.img" "$OUT/initramfs.img"
mv -f "$STAGE/vmlinuz" "$OUT/vmlinuz"
log "built $OUT (kernel $KVER, initramfs $(stat -c %s "$OUT/initramfs.img") bytes)"
