#!/usr/bin/env bash
# demo.sh: smime-agent's main job, end to end, on a SoftHSM token it creates.
#
# Creates a test PKI and a SoftHSM token holding Alice's keys, starts the agent in the
# background on a private socket, shows its status, signs a message through the agent
# (clear-signed and opaque; the private key never leaves the token), has OpenSSL verify both
# signatures, shows that a tampered message fails, and stops the agent.
# Run it with `make demo` (which installs the packages and builds first).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
work="$top/demo-work"
bin="$top/target/debug/smime-agent"
pin=4711

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }

[ -x "$bin" ] || { echo "demo.sh: build first (cargo build)" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work"

step "Creating a test PKI (root CA, issuing CA, user certificates) in demo-work/pki"
"$top/softhsm-setup/make-pki.sh" "$work/pki"
ok "$(($(wc -l <"$work/pki/users.tsv") - 1)) user certificates"

step "Creating a SoftHSM token \"Demo Token\" (PIN $pin) with Alice's keys"
eval "$("$top/softhsm-setup/make-token.sh" --dir "$work/softhsm" --pki "$work/pki" \
  --label "Demo Token" --pin "$pin" alice-sign-rsa alice-sign-ec alice-enc-rsa)"
ok "SOFTHSM2_CONF=$SOFTHSM2_CONF"
ok "agent configuration: demo-work/softhsm/agent.toml"

step "Starting the agent (smime-agent serve)"
serve_out=$("$bin" serve --config "$work/softhsm/agent.toml" --socket "$work/run/agent.sock" \
  --log-file "$work/agent.log")
echo "$serve_out" | sed 's/^/    /'
eval "$serve_out" >/dev/null
agent_pid=$(sed -n 's/^echo Agent pid \([0-9]*\);$/\1/p' <<<"$serve_out")
stop_agent() {
  if [ -n "${agent_pid:-}" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill "$agent_pid"
    for _ in $(seq 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
  fi
}
trap stop_agent EXIT
ok "SMIME_AGENT_SOCK=$SMIME_AGENT_SOCK (agent pid $agent_pid, log demo-work/agent.log)"

step "smime-agent status"
"$bin" status

step "Signing a message as alice@example.org (clear-signed, multipart/signed)"
cat >"$work/message.txt" <<'EOF'
Content-Type: text/plain; charset=us-ascii

Hello Bob,

this message was signed by smime-agent with a key that never left its token.

Alice
EOF
"$bin" sign --signer alice@example.org --in "$work/message.txt" --out "$work/signed.eml" \
  --pin-fd 3 3<<<"$pin"
ok "demo-work/signed.eml:"
sed -n '1,12p' "$work/signed.eml" | sed 's/^/      /'
echo "      ..."

step "OpenSSL verifies the clear-signed message against the test CA"
openssl cms -verify -in "$work/signed.eml" -CAfile "$work/pki/chain.pem" -purpose smimesign \
  -out "$work/verified.txt"
ok "openssl cms -verify: the content OpenSSL recovered:"
sed 's/^/      /' "$work/verified.txt"

step "Signing the same message opaque (application/pkcs7-mime), the PIN is cached now"
"$bin" sign --signer alice@example.org --opaque --in "$work/message.txt" \
  --out "$work/opaque.eml" </dev/null
openssl smime -verify -in "$work/opaque.eml" -CAfile "$work/pki/chain.pem" -purpose smimesign \
  -out /dev/null
ok "openssl smime -verify accepted the opaque signature"

step "A tampered message must fail verification"
sed 's/never left/left/' "$work/signed.eml" >"$work/tampered.eml"
if openssl cms -verify -in "$work/tampered.eml" -CAfile "$work/pki/chain.pem" -purpose smimesign \
  -out /dev/null 2>"$work/tampered.err"; then
  echo "    FAILED: OpenSSL accepted a tampered message" >&2
  exit 1
fi
ok "OpenSSL rejected it: $(grep -m1 -o 'digest failure\|content verify error\|verify error' "$work/tampered.err" || head -1 "$work/tampered.err")"

step "Stopping the agent"
stop_agent
trap - EXIT
[ ! -e "$work/run/agent.sock" ] && ok "agent stopped, socket removed"

printf '\n\033[1mDemo complete.\033[0m Files are in demo-work/.\n'
