#!/usr/bin/env bash
# Regenerates the mcpgw DEVELOPMENT PKI in this folder with the openssl CLI.
# Everything here is for development and tests only: the private keys are public, in git.
#
#   certs-dev/generate.sh            (re)creates every file
#
# Layout (all PEM):
#   gateway-ca.pem / .key                 CA that signs the gateway's server certificate (clients trust this)
#   server.pem / server.key               gateway certificate for localhost, 127.0.0.1 and ::1 (chain: server + gateway CA)
#   <tenant>/ca.pem / ca.key              per-tenant root CA that signs that tenant's agent certificates
#   <tenant>/ca.crl.pem                   the tenant CA's CRL
#   <tenant>/agents/<agent>.pem / .key    agent client certificates, SAN URI spiffe://mcpgw.dev/tenant/<tenant>/agent/<agent>
#   acme/agents/expired.pem               expired acme agent (for tests)
#   acme/agents/revoked.pem               revoked acme agent, listed in acme/ca.crl.pem (for tests)
#   acme/agents/names-globex.pem          signed by acme's CA but naming tenant globex (for tests)
#   acme/agents/two-ids.pem               two SPIFFE ids (bot1 and bot2): refused, an agent has one id (for tests)
#   acme/agents/cn-only.pem               acme agent without a SPIFFE id, named only by its CN (for tests)
#   untrusted/ca.pem, untrusted/agents/rogue.pem   a CA nobody trusts and an agent it signed (for tests)
#   jwt/<tenant>-rs256.key / .pub         RSA key pair for signing development JWTs
#   jwt/<tenant>-hs256.secret             HMAC secret for development HS256 JWTs
set -euo pipefail
cd "$(dirname "$0")"
DAYS=3650
TRUST_DOMAIN=mcpgw.dev
rm -rf acme globex untrusted jwt gateway-ca.* server.* .ca-work
mkdir -p .ca-work

# make_ca DIR CN — a self-signed root CA with an `openssl ca` database (needed for CRLs and backdated certs).
make_ca() {
  local dir=$1 cn=$2
  mkdir -p "$dir/agents" ".ca-work/$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $DAYS \
    -subj "/O=mcpgw development/CN=$cn" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  : > ".ca-work/$dir/index.txt"
  echo 1000 > ".ca-work/$dir/serial"
  echo 1000 > ".ca-work/$dir/crlnumber"
  cat > ".ca-work/$dir/ca.cnf" <<CNF
[ ca ]
default_ca = dev
[ dev ]
database = .ca-work/$dir/index.txt
serial = .ca-work/$dir/serial
crlnumber = .ca-work/$dir/crlnumber
new_certs_dir = .ca-work/$dir
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_crl_days = $DAYS
policy = anything
unique_subject = no
copy_extensions = copy
[ anything ]
organizationName = optional
commonName = supplied
CNF
}

# issue CA_DIR OUT_BASE CN SAN EKU [extra `openssl ca` args...] — a leaf certificate signed by CA_DIR.
issue() {
  local ca=$1 out=$2 cn=$3 san=$4 eku=$5; shift 5
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=mcpgw development/CN=$cn" \
    -keyout "$out.key" -out ".ca-work/req.csr" \
    -addext "subjectAltName=$san" -addext "extendedKeyUsage=$eku" \
    -addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=critical,digitalSignature" 2>/dev/null
  openssl ca -batch -notext -config ".ca-work/$ca/ca.cnf" -in ".ca-work/req.csr" -out "$out.pem" "$@" 2>/dev/null
}

agent_san() { echo "URI:spiffe://$TRUST_DOMAIN/tenant/$1/agent/$2"; }

# Gateway server certificate.
make_ca gateway-ca "mcpgw dev gateway CA"
mv gateway-ca/ca.pem gateway-ca.pem; mv gateway-ca/ca.key gateway-ca.key
sed -i 's#gateway-ca/ca.pem#gateway-ca.pem#; s#gateway-ca/ca.key#gateway-ca.key#' .ca-work/gateway-ca/ca.cnf
issue gateway-ca server "localhost" "DNS:localhost,IP:127.0.0.1,IP:::1" serverAuth -days $DAYS
cat gateway-ca.pem >> server.pem
rm -rf gateway-ca

# Tenants and their agents.
for tenant in acme globex; do
  make_ca $tenant "mcpgw dev $tenant tenant CA"
done
issue acme acme/agents/bot1 "bot1" "$(agent_san acme bot1)" clientAuth -days $DAYS
issue acme acme/agents/bot2 "bot2" "$(agent_san acme bot2)" clientAuth -days $DAYS
issue globex globex/agents/bot1 "bot1" "$(agent_san globex bot1)" clientAuth -days $DAYS
issue acme acme/agents/expired "expired" "$(agent_san acme expired)" clientAuth \
  -startdate 20200101000000Z -enddate 20200201000000Z
issue acme acme/agents/revoked "revoked" "$(agent_san acme revoked)" clientAuth -days $DAYS
issue acme acme/agents/names-globex "names-globex" "$(agent_san globex bot1)" clientAuth -days $DAYS
issue acme acme/agents/cn-only "cn-only" "DNS:cn-only.agents.mcpgw.dev" clientAuth -days $DAYS
issue acme acme/agents/two-ids "two-ids" "$(agent_san acme bot1),$(agent_san acme bot2)" clientAuth -days $DAYS
openssl ca -batch -config .ca-work/acme/ca.cnf -revoke acme/agents/revoked.pem -crl_reason keyCompromise 2>/dev/null
for tenant in acme globex; do
  openssl ca -batch -config ".ca-work/$tenant/ca.cnf" -gencrl -out "$tenant/ca.crl.pem" 2>/dev/null
done

# A CA that no configuration trusts.
make_ca untrusted "mcpgw dev UNTRUSTED CA"
issue untrusted untrusted/agents/rogue "rogue" "$(agent_san acme bot1)" clientAuth -days $DAYS

# A CRL naming acme's CA as its issuer but signed with globex's key: what a tenant could list to lock another
# tenant's agents out (the gateway refuses it at load).
mkdir -p .ca-work/forged && touch .ca-work/forged/index.txt && echo 01 > .ca-work/forged/crlnumber
openssl req -new -x509 -key globex/ca.key -subj "/O=mcpgw development/CN=mcpgw dev acme tenant CA" -days $DAYS \
  -out .ca-work/forged/ca.pem 2>/dev/null
printf '[ca]\ndefault_ca=forged\n[forged]\ndatabase=.ca-work/forged/index.txt\ncrlnumber=.ca-work/forged/crlnumber\ndefault_md=sha256\ndefault_crl_days=%s\n' "$DAYS" \
  > .ca-work/forged/ca.cnf
openssl ca -batch -config .ca-work/forged/ca.cnf -gencrl -keyfile globex/ca.key -cert .ca-work/forged/ca.pem \
  -out untrusted/forged-acme.crl.pem 2>/dev/null

# JWT signing material.
mkdir -p jwt
for tenant in acme globex; do
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "jwt/$tenant-rs256.key" 2>/dev/null
  openssl pkey -in "jwt/$tenant-rs256.key" -pubout -out "jwt/$tenant-rs256.pub"
  openssl rand -base64 48 | tr -d '\n' > "jwt/$tenant-hs256.secret"
done

rm -rf .ca-work
chmod 600 ./*.key ./*/*.key ./*/agents/*.key jwt/*.key 2>/dev/null || true
echo "development PKI written to $(pwd)"
