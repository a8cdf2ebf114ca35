# Shared by the benchmark scripts (sourced, not run). Expects W (a scratch directory)
# and V (the vertex binary) to be set by the caller.

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

# A TCP port free on loopback now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_line FILE TEXT: waits up to 10 s for TEXT to appear in FILE.
wait_line() { for _ in $(seq 1 100); do grep -q "$2" "$1" 2> /dev/null && return 0; sleep 0.1; done; echo "no '$2' in $1:" >&2; cat "$1" >&2; exit 1; }

# Seconds a shell command takes, wall clock.
seconds() { local s e; s=$(date +%s.%N); bash -c "$1"; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

# Installs Debian packages that provide the named commands, when any is missing.
need_commands() {
    local missing=()
    for command in "$@"; do command -v "$command" > /dev/null || missing+=("$command"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
}

# Two domains on loopback, a.test and b.test (b knows where a is), with alice@a.test and
# bob@b.test registered, each with a home in $W/home-USER.
start_two_domains() {
    echo pw > "$W/pw"
    A_PORT=$(free_port); B_PORT=$(free_port)
    "$V" server --domain a.test --data "$W/a" --bind 127.0.0.1 --port $A_PORT --log-level warning > "$W/a.log" 2>&1 & PIDS+=($!)
    "$V" server --domain b.test --data "$W/b" --bind 127.0.0.1 --port $B_PORT --log-level warning \
        --peer-server a.test=127.0.0.1:$A_PORT > "$W/b.log" 2>&1 & PIDS+=($!)
    wait_line "$W/a.log" listening; wait_line "$W/b.log" listening
    local u user d m
    for u in alice:a bob:b; do
        user=${u%%:*}; d=${u##*:}
        "$V" user add "$user@$d.test" --data "$W/$d" --password-file "$W/pw" > /dev/null
        for m in a:$A_PORT b:$B_PORT; do "$V" servers set "${m%%:*}.test" "127.0.0.1:${m##*:}" --home "$W/home-$user" > /dev/null; done
        "$V" register "$user@$d.test" --password-file "$W/pw" --home "$W/home-$user" > /dev/null
    done
}

# A P-256 CA and a certificate for each of "server" and "client", as $W/NAME.pem
# (certificate and key) with $W/ca.pem, for socat's OPENSSL addresses.
make_socat_certificates() {
    openssl ecparam -name prime256v1 -genkey -noout -out "$W/ca.key" 2> /dev/null
    openssl req -x509 -new -key "$W/ca.key" -subj /CN=bench-ca -days 2 -out "$W/ca.pem" 2> /dev/null
    local end
    for end in server client; do
        openssl ecparam -name prime256v1 -genkey -noout -out "$W/$end.key" 2> /dev/null
        openssl req -new -key "$W/$end.key" -subj /CN=$end -out "$W/$end.csr" 2> /dev/null
        openssl x509 -req -in "$W/$end.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial -days 2 -out "$W/$end.crt" 2> /dev/null
        cat "$W/$end.crt" "$W/$end.key" > "$W/$end.pem"
    done
}
