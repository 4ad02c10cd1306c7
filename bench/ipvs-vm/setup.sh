#!/bin/bash
# Builds (once; later runs reuse it) everything `cargo xtask bench --ipvs-vm` boots, in $D:
# Debian's kernel (which has IPVS as modules), a debootstrap root filesystem with the
# bench's tools, and a stage-1 initramfs that mounts that root over virtio-9p.
# Only Debian packages are used; nothing here is committed. About a minute on a fresh host.
set -euo pipefail
D=${D:?set D to the cache directory}
S=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$D/debs" "$D/pkgs" "$D/kernel"
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || echo http://deb.debian.org/debian)
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }

need=()
for c in debootstrap:debootstrap depmod:kmod cpio:cpio python3:python3; do
  command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq; apt_install "${need[@]}"; fi
if ! command -v qemu-system-x86_64 >/dev/null; then
  if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
    # qemu-utils came from bookworm-backports: bookworm's own qemu-system-x86 would
    # replace it with an older one, so take qemu-system-x86 from backports too, through a
    # private apt configuration (nothing under /etc/apt changes).
    A=$D/apt-backports; mkdir -p "$A/parts" "$A/lists/partial"
    cp /etc/apt/sources.list.d/debian.sources "$A/parts/"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$MIRROR" > "$A/parts/backports.sources"
    APTO=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$A/parts" -o "Dir::State::Lists=$A/lists")
    apt-get "${APTO[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive apt-get "${APTO[@]}" install -y -qq --no-install-recommends \
      qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
      qemu-system-data/bookworm-backports qemu-utils/bookworm-backports seabios/bookworm-backports >/dev/null
  else
    apt-get update -qq; apt_install qemu-system-x86
  fi
fi

# 1. The kernel of linux-image-amd64 (IPVS as modules), and a static busybox for stage 1.
if [ ! -f "$D/vmlinux" ]; then
  KV=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{sub("linux-image-","",$2); print $2; exit}')
  echo "ipvs-vm: kernel $KV"
  (cd "$D/debs" && apt-get download "linux-image-$KV" busybox-static 2>/dev/null)
  dpkg -x "$D"/debs/linux-image-"${KV}"_*.deb "$D/kernel"
  dpkg -x "$D"/debs/busybox-static_*.deb "$D/pkgs"
  # The uncompressed ELF boots through PVH: no real mode, no xz decompression (seconds under TCG).
  python3 - "$D/kernel/boot/vmlinuz-$KV" "$D/vmlinux.tmp" <<'PY'
import lzma, sys
d = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[d.find(b"\xfd7zXZ\x00"):]))
PY
  mv "$D/vmlinux.tmp" "$D/vmlinux"
fi
KV=$(ls "$D/kernel/lib/modules" | head -1)

# 2. Root filesystem: what section 2 runs (no systemd: vm-init is PID 1).
R=$D/rootfs
if [ ! -x "$R/usr/sbin/ipvsadm" ] || [ ! -x "$R/usr/sbin/nft" ]; then
  rm -rf "$R"
  debootstrap --variant=minbase \
    --include=iproute2,ipvsadm,kmod,procps,wrk,haproxy,nginx-light,nftables,ethtool,busybox \
    bookworm "$R" "$MIRROR" >/dev/null
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
fi
if [ ! -d "$R/lib/modules/$KV" ]; then
  mkdir -p "$R/lib/modules"; cp -a "$D/kernel/lib/modules/$KV" "$R/lib/modules/"
  depmod -b "$R" "$KV"
fi
install -m 755 "$S/vm-init" "$R/sbin/vm-init"

# 3. Stage-1 initramfs: busybox and the modules to mount the root over virtio-9p.
if [ ! -f "$D/initrd.gz" ]; then
  M=$R/lib/modules/$KV; W=$D/initrd.d
  rm -rf "$W"; mkdir -p "$W"/{bin,proc,sys,dev,newroot,lib/modules/$KV}
  cp "$D/pkgs/bin/busybox" "$W/bin/busybox"
  for m in virtio_pci 9pnet_virtio 9p; do
    for f in $(grep -E "/$m.ko(\.[a-z]+)?:" "$M/modules.dep" | tr -d ':'); do
      mkdir -p "$W/lib/modules/$KV/$(dirname "$f")"; cp -n "$M/$f" "$W/lib/modules/$KV/$f"
    done
  done
  cp "$M"/modules.{dep,alias,builtin} "$W/lib/modules/$KV/" 2>/dev/null || true
  install -m 755 "$S/stage1-init" "$W/init"
  (cd "$W" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$D/initrd.gz"
fi
echo "ipvs-vm: cache ready in $D (kernel $KV)"
