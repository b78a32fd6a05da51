#!/bin/sh
# SPDX-License-Identifier: BSL-1.0
# Regenerates the TLS test certificates of the mock token server (committed as test data):
# a test CA, a localhost/127.0.0.1 server cert, a wrong-host cert, an untrusted self-signed one
# and a client certificate for mutual TLS.
#
# Usage: testing/data/make-certs.sh          (writes into the directory of this script; the next
#          build compiles the new server.pem, server.key, ca.pem, client.pem and client.key into
#          nxsys::auth_testing)
#        testing/data/make-certs.sh client   (only client.pem and client.key, signed with the
#          existing ca.key: the CA and the server certificates stay as they are)
# EC P-256 keys keep TLS handshakes cheap in the benchmarks; 36500 days keeps the files valid for
# as long as anyone will run these tests. Leaf certificates carry an explicit SAN, serverAuth (the
# client certificate clientAuth) and key identifiers so strict verifiers (OpenSSL
# X509_V_FLAG_X509_STRICT, Python 3.13) accept them.
set -eu

cd "$(dirname "$0")"
days=36500
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

serial() {
  echo "0x$(openssl rand -hex 16)"
}

only=${1:-all}
case $only in
  all | client) ;;
  *) echo "usage: $0 [client]" >&2; exit 2 ;;
esac

# Extensions of a leaf certificate; $1 is the subjectAltName list, $2 the extended key usage
# (serverAuth unless given).
leaf_ext() {
  cat <<EXT
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = ${2:-serverAuth}
subjectAltName = $1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EXT
}

# sign_leaf NAME CN SAN [EKU]: a certificate for NAME.key signed by the test CA.
sign_leaf() {
  leaf_ext "$3" "${4:-}" > "$tmp/$1.ext"
  new_key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$tmp/$1.csr" 2> /dev/null
  openssl x509 -req -in "$tmp/$1.csr" -CA ca.pem -CAkey ca.key -set_serial "$(serial)" \
    -days "$days" -sha256 -extfile "$tmp/$1.ext" -extensions leaf -out "$1.pem"
}

# The client certificate of the mutual TLS tests (require_client_certificate of the mock server):
# clientAuth only, so it cannot serve; server.pem, serverAuth only, cannot authenticate a client.
client_cert() {
  sign_leaf client "nxsys-auth test client" "URI:urn:nxsys-auth:test-client" clientAuth
  chmod 644 client.key
  openssl verify -CAfile ca.pem -x509_strict -purpose sslclient client.pem > /dev/null
  if openssl verify -CAfile ca.pem -purpose sslserver client.pem > /dev/null 2>&1; then
    echo "client.pem unexpectedly verifies as a server certificate" >&2; exit 1
  fi
  if openssl verify -CAfile ca.pem -purpose sslclient server.pem > /dev/null 2>&1; then
    echo "server.pem unexpectedly verifies as a client certificate" >&2; exit 1
  fi
}

if [ "$only" = client ]; then
  client_cert
  echo "client certificate written to $(pwd)"
  exit 0
fi

# Test CA.
cat > "$tmp/ca.cnf" <<EXT
[req]
distinguished_name = dn
prompt = no
[dn]
CN = nxsys-auth test CA
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EXT
new_key ca.key
openssl req -new -x509 -config "$tmp/ca.cnf" -extensions ca -key ca.key -sha256 \
  -days "$days" -set_serial "$(serial)" -out ca.pem

sign_leaf server localhost "DNS:localhost, IP:127.0.0.1"
sign_leaf wrong-host other.example "DNS:other.example"

# Self-signed leaf for localhost: right names, but no trusted issuer.
{
  printf '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = localhost\n'
  leaf_ext "DNS:localhost, IP:127.0.0.1"
} > "$tmp/self-signed.cnf"
new_key self-signed.key
openssl req -new -x509 -config "$tmp/self-signed.cnf" -extensions leaf -key self-signed.key \
  -sha256 -days "$days" -set_serial "$(serial)" -out self-signed.pem

# The test keys are public test data, readable by whoever runs the tests.
chmod 644 ca.key server.key wrong-host.key self-signed.key

# Fail loudly if the results do not verify the way the tests expect.
openssl verify -CAfile ca.pem -x509_strict -verify_ip 127.0.0.1 server.pem > /dev/null
openssl verify -CAfile ca.pem -x509_strict -verify_hostname localhost server.pem > /dev/null
openssl verify -CAfile ca.pem -x509_strict -verify_hostname other.example wrong-host.pem > /dev/null
if openssl verify -CAfile ca.pem -verify_ip 127.0.0.1 wrong-host.pem > /dev/null 2>&1; then
  echo "wrong-host.pem unexpectedly verifies for 127.0.0.1" >&2; exit 1
fi
if openssl verify -CAfile ca.pem self-signed.pem > /dev/null 2>&1; then
  echo "self-signed.pem unexpectedly verifies against the test CA" >&2; exit 1
fi
client_cert
echo "certificates written to $(pwd)"
