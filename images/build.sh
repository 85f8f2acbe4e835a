#!/usr/bin/env bash
# Build both container images WITHOUT a Docker daemon and WITHOUT pulling any
# base image: static (musl) release binaries from cargo, then `FROM scratch`
# images with buildah. What tests/images.rs builds, inspects and runs.
#
#   images/build.sh                 # both images
#   images/build.sh provisioner     # or: reaper
#
# Output, for each image:
#   - in buildah's local storage: namespace-provisioner:VERSION,
#     namespace-provisioner-reaper:VERSION (VERSION from Cargo.toml)
#   - an OCI archive: target/images/<image>.oci.tar
# Push to your registry (docs/deploy.md § Images):
#   buildah push namespace-provisioner:0.1.0 docker://REGISTRY/namespace-provisioner:0.1.0
#
# The binaries come from the same release build as the Lambda bundle
# (function/build-lambda.sh): cargo-lambda + zig, target x86_64-unknown-linux-musl,
# target directory target/lambda-build. Building one after the other compiles
# the dependency tree once. Needs: cargo-lambda and ziglang (pip), the musl
# target (rustup target add x86_64-unknown-linux-musl), buildah (apt).
#
# The image layout is that of the Dockerfiles' distroless/static:nonroot run
# stage: the binary in /usr/local/bin, /etc/passwd and /etc/group with user
# nonroot (65532), CA certificates in /etc/ssl/certs/ca-certificates.crt, /tmp,
# /home/nonroot; USER 65532:65532.
#
# Environment:
#   NP_BUILDAH_ROOT     buildah storage in this directory instead of the default
#                       (the tests use target/images/buildah)
#   NP_BUILDAH_DRIVER   storage driver (default vfs: works everywhere, also
#                       without overlayfs or fuse; overlay is faster where it works)
#   NP_CA_BUNDLE        CA certificates to ship (default /etc/ssl/certs/ca-certificates.crt,
#                       Debian's ca-certificates)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '\033[1m==> images: %s\033[0m\n' "$*" >&2; }
die() { printf 'images/build.sh: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required: $2"; }

case "${1:-all}" in
  all) WHICH=(provisioner reaper) ;;
  provisioner | reaper) WHICH=("$1") ;;
  *) echo "usage: $0 [provisioner|reaper]" >&2; exit 2 ;;
esac

need cargo-lambda "pip install cargo-lambda==1.9.2 ziglang==0.17.1 (tests/run installs both into target/tools/venv)"
need buildah "apt-get install buildah"
TARGET=x86_64-unknown-linux-musl
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[[ -n "$VERSION" ]] || die "no version in Cargo.toml"
CA_BUNDLE=${NP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[[ -s "$CA_BUNDLE" ]] || die "no CA bundle at $CA_BUNDLE: apt-get install ca-certificates, or set NP_CA_BUNDLE"

BUILDAH=(buildah --storage-driver "${NP_BUILDAH_DRIVER:-vfs}")
if [[ -n "${NP_BUILDAH_ROOT:-}" ]]; then
  mkdir -p "$NP_BUILDAH_ROOT"
  BUILDAH+=(--root "$NP_BUILDAH_ROOT/storage" --runroot "$NP_BUILDAH_ROOT/run")
fi

bins=()
for bin in "${WHICH[@]}"; do bins+=(--bin "$bin"); done
say "cargo lambda build --release --target $TARGET ${bins[*]} (static binaries; the Lambda bundle's build)"
CARGO_TARGET_DIR=target/lambda-build cargo lambda build --release --locked \
  --target "$TARGET" "${bins[@]}" --lambda-dir target/images/lambda >&2

for bin in "${WHICH[@]}"; do
  case "$bin" in
    provisioner) image=namespace-provisioner; containerfile=function/Containerfile ;;
    reaper) image=namespace-provisioner-reaper; containerfile=cronjob/Containerfile ;;
  esac
  ctx=target/images/$image
  say "staging $ctx: /usr/local/bin/$bin, /etc/passwd, /etc/group, CA certificates, /tmp, /home/nonroot"
  rm -rf "$ctx"
  mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/home/nonroot"
  # (cargo-lambda moves each binary out of the target directory into --lambda-dir.)
  install -m 0755 "target/images/lambda/$bin/bootstrap" "$ctx/rootfs/usr/local/bin/$bin"
  install -m 0644 images/rootfs/etc/passwd images/rootfs/etc/group "$ctx/rootfs/etc/"
  install -m 0644 "$CA_BUNDLE" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
  chmod 1777 "$ctx/rootfs/tmp"
  chmod 0700 "$ctx/home/nonroot"

  say "buildah bud -f $containerfile -t $image:$VERSION"
  # --timestamp 0: the same inputs give the same image digest.
  "${BUILDAH[@]}" bud --isolation chroot --timestamp 0 --layers=false \
    -f "$ROOT/$containerfile" -t "$image:$VERSION" "$ctx" >&2
  archive=target/images/$image.oci.tar
  rm -f "$archive"
  "${BUILDAH[@]}" push "$image:$VERSION" "oci-archive:$archive:$image:$VERSION" >&2
  say "$archive: $(du -k "$archive" | cut -f1) KiB (binary $(du -k "$ctx/rootfs/usr/local/bin/$bin" | cut -f1) KiB)"
  echo "$archive"
done
