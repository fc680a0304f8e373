#!/usr/bin/env bash
# Builds the project's image `catwar-server:local` with no registry: the release binary
# plus the shared libraries `ldd` lists, imported as a root filesystem. One image serves
# every role; play servers start match observers from it (`--observer-backend docker`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/catwar-server}
[ -x "$bin" ] || cargo build --release -p catwar-server --locked
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$bin" "$root/catwar-server"
ldd "$bin" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}' | while read -r lib; do
  cp --parents -L "$lib" "$root"
done
mkdir -p "$root/tmp"
tar -C "$root" -c . | docker import --change 'ENTRYPOINT ["/catwar-server"]' - catwar-server:local >/dev/null
echo "built catwar-server:local from $bin ($(du -sh "$root" | cut -f1))"
