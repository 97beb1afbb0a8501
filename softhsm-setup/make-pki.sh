#!/usr/bin/env bash
# make-pki.sh DIR [CRL_BASE_URL] [--only NAME,NAME...] [--ocsp URL] [--ca-crl URL] [--aia URL]
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
#   ca.no-number.crl.pem    a CRL of the issuing CA without a CRL number
#   users.tsv               NAME, address, key type, usages, validity of every user certificate
#   NAME.{key.pem,pem,der}  for every user certificate below, and the certificates the
#                           S/MIME profile and the strict path checks refuse (leaf-*, nc-*,
#                           crit-root*, tls-ca*; not in users.tsv)
#   .ca/                    the CAs' openssl-ca databases; softhsm-setup/make-crl.sh makes
#                           CRLs from them (revoked certificates, chosen update times)
#
# --only NAME,NAME makes only those user certificates (tests that need a PKI of their own,
# e.g. for their own CRL URL, make it faster that way).
#
# --ocsp URL names an OCSP responder in the user certificates' AIA, and makes the
# responder certificates tests/ocsp.rs signs answers with: ocsp-responder (issued by ca,
# id-kp-OCSPSigning, ocsp-nocheck), ocsp-no-eku (issued by ca, no OCSPSigning EKU) and
# ocsp-rogue (self-signed under the issuing CA's name, another key); under --only, name them.
#
# --ca-crl URL puts URL in the user certificates' CRL distribution point instead of
# CRL_BASE_URL/ca.crl (an ldap:// one, say; commas and spaces percent-encoded); --aia URL
# does the same for their AIA caIssuers (instead of CRL_BASE_URL/ca.cer).
#
# Re-running with the same DIR does nothing when DIR/users.tsv exists.
set -euo pipefail

usage() { echo "usage: make-pki.sh DIR [CRL_BASE_URL] [--only NAME,NAME...] [--ocsp URL] [--ca-crl URL] [--aia URL]" >&2; exit 2; }
only=
ocsp=
ca_crl=
aia=
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only=",${2:?$(usage)},"; shift 2 ;;
    --ocsp) ocsp=${2:?$(usage)}; shift 2 ;;
    --ca-crl) ca_crl=${2:?$(usage)}; shift 2 ;;
    --aia) aia=${2:?$(usage)}; shift 2 ;;
    -h|--help) usage ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -ge 1 ] || usage
dir=${positional[0]}
crl_base=${positional[1]:-http://127.0.0.1:8932/}
crl_base=${crl_base%/}
ca_crl=${ca_crl:-$crl_base/ca.crl}
aia=${aia:-$crl_base/ca.cer}

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
    # Below the S/MIME profile's floor, for the tests that it refuses them.
    rsa1024) openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$1" ;;
    ec-p192) openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:prime192v1 -out "$1" ;;
    dsa)
      openssl genpkey -quiet -genparam -algorithm DSA -pkeyopt dsa_paramgen_bits:2048 -out "$1.params"
      openssl genpkey -paramfile "$1.params" -out "$1"
      rm -f "$1.params" ;;
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
    echo "crlDistributionPoints = URI:$ca_crl"
    if [ -n "$ocsp" ]; then
      echo "authorityInfoAccess = OCSP;URI:$ocsp, caIssuers;URI:$aia"
    else
      echo "authorityInfoAccess = caIssuers;URI:$aia"
    fi
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

# --- Certificates the S/MIME profile and the strict path checks must refuse -------------
# Not in users.tsv (nothing selects them); each is NAME.{key.pem,pem,der}. The extensions
# come on stdin, openssl x509v3 syntax; ISSUER is ca, root-ca, a CA made below, or "self".
#   odd NAME KEYTYPE ISSUER SUBJECT <EXTENSIONS
odd() {
  local name=$1 keytype=$2 issuer=$3 subject=$4 ext="$work/$1.ext" start end
  cat >"$ext"
  if [ -n "$only" ] && [[ "$only" != *",$name,"* ]]; then
    return 0
  fi
  genkey "$dir/$name.key.pem" "$keytype"
  start=$(date -u -d '-1 day' +%Y%m%d%H%M%SZ) end=$(date -u -d '+5 years' +%Y%m%d%H%M%SZ)
  openssl req -new -key "$dir/$name.key.pem" -subj "$subject" -out "$work/$name.csr"
  if [ "$issuer" = self ]; then
    openssl x509 -req -in "$work/$name.csr" -key "$dir/$name.key.pem" -sha256 -days 1825 \
      -set_serial "0x$(openssl rand -hex 8)" -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  else
    local db="$work/by-$issuer"
    mkdir -p "$db/newcerts"
    [ -f "$db/index.txt" ] || { : >"$db/index.txt"; openssl rand -hex 8 >"$db/serial"; }
    CA_DIR="$db" CA_KEY="$dir/$issuer.key.pem" CA_CERT="$dir/$issuer.pem" CRL_URL="$crl_base/$issuer.crl" \
      openssl ca -config "$cnf" -batch -notext -in "$work/$name.csr" -startdate "$start" -enddate "$end" \
      -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  fi
  openssl x509 -in "$dir/$name.pem" -outform DER -out "$dir/$name.der"
}

# A mail leaf's usual extensions; each certificate below changes one thing.
mail_ext() { # mail_ext ADDRESS
  echo "basicConstraints = critical, CA:FALSE"
  echo "keyUsage = critical, digitalSignature, nonRepudiation"
  echo "extendedKeyUsage = emailProtection"
  echo "subjectAltName = email:$1"
  echo "subjectKeyIdentifier = hash"
  echo "authorityKeyIdentifier = keyid:always"
}
mallory="/O=smime-agent tests/CN=Mallory Example/emailAddress=mallory@example.org"
mail_ext mallory@example.org | odd leaf-good rsa ca "$mallory"
mail_ext mallory@example.org | sed 's/^extendedKeyUsage.*/extendedKeyUsage = serverAuth/' \
  | odd leaf-eku-server rsa ca "$mallory"
mail_ext mallory@example.org | sed 's/^extendedKeyUsage.*/extendedKeyUsage = clientAuth/' \
  | odd leaf-eku-client rsa ca "$mallory"
mail_ext none | grep -v '^subjectAltName' \
  | odd leaf-no-address rsa ca "/O=smime-agent tests/CN=Nobody Example"
mail_ext mallory@example.org | sed 's/^basicConstraints.*/basicConstraints = critical, CA:TRUE/' \
  | odd leaf-ca-true rsa ca "$mallory"
mail_ext mallory@example.org | sed 's/^keyUsage.*/keyUsage = critical, digitalSignature, keyCertSign/' \
  | odd leaf-keycertsign rsa ca "$mallory"
mail_ext mallory@example.org | odd leaf-rsa1024 rsa1024 ca "$mallory"
mail_ext mallory@example.org | odd leaf-p192 ec-p192 ca "$mallory"
mail_ext mallory@example.org | odd leaf-dsa dsa ca "$mallory"

# A root whose name constraints permit only example.org mail and DNS names, with a leaf
# inside them and one outside.
{
  echo "basicConstraints = critical, CA:TRUE"
  echo "keyUsage = critical, keyCertSign, cRLSign"
  echo "subjectKeyIdentifier = hash"
  echo "nameConstraints = critical, permitted;email:example.org, permitted;DNS:example.org"
} | odd nc-root rsa self "/O=smime-agent tests/CN=smime-agent Name-Constrained Root"
mail_ext alice@example.org \
  | odd nc-inside rsa nc-root "/O=smime-agent tests/CN=Alice Example/emailAddress=alice@example.org"
mail_ext mallory@example.com \
  | odd nc-outside rsa nc-root "/O=smime-agent tests/CN=Mallory Example/emailAddress=mallory@example.com"

# A root with an unknown critical extension (no anchor at all), and a leaf under it.
{
  echo "basicConstraints = critical, CA:TRUE"
  echo "keyUsage = critical, keyCertSign, cRLSign"
  echo "subjectKeyIdentifier = hash"
  echo "1.3.6.1.4.1.55555.1 = critical, ASN1:NULL"
} | odd crit-root rsa self "/O=smime-agent tests/CN=smime-agent Critical-Extension Root"
mail_ext alice@example.org \
  | odd crit-root-leaf rsa crit-root "/O=smime-agent tests/CN=Alice Example/emailAddress=alice@example.org"

# An intermediate restricted to TLS servers by its EKU, and a mail leaf under it.
{
  echo "basicConstraints = critical, CA:TRUE, pathlen:0"
  echo "keyUsage = critical, keyCertSign, cRLSign"
  echo "extendedKeyUsage = serverAuth"
  echo "subjectKeyIdentifier = hash"
  echo "authorityKeyIdentifier = keyid:always"
} | odd tls-ca rsa root-ca "/O=smime-agent tests/CN=smime-agent TLS-only CA"
mail_ext alice@example.org \
  | odd tls-ca-leaf rsa tls-ca "/O=smime-agent tests/CN=Alice Example/emailAddress=alice@example.org"

# DER that no openssl option writes, re-signed by ca: a leaf with an extension twice
# (subjectKeyIdentifier), and one whose subjectAltName is an empty GeneralNames (RFC 5280
# says SIZE (1..MAX)).
der_edit() { # der_edit MODE FILE
  python3 - "$1" "$2" "$dir/ca.key.pem" <<'DER_EDIT_PY'
import subprocess, sys, tempfile
mode, path, key = sys.argv[1:4]
def tlv(b, i):
    l = b[i + 1]
    if l < 0x80:
        return 2, l
    n = l & 0x7f
    return 2 + n, int.from_bytes(b[i + 2:i + 2 + n], "big")
def enc(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    lb = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(lb)]) + lb + content
def inner(b):
    h, n = tlv(b, 0)
    return b[h:h + n]
def children(b):
    out, i = [], 0
    while i < len(b):
        h, n = tlv(b, i)
        out.append(b[i:i + h + n])
        i += h + n
    return out
cert = open(path, "rb").read()
tbs, sig_alg = children(inner(cert))[:2]
fields = children(inner(tbs))
assert fields[-1][0] == 0xA3
exts = children(inner(inner(fields[-1])))
SKI, SAN = bytes.fromhex("0603551d0e"), bytes.fromhex("0603551d11")
if mode == "dup":
    exts.append(next(e for e in exts if inner(e).startswith(SKI)))
elif mode == "badsan":
    exts = [enc(0x30, SAN + enc(0x04, bytes.fromhex("3000"))) if inner(e).startswith(SAN) else e
            for e in exts]
fields[-1] = enc(0xA3, enc(0x30, b"".join(exts)))
tbs = enc(0x30, b"".join(fields))
with tempfile.NamedTemporaryFile() as t:
    t.write(tbs)
    t.flush()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key, t.name],
                         check=True, capture_output=True).stdout
open(path, "wb").write(enc(0x30, tbs + sig_alg + enc(0x03, b"\0" + sig)))
DER_EDIT_PY
}
for m in dup:leaf-dup-ext badsan:leaf-bad-san; do
  mode=${m%%:*} name=${m#*:}
  mail_ext mallory@example.org | odd "$name" rsa ca "$mallory"
  if [ -f "$dir/$name.der" ]; then
    der_edit "$mode" "$dir/$name.der"
    openssl x509 -inform DER -in "$dir/$name.der" -out "$dir/$name.pem"
  fi
done

# OCSP responder certificates (--ocsp): a delegated responder, one the CA never authorised
# to answer (no id-kp-OCSPSigning), and a stranger using the issuing CA's name.
if [ -n "$ocsp" ]; then
  responder_ext() { # responder_ext EKU
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature"
    [ "$1" = none ] || echo "extendedKeyUsage = $1"
    echo "noCheck = ignored"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid:always"
  }
  responder_ext OCSPSigning | odd ocsp-responder rsa ca "/O=smime-agent tests/CN=smime-agent Test OCSP Responder"
  responder_ext none | odd ocsp-no-eku rsa ca "/O=smime-agent tests/CN=smime-agent Test Not A Responder"
  responder_ext OCSPSigning | grep -v '^authorityKeyIdentifier' \
    | odd ocsp-rogue rsa self "/O=smime-agent tests/CN=smime-agent Test Issuing CA"
fi

for d in ca root; do
  if [ "$d" = ca ]; then key="$dir/ca.key.pem" cert="$dir/ca.pem" out="$dir/ca.crl.pem"
  else key="$dir/root-ca.key.pem" cert="$dir/root-ca.pem" out="$dir/root-ca.crl.pem"; fi
  CA_DIR="$work/$d" CA_KEY="$key" CA_CERT="$cert" CRL_URL="$crl_base/$d.crl" \
    openssl ca -config "$cnf" -batch -gencrl -out "$out" 2>/dev/null
done

# The issuing CA's CRL without a CRL number (RFC 5280 5.2.3 requires one): never to be used.
# A v2 CRL (it has an authorityKeyIdentifier), so only the missing number is wrong with it.
{
  sed -e '/^crlnumber/d' -e 's/^\(default_crl_days.*\)$/\1\ncrl_extensions   = crl_ext/' "$work/openssl.cnf"
  printf '\n[ crl_ext ]\nauthorityKeyIdentifier = keyid:always\n'
} >"$work/no-number.cnf"
CA_DIR="$work/ca" CA_KEY="$dir/ca.key.pem" CA_CERT="$dir/ca.pem" CRL_URL="$crl_base/ca.crl" \
  openssl ca -config "$work/no-number.cnf" -batch -gencrl -out "$dir/ca.no-number.crl.pem" 2>/dev/null

mv "$dir/users.tsv.tmp" "$dir/users.tsv"
