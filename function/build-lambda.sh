#!/usr/bin/env bash
# Build the provisioner as an AWS Lambda bundle (custom runtime provided.al2023):
#   target/lambda/provisioner/bootstrap   (what function/template.yaml deploys)
#   target/lambda/provisioner/bootstrap.zip
#
# Needs cargo-lambda and zig, both from PyPI:  pip install cargo-lambda ziglang
# (tests/run installs them, pinned, into target/tools/venv), and the musl
# target: rustup target add x86_64-unknown-linux-musl.
# Set NP_LAMBDA_TARGET=aarch64-unknown-linux-musl for Graviton (then deploy
# template.yaml with Architecture=arm64; rustup target add
# aarch64-unknown-linux-musl). NP_LAMBDA_DIR puts the bundle elsewhere than
# target/lambda (the benchmark keeps one per architecture). Extra arguments go
# to `cargo lambda build`.
#
# A static musl binary, the very build the container images use
# (images/build.sh): same target, same target directory, so the dependency
# tree is compiled once in release mode for both. The release build has its
# own target directory, so it never waits on (or invalidates) the debug build
# of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-lambda >/dev/null 2>&1 || {
  echo "build-lambda: cargo-lambda is required: pip install cargo-lambda ziglang" >&2
  exit 1
}
# (CARGO_TARGET_DIR, not --target-dir: cargo-lambda 1.9.2 passes the latter
# on to `cargo metadata`, which refuses it.)
CARGO_TARGET_DIR=target/lambda-build exec cargo lambda build --release --locked \
  --bin provisioner --target "${NP_LAMBDA_TARGET:-x86_64-unknown-linux-musl}" --lambda-dir "${NP_LAMBDA_DIR:-target/lambda}" "$@"
