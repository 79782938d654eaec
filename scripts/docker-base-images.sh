#!/usr/bin/env bash
# Local stand-ins for the two base images the Dockerfile names, for a machine with a
# Docker engine but no registry to pull from (this project's CI). A normal machine
# pulls the real images and never needs this script. Each image is built only when
# its tag is missing; the debootstrapped root filesystems are cached under
# $DOCKER_BASE_CACHE, so a second run on the same machine does not debootstrap again.
#
#   debian:bookworm-slim     debootstrap --variant=minbase bookworm (Debian's packages),
#                            trimmed of docs, man pages, locales and apt lists as the
#                            real slim image is, imported with `docker import`
#   rust:<v>-slim-bookworm   the same plus what the official slim Rust image installs
#                            (ca-certificates, gcc, libc6-dev) and this machine's Rust
#                            toolchain at the official paths and environment
#                            (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo,
#                            PATH). It also carries this machine's CA bundle: this
#                            sandbox reaches crates.io through a TLS-re-signing egress
#                            proxy, and cargo in the build stage must trust it.
set -euo pipefail
cd "$(dirname "$0")/.."
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${DOCKER_BASE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/event-aggregator/docker-base}
SLIM=$(sed -n 's/^FROM \(debian:[^ ]*\).*/\1/p' Dockerfile)
RUST=$(sed -n 's/^FROM \(rust:[^ ]*\).*/\1/p' Dockerfile)
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$CACHE"

have() { docker image inspect "$1" >/dev/null 2>&1; }
# Where a registry answers, the real image is what to use.
pulled() { timeout 120 docker pull -q "$1" >/dev/null 2>&1; }

# A cached, trimmed minbase root filesystem as a tarball: rootfs NAME [PACKAGES].
rootfs() {
  local tar="$CACHE/$1.tar"
  if [ -s "$tar" ]; then
    echo "$tar"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  fi
  local dir
  dir=$(mktemp -d)
  echo "debootstrap $1 (${2:-no extra packages}) ..." >&2
  if ! debootstrap --variant=minbase ${2:+--include="$2"} bookworm "$dir" "$MIRROR" >"$CACHE/$1.log" 2>&1; then
    tail -n 20 "$CACHE/$1.log" >&2
    exit 1
  fi
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
  find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  tar -C "$dir" -cf "$tar.partial" . && mv "$tar.partial" "$tar"
  rm -rf "$dir"
  echo "$tar"
}

if have "$SLIM"; then
  echo "$SLIM: present"
elif pulled "$SLIM"; then
  echo "$SLIM: pulled"
else
  docker import --change "ENV PATH=$PATH_ENV" --change 'CMD ["bash"]' "$(rootfs bookworm-minbase)" "$SLIM"
  echo "$SLIM: built from debootstrap"
fi

if have "$RUST"; then
  echo "$RUST: present"
  exit 0
fi
if pulled "$RUST"; then
  echo "$RUST: pulled"
  exit 0
fi
command -v rustup >/dev/null || { echo "the stand-in for $RUST needs a rustup toolchain" >&2; exit 1; }
rustc_version=$(rustc --version | cut -d' ' -f2)
case "$RUST" in
  "rust:${rustc_version%.*}"-*) ;;
  *) echo "warning: $RUST stands in with this machine's rustc $rustc_version" >&2 ;;
esac
toolchain=$(rustc --print sysroot)
name="$rustc_version-x86_64-unknown-linux-gnu"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tar -C "$stage" -xf "$(rootfs bookworm-minbase-rust ca-certificates,gcc,libc6-dev)"
mkdir -p "$stage/usr/local/rustup/toolchains/$name" "$stage/usr/local/cargo/bin"
# The toolchain without its offline docs (~800 MB nobody reads in a build stage).
tar -C "$toolchain" --exclude=./share/doc -cf - . | tar -C "$stage/usr/local/rustup/toolchains/$name" -xf -
cat >"$stage/usr/local/rustup/settings.toml" <<EOF
version = "12"
default_toolchain = "$name"
profile = "minimal"
auto_self_update = "disable"
EOF
cp "$(command -v rustup)" "$stage/usr/local/cargo/bin/rustup"
for tool in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt rust-gdb rust-lldb; do
  ln -s rustup "$stage/usr/local/cargo/bin/$tool"
done
cp /etc/ssl/certs/ca-certificates.crt "$stage/etc/ssl/certs/ca-certificates.crt"
tar -C "$stage" -cf - . | docker import \
  --change "ENV RUSTUP_HOME=/usr/local/rustup" \
  --change "ENV CARGO_HOME=/usr/local/cargo" \
  --change "ENV PATH=/usr/local/cargo/bin:$PATH_ENV" \
  --change "ENV RUST_VERSION=$rustc_version" \
  --change 'CMD ["bash"]' - "$RUST"
echo "$RUST: built from debootstrap and this machine's toolchain ($rustc_version)"
