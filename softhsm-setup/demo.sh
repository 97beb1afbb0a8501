#!/usr/bin/env bash
# demo.sh: smime-agent's main job, end to end, on a SoftHSM token it creates.
#
# Creates a test PKI and a SoftHSM token holding Alice's keys, starts the agent in the
# background on a private socket, shows its status, and then, all through the running agent:
# signs a message (clear-signed and opaque; the private key never leaves the token) and has
# OpenSSL verify both and refuse a tampered one; verifies Alice's signature and Bob's
# (OpenSSL's), keeping Bob's certificate as a contact; checks revocation with OpenSSL's OCSP
# responder (Bob good, Carol revoked); encrypts to Bob (OpenSSL decrypts as
# Bob) and decrypts Alice's copy and OpenSSL's envelope on the token; composes a
# triple-wrapped mail that OpenSSL unwraps and the agent reads layer by layer; loads the
# PKCS#11 module into NSS, whose cmsutil signs through the agent (OpenSSL verifies); has
# NeoMutt, driven in tmux with the shipped neomuttrc, sign a mail (OpenSSL verifies); stops.
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
# The certificates name an OCSP responder on 127.0.0.1:8933 (OpenSSL's, started below).
"$top/softhsm-setup/make-pki.sh" "$work/pki" http://127.0.0.1:8932/ --ocsp http://127.0.0.1:8933/
ok "$(($(wc -l <"$work/pki/users.tsv") - 1)) user certificates"

step "Creating a SoftHSM token \"Demo Token\" (PIN $pin) with Alice's keys"
eval "$("$top/softhsm-setup/make-token.sh" --dir "$work/softhsm" --pki "$work/pki" \
  --label "Demo Token" --pin "$pin" alice-sign-rsa alice-sign-ec alice-enc-rsa)"
cat >>"$work/softhsm/agent.toml" <<EOF

[[identity]]
address = "alice@example.org"

# Certificates of correspondents (Bob's lands here when the agent verifies his mail).
[contacts]
dir = "$work/contacts"

[revocation]
cache_dir = "$work/crls"
EOF
ok "SOFTHSM2_CONF=$SOFTHSM2_CONF"
ok "agent configuration: demo-work/softhsm/agent.toml"

step "Starting the agent (smime-agent serve)"
serve_out=$("$bin" serve --config "$work/softhsm/agent.toml" --socket "$work/run/agent.sock" \
  --log-file "$work/agent.log")
echo "$serve_out" | sed 's/^/    /'
eval "$serve_out" >/dev/null
agent_pid=$(sed -n 's/^echo Agent pid \([0-9]*\);$/\1/p' <<<"$serve_out")
stop_agent() {
  if [ -n "${ocsp_pid:-}" ]; then kill "$ocsp_pid" 2>/dev/null || true; fi
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

step "The agent verifies Alice's signature (signature and certificate chain)"
"$bin" verify --in "$work/signed.eml" --out /dev/null
ok "smime-agent verify: exit 0"

step "Bob writes to Alice (OpenSSL signs as Bob); the agent verifies and keeps his certificate"
printf 'Content-Type: text/plain\r\n\r\nHi Alice, here is my certificate. Bob\r\n' >"$work/bob.txt"
openssl cms -sign -in "$work/bob.txt" -signer "$work/pki/bob-dual-rsa.pem" \
  -inkey "$work/pki/bob-dual-rsa.key.pem" -out "$work/from-bob.eml"
"$bin" verify --in "$work/from-bob.eml" --out /dev/null
ok "contacts: $(ls "$work/contacts" | grep -c '\.der$') certificate(s) in demo-work/contacts"

step "Revocation by OCSP: OpenSSL's responder (openssl ocsp) knows Carol's certificate revoked"
cp -r "$work/pki/.ca/ca" "$work/ocsp-db"
CA_DIR="$work/ocsp-db" CA_KEY="$work/pki/ca.key.pem" CA_CERT="$work/pki/ca.pem" CRL_URL=unused \
  openssl ca -config "$work/pki/.ca/openssl.cnf" -batch -revoke "$work/pki/carol-san-rsa.pem" \
  -crl_reason keyCompromise 2>/dev/null
openssl ocsp -index "$work/ocsp-db/index.txt" -port 8933 -CA "$work/pki/ca.pem" \
  -rsigner "$work/pki/ocsp-responder.pem" -rkey "$work/pki/ocsp-responder.key.pem" \
  -ndays 1 -ignore_err >"$work/ocsp.log" 2>&1 &
ocsp_pid=$!
# Waiting for the port to listen (not by connecting: openssl 3.0's responder spins on a
# connection that closes before its request).
for _ in $(seq 100); do
  ss -Hltn 'sport = :8933' | grep -q . && break
  sleep 0.1
done
"$bin" validate "$work/pki/bob-dual-rsa.pem" >"$work/bob-valid.txt"
grep -m1 'OCSP http://127.0.0.1:8933/' "$work/bob-valid.txt" | sed 's/^ */      /'
ok "Bob's certificate: good, by the responder's signed answer (a delegated OCSP responder)"
if "$bin" validate "$work/pki/carol-san-rsa.pem" >"$work/carol.txt"; then
  echo "    FAILED: Carol's revoked certificate was called valid" >&2
  exit 1
fi
grep -m1 'revoked' "$work/carol.txt" | sed 's/^/      /'
ok "Carol's certificate: revoked (the responder says so), exit 1"
kill "$ocsp_pid" 2>/dev/null || true
ocsp_pid=

step "Encrypting to Bob (his certificate from the contacts; Alice gets a copy too)"
"$bin" encrypt --to bob@example.org --from alice@example.org --in "$work/message.txt" \
  --out "$work/encrypted.eml"
sed -n '1,6p' "$work/encrypted.eml" | sed 's/^/      /'
openssl cms -decrypt -in "$work/encrypted.eml" -recip "$work/pki/bob-dual-rsa.pem" \
  -inkey "$work/pki/bob-dual-rsa.key.pem" -out "$work/bob-reads.txt"
cmp -s <(tr -d '\r' <"$work/bob-reads.txt") "$work/message.txt"
ok "OpenSSL, as Bob, decrypted it to the original message"
"$bin" decrypt --in "$work/encrypted.eml" --out "$work/alice-reads.txt" </dev/null
cmp -s <(tr -d '\r' <"$work/alice-reads.txt") "$work/message.txt"
ok "the agent decrypted Alice's copy with her key on the token"

step "Bob encrypts to Alice with OpenSSL; the agent decrypts on the token"
openssl cms -encrypt -aes-256-cbc -in "$work/bob.txt" -out "$work/to-alice.eml" \
  "$work/pki/alice-enc-rsa.pem"
"$bin" decrypt --in "$work/to-alice.eml" </dev/null | sed 's/^/      /'

step "Composing a signed and encrypted mail to Bob (triple-wrapped: signed, encrypted, signed)"
cat >"$work/mail.eml" <<'EOF'
From: Alice <alice@example.org>
To: Bob <bob@example.org>
Subject: Lunch

See you at noon.
EOF
"$bin" compose --sign --encrypt --in "$work/mail.eml" --out "$work/outgoing.eml" </dev/null
sed -n '1,8p' "$work/outgoing.eml" | sed 's/^/      /'
openssl cms -verify -in "$work/outgoing.eml" -CAfile "$work/pki/chain.pem" \
  -purpose smimesign -out "$work/outer.eml" 2>/dev/null
openssl cms -decrypt -in "$work/outer.eml" -recip "$work/pki/bob-dual-rsa.pem" \
  -inkey "$work/pki/bob-dual-rsa.key.pem" -out "$work/inner.eml"
openssl cms -verify -in "$work/inner.eml" -CAfile "$work/pki/chain.pem" \
  -purpose smimesign -out "$work/lunch.txt" 2>/dev/null
ok "OpenSSL, as Bob: outer signature good, decrypted, inner signature good: \"$(tail -n 1 "$work/lunch.txt" | tr -d '\r')\""
"$bin" decrypt --in "$work/outgoing.eml" --out /dev/null </dev/null
ok "the agent read Alice's own copy layer by layer"

step "A mail client's door: NSS (Thunderbird's and Evolution's library) signs through the agent"
module="$top/target/debug/libsmime_agent_pkcs11.so"
[ -f "$module" ] || { echo "demo.sh: build first (cargo build -p smime-agent-pkcs11)" >&2; exit 1; }
nssdb="sql:$work/nssdb"
mkdir -p "$work/nssdb"
certutil -N -d "$nssdb" --empty-password
modutil -dbdir "$nssdb" -add smime-agent -libfile "$module" -force >/dev/null 2>&1
certutil -A -d "$nssdb" -n "Demo Root" -t "C,C,C" -i "$work/pki/root-ca.pem"
certutil -A -d "$nssdb" -n "Demo CA" -t ",," -i "$work/pki/ca.pem"
ok "loaded libsmime_agent_pkcs11.so into an NSS database, as Thunderbird's Security Devices does"
certutil -L -d "$nssdb" -h "Demo Token" </dev/null 2>/dev/null | grep -i "alice" | sed 's/^/      /'
printf 'Content-Type: text/plain\r\n\r\nSigned by NSS, with the key on the token.\r\n' >"$work/nss-message.txt"
# The agent holds the PIN from the signatures above: NSS's login costs no prompt.
cmsutil -S -d "$nssdb" -N "Demo Token:Alice Example" -i "$work/nss-message.txt" \
  -o "$work/nss-signed.p7m" </dev/null 2>/dev/null
openssl cms -verify -inform DER -in "$work/nss-signed.p7m" -CAfile "$work/pki/chain.pem" \
  -purpose smimesign -out "$work/nss-verified.txt" 2>/dev/null
cmp -s "$work/nss-verified.txt" "$work/nss-message.txt"
ok "cmsutil signed through the module (the agent did the private-key step); OpenSSL verified it"
grep -c 'op="key_sign"' "$work/agent.log" | sed 's/^/      audit lines for key_sign: /' || true

step "NeoMutt signs a mail to Bob through the agent (contrib/neomutt/smime-agent.neomuttrc)"
mutt="$work/neomutt"
mkdir -p "$mutt"/Mail/inbox/{cur,new,tmp} "$mutt/sent" "$mutt/home/.config/smime-agent"
cp "$work/softhsm/agent.toml" "$mutt/home/.config/smime-agent/config.toml"
cat >"$mutt/sendmail.sh" <<END
#!/bin/sh
cat > "$mutt/sent/mail.eml"
END
cat >"$mutt/editor.sh" <<'END'
#!/bin/sh
printf 'Hello Bob,\n\nsigned in NeoMutt, with the key on the token.\n' >> "$1"
END
cat >"$mutt/muttrc" <<END
set folder=$mutt/Mail
set spoolfile=+inbox
set mbox_type=Maildir
set from="Alice Example <alice@example.org>"
set use_from=yes
set sendmail="$mutt/sendmail.sh"
set editor="$mutt/editor.sh"
set record=""
set askcc=no
set postpone=no
set abort_unmodified=no
source $top/contrib/neomutt/smime-agent.neomuttrc
END
# tmux gives the pane its server's environment: the settings go in the script it runs.
cat >"$mutt/neomutt.sh" <<END
#!/bin/sh
export HOME=$mutt/home PATH=$top/target/debug:/usr/bin:/bin SMIME_AGENT_SOCK=$SMIME_AGENT_SOCK TERM=screen
unset XDG_CONFIG_HOME XDG_DATA_HOME
exec neomutt -n -F $mutt/muttrc
END
chmod +x "$mutt/sendmail.sh" "$mutt/editor.sh" "$mutt/neomutt.sh"
tmux_sock="smime-agent-demo-$$"
stop_mutt() { tmux -L "$tmux_sock" kill-server 2>/dev/null || true; }
trap 'stop_mutt; stop_agent' EXIT
tmux -L "$tmux_sock" new-session -d -x 160 -y 40 "$mutt/neomutt.sh; sleep 60"
screen_shows() {
  for _ in $(seq 300); do
    tmux -L "$tmux_sock" capture-pane -p | grep -qF "$1" && return 0
    sleep 0.1
  done
  echo "    FAILED: NeoMutt never showed \"$1\":" >&2
  tmux -L "$tmux_sock" capture-pane -p >&2
  exit 1
}
keys() { tmux -L "$tmux_sock" send-keys "$@"; sleep 0.2; }
screen_shows "q:Quit"
keys m; screen_shows "To:"; keys bob@example.org Enter
screen_shows "Subject:"; keys "Lunch, signed" Enter
screen_shows "Compose"; keys S; screen_shows "S/MIME (e)ncrypt"; keys s y
screen_shows "Enter S/MIME passphrase:"; keys "$pin" Enter
screen_shows "Mail sent"
stop_mutt
trap stop_agent EXIT
ok "NeoMutt asked for the passphrase, the agent signed on the token; sendmail got:"
grep -E '^(From|To|Subject|Content-Type):' "$mutt/sent/mail.eml" | sed 's/^/      /'
openssl smime -verify -in "$mutt/sent/mail.eml" -CAfile "$work/pki/chain.pem" \
  -purpose smimesign -out /dev/null 2>/dev/null
ok "OpenSSL verified NeoMutt's signed mail"

step "Stopping the agent"
stop_agent
trap - EXIT
[ ! -e "$work/run/agent.sock" ] && ok "agent stopped, socket removed"

printf '\n\033[1mDemo complete.\033[0m Files are in demo-work/.\n'
