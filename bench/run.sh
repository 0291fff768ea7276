#!/usr/bin/env bash
# mailq benchmarks, one command: installs the peers, builds, starts the peers on loopback, runs
# every benchmark, prints a table and writes bench/results.json.
#
#   bench/run.sh [--count N] [--large-count N] [--restart-count N] [--enqueue-count N]
#                [--submit-count N] [--connections C] [--per-connection M] [--skip-postfix]
#                [--skip-peers] [--growth "10000 100000 1000000"] [--ceiling-processes P]
#                [--only drain,ingest,enqueue,restart,submit,down,relay,dkim]
#
# Everything talks to 127.0.0.1 only. Peers (smtp-sink, the private Postfix) are stopped on
# exit, and each one is bounded by coreutils' timeout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
count=20000 large_count=5000 restart_count=1000000 enqueue_count=50000 submit_count=1000
connections=20 per_connection=1000 skip_postfix=0 skip_peers=0 only=""
growth="10000 100000 1000000" ceiling_processes=4
while [[ $# -gt 0 ]]; do
  case $1 in
    --count) count=$2; shift 2 ;;
    --large-count) large_count=$2; shift 2 ;;
    --restart-count) restart_count=$2; shift 2 ;;
    --enqueue-count) enqueue_count=$2; shift 2 ;;
    --submit-count) submit_count=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --per-connection) per_connection=$2; shift 2 ;;
    --skip-postfix) skip_postfix=1; shift ;;
    --skip-peers) skip_peers=1; shift ;;
    --growth) growth=$2; shift 2 ;;
    --ceiling-processes) ceiling_processes=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done

want() { [[ -z $only || ",$only," == *",$1,"* ]]; }

"$root/scripts/deps.sh"
build=$root/build-bench
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILQ_BUILD_BENCH=ON \
  -DMAILQ_BUILD_TESTS=OFF -DMAILQ_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" -j2 --target bench_drain bench_enqueue bench_restart bench_down mailq-relay \
  mailq-queue mailq-send >/dev/null
bin=$build/bench
relay=$build/examples/mailq-relay
queue_tool=$build/examples/mailq-queue
send_tool=$build/examples/mailq-send

work=$(mktemp -d /tmp/mailq-bench.XXXXXX)
chmod 755 "$work"  # the Postfix daemons and smtp-sink (as nobody) must traverse it
shm=/dev/shm
[[ -d $shm && -w $shm ]] || shm=$work
shmwork=$(mktemp -d "$shm/mailq-bench.XXXXXX")
jsonl=$work/results.jsonl
: >"$jsonl"
sink_pid="" pf_dir="" pf_port="" extra_pids=()
cleanup() {
  [[ -n $pf_dir ]] && postfix -c "$pf_dir/etc" stop >/dev/null 2>&1 || true
  [[ -n $sink_pid ]] && kill "$sink_pid" 2>/dev/null || true
  [[ ${#extra_pids[@]} -gt 0 ]] && kill "${extra_pids[@]}" 2>/dev/null || true
  declare -F peers_cleanup >/dev/null && peers_cleanup
  wait 2>/dev/null || true
  rm -rf "$work" "$shmwork"
}
trap cleanup EXIT

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 30000))
    if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return; fi
  done
  echo "run.sh: no free port" >&2; exit 1
}
wait_listen() {  # port
  for _ in $(seq 1 100); do ss -Htln "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  return 1
}
now() { date +%s.%N; }
json() { echo "$1" | tee -a "$jsonl"; }
# The rows after this line belong to section $1 (--only replaces a section's rows).
section() { echo "{\"section\": \"$1\"}" >>"$jsonl"; }

# --- the sink: Postfix's smtp-sink, no dumps, 1024 backlog, bounded to 1 hour ---
sink_port=$(free_port)
sink_user=()
[[ $(id -u) -eq 0 ]] && sink_user=(-u nobody)
timeout -k 5 3600 /usr/sbin/smtp-sink "${sink_user[@]}" "127.0.0.1:$sink_port" 1024 \
  >"$work/sink.log" 2>&1 &
sink_pid=$!
wait_listen "$sink_port" || { echo "run.sh: smtp-sink did not start" >&2; exit 1; }
echo "smtp-sink on 127.0.0.1:$sink_port; nproc $(nproc); work dir $work, tmpfs dir $shmwork" >&2

# --- ceiling: smtp-source into the same sink ---
ceiling() {  # size n reuse(0/1)
  local size=$1 n=$2 reuse=$3 flags=() t0 t1
  [[ $reuse -eq 1 ]] && flags=(-d)
  t0=$(now)
  timeout 600 smtp-source "${flags[@]}" -s "$connections" -m "$n" -l "$size" \
    -f bench@bench.localhost -t sink@bench.localhost "127.0.0.1:$sink_port"
  t1=$(now)
  json "$(python3 -c "import json,sys; n,s,r,t=int(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4]); print(json.dumps({'bench':'ceiling','engine':'smtp-source','size':s,'messages':n,'reuse':bool(r),'sessions':$connections,'seconds':round(t,4),'msgs_per_s':round(n/t,1)}))" "$n" "$size" "$reuse" "$(echo "$t1 - $t0" | bc)")"
}

# --- a truer ceiling: several smtp-source processes at once, into the one sink or each into a
# sink of its own (one smtp-source process is a single-threaded client and is beaten by mailq)
ceiling_multi() {  # size n processes own-sinks(0/1)
  local size=$1 n=$2 procs=$3 own=$4 per ports=() pids=() sinks=() t0 t1 p i
  per=$((n / procs))
  for i in $(seq 1 "$procs"); do
    if [[ $own -eq 1 ]]; then
      p=$(free_port)
      timeout -k 5 900 /usr/sbin/smtp-sink "${sink_user[@]}" "127.0.0.1:$p" 1024 >/dev/null 2>&1 &
      sinks+=($!)
      extra_pids+=($!)
      wait_listen "$p" || { echo "run.sh: smtp-sink did not start" >&2; return 1; }
      ports+=("$p")
    else
      ports+=("$sink_port")
    fi
  done
  t0=$(now)
  for p in "${ports[@]}"; do
    timeout 600 smtp-source -d -s "$connections" -m "$per" -l "$size" \
      -f bench@bench.localhost -t sink@bench.localhost "127.0.0.1:$p" &
    pids+=($!)
  done
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
  t1=$(now)
  [[ ${#sinks[@]} -gt 0 ]] && { kill "${sinks[@]}" 2>/dev/null || true; }
  if [[ $failed -gt 0 ]]; then
    echo "run.sh: $failed of $procs smtp-source processes failed; no ceiling figure" >&2
    return 1
  fi
  json "$(python3 -c "import json,sys; n,s,t,p,o=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5]); print(json.dumps({'bench':'ceiling','engine':'smtp-source','size':s,'messages':n,'reuse':True,'processes':p,'sinks':p if o else 1,'sessions':p*$connections,'seconds':round(t,4),'msgs_per_s':round(n/t,1)}))" "$((per * procs))" "$size" "$(echo "$t1 - $t0" | bc)" "$procs" "$own")"
}

# --- Postfix side by side: a private instance, loaded through its own smtpd on a free
# loopback port while its smtp transport is deferred, then released and timed until empty ---
postfix_start() {  # sets pf_dir and pf_port
  local port
  pf_dir=$(mktemp -d "$work/postfix.XXXXXX")
  chmod 755 "$pf_dir"
  mkdir -p "$pf_dir/etc" "$pf_dir/queue" "$pf_dir/data"
  cp /etc/postfix/dynamicmaps.cf /etc/postfix/postfix-files "$pf_dir/etc/"
  cp -r /etc/postfix/dynamicmaps.cf.d /etc/postfix/postfix-files.d "$pf_dir/etc/" 2>/dev/null || true
  port=$(free_port)
  # The stock services without chroot; the public smtp listener replaced by a loopback one.
  awk -v listen="127.0.0.1:$port" '
    /^smtp +inet/ { print listen " inet n - n - - smtpd"; next }
    /^[a-z]/ && NF >= 8 { $5 = "n" }
    { print }' /etc/postfix/master.cf >"$pf_dir/etc/master.cf"
  touch "$pf_dir/etc/main.cf" "$pf_dir/maillog"
  chown postfix "$pf_dir/data"
  postconf -c "$pf_dir/etc" -e "queue_directory=$pf_dir/queue" "data_directory=$pf_dir/data" \
    "meta_directory=$pf_dir/etc" "shlib_directory=/usr/lib/postfix" compatibility_level=3.6 \
    mail_owner=postfix setgid_group=postdrop myhostname=bench.localhost mydomain=localhost \
    mydestination= alias_maps= alias_database= biff=no inet_interfaces=loopback-only \
    inet_protocols=ipv4 "mynetworks=127.0.0.0/8" "relayhost=[127.0.0.1]:$sink_port" \
    smtp_dns_support_level=disabled smtp_tls_security_level=none \
    "defer_transports=smtp,relay" \
    "default_destination_concurrency_limit=$connections" \
    "smtp_destination_concurrency_limit=$connections" \
    "maillog_file=$pf_dir/maillog" maillog_file_prefixes=/tmp \
    smtpd_client_connection_count_limit=0 smtpd_client_connection_rate_limit=0 \
    smtpd_client_message_rate_limit=0 message_size_limit=0
  postfix -c "$pf_dir/etc" set-permissions >/dev/null 2>&1 || true
  if ! postfix -c "$pf_dir/etc" start >/dev/null 2>&1 || ! wait_listen "$port"; then
    echo "run.sh: the private Postfix did not start; its log:" >&2
    tail -20 "$pf_dir/maillog" >&2
    return 1
  fi
  pf_port=$port
}

postfix_drain() {  # size n
  local size=$1 n=$2 port t0 t1 left
  postfix_start || return 1
  port=$pf_port
  # Load: the queue fills while the smtp transport is deferred. This is also the ingest
  # benchmark of Postfix: smtpd answers 250 once cleanup has fsync'ed the queue file.
  t0=$(now)
  timeout 900 smtp-source -d -s "$connections" -m "$n" -l "$size" -f bench@bench.localhost \
    -t sink@bench.localhost "127.0.0.1:$port"
  t1=$(now)
  json "$(python3 -c "import json,sys; n,s,t=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]); print(json.dumps({'bench':'ingest','engine':'postfix','size':s,'messages':n,'sessions':$connections,'seconds':round(t,4),'msgs_per_s':round(n/t,1)}))" "$n" "$size" "$(echo "$t1 - $t0" | bc)")"
  # Wait until every message went through the deferred transport into the deferred queue.
  for _ in $(seq 1 1800); do
    left=$(find "$pf_dir/queue/maildrop" "$pf_dir/queue/incoming" "$pf_dir/queue/active" -type f | wc -l)
    [[ $left -eq 0 ]] && break
    sleep 0.1
  done
  local loaded
  loaded=$(find "$pf_dir/queue/deferred" -type f | wc -l)
  echo "postfix: $loaded messages in the deferred queue" >&2
  postconf -c "$pf_dir/etc" -e defer_transports=
  postfix -c "$pf_dir/etc" reload >/dev/null 2>&1
  sleep 1
  t0=$(now)
  postqueue -c "$pf_dir/etc" -f
  local ok=0
  for _ in $(seq 1 12000); do  # 20 minutes at most
    left=$(find "$pf_dir/queue/incoming" "$pf_dir/queue/active" "$pf_dir/queue/deferred" -type f | wc -l)
    [[ $left -eq 0 ]] && { ok=1; break; }
    sleep 0.05
  done
  t1=$(now)
  local delivered
  delivered=$(grep -c "status=sent" "$pf_dir/maillog" || true)
  json "$(python3 -c "import json,sys; n,s,t,d,ok=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5]); print(json.dumps({'bench':'drain','engine':'postfix','size':s,'messages':n,'delivered_logged':d,'complete':ok,'seconds':round(t,4),'msgs_per_s':round(n/t,1)}))" "$loaded" "$size" "$(echo "$t1 - $t0" | bc)" "$delivered" "$ok")"
  postfix -c "$pf_dir/etc" stop >/dev/null 2>&1 || true
  sleep 1
  rm -rf "$pf_dir"
  pf_dir=""
}

drain() {  # size n spool-parent label layout
  mkdir -p "$3"
  "$bin/bench_drain" --port "$sink_port" --count "$2" --size "$1" --connections "$connections" \
    --per-connection "$per_connection" --spool "$(mktemp -d "$3/drain.XXXXXX")" \
    --label "$4" --layout "$5" --json "$jsonl" >/dev/null
  tail -1 "$jsonl"
}

# --- through the program: a spool filled through the API (bench_restart --mode fill, itself
# the enqueue rate at that queue size), then `mailq-relay --once` with the defaults of the
# configuration but its one route (to the sink, no TLS), timed from outside by relay_drain.py.
# "default" leaves spool_layout out (the relay runs what the spool holds, segments when new).
relay_drain() {  # size n layout(default|files|segments) parent label [extra TOML]
  local size=$1 n=$2 layout=$3 dir fill_layout
  dir=$(mktemp -d "$4/relay.XXXXXX")
  fill_layout=$layout
  [[ $layout == default ]] && fill_layout=segments
  if ! "$bin/bench_restart" --mode fill --spool "$dir/spool" --count "$n" --size "$size" \
    --layout "$fill_layout" --label "$5" --json "$jsonl" >/dev/null 2>"$dir/fill.err"; then
    echo "run.sh: bench_restart --mode fill failed:" >&2
    cat "$dir/fill.err" >&2
    rm -rf "$dir"
    return 1
  fi
  tail -1 "$jsonl"
  {
    echo "spool = \"$dir/spool\""
    [[ $layout != default ]] && echo "spool_layout = \"$layout\""
    echo "log = \"$dir/mail.log\""
    echo 'helo = "bench.localhost"'
    printf '[[route]]\nname = "tcp_sink"\nhosts = ["127.0.0.1:%s"]\ntls = "none"\ndefault = true\n' \
      "$sink_port"
    [[ -n ${6:-} ]] && printf '%s\n' "$6"
  } >"$dir/relay.toml"
  python3 "$here/relay_drain.py" --relay "$relay" --config "$dir/relay.toml" --log "$dir/mail.log" \
    --messages "$n" --size "$size" --layout "$layout" --label "$5" --json "$jsonl" >/dev/null ||
    echo "run.sh: mailq-relay --once failed on $dir" >&2
  tail -1 "$jsonl"
  rm -rf "$dir"
}

# A relay configuration whose only route points at a closed port on 127.0.0.1: the
# destination is marked down after its first failure and costs nothing afterwards. Layout
# "default" leaves spool_layout out.
nowhere_config() {  # file spool layout log dead-port extra-lines
  local layout_line="spool_layout = \"$3\""
  [[ $3 == default ]] && layout_line="# spool_layout: the default"
  cat >"$1" <<TOML
spool = "$2"
$layout_line
log = "$4"
helo = "bench.localhost"
$6
[domain_state]
failure_threshold = 1
down_interval = "1h"
[[route]]
name = "nowhere"
hosts = ["127.0.0.1:$5"]
default = true
TOML
}

# --- ingest: smtp-source into mailq-relay's listener; 250 comes once the message is durable.
# Its only route points at a closed port on 127.0.0.1, so that (like Postfix's deferred
# transport) nothing is delivered while the queue fills: the destination is marked down after
# its first failures and costs nothing afterwards.
mailq_ingest() {  # size n spool-parent label layout
  local size=$1 n=$2 layout=$5 dir port dead t0 t1 pid queued
  dir=$(mktemp -d "$3/ingest.XXXXXX")
  port=$(free_port)
  dead=$(free_port)
  nowhere_config "$dir/relay.toml" "$dir/spool" "$layout" "$dir/mail.log" "$dead" \
    "$(printf '[listen]\naddress = "127.0.0.1:%s"\nmax_sessions = 4096' "$port")"
  timeout -k 5 1800 "$relay" --config "$dir/relay.toml" >"$dir/relay.out" 2>&1 &
  pid=$!
  if ! wait_listen "$port"; then
    echo "run.sh: mailq-relay did not start:" >&2
    cat "$dir/relay.out" >&2
    kill "$pid" 2>/dev/null || true
    return 1
  fi
  t0=$(now)
  timeout 900 smtp-source -d -s "$connections" -m "$n" -l "$size" -f bench@bench.localhost \
    -t sink@bench.localhost "127.0.0.1:$port"
  t1=$(now)
  kill -TERM "$pid"
  wait "$pid" || true
  # What the spool holds afterwards, counted by the operator tool on the stopped relay's spool.
  queued=$("$queue_tool" --spool "$dir/spool" list | grep -c '^[0-9A-Z]\{13\} ' || true)
  json "$(python3 -c "import json,sys; n,s,t,q=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]),int(sys.argv[4]); print(json.dumps({'bench':'ingest','engine':'mailq','label':sys.argv[5],'layout':sys.argv[6],'size':s,'messages':n,'queued':q,'sessions':$connections,'seconds':round(t,4),'msgs_per_s':round(n/t,1)}))" "$n" "$size" "$(echo "$t1 - $t0" | bc)" "$queued" "$4" "$layout")"
  rm -rf "$dir"
}

# --- submission: mailq-send (sendmail) called once per message, 8 callers at once, into a
# spool that holds what the restart benchmark filled; without a relay, and with one running on
# the spool (it picks the maildrop up as files arrive). ---
submit_mailq() {  # spool label
  python3 "$here/submit.py" --count "$submit_count" --parallel 8 --engine mailq \
    --label "$2, no relay" --json "$jsonl" -- "$send_tool" --spool "$1" >/dev/null
  tail -1 "$jsonl"
  rm -rf "$1/maildrop"
}
submit_mailq_live() {  # spool layout label
  local dir port dead pid t0 t1 left
  dir=$(mktemp -d "$work/submit.XXXXXX")
  dead=$(free_port)
  nowhere_config "$dir/relay.toml" "$1" "$2" "$dir/mail.log" "$dead" \
    "control = \"$dir/control.sock\""
  timeout -k 5 1800 "$relay" --config "$dir/relay.toml" >"$dir/relay.out" 2>&1 &
  pid=$!
  for _ in $(seq 1 1200); do [[ -S $dir/control.sock ]] && break; sleep 0.1; done
  "$queue_tool" --config "$dir/relay.toml" status >/dev/null || {
    echo "run.sh: mailq-relay did not start on $1:" >&2; cat "$dir/relay.out" >&2
    kill "$pid" 2>/dev/null || true; return 1; }
  python3 "$here/submit.py" --count "$submit_count" --parallel 8 --engine mailq \
    --label "$3, relay running" --json "$jsonl" -- "$send_tool" --spool "$1" >/dev/null
  tail -1 "$jsonl"
  # How long after the last submission the maildrop is empty (everything queued).
  t0=$(now)
  for _ in $(seq 1 6000); do
    left=$(find "$1/maildrop" -maxdepth 1 -type f | wc -l)
    [[ $left -eq 0 ]] && break
    sleep 0.01
  done
  t1=$(now)
  echo "mailq-relay: maildrop empty $(echo "$t1 - $t0" | bc) s after the last submission ($left left)" >&2
  kill -TERM "$pid"
  wait "$pid" || true
  rm -rf "$dir" "$1/maildrop"
}
submit_postfix() {
  postfix_start || return 1
  python3 "$here/submit.py" --count "$submit_count" --parallel 8 --engine postfix \
    --label "Postfix 3.7 sendmail into its maildrop (its queue empty), pickup running" \
    --json "$jsonl" -- /usr/sbin/sendmail -C "$pf_dir/etc" -f bench@bench.localhost >/dev/null
  tail -1 "$jsonl"
  postfix -c "$pf_dir/etc" stop >/dev/null 2>&1 || true
  sleep 1
  rm -rf "$pf_dir"
  pf_dir=""
}

peers_ok=0
if [[ $skip_peers -eq 0 ]] && want drain; then
  # shellcheck source=bench/peers.sh
  source "$here/peers.sh"
  if peers_deps >&2; then peers_ok=1; else echo "run.sh: Exim and OpenSMTPD unavailable" >&2; fi
fi

if want drain; then
section drain
echo "== 1. drain, 2 KB ==" >&2
ceiling 2048 "$count" 1
ceiling 2048 "$count" 0
ceiling_multi 2048 "$count" "$ceiling_processes" 0 || true
ceiling_multi 2048 "$count" "$ceiling_processes" 1 || true
relay_drain 2048 "$count" default "$work" "disk, the default configuration" ||
  echo "run.sh: relay drain failed" >&2
relay_drain 2048 "$count" files "$work" disk || echo "run.sh: relay drain failed" >&2
drain 2048 "$count" "$work" disk files
drain 2048 "$count" "$work" disk segments
drain 2048 "$count" "$shmwork" tmpfs files
[[ $skip_postfix -eq 1 ]] || postfix_drain 2048 "$count" || echo "run.sh: Postfix drain failed" >&2
if [[ $peers_ok -eq 1 ]]; then
  exim_drain 2048 "$count" "$sink_port" "$connections" || echo "run.sh: Exim drain failed" >&2
  opensmtpd_drain 2048 "$count" "$sink_port" "$connections" || echo "run.sh: OpenSMTPD drain failed" >&2
fi
echo "== 1. drain, 100 KB ==" >&2
ceiling 102400 "$large_count" 1
ceiling_multi 102400 "$large_count" "$ceiling_processes" 1 || true
relay_drain 102400 "$large_count" default "$work" "disk, the default configuration" ||
  echo "run.sh: relay drain failed" >&2
drain 102400 "$large_count" "$work" disk files
drain 102400 "$large_count" "$work" disk segments
drain 102400 "$large_count" "$shmwork" tmpfs files
[[ $skip_postfix -eq 1 ]] || postfix_drain 102400 "$large_count" || echo "run.sh: Postfix drain failed" >&2
fi

if want ingest; then
section ingest
echo "== 2. ingest over SMTP (Postfix's figure comes from its load phase above) ==" >&2
for layout in default files; do
  mailq_ingest 2048 "$count" "$work" disk $layout || echo "run.sh: mailq ingest failed" >&2
  mailq_ingest 102400 "$large_count" "$work" disk $layout || echo "run.sh: mailq ingest failed" >&2
done
fi

if want enqueue; then
section enqueue
echo "== 3. enqueue API ==" >&2
for layout in files segments; do
  "$bin/bench_enqueue" --count "$enqueue_count" --spool "$(mktemp -d "$work/enq.XXXXXX")" \
    --layout $layout --label disk --json "$jsonl" >/dev/null
  tail -1 "$jsonl"
done
fi

# The restart benchmark's spools, a million messages each, are also where the submission
# benchmark submits.
if want restart || want submit; then
echo "== 4. restart ==" >&2
# The file spool on tmpfs (creating a million files through group commit on the disk would
# dominate the run); the segment spool on the disk.
"$bin/bench_restart" --mode fill --spool "$shmwork/restart" --count "$restart_count" --layout files
if want restart; then
  section restart
  "$bin/bench_restart" --mode recover --spool "$shmwork/restart" --label tmpfs --json "$jsonl" >/dev/null
  tail -1 "$jsonl"
fi
if want submit; then
  section submit
  echo "== 6. submission (into the restart benchmark's spools) ==" >&2
  submit_mailq "$shmwork/restart" "files spool on tmpfs holding $restart_count"
fi
rm -rf "$shmwork/restart"
"$bin/bench_restart" --mode fill --spool "$work/restart" --count "$restart_count" --layout segments
if want restart; then
  section restart
  "$bin/bench_restart" --mode recover --spool "$work/restart" --label disk --json "$jsonl" >/dev/null
  tail -1 "$jsonl"
  # The same recovery with glibc's malloc backed by transparent huge pages (a deployment
  # setting, docs/mailq-relay.md): most of a large recovery is first-touch page faults.
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "$bin/bench_restart" --mode recover --spool "$work/restart" \
    --label "disk, GLIBC_TUNABLES=glibc.malloc.hugetlb=1" --json "$jsonl" >/dev/null
  tail -1 "$jsonl"
fi
if want submit; then
  section submit
  submit_mailq "$work/restart" "segment spool on disk holding $restart_count"
  submit_mailq_live "$work/restart" segments "segment spool on disk holding $restart_count" ||
    echo "run.sh: mailq submission with a relay failed" >&2
  [[ $skip_postfix -eq 1 ]] || submit_postfix || echo "run.sh: Postfix submission failed" >&2
fi
rm -rf "$work/restart"
fi

# --- relay level and cost growth: the program's start-up, recovery, drain and --once wall time
# at each queue size, both layouts (the default first), and the enqueue rate of the fill ---
if want relay; then
section relay
echo "== 7. through mailq-relay at $growth queued ==" >&2
for layout in default files; do
  for n in $growth; do
    relay_drain 2048 "$n" $layout "$work" "growth, disk" || echo "run.sh: relay drain failed" >&2
  done
done
fi

if want down; then
section down
echo "== 5. down destination ==" >&2
"$bin/bench_down" --destinations 1 --per-destination 100000 --label "1x100000" --json "$jsonl" >/dev/null
tail -1 "$jsonl"
"$bin/bench_down" --destinations 10000 --per-destination 10 --label "10000x10" --json "$jsonl" >/dev/null
tail -1 "$jsonl"
fi

if want dkim; then
section dkim
# The cost of signing, through the program: the default relay drain unsigned, then with each
# kind of key, then dual-signed (what senders do: Gmail does not verify Ed25519).
echo "== DKIM: mailq-relay --once drain, 2 KB, unsigned / RSA-2048 / Ed25519 / both ==" >&2
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/dkim-rsa.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$work/dkim-ed.pem" 2>/dev/null
dkim_key() { printf '[[dkim.key]]\ndomain = "bench.localhost"\nselector = "%s"\nkey_file = "%s"\n' "$1" "$2"; }
relay_drain 2048 "$count" default "$work" "dkim: unsigned" || echo "run.sh: relay drain failed" >&2
relay_drain 2048 "$count" default "$work" "dkim: rsa-2048" "$(dkim_key r "$work/dkim-rsa.pem")" ||
  echo "run.sh: relay drain failed" >&2
relay_drain 2048 "$count" default "$work" "dkim: ed25519" "$(dkim_key e "$work/dkim-ed.pem")" ||
  echo "run.sh: relay drain failed" >&2
relay_drain 2048 "$count" default "$work" "dkim: rsa-2048 + ed25519" \
  "$(dkim_key r "$work/dkim-rsa.pem"; dkim_key e "$work/dkim-ed.pem")" ||
  echo "run.sh: relay drain failed" >&2
fi

# --- results.json and the table ---
# With --only, the rows of the sections not run are kept from the previous results.json.
python3 - "$jsonl" "$here/results.json" "$(nproc)" "$only" <<'PY'
import json, os, sys, platform
rows, current = [], None
for l in open(sys.argv[1]):
    if not l.strip(): continue
    r = json.loads(l)
    if set(r) == {"section"}:
        current = r["section"]
        continue
    r.setdefault("section", current)
    rows.append(r)
def section_of(r):  # rows written before rows carried their section
    if r.get("section"): return r["section"]
    b, label = r["bench"], r.get("label", "")
    if b in ("relay_drain", "fill"): return "relay" if "growth" in label else "drain"
    if b == "ingest": return "ingest" if r.get("engine") == "mailq" else "drain"
    return {"ceiling": "drain", "drain": "drain"}.get(b, b)
if sys.argv[4] and os.path.exists(sys.argv[2]):
    ran = {section_of(r) for r in rows} | set(sys.argv[4].split(","))
    kept = [r for r in json.load(open(sys.argv[2])).get("results", []) if section_of(r) not in ran]
    rows = kept + rows
out = {"machine": {"nproc": int(sys.argv[3]), "kernel": platform.release()}, "results": rows}
json.dump(out, open(sys.argv[2], "w"), indent=1)
def find(**kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]
print(f"\nnproc {sys.argv[3]}\n")
print("| benchmark | figure |")
print("|---|---|")
ENGINES = {"postfix": "Postfix 3.7", "exim": "Exim 4.96", "opensmtpd": "OpenSMTPD 6.8"}
def peers_of(bench, size):
    return {e: r for e in ENGINES for r in find(bench=bench, engine=e, size=size)[:1]}
def vs_peers(rate, peers):
    if not rate: return ""
    return "".join(f"; mailq/{ENGINES[e]} {rate / r['msgs_per_s']:.2f}" for e, r in peers.items()
                   if r.get("complete", True) and r.get("msgs_per_s"))
for size in (2048, 102400):
    single = [r for r in find(bench="ceiling", size=size, reuse=True) if "processes" not in r]
    multi = [r for r in find(bench="ceiling", size=size) if "processes" in r]
    cn = find(bench="ceiling", size=size, reuse=False)
    best = max([r["msgs_per_s"] for r in single + multi] or [0])
    peers = peers_of("drain", size)
    for r in find(bench="relay_drain", size=size):
        if "growth" in r["label"]: continue
        if not r.get("msgs_per_s") or r.get("recovery_s") is None:
            print(f"| drain {size//1024} KB through mailq-relay --once, {r['layout']} ({r['label']}) | failed: {r['delivered']} of {r['messages']} delivered, exit {r['exit']} |")
            continue
        s = (f"{r['msgs_per_s']:.0f} msg/s from launch to the last delivery, --once exits at "
             f"{r['wall_msgs_per_s']:.0f} msg/s ({r['delivered']} of {r['messages']} delivered, recovery "
             f"{r['recovery_s']:.2f} s, peak RSS {r['peak_rss_kib'] // 1024} MiB)")
        s += vs_peers(r["msgs_per_s"], peers)
        if best: s += f"; mailq/best ceiling {r['msgs_per_s'] / best:.2f}"
        print(f"| drain {size//1024} KB through mailq-relay --once, {r['layout']} ({r['label']}) | {s} |")
    for r in find(bench="drain", engine="mailq", size=size):
        s = f"{r['msgs_per_s']:.0f} msg/s ({r['messages']} msgs, {r.get('layout', 'files')} spool on {r['label']})"
        if single: s += f"; mailq/ceiling(reuse) {r['msgs_per_s']/single[0]['msgs_per_s']:.2f}"
        s += vs_peers(r["msgs_per_s"], {e: v for e, v in peers.items() if e == "postfix"})
        print(f"| drain {size//1024} KB, in-process bench_drain | {s} |")
    for e, r in peers.items():
        print(f"| drain {size//1024} KB, {ENGINES[e]} | {r['msgs_per_s']:.0f} msg/s ({r['messages']} msgs, complete={r['complete']}) |")
    for r in single: print(f"| ceiling {size//1024} KB, one smtp-source, reuse | {r['msgs_per_s']:.0f} msg/s |")
    for r in multi: print(f"| ceiling {size//1024} KB, {r['processes']} smtp-source processes into {r['sinks']} sink(s) | {r['msgs_per_s']:.0f} msg/s |")
    for r in cn: print(f"| ceiling {size//1024} KB, smtp-source no reuse | {r['msgs_per_s']:.0f} msg/s |")
for size in (2048, 102400):
    peers = peers_of("ingest", size)
    for r in find(bench="ingest", engine="mailq", size=size):
        s = f"{r['msgs_per_s']:.0f} msg/s ({r['messages']} msgs, {r.get('layout', 'files')} spool, {r['queued']} in it after)"
        s += vs_peers(r["msgs_per_s"], peers)
        print(f"| ingest over SMTP {size//1024} KB, mailq-relay | {s} |")
    for e, r in peers.items(): print(f"| ingest over SMTP {size//1024} KB, {ENGINES[e]} | {r['msgs_per_s']:.0f} msg/s |")
for r in find(bench="enqueue"):
    print(f"| enqueue API 2 KB, {r.get('layout', 'files')} spool ({r['messages']}, {r['per_turn']}/turn) | {r['msgs_per_s']:.0f} msg/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms |")
for r in find(bench="restart"):
    print(f"| restart, {r.get('layout', 'files')} spool ({r['messages']} msgs, {r['label']}) | {r['msgs_per_s']:.0f} msg/s ({r['seconds']:.2f} s), {r['bytes_per_recipient']:.0f} B RSS per recipient |")
for r in find(bench="submit"):
    s = f"{r['msgs_per_s']:.0f} msg/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['failures']} failed"
    print(f"| submission, {r['parallel']} at once, {r['engine']}: {r['label']} ({r['messages']}) | {s} |")
for r in find(bench="down"):
    print(f"| down destination {r['label']} | run_cycle {r['cycle_us']:.3f} us; flush {r['flush_us']/1000:.1f} ms; first mark-down {r['mark_down_ms']:.0f} ms |")
growth = [r for r in find(bench="relay_drain") if "growth" in r["label"]
          and r.get("msgs_per_s") and r.get("recovery_s") is not None]
fills = [r for r in find(bench="fill") if "growth" in r["label"]]
if growth:
    print("\nCost growth through mailq-relay (2 KB, spool on disk, page cache warm from the fill):\n")
    print("| layout | queued | enqueue (API fill) | RSS after the fill | recovery | drain, launch to last delivery | --once wall | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for r in growth:
        f = next((x for x in fills if x["messages"] == r["messages"] and
                  x["layout"] == (r["layout"] if r["layout"] != "default" else "segments")), None)
        fill = f"{f['msgs_per_s']:.0f} msg/s" if f else "-"
        frss = f"{f['rss_kib'] // 1024} MiB" if f else "-"
        print(f"| {r['layout']} ({r['opened_as']}) | {r['messages']:,} | {fill} | {frss} | {r['recovery_s']:.2f} s | "
              f"{r['msgs_per_s']:.0f} msg/s | {r['wall_s']:.1f} s ({r['wall_msgs_per_s']:.0f} msg/s) | {r['peak_rss_kib'] // 1024} MiB |")
PY
