#!/usr/bin/env bash
# The Debian package as a user meets it: built by `make deb`, installed on this machine with
# apt-get (which pulls its dependencies), used (the agent serves a SoftHSM token, `status`
# shows it, the PKCS#11 module lists it to pkcs11-tool, the manual page renders, bash
# completes, the user units name the packaged binary), then removed and purged, leaving none
# of its files. Run by `make test` (root, or sudo, as CI is).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
deb=$(ls -t "$top"/target/debian/smime-agent_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { echo "package.sh: no package; run make deb" >&2; exit 1; }
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
work=$(mktemp -d)
agent_pid=
fail() { echo "package.sh: FAILED: $*" >&2; exit 1; }
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  if dpkg-query -W -f='${Status}' smime-agent 2>/dev/null | grep -q 'ok installed'; then
    "${sudo[@]}" dpkg --purge smime-agent >/dev/null || true
  fi
  rm -rf "$work"
}
if dpkg-query -W -f='${Status}' smime-agent 2>/dev/null | grep -q 'ok installed'; then
  fail "smime-agent is installed on this machine already; this test installs and removes it"
fi
trap cleanup EXIT

echo "package.sh: $(basename "$deb")"
dpkg-deb -c "$deb" | awk '{print $6}' >"$work/contents"
for f in ./usr/bin/smime-agent ./usr/lib/smime-agent/libsmime_agent_pkcs11.so \
  ./usr/lib/systemd/user/smime-agent.service ./usr/lib/systemd/user/smime-agent.socket \
  ./usr/share/man/man1/smime-agent.1.gz ./usr/share/man/man1/smime-agent-neomutt.1.gz \
  ./usr/share/bash-completion/completions/smime-agent \
  ./usr/share/zsh/vendor-completions/_smime-agent \
  ./usr/share/fish/vendor_completions.d/smime-agent.fish \
  ./usr/share/smime-agent/neomutt/smime-agent.neomuttrc ./usr/share/doc/smime-agent/README.md; do
  grep -qxF "$f" "$work/contents" || fail "the package lacks $f"
done
dpkg-deb -f "$deb" Depends | grep -q 'libc6' || fail "no shared-library dependencies"

DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
  "$deb" >/dev/null
dpkg-query -W -f='${Status}' smime-agent | grep -q 'ok installed' || fail "not installed"
[ "$(command -v smime-agent)" = /usr/bin/smime-agent ] || fail "smime-agent is not /usr/bin's"
/usr/bin/smime-agent --version | grep -q '^smime-agent ' || fail "--version"

# The installed agent on a SoftHSM token.
"$top/softhsm-setup/make-pki.sh" "$work/pki" >/dev/null
eval "$("$top/softhsm-setup/make-token.sh" --dir "$work/softhsm" --pki "$work/pki" \
  --label "Package Token" --pin 4711 alice-sign-rsa)"
serve_out=$(/usr/bin/smime-agent serve --config "$work/softhsm/agent.toml" \
  --socket "$work/run/agent.sock" --log-file "$work/agent.log")
eval "$serve_out" >/dev/null
agent_pid=$(sed -n 's/^echo Agent pid \([0-9]*\);$/\1/p' <<<"$serve_out")
/usr/bin/smime-agent status >"$work/status" || fail "status: $(cat "$work/status")"
grep -q 'Package Token' "$work/status" || fail "status does not show the token"
pkcs11-tool --module /usr/lib/smime-agent/libsmime_agent_pkcs11.so -L >"$work/slots" 2>&1 ||
  fail "pkcs11-tool: $(cat "$work/slots")"
grep -q 'Package Token' "$work/slots" || fail "the module does not list the token"
kill "$agent_pid"
agent_pid=

MANWIDTH=80 man smime-agent-neomutt 2>/dev/null | grep -q 'smime-agent-neomutt' ||
  fail "man smime-agent-neomutt does not render"
bash -c 'source /usr/share/bash-completion/completions/smime-agent && complete -p smime-agent' |
  grep -q 'smime-agent' || fail "bash completion"
grep -qx 'ExecStart=/usr/bin/smime-agent serve --foreground' \
  /usr/lib/systemd/user/smime-agent.service || fail "the service does not run /usr/bin/smime-agent"

"${sudo[@]}" dpkg --purge smime-agent >/dev/null
! dpkg-query -W -f='${Status}' smime-agent 2>/dev/null | grep -q 'ok installed' ||
  fail "still installed after purge"
while read -r f; do
  case "$f" in */) continue ;; esac
  [ ! -e "${f#.}" ] || fail "${f#.} is left after purge"
done <"$work/contents"
echo "package.sh: installed, used and purged cleanly"
