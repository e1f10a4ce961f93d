#!/usr/bin/env bash
# Runs a command as if on a CPU with other cache sizes: in a private mount
# namespace, each /sys/devices/system/cpu/cpuN/cache is replaced by a copy
# whose L1d / L2 sizes and associativity are the ones given. The GEMM crate
# behind Flex's matmuls and convolutions sizes its k-blocks from these
# files, so this shows, on one machine, how a different CPU changes the
# order of float sums (and with it a training trajectory). Needs root.
#
#   bash scripts/fake_cpu_caches.sh L1D_KIB L1D_WAYS L2_KIB -- command args...
#   e.g. bash scripts/fake_cpu_caches.sh 48 12 1280 -- target/release/ldm-train ...   (an Ice Lake core)
set -euo pipefail
[[ $# -ge 5 && "$4" == "--" ]] || { echo "usage: $0 L1D_KIB L1D_WAYS L2_KIB -- command..." >&2; exit 2; }
l1="$1" ways="$2" l2="$3"
shift 4
exec unshare -m bash -c '
set -euo pipefail
l1="$1" ways="$2" l2="$3"; shift 3
fake="$(mktemp -d)"
mount -t tmpfs none "$fake"
for cpu in /sys/devices/system/cpu/cpu[0-9]*; do
  [[ -d "$cpu/cache" ]] || continue
  n="$(basename "$cpu")"
  mkdir -p "$fake/$n"
  for idx in "$cpu"/cache/index*; do
    d="$fake/$n/$(basename "$idx")"
    mkdir -p "$d"
    for f in level type size coherency_line_size ways_of_associativity shared_cpu_list number_of_sets; do
      [[ -r "$idx/$f" ]] && cat "$idx/$f" >"$d/$f"
    done
    case "$(cat "$d/level"):$(cat "$d/type")" in
      1:Data) echo "${l1}K" >"$d/size"; echo "$ways" >"$d/ways_of_associativity" ;;
      2:Unified) echo "${l2}K" >"$d/size" ;;
    esac
  done
  mount --bind "$fake/$n" "$cpu/cache"
done
exec "$@"
' fake "$l1" "$ways" "$l2" "$@"
