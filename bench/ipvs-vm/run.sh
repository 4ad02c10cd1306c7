#!/bin/bash
# Boots the cached VM ($D, built by setup.sh) with `xlb` ($1) and the `xlb-bench` and
# `xlb-testkit` binaries beside it, and runs job.sh inside.
# ACCEL=kvm|tcg; QUICK=1 for tiny counts; TIMEOUT in seconds bounds the whole run.
# The VM has no network (-nic none): all traffic stays in namespaces inside it.
set -euo pipefail
D=${D:?set D to the cache directory}; XLB=${1:?usage: run.sh PATH-TO-XLB}
S=$(cd "$(dirname "$0")" && pwd)
for bin in xlb xlb-bench xlb-testkit; do
  install -m 755 "$(dirname "$XLB")/$bin" "$D/rootfs/usr/local/bin/$bin"
done
install -m 755 "$S/job.sh" "$D/rootfs/root/job.sh"
case ${ACCEL:-tcg} in
  kvm) ACC=(-accel kvm -cpu host) ;;
  *) ACC=(-accel tcg,thread=multi,tb-size=256 -cpu max) ;;
esac
exec timeout "${TIMEOUT:-600}" qemu-system-x86_64 "${ACC[@]}" -smp 2 -m 2048 \
  -machine q35 -nographic -no-reboot -nic none -serial mon:stdio \
  -kernel "$D/vmlinux" -initrd "$D/initrd.gz" \
  -fsdev "local,id=r,path=$D/rootfs,security_model=passthrough,multidevs=remap" \
  -device virtio-9p-pci,fsdev=r,mount_tag=rootfs \
  -append "console=ttyS0 quiet loglevel=4 panic=-1 vmjob=/root/job.sh ${QUICK:+QUICK=1}" </dev/null
