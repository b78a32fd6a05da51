#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# examples/redis_replicas: 3 replica processes started at once, sharing a redis_store on a
# redis-server of the test's own (127.0.0.1, a free port, no persistence), for 3 s of API
# requests against nxsys-mock-server (https) with 1-second tokens, rotation and reuse
# detection. Every replica succeeds (every request answered 200), no rotated-away refresh token
# is presented again (reuse_detected 0), the server sees about one refresh per expiry for the
# whole fleet (at most ceil(2 x elapsed seconds) + 2, at least 2), and every one of them is a
# rotation some replica reports. With "tls", the redis-server speaks TLS only (the test
# certificates of testing/data) and the replicas reach it with NXSYS_REDIS_TLS=1 and
# NXSYS_REDIS_CA_FILE. Skipped (77) without redis-server (or, for tls, redis-cli).
# Usage: redis_replicas.sh PATH/TO/nxsys-mock-server PATH/TO/nxsys-example-redis-replicas [tls]
set -euo pipefail
mock_bin=$1
example=$2
mode=${3:-plain}
data=$(cd "$(dirname "$0")/../../testing/data" && pwd)
for tool in redis-server $([ "$mode" = tls ] && echo redis-cli); do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is not installed (scripts/setup.sh installs it): skipped"
    exit 77
  fi
done
source "$(dirname "$0")/lib.sh"
replicas=3
seconds=3

# redis_ping PORT: whether a Redis answers PING on 127.0.0.1:PORT (bash's /dev/tcp, or
# redis-cli for TLS; 2 s bound).
redis_ping() {
  if [ "$mode" = tls ]; then
    [ "$(timeout 2 redis-cli --tls --cacert "$data/ca.pem" -h 127.0.0.1 -p "$1" PING 2>/dev/null)" \
      = PONG ]
    return
  fi
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "PING\r\n" >&3 &&
    IFS= read -r reply <&3 && [[ $reply == +PONG* ]]' _ "$1" 2>/dev/null
}
# listening PORT: whether anything accepts connections on 127.0.0.1:PORT.
listening() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# A free port: a random one nothing answers on, tried again if redis-server cannot bind it.
redis_port=""
for _ in $(seq 1 10); do
  port=$((20000 + RANDOM % 30000))
  listening "$port" && continue
  listen=(--port "$port")
  [ "$mode" = tls ] && listen=(--port 0 --tls-port "$port" --tls-cert-file "$data/server.pem"
    --tls-key-file "$data/server.key" --tls-ca-cert-file "$data/ca.pem" --tls-auth-clients no)
  redis-server "${listen[@]}" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --loglevel warning >"$tmp/redis-$port.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 1 200); do  # 10 s
    redis_ping "$port" && { redis_port=$port; break; }
    kill -0 "$redis_pid" 2>/dev/null || break  # exited: the port was taken after all
    sleep 0.05
  done
  [ -n "$redis_port" ] && break
done
[ -n "$redis_port" ] || fail "redis-server did not start"

secret="cs-$RANDOM-$$-client-secret"
rt0="rt-$RANDOM-$$-refresh-token"
# Over https (token endpoint and API), trusting the mock's test CA through NXSYS_CA_FILE.
start_mock mock --tls --ttl 1 --rotate --reuse-detection --client-id replicas-test \
  --client-secret "$secret" --refresh-token "$rt0"
export NXSYS_BASE_API_URL=$mock_url NXSYS_CLIENT_ID=replicas-test NXSYS_CLIENT_SECRET=$secret
export NXSYS_REFRESH_TOKEN=$rt0 NXSYS_CA_FILE=$mock_ca
[ "$mode" = tls ] && export NXSYS_REDIS_TLS=1 NXSYS_REDIS_CA_FILE=$data/ca.pem

start=$(date +%s%N)
replica_pids=()
for r in $(seq 1 $replicas); do
  timeout 60 "$example" "127.0.0.1:$redis_port" "$seconds" 4 >"$tmp/replica-$r.out" \
    2>"$tmp/replica-$r.err" &
  replica_pids+=($!)
  pids+=($!)
done
for r in $(seq 1 $replicas); do
  rc=0; wait "${replica_pids[r - 1]}" || rc=$?
  [ "$rc" -eq 0 ] || fail "replica $r: exit $rc, expected 0"
done
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
mock_stats "$mock_url" "$tmp/stats.json"

rotated=0
for r in $(seq 1 $replicas); do
  echo "replica $r: $(tr '\n' ' ' <"$tmp/replica-$r.out")"
  grep -qE '^requests ([0-9]+), answered 200: \1$' "$tmp/replica-$r.out" ||
    fail "replica $r: not every request answered 200"
  n=$(sed -n 's/^refreshes .*, rotated \([0-9]*\),.*/\1/p' "$tmp/replica-$r.out")
  rotated=$((rotated + n))
done
echo "mock: $(cat "$tmp/stats.json")"
refreshes=$(counter "$tmp/stats.json" refreshes)
bound=$(((2 * elapsed_ms + 999) / 1000 + 2))
[ "$(counter "$tmp/stats.json" reuse_detected)" -eq 0 ] ||
  fail "a rotated-away refresh token was presented again"
[ "$(counter "$tmp/stats.json" errors)" -eq 0 ] || fail "the token endpoint answered errors"
[ "$refreshes" -le "$bound" ] || fail "$refreshes refreshes in $elapsed_ms ms (bound $bound)"
[ "$refreshes" -ge 2 ] || fail "1-second tokens were not refreshed during $seconds s"
[ "$rotated" -eq "$refreshes" ] ||
  fail "the replicas report $rotated rotations, the server $refreshes refreshes"
echo "$refreshes refreshes for $replicas replicas in $elapsed_ms ms (bound $bound)"

no_secrets "$tmp"/replica-* -- "$secret" "$rt0"
echo "examples.redis_replicas ($mode): OK"
