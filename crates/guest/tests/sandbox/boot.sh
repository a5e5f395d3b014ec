#!/usr/bin/env bash
# Boots boxcutter-guest as PID 1 of a sandbox: new mount, PID, UTS and network
# namespaces, chrooted into an overlay of the host's root, with a fake /sys and /dev
# prepared by the test (tests/sandbox_init.rs). Nothing outside the namespaces is
# touched: reboot() in a child PID namespace only ends that namespace, kill(-1) reaches
# only its processes, and every mount is private to it.
#
# Must run inside `unshare --mount --propagation private`.
# usage: boot.sh WORK   (WORK holds upper/ ovl/ root/ sys/ dev/ cmdline)
set -euo pipefail

work=$1
root=$work/root

mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/ovl" "$root"
mount --bind "$work/sys" "$root/sys"
mount --bind "$work/dev" "$root/dev"
for node in null zero random urandom; do
  mount --bind "/dev/$node" "$root/dev/$node"
done

# The fake root disk answers to the overlay's device number, as /dev/vda would in a VM.
# It is called vdx, not vda: resize2fs checks /proc/mounts by device name, and the
# machine running this test may well have its own root on /dev/vda.
number=$(mountpoint -d "$root")
ln -s ../../devices/virtio/block/vdx "$work/sys/dev/block/$number"

exec unshare --pid --kill-child --uts --net --mount-proc="$root/proc" \
  bash -c 'mount --bind "$1" "$2/proc/cmdline" && exec chroot "$2" /usr/sbin/boxcutter-guest' \
  boot "$work/cmdline" "$root"
