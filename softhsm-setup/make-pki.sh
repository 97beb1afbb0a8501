#!/usr/bin/env bash
# make-pki.sh DIR [CRL_BASE_URL] [--only NAME,NAME...]
#
# Creates the test PKI smime-agent's demo and tests run on: a root CA, an issuing CA, and
# user certificates that exercise the certificate selection rules (behaviour.md section 2).
# Every private key is a PKCS#8 PEM file; every certificate is PEM (NAME.pem) and DER
# (NAME.der). Certificates carry a CRL distribution point under CRL_BASE_URL
# (default http://127.0.0.1:8932/), so a test can serve CRLs from a loopback HTTP server;
# user certificates also name their issuer's certificate there (AIA caIssuers, ca.cer).
#
# Files written to DIR:
#   root-ca.{key.pem,pem}   self-signed root        ("smime-agent Test Root CA")
#   ca.{key.pem,pem}        issuing CA under it     ("smime-agent Test Issuing CA")
#   chain.pem               ca.pem + root-ca.pem    (openssl -CAfile)
#   ca.crl.pem, root-ca.crl.pem                     empty CRLs of both CAs
#   users.tsv               NAME, address, key type, usages, validity of every user certificate
#   NAME.{key.pem,pem,der}  for every user certificate below
#   .ca/                    the CAs' openssl-ca databases; softhsm-setup/make-crl.sh makes
#                           CRLs from them (revoked certificates, chosen update times)
#
# --only NAME,NAME makes only those user certificates (tests that need a PKI of their own,
# e.g. for their own CRL URL, make it faster that way).
#
# Re-running with the same DIR does nothing when DIR/users.tsv exists.
set -euo pipefail

usage() { echo "usage: make-pki.sh DIR [CRL_BASE_URL] [--only NAME,NAME...]" >&2; exit 2; }
only=
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only=",${2:?$(usage)},"; shift 2 ;;
    -h|--help) usage ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -ge 1 ] || usage
dir=${positional[0]}
crl_base=${positional[1]:-http://127.0.0.1:8932/}
crl_base=${crl_base%/}

if [ -f "$dir/users.tsv" ]; then
  exit 0
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
work="$dir/.ca"
rm -rf "$work"
mkdir -p "$work/root/newcerts" "$work/ca/newcerts"
for d in root ca; do
  : >"$work/$d/index.txt"
  echo 1000 >"$work/$d/serial"
  echo 1000 >"$work/$d/crlnumber"
done

# One openssl-ca configuration for both CAs; CA_DIR, CA_KEY, CA_CERT and CRL_URL come from
# the environment so each signing call says which CA signs.
cat >"$work/openssl.cnf" <<'CNF'
[ ca ]
default_ca = test_ca

[ test_ca ]
dir              = ${ENV::CA_DIR}
database         = $dir/index.txt
serial           = $dir/serial
crlnumber        = $dir/crlnumber
new_certs_dir    = $dir/newcerts
certificate      = ${ENV::CA_CERT}
private_key      = ${ENV::CA_KEY}
default_md       = sha256
default_days     = 1825
default_crl_days = 30
policy           = policy_any
unique_subject   = no
copy_extensions  = none
email_in_dn      = yes
utf8             = yes

[ policy_any ]
commonName             = optional
emailAddress           = optional
organizationName       = optional
countryName            = optional

[ req ]
distinguished_name = req_dn
prompt             = no
[ req_dn ]
CN = placeholder

[ root_ext ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash

[ ca_ext ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
crlDistributionPoints  = URI:${ENV::CRL_URL}
CNF

cnf="$work/openssl.cnf"

genkey() { # genkey FILE rsa|ec-p256|ec-p384
  case "$2" in
    rsa) openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" ;;
    ec-p256) openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" ;;
    ec-p384) openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$1" ;;
    *) echo "make-pki.sh: unknown key type $2" >&2; exit 1 ;;
  esac
  chmod 600 "$1"
}

# Root CA, self-signed, valid 2020..2045.
genkey "$dir/root-ca.key.pem" rsa
openssl req -new -key "$dir/root-ca.key.pem" -subj "/O=smime-agent tests/CN=smime-agent Test Root CA" \
  -out "$work/root.csr"
CA_DIR="$work/root" CA_KEY="$dir/root-ca.key.pem" CA_CERT="$dir/root-ca.pem" CRL_URL="$crl_base/root-ca.crl" \
  openssl ca -config "$cnf" -batch -notext -selfsign -keyfile "$dir/root-ca.key.pem" -in "$work/root.csr" \
  -startdate 20200101000000Z -enddate 20451231235959Z -extensions root_ext -out "$dir/root-ca.pem" 2>/dev/null

# Issuing CA under the root.
genkey "$dir/ca.key.pem" rsa
openssl req -new -key "$dir/ca.key.pem" -subj "/O=smime-agent tests/CN=smime-agent Test Issuing CA" \
  -out "$work/ca.csr"
CA_DIR="$work/root" CA_KEY="$dir/root-ca.key.pem" CA_CERT="$dir/root-ca.pem" CRL_URL="$crl_base/root-ca.crl" \
  openssl ca -config "$cnf" -batch -notext -in "$work/ca.csr" -startdate 20200101000000Z -enddate 20441231235959Z \
  -extensions ca_ext -out "$dir/ca.pem" 2>/dev/null
cat "$dir/ca.pem" "$dir/root-ca.pem" >"$dir/chain.pem"

printf 'name\taddress\tkey\tkey_usage\text_key_usage\tvalidity\n' >"$dir/users.tsv.tmp"

# user NAME ADDRESS SUBJECT KEYTYPE KEY_USAGE EKU SAN VALIDITY
#   SUBJECT  openssl -subj string
#   EKU      "email" (emailProtection), "server" (serverAuth only) or "none"
#   SAN      rfc822Name to put in subjectAltName, or "none"
#   VALIDITY "current" (now-1d .. +5y), "expired" (2020..2021) or "future" (2098..2099)
user() {
  local name=$1 address=$2 subject=$3 keytype=$4 ku=$5 eku=$6 san=$7 validity=$8
  local ext="$work/$name.ext" dates=()
  if [ -n "$only" ] && [[ "$only" != *",$name,"* ]]; then
    return 0
  fi
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, $ku"
    case "$eku" in
      email) echo "extendedKeyUsage = emailProtection" ;;
      server) echo "extendedKeyUsage = serverAuth" ;;
      none) ;;
    esac
    [ "$san" = none ] || echo "subjectAltName = email:$san"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid:always"
    echo "crlDistributionPoints = URI:$crl_base/ca.crl"
    echo "authorityInfoAccess = caIssuers;URI:$crl_base/ca.cer"
  } >"$ext"
  case "$validity" in
    current) dates=(-startdate "$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)" -enddate "$(date -u -d '+5 years' +%Y%m%d%H%M%SZ)") ;;
    expired) dates=(-startdate 20200101000000Z -enddate 20210101000000Z) ;;
    future) dates=(-startdate 20980101000000Z -enddate 20991231235959Z) ;;
  esac
  genkey "$dir/$name.key.pem" "$keytype"
  openssl req -new -key "$dir/$name.key.pem" -subj "$subject" -out "$work/$name.csr"
  CA_DIR="$work/ca" CA_KEY="$dir/ca.key.pem" CA_CERT="$dir/ca.pem" CRL_URL="$crl_base/ca.crl" \
    openssl ca -config "$cnf" -batch -notext -in "$work/$name.csr" "${dates[@]}" -extfile "$ext" \
    -out "$dir/$name.pem" 2>/dev/null
  openssl x509 -in "$dir/$name.pem" -outform DER -out "$dir/$name.der"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$address" "$keytype" "$ku" "$eku" "$validity" >>"$dir/users.tsv.tmp"
}

alice="/O=smime-agent tests/CN=Alice Example/emailAddress=alice@example.org"
user alice-sign-rsa   alice@example.org "$alice" rsa     "digitalSignature, nonRepudiation" email alice@example.org current
user alice-sign-ec    alice@example.org "$alice" ec-p256 "digitalSignature, nonRepudiation" email alice@example.org current
user alice-sign-p384  alice@example.org "$alice" ec-p384 "digitalSignature"                 email alice@example.org current
user alice-enc-rsa    alice@example.org "$alice" rsa     "keyEncipherment"                  email alice@example.org current
user alice-enc-ec     alice@example.org "$alice" ec-p256 "keyAgreement"                     email alice@example.org current
user alice-dual-rsa   alice@example.org "$alice" rsa     "digitalSignature, keyEncipherment" email alice@example.org current
user alice-expired    alice@example.org "$alice" rsa     "digitalSignature, nonRepudiation" email alice@example.org expired
user alice-future     alice@example.org "$alice" rsa     "digitalSignature, nonRepudiation" email alice@example.org future
bob="/O=smime-agent tests/CN=Bob Example/emailAddress=bob@example.org"
user bob-dual-rsa     bob@example.org   "$bob"   rsa     "digitalSignature, keyEncipherment" email bob@example.org current
user bob-enc-ec       bob@example.org   "$bob"   ec-p256 "keyAgreement"                     email bob@example.org current
# carol: address only in subjectAltName
user carol-san-rsa    carol@example.org "/O=smime-agent tests/CN=Carol Example" rsa "digitalSignature, keyEncipherment" email carol@example.org current
# dave: address only as the subject CN, no subjectAltName, no EKU
user dave-cn-rsa      dave@example.org  "/O=smime-agent tests/CN=dave@example.org" rsa "digitalSignature, nonRepudiation" none none current
# frank: a TLS server certificate for a mail address (wrong extended key usage)
user frank-server-rsa frank@example.org "/O=smime-agent tests/CN=Frank Example/emailAddress=frank@example.org" rsa "digitalSignature, keyEncipherment" server frank@example.org current
# alice's address only in subjectAltName (the subject match must win over it)
user alice-san-rsa    alice@example.org "/O=smime-agent tests/CN=Alice SAN Only" rsa "digitalSignature, nonRepudiation" email alice@example.org current
# a proxy address (alias) of alice's: a.example@example.org, in the subject only
user alice-alias-rsa  a.example@example.org "/O=smime-agent tests/CN=Alice Alias/emailAddress=a.example@example.org" rsa "digitalSignature, nonRepudiation" email none current

for d in ca root; do
  if [ "$d" = ca ]; then key="$dir/ca.key.pem" cert="$dir/ca.pem" out="$dir/ca.crl.pem"
  else key="$dir/root-ca.key.pem" cert="$dir/root-ca.pem" out="$dir/root-ca.crl.pem"; fi
  CA_DIR="$work/$d" CA_KEY="$key" CA_CERT="$cert" CRL_URL="$crl_base/$d.crl" \
    openssl ca -config "$cnf" -batch -gencrl -out "$out" 2>/dev/null
done

mv "$dir/users.tsv.tmp" "$dir/users.tsv"
