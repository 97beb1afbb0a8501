#!/usr/bin/env bash
# Makes the Debian package's generated assets in target/deb-assets (see [package.metadata.deb]
# in Cargo.toml): manual pages and shell completions from the clap definitions of the release
# binary, and the systemd user service with the packaged binary's path.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
bin="$top/target/release/smime-agent"
out="$top/target/deb-assets"
[ -x "$bin" ] || { echo "assets.sh: build the release binary first" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
"$bin" man "$out/man" 2>/dev/null
gzip -9n "$out"/man/*.1
"$bin" completions bash >"$out/completions/smime-agent"
"$bin" completions zsh >"$out/completions/_smime-agent"
"$bin" completions fish >"$out/completions/smime-agent.fish"
sed -e 's|^ExecStart=.*|ExecStart=/usr/bin/smime-agent serve --foreground|' \
  -e '/^# Adjust the path/d' \
  "$top/contrib/systemd/smime-agent.service" >"$out/smime-agent.service"
grep -q '^ExecStart=/usr/bin/smime-agent ' "$out/smime-agent.service"
