#!/usr/bin/env bash
# vm.sh: boots a Debian kernel under qemu-system-x86_64 (TCG, no KVM needed) with an
# initramfs built here, and runs one scenario script inside the guest. The scenario talks to
# servers on the host's loopback through 10.0.2.2 (QEMU's user-mode network maps it to
# 127.0.0.1). docs/kernel.md describes the harness.
#
# usage: vm.sh --kernel 6.1|6.12 --scenario FILE [OPTION]...
#   --kernel 6.1|6.12  6.1: the kernel linux-image-amd64 depends on (Debian 12's default);
#                      6.12: the one linux-image-6.12-amd64 depends on (bookworm-security)
#   --scenario FILE    script run by the guest's busybox sh once the guest is up; its exit
#                      status is the verdict (0 = PASS)
#   --binary PATH      a host program, copied to /usr/local/bin/NAME in the guest with the
#                      shared libraries ldd lists for it (repeatable)
#   --file PATH        a data file, copied to /data/NAME in the guest (repeatable)
#   --env KEY=VALUE    exported to the scenario (repeatable)
#   --smp N            vCPUs (default 2)          --mem MIB    guest RAM (default 512)
#   --nic virtio|e1000 network card (default virtio)
#   --timeout SECONDS  QEMU is killed after this long (default 300)
#   --log FILE         keep the serial console there (each line prefixed by host seconds)
#   --cache DIR        cache directory; NBDWIRE_KERNEL_CACHE overrides it
#                      (default without either: ~/.cache/nbdwire-kernel)
#   --prepare          set up the cache (packages, kernel, initramfs) and boot nothing
#   -q                 do not echo the serial console while the guest runs
#
# Exit status: 0 the scenario passed, 1 it failed (or the guest hung, or setup failed),
# 2 usage error, 77 qemu-system-x86 is missing and cannot be installed (a skip).
set -euo pipefail

prog=vm.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { sed -n '/^# usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
t_start=${EPOCHREALTIME/./}
elapsed() { local us=$(( ${EPOCHREALTIME/./} - ${1:-$t_start} )); printf '%d.%01d' $((us / 1000000)) $((us % 1000000 / 100000)); }
say() { printf '[%s +%ss] %s\n' "$prog" "$(elapsed)" "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }
skip() { say "SKIPPED: $*"; exit 77; }

# ---- options ------------------------------------------------------------------------------------
kernel='' scenario='' smp=2 mem=512 nic=virtio timeout=300 log='' cache_opt='' prepare=0 quiet=0
binaries=() files=() envs=()
while (($#)); do
  case $1 in
    --kernel) kernel=${2?}; shift 2 ;;
    --scenario) scenario=${2?}; shift 2 ;;
    --binary) binaries+=("${2?}"); shift 2 ;;
    --file) files+=("${2?}"); shift 2 ;;
    --env) envs+=("${2?}"); shift 2 ;;
    --smp) smp=${2?}; shift 2 ;;
    --mem) mem=${2?}; shift 2 ;;
    --nic) nic=${2?}; shift 2 ;;
    --timeout) timeout=${2?}; shift 2 ;;
    --log) log=${2?}; shift 2 ;;
    --cache) cache_opt=${2?}; shift 2 ;;
    --prepare) prepare=1; shift ;;
    -q) quiet=1; shift ;;
    -h|--help) usage ;;
    *) say "unknown argument '$1'"; usage ;;
  esac
done
case $kernel in
  6.1) meta=linux-image-amd64 ;;
  6.12) meta=linux-image-6.12-amd64 ;;
  *) say "--kernel must be 6.1 or 6.12"; usage ;;
esac
case $nic in
  virtio) qemu_nic=virtio-net-pci; nic_mods=(virtio_pci virtio_net) ;;
  e1000) qemu_nic=e1000; nic_mods=(e1000) ;;
  *) say "--nic must be virtio or e1000"; usage ;;
esac
for n in "$smp" "$mem" "$timeout"; do [[ $n =~ ^[1-9][0-9]*$ ]] || { say "bad number '$n'"; usage; }; done
if ((prepare == 0)); then
  [[ -n $scenario ]] || { say "--scenario is required"; usage; }
  [[ -f $scenario ]] || die "no scenario $scenario"
fi
for f in "${binaries[@]}" "${files[@]}"; do [[ -f $f ]] || die "no file $f"; done
for f in "${binaries[@]}"; do [[ -x $f ]] || die "$f is not executable"; done
for e in "${envs[@]}"; do [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || { say "bad --env '$e' (KEY=VALUE)"; usage; }; done

cache=${NBDWIRE_KERNEL_CACHE:-${cache_opt:-${XDG_CACHE_HOME:-$HOME/.cache}/nbdwire-kernel}}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# ---- per-run directory, and stopping what this run starts -----------------------------------------
run=$(mktemp -d "${TMPDIR:-/tmp}/nbdwire-vm.XXXXXX")
qemu_pid='' stamp_pid=''
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -TERM "$qemu_pid" 2>/dev/null
    sleep 1
    kill -KILL "$qemu_pid" 2>/dev/null
  fi
  [[ -n $qemu_pid ]] && wait "$qemu_pid" 2>/dev/null
  [[ -n $stamp_pid ]] && wait "$stamp_pid" 2>/dev/null
  rm -rf "$run"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- host packages --------------------------------------------------------------------------------
apt_updated=0
apt_update() {
  ((apt_updated)) && return 0
  say "apt-get update"
  apt-get update -qq >"$run/apt.log" 2>&1 || { cat "$run/apt.log" >&2; return 1; }
  apt_updated=1
}
apt_install() { # PACKAGE...: installs them (as root); nonzero if that fails
  local sudo=()
  command -v apt-get >/dev/null && command -v dpkg-query >/dev/null || return 1
  if [[ $(id -u) -ne 0 ]]; then command -v sudo >/dev/null || return 1; sudo=(sudo -n); fi
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt_update || return 1
  say "apt-get install $*"
  local cmd=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
             -o DPkg::Lock::Timeout=300 "$@")
  "${cmd[@]}" >"$run/apt.log" 2>&1 && return 0
  apt_update && "${cmd[@]}" >"$run/apt.log" 2>&1 && return 0
  cat "$run/apt.log" >&2
  return 1
}

exec 9>"$cache/.lock"
flock -w 300 9 || die "could not lock $cache/.lock within 300 s"

have_qemu() { qemu-system-x86_64 --version >/dev/null 2>&1; }
if ! have_qemu; then
  command -v apt-get >/dev/null || skip "qemu-system-x86_64 is not installed and this is not a Debian system (no apt-get)"
  apt_install qemu-system-x86 seabios ipxe-qemu ||
    skip "qemu-system-x86_64 is not installed and apt-get could not install qemu-system-x86"
  have_qemu || skip "qemu-system-x86 was installed but qemu-system-x86_64 --version fails"
fi
# Everything from here on is needed: a failure is a FAIL, not a skip.
tools=(/usr/sbin/nbd-client /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/blkdiscard)
need=()
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
[[ -x /usr/sbin/nbd-client ]] || need+=(nbd-client)
[[ -x /usr/sbin/mke2fs && -x /usr/sbin/e2fsck ]] || need+=(e2fsprogs)
[[ -x /usr/sbin/blkdiscard ]] || need+=(util-linux)
if ((${#need[@]})); then apt_install "${need[@]}" || die "apt-get could not install ${need[*]}"; fi
for t in "${tools[@]}"; do [[ -x $t ]] || die "$t is missing"; done
command -v apt-get >/dev/null || die "apt-get is needed to download the kernel"

# resolve META: the linux-image-VERSION-amd64 package a metapackage depends on
resolve() {
  apt-cache depends "$1" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
# apt-cache takes seconds on a loaded machine: the answer is kept until the package lists change.
lists=$(stat -c %Y /var/lib/apt/lists/*_Packages* 2>/dev/null | sort -n | tail -n 1 || true)
kpkg=''
if [[ -n $lists && -s $cache/resolved-$meta ]]; then
  read -r stamp_lists kpkg_cached <"$cache/resolved-$meta" || true
  [[ ${stamp_lists-} == "$lists" ]] && kpkg=${kpkg_cached-}
fi
if [[ -z $kpkg ]]; then
  kpkg=$(resolve "$meta" || true)
  if [[ -z $kpkg ]]; then apt_update || true; kpkg=$(resolve "$meta" || true); fi
  lists=$(stat -c %Y /var/lib/apt/lists/*_Packages* 2>/dev/null | sort -n | tail -n 1 || true)
  [[ -z $kpkg || -z $lists ]] || printf '%s %s\n' "$lists" "$kpkg" >"$cache/resolved-$meta"
fi
[[ -n $kpkg ]] || die "cannot tell which kernel $meta depends on (apt-cache depends $meta)"
kver=${kpkg#linux-image-}

fetch_deb() { # PACKAGE DIR: downloads PACKAGE's .deb into DIR, prints its path
  local f
  rm -f "$2"/*.deb
  say "apt-get download $1"
  (cd "$2" && apt-get download -qq "$1" >"$run/apt.log" 2>&1) ||
    { apt_update && (cd "$2" && apt-get download -qq "$1" >"$run/apt.log" 2>&1); } ||
    { cat "$run/apt.log" >&2; return 1; }
  f=$(compgen -G "$2/*.deb" | head -n 1) && [[ -n $f ]] || return 1
  printf '%s\n' "$f"
}

# ---- kernel: vmlinux, config, modules (cached per kernel version) -------------------------------
kdir=$cache/kernel-$kver
# The modules the guest loads, before their dependencies are added.
want_mods=(nbd virtio_pci virtio_net e1000 ext4 crc32c_generic)
if [[ ! -e $kdir/.done ]]; then
  rm -rf "$kdir"
  mkdir -p "$kdir/deb" "$kdir/x" "$kdir/mods"
  deb=$(fetch_deb "$kpkg" "$kdir/deb") || die "apt-get download $kpkg failed"
  say "unpacking $(basename "$deb")"
  dpkg-deb --fsys-tarfile "$deb" >"$kdir/deb/data.tar" || die "dpkg-deb --fsys-tarfile $deb failed"
  tar -tf "$kdir/deb/data.tar" >"$kdir/deb/list" || die "cannot list $deb"
  modroot="lib/modules/$kver"
  grep -q "^\./$modroot/modules.builtin\$" "$kdir/deb/list" || modroot="usr/$modroot"
  tar -xf "$kdir/deb/data.tar" -C "$kdir/x" "./boot/vmlinuz-$kver" "./boot/config-$kver" "./$modroot/modules.builtin" ||
    die "$deb holds no boot/vmlinuz-$kver, config or modules.builtin"
  sed 's|.*/||; s|\.ko.*$||; s|-|_|g' "$kdir/x/$modroot/modules.builtin" >"$kdir/mods/builtin"
  # Modules and their dependencies (each .ko's depends= string; there is no modules.dep in
  # the package and no kmod here), extracted a round at a time.
  todo=("${want_mods[@]}")
  declare -A seen=()
  : >"$kdir/mods/deps"
  for round in 1 2 3 4 5 6; do
    members=()
    for m in "${todo[@]}"; do
      [[ -n ${seen[$m]-} ]] && continue
      seen[$m]=1
      grep -qx "$m" "$kdir/mods/builtin" && continue
      path=$(grep -E "/(${m}|${m//_/-})\.ko(\.[a-z]+)?\$" "$kdir/deb/list" | head -n 1 || true)
      [[ -n $path ]] || die "kernel $kver has neither a module nor a built-in $m"
      members+=("$path")
    done
    ((${#members[@]})) || break
    tar -xf "$kdir/deb/data.tar" -C "$kdir/x" "${members[@]}" || die "cannot extract ${members[*]}"
    todo=()
    for path in "${members[@]}"; do
      f=$kdir/x/$path n=$(basename "$path"); n=${n%%.ko*}; n=${n//-/_}
      case $f in
        *.ko.xz) xz -dc "$f" ;;
        *.ko.zst) zstd -qdc "$f" ;;
        *.ko.gz) gzip -dc "$f" ;;
        *.ko) cat "$f" ;;
        *) false ;;
      esac >"$kdir/mods/$n.ko" || die "cannot decompress $path"
      d=$(tr '\0' '\n' <"$kdir/mods/$n.ko" | sed -n 's/^depends=//p' | head -n 1)
      printf '%s %s\n' "$n" "$d" >>"$kdir/mods/deps"
      IFS=, read -r -a ds <<<"$d"
      todo+=("${ds[@]}")
    done
    ((round < 6)) || die "module dependencies deeper than 6 levels"
  done
  # The ELF vmlinux inside the bzImage, for QEMU's PVH entry: TCG then does not spend seconds
  # decompressing the kernel at every boot. The setup header says where the payload is; its
  # last 4 bytes are the uncompressed size, which checks the result.
  vmlinuz=$kdir/x/boot/vmlinuz-$kver
  config=$kdir/x/boot/config-$kver
  cp "$config" "$kdir/config"
  cp "$vmlinuz" "$kdir/vmlinuz"
  if grep -q '^CONFIG_PVH=y' "$config"; then
    le32() { od -An -t u4 -j "$2" -N 4 "$1" | tr -d ' '; }
    setup_sects=$(od -An -t u1 -j $((0x1f1)) -N 1 "$vmlinuz" | tr -d ' ')
    ((setup_sects == 0)) && setup_sects=4
    poff=$(( (setup_sects + 1) * 512 + $(le32 "$vmlinuz" $((0x248))) ))
    plen=$(le32 "$vmlinuz" $((0x24c)))
    want=$(le32 "$vmlinuz" $((poff + plen - 4)))
    if grep -q '^CONFIG_KERNEL_ZSTD=y' "$config"; then unz=(zstd -qdc)
    elif grep -q '^CONFIG_KERNEL_XZ=y' "$config"; then unz=(xz -dc)
    elif grep -q '^CONFIG_KERNEL_GZIP=y' "$config"; then unz=(gzip -dc)
    else die "kernel $kver: unknown compression (no CONFIG_KERNEL_ZSTD/XZ/GZIP)"; fi
    dd if="$vmlinuz" iflag=skip_bytes,count_bytes skip="$poff" count=$((plen - 4)) bs=1M status=none |
      "${unz[@]}" >"$kdir/vmlinux" ||
      die "decompressing the kernel with ${unz[*]} failed"
    got=$(stat -c %s "$kdir/vmlinux")
    [[ $got == "$want" && $(head -c 4 "$kdir/vmlinux" | od -An -c | tr -d ' ') == '177ELF' ]] ||
      die "vmlinux from $kver is $got bytes (want $want) or not ELF"
  fi
  rm -rf "$kdir/deb" "$kdir/x"
  touch "$kdir/.done"
fi
grep -q '^CONFIG_BLK_DEV_NBD=[ym]' "$kdir/config" || die "kernel $kver has no NBD driver"
boot_image=$kdir/vmlinuz
[[ -s $kdir/vmlinux ]] && boot_image=$kdir/vmlinux

# ---- busybox (static) --------------------------------------------------------------------------------
bbdir=$cache/busybox
if [[ ! -x $bbdir/bin/busybox ]]; then
  rm -rf "$bbdir" && mkdir -p "$bbdir/deb"
  deb=$(fetch_deb busybox-static "$bbdir/deb") || die "apt-get download busybox-static failed"
  dpkg-deb -x "$deb" "$bbdir" || die "dpkg-deb -x $deb failed"
  rm -rf "$bbdir/deb"
  [[ -x $bbdir/bin/busybox ]] || die "busybox-static holds no bin/busybox"
fi
bb=$bbdir/bin/busybox

# mkcpio DIR OUT: a newc archive of DIR's contents
mkcpio() { (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | "$bb" cpio -o -H newc 2>/dev/null) >"$2"; }
# libs PROGRAM...: the shared libraries (and loader) ldd lists for the programs
libs() { ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u; }

# ---- base initramfs (cached per kernel, NIC and harness version) -------------------------------------
# load order: a module after its dependencies; built-in ones are skipped
declare -A deps=() builtin=() placed=()
while read -r n d; do deps[$n]=$d; done <"$kdir/mods/deps"
while read -r n; do builtin[$n]=1; done <"$kdir/mods/builtin"
order=()
place() {
  local m=$1 d
  [[ -n ${placed[$m]-} || -n ${builtin[$m]-} ]] && return 0
  placed[$m]=1
  [[ -n ${deps[$m]+set} ]] || die "module $m of kernel $kver was not extracted"
  IFS=, read -r -a ds <<<"${deps[$m]}"
  for d in "${ds[@]}"; do [[ -n $d ]] && place "$d"; done
  order+=("$m")
}
order_of() { order=(); local m; for m in "$@"; do place "$m"; done; printf '%s ' "${order[@]}"; }
net_order=$(order_of "${nic_mods[@]}")
nbd_order=$(order_of nbd)
fs_order=$(order_of crc32c_generic ext4)

base=$cache/base-$kver-$nic.cpio
stamp="$kver $nic $(cat "$here/vm.sh" "$here/guest-init.sh" "$here/guest-lib.sh" | sha256sum | cut -c1-16) $(stat -Lc %Y:%s "${tools[@]}" "$bb" | tr '\n' ' ')"
if [[ ! -s $base || $(cat "$base.stamp" 2>/dev/null) != "$stamp" ]]; then
  say "building the initramfs for $kver ($nic)"
  root=$run/base
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,usr/local/sbin,etc/ktest,lib/modules,proc,sys,dev,tmp,run,mnt,data}
  cp "$bb" "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
  cp -L "${tools[@]}" "$root/usr/local/sbin/"
  mapfile -t l < <(libs "${tools[@]}")
  cp -L --parents "${l[@]}" "$root/"
  for m in $net_order $nbd_order $fs_order; do cp "$kdir/mods/$m.ko" "$root/lib/modules/"; done
  printf 'NET_MODS="%s"\nNBD_MODS="%s"\nFS_MODS="%s"\n' "$net_order" "$nbd_order" "$fs_order" >"$root/etc/ktest/modules"
  cp "$here/guest-init.sh" "$root/init"
  cp "$here/guest-lib.sh" "$root/etc/ktest/lib.sh"
  chmod 755 "$root/init"
  ln -s /proc/mounts "$root/etc/mtab"
  (cd "$root" && find . -type f -o -type l) | sed 's|^\.||' | LC_ALL=C sort >"$base.files.tmp"
  mkcpio "$root" "$base.tmp" || die "building the initramfs failed"
  mv "$base.files.tmp" "$base.files"
  mv "$base.tmp" "$base"
  printf '%s\n' "$stamp" >"$base.stamp"
  rm -rf "$root"
fi
flock -u 9
exec 9>&-

if ((prepare)); then
  say "cache ready in $cache: kernel $kver ($(basename "$boot_image")), $(du -h "$base" | cut -f1) initramfs"
  exit 0
fi

# ---- per-run cpio: scenario, settings, extra programs and files ------------------------------------
over=$run/over
mkdir -p "$over/etc/ktest" "$over/usr/local/bin" "$over/data"
cp "$scenario" "$over/etc/ktest/scenario.sh"
{
  printf 'export KTEST_HOST=10.0.2.2 KTEST_KERNEL=%q KTEST_NIC=%q\n' "$kernel" "$nic"
  for e in "${envs[@]}"; do printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; done
} >"$over/etc/ktest/env"
if ((${#binaries[@]})); then
  cp -L "${binaries[@]}" "$over/usr/local/bin/"
  mapfile -t l < <(libs "${binaries[@]}")
  extra=()
  for f in "${l[@]}"; do grep -qxF "$f" "$base.files" || extra+=("$f"); done
  ((${#extra[@]} == 0)) || cp -L --parents "${extra[@]}" "$over/"
fi
((${#files[@]} == 0)) || cp -L "${files[@]}" "$over/data/"
mkcpio "$over" "$run/over.cpio" || die "building the per-run cpio failed"
cat "$base" "$run/over.cpio" >"$run/initrd"

# ---- boot ------------------------------------------------------------------------------------------------
[[ -n $log ]] || log=$run/serial.log
: >"$log"
mkfifo "$run/serial"
# Each console line gets the host's seconds since QEMU started; echoed unless -q.
stamp() {
  local t0=${EPOCHREALTIME/./} line
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    printf '%7s %s\n' "$(elapsed "$t0")" "$line" >>"$log"
    ((quiet)) || printf '  | %s\n' "$line" >&2
  done
}
stamp <"$run/serial" &
stamp_pid=$!
say "booting $kpkg ($(basename "$boot_image")) with $smp vCPUs, $mem MiB, $qemu_nic; initramfs $(du -h "$run/initrd" | cut -f1); scenario $(basename "$scenario")"
t_qemu=${EPOCHREALTIME/./}
qemu-system-x86_64 -accel tcg -machine pc -cpu max -smp "$smp" -m "$mem" \
  -display none -monitor none -serial stdio -no-reboot \
  -kernel "$boot_image" -initrd "$run/initrd" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
  -netdev user,id=n0 -device "$qemu_nic,netdev=n0" </dev/null >"$run/serial" 2>&1 &
qemu_pid=$!
timed_out=0
deadline=$((SECONDS + timeout))
while kill -0 "$qemu_pid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    timed_out=1
    kill -TERM "$qemu_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 0.2
done
qrc=0
wait "$qemu_pid" || qrc=$?
qemu_pid=''
wait "$stamp_pid" || true
stamp_pid=''
qemu_s=$(elapsed "$t_qemu")

if ((timed_out)); then
  ((quiet == 0)) || sed 's/^/  | /' "$log" >&2
  die "the guest did not finish within ${timeout} s (kernel $kver)"
fi
if grep -q '@@KTEST RESULT PASS' "$log"; then
  say "PASS: kernel $kver, QEMU ran ${qemu_s} s"
  exit 0
fi
((quiet == 0)) || sed 's/^/  | /' "$log" >&2
die "kernel $kver: the scenario did not pass (QEMU exit status $qrc, ran ${qemu_s} s)"
