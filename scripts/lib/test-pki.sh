# shellcheck shell=bash
# A throwaway PKI for NTS benchmarks, sourced by scripts/bench-serve*: make_test_pki DIR writes
# DIR/ca.pem (a CA) and DIR/server.pem with DIR/server.key (mode 600), a P-256 certificate
# for 127.0.0.1 that the CA signed, valid for a day. (The Rust tests make theirs in
# crates/testkit/src/nts.rs.)
make_test_pki() {
  command -v openssl >/dev/null || { echo "needs openssl for the NTS certificates (apt-get install openssl)" >&2; return 1; }
  (
    cd "$1" || return 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 \
      -subj "/CN=bench CA" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile ext.cnf 2>/dev/null
    chmod 600 server.key
  )
}
