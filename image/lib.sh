# Shared steps of the image scripts (sourced, not run): host tools, Debian's
# arm64 packages, kernel modules, cpio archives. Each function says what it
# leaves where.

sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo

# One download cache for every image script (the kernel package is 60 MB):
# relative to the repository root, where each script runs.
image_deb_cache=${PLASMD_DEB_CACHE:-target/debs}

# Installs the host tools the image scripts use and enables arm64 packages.
image_host_tools() {
  local pkgs=() updated=
  command -v cpio >/dev/null || pkgs+=(cpio)
  command -v mkfs.vfat >/dev/null || pkgs+=(dosfstools)
  command -v mcopy >/dev/null || pkgs+=(mtools)
  command -v sfdisk >/dev/null || pkgs+=(fdisk)
  command -v qemu-system-aarch64 >/dev/null || pkgs+=(qemu-system-arm)
  command -v aarch64-linux-gnu-objcopy >/dev/null || pkgs+=(binutils-aarch64-linux-gnu)
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64
    updated=no
  fi
  if [ ${#pkgs[@]} -gt 0 ] || [ "$updated" = no ] || ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then
    $sudo apt-get update -qq
  fi
  [ ${#pkgs[@]} -eq 0 ] || $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

# The name of Debian's current arm64 kernel package.
image_kernel_package() {
  local k
  k=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/{print $2; exit}')
  echo "${k%:arm64}"
}

# Downloads arm64 packages into DEBS (cached) and unpacks each into
# X/<package>: image_debs DEBS X PACKAGE...
image_debs() {
  local debs=$1 x=$2 p deb
  shift 2
  mkdir -p "$debs" "$x"
  for p in "$@"; do
    if ! ls "$debs/${p}"_*.deb >/dev/null 2>&1; then
      (cd "$debs" && apt-get download "$p:arm64" 2>&1 | grep -v unsandboxed || true)
    fi
    deb=$(ls "$debs/${p}"_*.deb 2>/dev/null | head -1)
    [ -n "$deb" ] || { echo "image: cannot download $p:arm64" >&2; return 1; }
    rm -rf "${x:?}/$p" && dpkg-deb -x "$deb" "$x/$p"
  done
}

# Copies kernel modules (by name, in load order) from an unpacked kernel
# package into ROOT/lib/modules and lists them in ROOT/etc/modules:
# image_modules KERNEL_DIR ROOT MODULE...
image_modules() {
  local kdir=$1 root=$2 m ko kver
  shift 2
  kver=$(basename "$(ls -d "$kdir"/lib/modules/*)")
  mkdir -p "$root/lib/modules" "$root/etc"
  : > "$root/etc/modules"
  for m in "$@"; do
    ko=$(find "$kdir/lib/modules/$kver" -name "$m.ko" | head -1)
    [ -n "$ko" ] || { echo "image: module $m not found in $kdir" >&2; return 1; }
    cp "$ko" "$root/lib/modules/"
    echo "$m" >> "$root/etc/modules"
  done
}

# Packs ROOT into a gzip'd newc cpio archive OUT, every file owned by root.
image_cpio() {
  (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$2"
}

# Makes a disk image OUT whose partition 1 (at 1 MiB, as on an SD card) is
# a FAT filesystem labelled LABEL holding ARTIFACTS as /artifacts, sized
# for its content: image_netboot_disk ARTIFACTS OUT LABEL
image_netboot_disk() {
  local a=$1 disk=$2 label=$3 part kib
  part=$disk.part
  kib=$(( $(du -sk "$a" | cut -f1) * 5 / 4 + 8192 ))
  rm -f "$part" "$disk"
  mkfs.vfat -C -n "$label" "$part" "$kib" >/dev/null
  mmd -i "$part" ::/artifacts
  mcopy -i "$part" -s "$a"/* ::/artifacts/
  truncate -s 1M "$disk"
  cat "$part" >> "$disk"
  rm -f "$part"
  echo 'start=2048, type=c' | sfdisk -q "$disk"
}
