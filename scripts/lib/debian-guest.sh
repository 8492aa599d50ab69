# shellcheck shell=bash
# Sourced by the QEMU guest tests (kernel/test/run, vmhost/run, ntphosts/run): Debian's
# generic kernel (with its headers, for building modules), busybox-static, pps-tools and QEMU
# itself, fetched with apt-get download and unpacked with dpkg-deb -x into $cache (the host is
# not changed; QEMU's libraries are installed the normal way, nothing removed). Needs root.
# In: $cache (a directory, the current one). Out: $kver, $tree (the unpacked packages), and
# the functions base_initramfs, add_programs, guest_users and pack_initramfs that build a
# guest's initramfs, and build_crudepps (which needs $repo).
# Two guest tests may start at once (./scripts/test runs vmhost/run beside kernel/test/run):
# one fetches and unpacks while the other waits, and apt is never run twice at a time.
: "${cache:?the script that sources scripts/lib/debian-guest.sh sets it}"
guest_lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec {guest_lock}>"$cache/.fetch.lock"
flock "$guest_lock"
need() { command -v "$1" >/dev/null || { echo "$0: $1 is missing: $2" >&2; exit 1; }; }
need apt-get "this test fetches Debian's kernel packages"
need dpkg-deb "this test unpacks Debian's packages"
need strip "the guests' programs go in without debug info (apt-get install binutils)"

if ! apt-cache show qemu-system-x86 >/dev/null 2>&1; then apt-get update -qq; fi
# QEMU's libraries, installed the normal way (nothing is removed). qemu-system-x86 itself is
# unpacked instead: Debian 12's 7.2 would replace a newer qemu-utils some machines carry.
qemu_deps=$(apt-cache depends --no-recommends --no-suggests qemu-system-x86 qemu-system-common \
  qemu-system-data | awk '/Depends:/ { print $2 }' | grep -v '^qemu-' | grep -v '^<' | sort -u)
# Also: gcc-12 (Debian 12's kernel is built with it), make, perl for checkpatch, xz for the
# kernel source tarball, python3 for the guest driver.
# Only what is missing: vmhost/run and ntphosts/run start together, after kernel/test/run has
# installed all of it, and two apt-gets at once would fail on dpkg's lock.
host_missing=()
# shellcheck disable=SC2086
for p in cpio dkms gcc-12 make perl xz-utils python3 $qemu_deps; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || host_missing+=("$p")
done
if [ ${#host_missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-remove --no-install-recommends \
    "${host_missing[@]}" >/dev/null
fi
need gcc-12 "apt-get install gcc-12 failed above"
need python3 "apt-get install python3 failed above"

# The generic kernel, not the cloud one: the cloud kernel has no GPIO support.
image_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
kver=${image_pkg#linux-image-}
headers_pkg=linux-headers-$kver
common_pkg=$(apt-cache depends "$headers_pkg" | awk '/Depends: linux-headers-.*-common/ { print $2; exit }')
kbuild_pkg=$(apt-cache depends "$headers_pkg" | awk '/Depends: linux-kbuild-/ { print $2; exit }')
if [ -z "$kver" ] || [ -z "$common_pkg" ] || [ -z "$kbuild_pkg" ]; then
  echo "$0: cannot find Debian's kernel packages with apt-cache" >&2; exit 1
fi

tree=$cache/$kver
if [ ! -e "$tree/.unpacked" ]; then
  rm -rf "$tree" debs && mkdir -p "$tree" debs
  (cd debs || exit 1; apt-get download -q "$image_pkg" "$headers_pkg" "$common_pkg" "$kbuild_pkg" \
    busybox-static pps-tools qemu-system-x86 qemu-system-common qemu-system-data 2>&1 \
    | grep -v '^W: Download is performed unsandboxed' || true)
  for d in debs/*.deb; do dpkg-deb -x "$d" "$tree"; done
  # The headers' Makefile includes the common tree by its absolute /usr/src path.
  sed -i "s|^include /usr/src/|include $tree/usr/src/|" "$tree/usr/src/linux-headers-$kver/Makefile"
  rm -rf debs
  touch "$tree/.unpacked"
fi
flock -u "$guest_lock"

# The base every test guest boots: busybox, virtio-net and its dependencies (loaded by the
# guest's init from /lib/modules), and the shared guest tools (scripts/lib/guest-bin/).
# Usage: base_initramfs DIR
base_initramfs() {
  local ird=$1 m
  mkdir -p "$ird"/{bin,sbin,lib/modules,usr/bin,usr/sbin,lib64,lib/x86_64-linux-gnu,proc,sys,dev,tmp,etc}
  cp "$tree/bin/busybox" "$ird/bin/"
  for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
           drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover \
           drivers/net/net_failover drivers/net/virtio_net; do
    cp "$tree/lib/modules/$kver/kernel/$m.ko" "$ird/lib/modules/"
  done
  cp "$guest_lib"/guest-bin/* "$ird/bin/"
}

# Copies programs into DIR/usr/bin (or DIR/usr/sbin for ones from an sbin) with the shared
# libraries they link against. Usage: add_programs DIR PROGRAM...
add_programs() {
  local ird=$1 p lib
  shift
  for p in "$@"; do
    local to=$ird/usr/bin
    case $p in */sbin/*) to=$ird/usr/sbin ;; esac
    cp "$p" "$to/"
    # Without debug info: the release build keeps it (40 MB for ntp-offset, 8 MB without),
    # and a guest unpacks its initramfs into its own small RAM ("Initramfs unpacking failed:
    # write error" at 192 MB once ntp-offset grew).
    strip --strip-debug "$to/$(basename "$p")"
  done
  for lib in $(ldd "$@" | awk '/=>/ { print $3 } /ld-linux/ { print $1 }' | sort -u); do
    cp -L "$lib" "$ird$lib"
  done
}

# Packs DIR (with DIR/init from INIT) into the gzipped cpio archive OUT.
# Usage: pack_initramfs DIR INIT OUT
pack_initramfs() {
  cp "$2" "$1/init"
  chmod +x "$1/init"
  (cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) > "$3"
}

# crudepps as users build it (kernel/'s Makefile and Kbuild) in DIR, for the unpacked
# kernel; more make arguments after DIR (W=1). Prints make's output but BTF's notice; the
# caller checks for DIR/crudepps.ko. Usage: build_crudepps DIR [MAKE-ARG...]
build_crudepps() {
  local dir=$1
  shift
  mkdir -p "$dir"
  cp "${repo:?}"/kernel/crudepps.c "$repo"/kernel/Kbuild "$repo"/kernel/Makefile "$dir/"
  make -s -C "$dir" KDIR="$tree/usr/src/linux-headers-$kver" "$@" 2>&1 | grep -v 'Skipping BTF generation' || true
}

# A guest's passwd and group: root only, for the name lookups of the NTP clients' users.
# Usage: guest_users DIR
guest_users() {
  printf 'root:x:0:0:root:/:/bin/sh\n' > "$1/etc/passwd"
  printf 'root:x:0:\n' > "$1/etc/group"
}
