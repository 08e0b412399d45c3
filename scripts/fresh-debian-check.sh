#!/usr/bin/env bash
# Runs the README's two commands on a fresh Debian 13 (trixie), as a new user would: a
# minimal system made by debootstrap, then only what the README names before them — curl
# and ca-certificates (for rustup's command), Rust from rustup — then, in a clean clone of
# this repository:
#   scripts/setup.sh && cargo run --release -- demo
#   scripts/setup.sh && cargo test --release --features mpi,libav -- --show-output
# Each step's time and exit status go to the log and the summary at its end.
#
# Needs root (debootstrap, chroot, mounts; debootstrap is installed from apt if missing),
# network to deb.debian.org, static.rust-lang.org, crates.io and PyPI, about 10 GB of disk
# and about an hour on 2 cores. ../shared is not there, as on a user's machine: the tests
# that need its fixtures say SKIPPED.
#
# Usage: scripts/fresh-debian-check.sh [ROOT (default /tmp/fresh-debian)]   (log: ROOT.log)
# The system stays in ROOT for a look afterwards; remove it with `rm -rf --one-file-system ROOT`
# once this script has ended (it unmounts what it mounted).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
root="${1:-/tmp/fresh-debian}"
log="$root.log"
[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap and chroot)" >&2; exit 2; }
: > "$log"
say() { echo "$(date -u '+%H:%M:%S') $*" | tee -a "$log" >&2; }

if [ ! -x "$root/bin/bash" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    say "debootstrap trixie (minbase) into $root"
    debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian >>"$log" 2>&1
fi
mounted=()
cleanup() { for m in "${mounted[@]}"; do umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done; }
trap cleanup EXIT
for m in proc sys dev; do
    mountpoint -q "$root/$m" && continue
    case $m in
        proc) mount -t proc proc "$root/proc" ;;
        sys) mount -t sysfs sys "$root/sys" ;;
        dev) mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev" ;;
    esac
    mounted=("$root/$m" "${mounted[@]}")
done
cp /etc/resolv.conf "$root/etc/resolv.conf"
# A network that intercepts TLS has its CA in the host's local certificates: trusted in the
# fresh system too (installed into its store with ca-certificates in the first step).
mkdir -p "$root/usr/local/share/ca-certificates"
cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
rm -rf "$root/src"
git clone -q "$repo" "$root/src"
say "clean clone of $(git -C "$repo" rev-parse --short HEAD) in $root/src"

# The steps, run inside the fresh system as root with a login-like environment.
cat > "$root/steps.sh" <<'EOF'
set -uo pipefail
export HOME=/root DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
step() { local name="$1"; shift; local t0=$SECONDS; echo "== $name: $*"; "$@"; local rc=$?; echo "== $name: exit $rc after $((SECONDS - t0)) s"; echo "$name $rc $((SECONDS - t0))" >> /steps.result; return $rc; }
: > /steps.result
# What the README names before its commands: curl (rustup's command), Rust 1.95+ from rustup.
step prerequisites sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null && update-ca-certificates >/dev/null' || exit 1
# The README's rustup command; sh.rustup.rs serves rustup-init from static.rust-lang.org,
# which is the fallback where that name does not resolve.
step rustup bash -o pipefail -c "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y -q \
    || (curl --proto '=https' --tlsv1.2 -sSf -o /tmp/rustup-init https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \
        && chmod +x /tmp/rustup-init && /tmp/rustup-init -y -q)" || exit 1
. /root/.cargo/env || exit 1
rustc --version && cargo --version || exit 1
cd /src
step main-job bash -c 'scripts/setup.sh && cargo run --release -- demo'
step test-suite bash -c 'scripts/setup.sh && cargo test --release --features mpi,libav -- --show-output'
EOF
say "running the steps in the fresh system (log: $log)"
set +e
chroot "$root" /bin/bash /steps.sh >>"$log" 2>&1
set -e
say "summary (step, exit status, seconds):"
tee -a "$log" < "$root/steps.result" >&2
! grep -qv ' 0 ' "$root/steps.result"
