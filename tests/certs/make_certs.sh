#!/bin/sh
# Regenerates the committed test PKI in this directory (tests never run this;
# it documents how the files were made).  Requires the openssl CLI (>= 1.1.1).
#
#   ca.pem / ca.key            "gigaproxy test CA", self-signed root
#   server.pem / server.key    CN=localhost, SAN DNS:localhost, IP:127.0.0.1, serverAuth
#   client.pem / client.key    CN=gigaproxy test client, clientAuth (mTLS tests)
#   client-encrypted.key       client.key encrypted (PKCS#8, AES-256) with password
#                              "test-key-password"
#   other-ca.pem               an unrelated self-signed CA (its key is discarded):
#                              trusting only it must make verification fail
#
# All certificates are valid 2020-01-01 .. 2099-12-31 and carry the extensions
# Python's ssl module demands with VERIFY_X509_STRICT (default since 3.13):
# CA: basicConstraints critical CA:TRUE, keyUsage keyCertSign,cRLSign, SKI;
# leaf: basicConstraints CA:FALSE, keyUsage, extendedKeyUsage, SKI and AKI.
set -eu
cd "$(dirname "$0")"

START=20200101000000Z
END=20991231235959Z
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/openssl.cnf" <<CNF
[ ca ]
default_ca = test_ca

[ test_ca ]
database        = $WORK/index.txt
serial          = $WORK/serial
new_certs_dir   = $WORK
default_md      = sha256
policy          = policy_any
unique_subject  = no
copy_extensions = none

[ policy_any ]
organizationName = optional
commonName       = supplied

[ req ]
distinguished_name = dn
prompt             = no
[ dn ]
CN = unused

[ v3_ca ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ v3_server ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ v3_client ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
CNF

newkey() {  # newkey FILE
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
}

# sign NAME SUBJECT EXTENSIONS KEY CA_CERT CA_KEY  (CA_CERT "-" = self-signed)
sign() {
    : > "$WORK/index.txt"
    openssl req -new -config "$WORK/openssl.cnf" -key "$4" -subj "$2" -out "$WORK/$1.csr"
    if [ "$5" = "-" ]; then
        openssl ca -batch -notext -config "$WORK/openssl.cnf" -selfsign -keyfile "$4" \
            -rand_serial -startdate "$START" -enddate "$END" -extensions "$3" \
            -in "$WORK/$1.csr" -out "$1.pem" 2>"$WORK/ca.log" || { cat "$WORK/ca.log"; exit 1; }
    else
        openssl ca -batch -notext -config "$WORK/openssl.cnf" -cert "$5" -keyfile "$6" \
            -rand_serial -startdate "$START" -enddate "$END" -extensions "$3" \
            -in "$WORK/$1.csr" -out "$1.pem" 2>"$WORK/ca.log" || { cat "$WORK/ca.log"; exit 1; }
    fi
}

newkey ca.key
sign ca "/O=gigaproxy tests/CN=gigaproxy test CA" v3_ca ca.key - -

newkey server.key
sign server "/O=gigaproxy tests/CN=localhost" v3_server server.key ca.pem ca.key

newkey client.key
sign client "/O=gigaproxy tests/CN=gigaproxy test client" v3_client client.key ca.pem ca.key
openssl pkey -in client.key -aes256 -passout pass:test-key-password -out client-encrypted.key

newkey "$WORK/other-ca.key"
sign other-ca "/O=unrelated/CN=other test CA" v3_ca "$WORK/other-ca.key" - -

chmod 644 ./*.pem ./*.key
openssl verify -x509_strict -CAfile ca.pem server.pem client.pem
openssl verify -x509_strict -CAfile other-ca.pem other-ca.pem
