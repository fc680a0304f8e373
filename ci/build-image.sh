#!/usr/bin/env bash
# Builds the project's image `catwar-server:local` with no registry: the release binaries
# plus the shared libraries `ldd` lists, imported as a root filesystem. One image serves
# every role; play servers start match observers from it (`--observer-backend docker`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/catwar-server}
# The simulator rides along for its agents (`--entrypoint /catwar-sim`).
sim=${2:-target/release/catwar-sim}
[ -x "$bin" ] && [ -x "$sim" ] || cargo build --release -p catwar-server -p catwar-sim --locked
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$bin" "$root/catwar-server"
install -D -m 0755 "$sim" "$root/catwar-sim"
ldd "$bin" "$sim" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}' | sort -u | while read -r lib; do
  cp --parents -L "$lib" "$root"
done
mkdir -p "$root/tmp"
tar -C "$root" -c . | docker import --change 'ENTRYPOINT ["/catwar-server"]' - catwar-server:local >/dev/null
echo "built catwar-server:local from $bin and $sim ($(du -sh "$root" | cut -f1))"
