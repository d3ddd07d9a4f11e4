# Shared by the side-by-side benchmarks (compare.sh, shared-limits.sh): background processes with cleanup, and the
# bench's own keys and RS256 token. Source it after setting W (the work folder) and ROOT, and after defining die.

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------- processes
declare -A PID=()
cleanup() {
  local name p
  for name in "${!PID[@]}"; do kill "${PID[$name]}" 2>/dev/null; done
  for _ in $(seq 1 50); do
    local alive=0
    for name in "${!PID[@]}"; do kill -0 "${PID[$name]}" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for name in "${!PID[@]}"; do
    p=${PID[$name]}
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in the background (it must stay in the foreground itself), output to run/NAME.log.
start() { local name=$1; shift; "$@" >"$W/run/$name.log" 2>&1 & PID[$name]=$!; }
# stop NAME: SIGTERM, then SIGKILL after 20 s; waits for the exit; prints nothing, returns the exit status.
stop() {
  local name=$1 p=${PID[$1]:-} status
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null
  for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && { echo "warning: $name did not stop in 20 s; killed" >&2; kill -KILL "$p" 2>/dev/null; }
  wait "$p" 2>/dev/null
  status=$?
  unset "PID[$name]"
  return "$status"
}
# wait_port NAME PORT: until 127.0.0.1:PORT accepts (10 s at most) while NAME runs.
wait_port() {
  for _ in $(seq 1 100); do
    port_busy "$2" && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || { echo "$1 exited:" >&2; tail -n 20 "$W/run/$1.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$1 is not listening on 127.0.0.1:$2 after 10 s" >&2; tail -n 20 "$W/run/$1.log" >&2; return 1
}

# ---------------------------------------------------------------------------------------------- keys, token
# bench_credentials: in $W/certs, a CA and a localhost server certificate (server.crt, server.key, and server.pem
# with both) and an RSA key pair for JWTs (once per work folder); then TOKEN, an RS256 token of acme's bot1 signed
# by jwt.key (kid k1, 24 h), minted by PyJWT (BENCH_PYTHON, the project's .venv or python3) or else openssl, and
# MINTED, which of them did.
bench_credentials() {
  cd "$W/certs" || die "no $W/certs"
  if [ ! -s server.pem ] || [ ! -s jwt.pub ]; then
    {
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=bench-ca" &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" &&
      printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > server.ext &&
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile server.ext &&
      cat server.crt server.key > server.pem &&
      openssl genrsa -out jwt.key 2048 && openssl rsa -in jwt.key -pubout -out jwt.pub
    } >/dev/null 2>&1 || die "certificate generation failed in $W/certs"
  fi
  local now claims python=${BENCH_PYTHON:-} candidate
  now=$(date +%s)
  claims="{\"sub\":\"bot1\",\"tenant\":\"acme\",\"iss\":\"https://idp.dev\",\"aud\":\"mcpgw\",\"iat\":$now,\"exp\":$((now + 86400))}"
  if [ -z "$python" ]; then
    for candidate in "$ROOT/.venv/bin/python" python3; do
      "$candidate" -c "import jwt, cryptography" >/dev/null 2>&1 && { python=$candidate; break; }
    done
  fi
  if [ -n "$python" ]; then
    TOKEN=$("$python" -c 'import json, sys, jwt
print(jwt.encode(json.loads(sys.argv[1]), open("jwt.key").read(), algorithm="RS256", headers={"kid": "k1"}))' "$claims") ||
      die "minting the token with $python (PyJWT) failed"
    MINTED="PyJWT ($python)"
  else  # RS256 = RSASSA-PKCS1-v1_5 with SHA-256, which is what openssl dgst -sign makes with an RSA key.
    b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
    local signing_input
    signing_input="$(printf '%s' '{"alg":"RS256","typ":"JWT","kid":"k1"}' | b64url).$(printf '%s' "$claims" | b64url)"
    TOKEN="$signing_input.$(printf '%s' "$signing_input" | openssl dgst -sha256 -sign jwt.key -binary | b64url)"
    MINTED="openssl"
  fi
  export TOKEN
  cd "$W" || die "no $W"
}

# ---------------------------------------------------------------------------------------------- checks
# probe URL TOKEN BODY: prints "STATUS BODY" of one request (and notes it in run/checks.txt).
probe() {
  local headers=(-H "Content-Type: application/json" -H "Accept: application/json, text/event-stream")
  [ -n "$2" ] && headers+=(-H "Authorization: Bearer $2")
  local out status
  out=$(curl -sS --max-time 5 --cacert "$W/certs/ca.crt" "${headers[@]}" --data "$3" -w '\n%{http_code}' "$1" 2>&1)
  status=${out##*$'\n'}
  out="$status $(printf '%s' "${out%$'\n'*}" | tr -d '\n' | cut -c1-200)"
  printf '%s <- %s %s\n' "$out" "$1" "$(cut -c1-90 <<<"$3")" >> "$W/run/checks.txt"
  printf '%s' "$out"
}
# served: 200 with the upstream's canned result.
served() { [[ $1 == 200\ * && $1 == *'"result"'* ]]; }
