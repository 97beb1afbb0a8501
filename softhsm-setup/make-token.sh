#!/usr/bin/env bash
# make-token.sh --dir DIR --pki PKIDIR --label LABEL --pin PIN [options] NAME...
#
# Creates a SoftHSM token in a private token directory and imports the named keys and
# certificates of the test PKI (make-pki.sh) with matching CKA_ID (the certificate's subject
# key identifier, as most card middleware does). Writes:
#   DIR/softhsm2.conf   SoftHSM configuration (tokendir DIR/tokens); point SOFTHSM2_CONF here
#   DIR/agent.toml      an smime-agent configuration using this SoftHSM module
# and prints `SOFTHSM2_CONF=DIR/softhsm2.conf; export SOFTHSM2_CONF`.
#
# Calling it again with the same DIR and another label adds a second token to the same
# SoftHSM directory (and keeps the existing agent.toml unless --force-config).
#
# Options:
#   --so-pin PIN        security officer PIN (default: 12345678)
#   --removable         make SoftHSM report its slots as removable devices
#   --kind KIND         agent config module kind: auto | software | hardware (default software)
#   --pin-source SRC    agent config [pin] source (default client)
#   --force-config      rewrite DIR/agent.toml even if it exists
#   --cacert FILE       also store the certificate FILE (PEM or DER) without a key, as a
#                       card keeps its CA certificates (repeatable)
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

dir= pki= label= pin= so_pin=12345678 removable=false kind=software pin_source=client force_config=false
names=()
cacerts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --pki) pki=$2; shift 2 ;;
    --label) label=$2; shift 2 ;;
    --pin) pin=$2; shift 2 ;;
    --so-pin) so_pin=$2; shift 2 ;;
    --removable) removable=true; shift ;;
    --kind) kind=$2; shift 2 ;;
    --pin-source) pin_source=$2; shift 2 ;;
    --force-config) force_config=true; shift ;;
    --cacert) cacerts+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    -*) echo "make-token.sh: unknown option $1" >&2; usage ;;
    *) names+=("$1"); shift ;;
  esac
done
[ -n "$dir" ] && [ -n "$pki" ] && [ -n "$label" ] && [ -n "$pin" ] || usage

module=/usr/lib/softhsm/libsofthsm2.so
[ -f "$module" ] || { echo "make-token.sh: $module is missing; run softhsm-setup/deps.sh" >&2; exit 1; }
command -v pkcs11-tool >/dev/null || { echo "make-token.sh: pkcs11-tool (opensc) is missing; run softhsm-setup/deps.sh" >&2; exit 1; }

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
pki=$(cd "$pki" && pwd)
chmod 700 "$dir/tokens"

cat >"$dir/softhsm2.conf" <<EOF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = $removable
EOF
export SOFTHSM2_CONF="$dir/softhsm2.conf"

softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$pin" >/dev/null

for name in "${names[@]}"; do
  key="$pki/$name.key.pem" cert="$pki/$name.der"
  [ -f "$key" ] && [ -f "$cert" ] || { echo "make-token.sh: $name is not in $pki" >&2; exit 1; }
  id=$(openssl x509 -inform DER -in "$cert" -noout -ext subjectKeyIdentifier |
    sed -n '2{s/[: ]//g;p}')
  [ -n "$id" ] || { echo "make-token.sh: $name has no subject key identifier" >&2; exit 1; }
  if openssl pkey -in "$key" -noout -text 2>/dev/null | grep -q "ASN1 OID\|NIST CURVE"; then
    # EC keys need CKA_DERIVE for ECDH (decryption), which softhsm2-util --import leaves off.
    openssl pkey -in "$key" -outform DER -out "$dir/.key.der"
    pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" \
      --write-object "$dir/.key.der" --type privkey --id "$id" --label "$name" \
      --usage-sign --usage-derive >/dev/null
    rm -f "$dir/.key.der"
  else
    softhsm2-util --import "$key" --token "$label" --label "$name" --id "$id" --pin "$pin" >/dev/null
  fi
  pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" \
    --write-object "$cert" --type cert --id "$id" --label "$name" >/dev/null
done

for f in "${cacerts[@]}"; do
  der="$dir/cacert-$$.der"
  openssl x509 -in "$f" -outform DER -out "$der" 2>/dev/null || openssl x509 -inform DER -in "$f" -outform DER -out "$der"
  pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" \
    --write-object "$der" --type cert --label "$(basename "$f")" >/dev/null
  rm -f "$der"
done

if [ ! -f "$dir/agent.toml" ] || [ "$force_config" = true ]; then
  cat >"$dir/agent.toml" <<EOF
# smime-agent configuration written by softhsm-setup/make-token.sh.
# Start the agent with SOFTHSM2_CONF=$dir/softhsm2.conf in its environment.

[[tokens.module]]
path = "$module"
kind = "$kind"

[pin]
source = "$pin_source"

# The test PKI's root is the trust anchor; its issuing CA completes the chains.
[trust]
roots = ["$pki/root-ca.pem"]
intermediates = ["$pki/ca.pem"]
EOF
fi

echo "SOFTHSM2_CONF=$dir/softhsm2.conf; export SOFTHSM2_CONF"
