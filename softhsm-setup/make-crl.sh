#!/usr/bin/env bash
# make-crl.sh PKIDIR OUT [--ca ca|root] [--revoke NAME]... [--this-update SECS] [--next-update SECS] [--pem]
#
# Makes a CRL of a test PKI (make-pki.sh) without touching the PKI itself: the CA's database
# is copied, the named certificates are revoked in the copy, and the CRL is signed by the CA's
# key. Written as DER to OUT (PEM with --pem).
#   --ca ca|root       the issuing CA (default) or the root
#   --revoke NAME      revoke PKIDIR/NAME.pem (repeatable; reason keyCompromise)
#   --this-update S    thisUpdate = now + S seconds (negative for the past; default -60)
#   --next-update S    nextUpdate = now + S seconds (negative for an expired CRL; default 30 days)
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
pki=$(cd "$1" && pwd)
out=$2
shift 2
ca=ca this=-60 next=$((30 * 86400)) pem=false
revoke=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ca) ca=$2; shift 2 ;;
    --revoke) revoke+=("$2"); shift 2 ;;
    --this-update) this=$2; shift 2 ;;
    --next-update) next=$2; shift 2 ;;
    --pem) pem=true; shift ;;
    *) usage ;;
  esac
done
case "$ca" in
  ca) key="$pki/ca.key.pem" cert="$pki/ca.pem" db=ca ;;
  root) key="$pki/root-ca.key.pem" cert="$pki/root-ca.pem" db=root ;;
  *) usage ;;
esac
[ -d "$pki/.ca/$db" ] || { echo "make-crl.sh: $pki is not a make-pki.sh PKI" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$pki/.ca/$db" "$tmp/db"
for name in "${revoke[@]}"; do
  CA_DIR="$tmp/db" CA_KEY="$key" CA_CERT="$cert" CRL_URL=unused \
    openssl ca -config "$pki/.ca/openssl.cnf" -batch -revoke "$pki/$name.pem" \
    -crl_reason keyCompromise 2>/dev/null
done
stamp() { date -u -d "@$(($(date +%s) + $1))" +%Y%m%d%H%M%SZ; }
CA_DIR="$tmp/db" CA_KEY="$key" CA_CERT="$cert" CRL_URL=unused \
  openssl ca -config "$pki/.ca/openssl.cnf" -batch -gencrl \
  -crl_lastupdate "$(stamp "$this")" -crl_nextupdate "$(stamp "$next")" -out "$tmp/crl.pem" 2>/dev/null
if [ "$pem" = true ]; then
  cp "$tmp/crl.pem" "$out"
else
  openssl crl -in "$tmp/crl.pem" -outform DER -out "$out"
fi
