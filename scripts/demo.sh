#!/usr/bin/env bash
# The main job: mailq delivering mail on loopback, end to end.
#
# Installs what it needs, builds, starts a real DNS server (unbound) serving a demo zone and a
# real receiving SMTP server (Postfix's smtp-sink) on 127.0.0.1, then runs mailq-demo: the
# engine embedded in a libuv loop with the durable spool, the c-ares resolver and the libuv
# transport. It submits batches to four domains:
#   shop.demo.test    MX -> 127.0.0.1 (smtp-sink): delivered
#   news.demo.test    no MX, an A record (implicit MX): delivered
#   down.demo.test    MX -> 127.0.0.2, where nothing listens: connection refused, then marked
#                     down after 3 failures (451 4.4.1 ... domain is marked down ...)
#   gone.demo.test    NXDOMAIN: 421 4.4.4 [internal] domain does not resolve
# and prints the Messaging Server log lines, then a summary.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="${MAILQ_DEMO_BUILD:-$root/build-demo}"

"$root/scripts/deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMAILQ_BUILD_TESTS=OFF -DMAILQ_BUILD_BENCH=OFF -DMAILQ_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" -j "${JOBS:-2}" --target mailq-demo

work=$(mktemp -d /tmp/mailq-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
dns_port=$(free_port)
smtp_port=$(free_port)

cat > "$work/demo.test.zone" <<ZONE
\$ORIGIN demo.test.
\$TTL 300
@               IN SOA ns.demo.test. hostmaster.demo.test. 1 3600 600 86400 300
@               IN NS  ns.demo.test.
ns              IN A   127.0.0.1
shop            IN MX  10 mx.shop
mx.shop         IN A   127.0.0.1
news            IN A   127.0.0.1
down            IN MX  10 mx.down
mx.down         IN A   127.0.0.2
ZONE
cat > "$work/unbound.conf" <<CONF
server:
  interface: 127.0.0.1
  port: $dns_port
  interface-automatic: no
  do-ip6: no
  do-daemonize: no
  use-syslog: no
  logfile: ""
  chroot: ""
  username: ""
  directory: "$work"
  pidfile: ""
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  do-not-query-localhost: yes
  do-not-query-address: 0.0.0.0/0
  do-not-query-address: ::/0
  local-zone: "test." nodefault
auth-zone:
  name: "demo.test"
  zonefile: "$work/demo.test.zone"
  for-downstream: yes
  for-upstream: yes
  fallback-enabled: no
CONF
/usr/sbin/unbound -d -c "$work/unbound.conf" > "$work/unbound.log" 2>&1 &
pids+=($!)
sink_user=()
[[ $(id -u) -eq 0 ]] && sink_user=(-u nobody)  # smtp-sink refuses to run as root
/usr/sbin/smtp-sink "${sink_user[@]}" -c "127.0.0.1:$smtp_port" 100 > "$work/smtp-sink.log" 2>&1 &
pids+=($!)

# Wait for both servers (bounded): an MX answer from unbound and a TCP accept from the sink.
ready=0
for try in $(seq 50); do
  if python3 - "$dns_port" "$smtp_port" <<'PY' 2>/dev/null; then ready=1; break; fi
import socket, sys, struct
dns, smtp = int(sys.argv[1]), int(sys.argv[2])
socket.create_connection(("127.0.0.1", smtp), timeout=0.2).close()
q = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x04shop\x04demo\x04test\x00\x00\x0f\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
s.sendto(q, ("127.0.0.1", dns)); r = s.recv(512)
sys.exit(0 if (r[3] & 0x0f) == 0 and struct.unpack(">H", r[6:8])[0] > 0 else 1)
PY
  sleep 0.1
done
if [[ $ready -ne 1 ]]; then
  echo "demo.sh: the servers did not start" >&2
  cat "$work"/*.log >&2
  exit 1
fi

echo "== mailq-demo: unbound on 127.0.0.1:$dns_port, smtp-sink on 127.0.0.1:$smtp_port"
echo "== Messaging Server log (seed 002 format):"
"$build/examples/mailq-demo" --spool "$work/spool" --dns "127.0.0.1:$dns_port" \
  --mx-port "$smtp_port" --batches 5 --per-batch 2 --threshold 3 \
  shop.demo.test news.demo.test down.demo.test gone.demo.test
echo "== spool: $(find "$work/spool/queue" -type f | wc -l) messages remain queued (deferred)"
