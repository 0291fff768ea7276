#!/usr/bin/env bash
# The main job: mailq-relay delivering mail on loopback, end to end.
#
# Installs what it needs, builds, starts a real DNS server (unbound) serving a demo zone and a
# real receiving SMTP server (Postfix's smtp-sink) on 127.0.0.1, then runs the mailq-relay
# daemon (durable spool, c-ares resolver, libuv transport, SMTP listener, control socket) with
# a demo configuration and submits a batch of messages to five destinations, over SMTP to the
# relay's listener and with mailq-send:
#   shop.demo.test      MX -> 127.0.0.1 (smtp-sink): delivered
#   news.demo.test      no MX, an A record (implicit MX): delivered
#   partner.example     a static smart-host route to the sink: delivered
#   down.demo.test      MX -> 127.0.0.2, where nothing listens: connection refused, then
#                       marked down after 3 failures (451 4.4.1 ... domain is marked down ...)
#   gone.demo.test      NXDOMAIN: 421 4.4.4 [internal] domain does not resolve
# It prints a progress line while the batch is delivered, the Messaging Server log lines
# (seed 002), the queue summary, and a last line with what was delivered and deferred.
#
#   scripts/demo.sh [--messages N]      N messages per destination (default 6)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="${MAILQ_DEMO_BUILD:-$root/build-demo}"
per_domain=6
while [[ $# -gt 0 ]]; do
  case "$1" in
    --messages) per_domain=$2; shift ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

"$root/scripts/deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMAILQ_BUILD_TESTS=OFF -DMAILQ_BUILD_BENCH=OFF -DMAILQ_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" -j "${JOBS:-2}" --target mailq-relay mailq-send mailq-queue
bin="$build/examples"

work=$(mktemp -d /tmp/mailq-demo.XXXXXX)
chmod 755 "$work"
pids=()
relay_pid=""
cleanup() {
  [[ -n $relay_pid ]] && kill "$relay_pid" 2>/dev/null || true
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
listen_port=$(free_port)

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

# The relay's configuration: the keys of examples/relay/mailq-relay.example.toml.
cat > "$work/mailq-relay.toml" <<TOML
spool = "$work/spool"
log = "$work/mail.log"
helo = "relay.demo.localhost"
listen = "127.0.0.1:$listen_port"

[resolver]
servers = ["127.0.0.1:$dns_port"]
timeout = "1s"
mx_port = $smtp_port
allow_internal_mx = ["127.0.0.0/8"]   # the demo's MX hosts are on loopback

[queue]
cycle = "15m"
max_lifetime = "5d"
retry = { min = "5m", max = "4h" }

[domain_state]
failure_threshold = 3
down_interval = "15m"

[[route]]
name = "tcp_partner"
domains = ["partner.example"]
hosts = ["127.0.0.1:$smtp_port"]
tls = "opportunistic"

[[route]]
name = "default-non-local-route"
mx = true
tls = "opportunistic"
TOML
"$bin/mailq-relay" --config "$work/mailq-relay.toml" --check
"$bin/mailq-relay" --config "$work/mailq-relay.toml" > "$work/relay.out" 2>&1 &
relay_pid=$!
for try in $(seq 100); do
  [[ -S "$work/spool/control.sock" ]] && break
  kill -0 "$relay_pid" 2>/dev/null || { cat "$work/relay.out" >&2; exit 1; }
  sleep 0.1
done
queue() { "$bin/mailq-queue" --spool "$work/spool" "$@"; }

domains=(shop.demo.test news.demo.test partner.example down.demo.test gone.demo.test)
deliverable=$((3 * per_domain))
total=$((${#domains[@]} * per_domain))
echo "== mailq-relay: listening on 127.0.0.1:$listen_port; unbound on 127.0.0.1:$dns_port;" \
  "smtp-sink on 127.0.0.1:$smtp_port"
echo "== submitting $total messages: half over SMTP to the relay's listener, half with mailq-send"

# Over SMTP: one session, pipelined transactions (Python's smtplib).
python3 - "$listen_port" "$per_domain" "${domains[@]}" <<'PY'
import smtplib, sys
port, n, domains = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
with smtplib.SMTP("127.0.0.1", port, local_hostname="client.demo.localhost") as s:
    for d in domains:
        for i in range(1, n // 2 + 1):
            to = f"user{i}@{d}"
            msg = (f"From: demo@demo.localhost\r\nTo: {to}\r\nSubject: demo {i} for {d}\r\n"
                   f"Message-ID: <smtp.{i}.{d}@demo.localhost>\r\n\r\nHello {to}, over SMTP.\r\n")
            s.sendmail("demo@demo.localhost", [to], msg)
PY
# With mailq-send: into the maildrop, which the running relay picks up as files arrive.
for d in "${domains[@]}"; do
  for i in $(seq $((per_domain / 2 + 1)) "$per_domain"); do
    printf 'From: demo@demo.localhost\nTo: user%s@%s\nSubject: demo %s for %s\n\nHello, from mailq-send.\n' \
      "$i" "$d" "$i" "$d" | "$bin/mailq-send" --spool "$work/spool" -t >/dev/null
  done
done

# Progress until every deliverable message is delivered and every other one was tried.
progress() {
  python3 - "$work/mail.log" <<'PY'
import re, sys
last = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^\S+ \S+ \S+\s+(?:\S+\s+)?([EQDR]) \d+$", line.rstrip("\n"))
    if m: action = m.group(1); continue
    m = re.match(r"^ \S* rfc822;\S+ (\S+@\S+)$", line.rstrip("\n"))
    if m and action: last[m.group(1)] = action; action = None
d = sum(1 for a in last.values() if a == "D"); q = sum(1 for a in last.values() if a == "Q")
r = sum(1 for a in last.values() if a == "R"); e = sum(1 for a in last.values() if a == "E")
print(d, q, r, e)
PY
}
ok=0
for try in $(seq 600); do
  read -r delivered deferred returned waiting < <(progress)
  printf '\r== progress: %d delivered, %d deferred, %d returned, %d not yet tried (of %d)' \
    "$delivered" "$deferred" "$returned" "$waiting" "$total"
  if [[ $delivered -ge $deliverable && $((delivered + deferred + returned)) -ge $total ]]; then
    ok=1; break
  fi
  sleep 0.1
done
echo
[[ $ok -eq 1 ]] || echo "demo.sh: not everything was tried within 60 s" >&2

echo "== Messaging Server log (seed 002 format), first records of each kind:"
python3 - "$work/mail.log" <<'PY'
import re, sys
records, cur = [], None
for line in open(sys.argv[1], errors="replace"):
    if not line.startswith(" "):
        cur = [line]; records.append(cur)
    elif cur is not None:
        cur.append(line)
shown = {}
for rec in records:
    m = re.match(r"^\S+ \S+ (\S+)\s+(?:\S+\s+)?([EQDR]) \d+$", rec[0].rstrip("\n"))
    if not m: continue
    key = (m.group(2), rec[-1].strip()[:40]) if m.group(2) == "Q" else (m.group(2), m.group(1))
    if key in shown: continue
    shown[key] = True
    sys.stdout.write("".join(rec))
print(f"   ({len(records)} records in {sys.argv[1].rsplit('/', 1)[-1]}; one of each kind shown)")
PY
echo "== mailq-queue summary:"
queue summary
echo "== mailq-queue status:"
queue status
echo "== mailq-queue show (the oldest message for down.demo.test):"
first_down=$(queue list --destination down.demo.test | awk 'NR == 2 { print $1 }')
[[ -n $first_down ]] && queue show "$first_down"

kill -TERM "$relay_pid"
wait "$relay_pid" && relay_rc=0 || relay_rc=$?
relay_pid=""
read -r delivered deferred returned waiting < <(progress)
# What the stopped relay's spool holds, read by the operator tool (either layout).
remaining=$(queue list | grep -c '^[0-9A-Z]\{13\} ' || true)
down_n=$(grep -c "domain is marked down" "$work/mail.log" || true)
echo "== mailq-relay stopped (exit $relay_rc); $remaining messages remain in the spool"
echo "== result: $delivered of $total delivered; $deferred deferred: down.demo.test refused" \
  "connections and was marked down after 3 failures ($down_n records say" \
  "'451 4.4.1 ... domain is marked down'), gone.demo.test does not exist" \
  "('421 4.4.4 [internal] domain does not resolve'); $returned returned"
