# Exim 4.96 and OpenSMTPD 6.8 side by side with the private Postfix of run.sh: each is loaded
# through its own SMTP listener while it does not deliver (the ingest figure), then released
# and timed until its queue is empty while it relays everything to the sink (the drain
# figure). Sourced by bench/run.sh, which provides free_port, wait_listen, now and json (and
# $work, the default parent of the private directories).
#
#   peers_deps                                    the shared libraries the two need (apt)
#   peers_fetch [CACHE]                           their .debs, extracted into CACHE/root
#   exim_drain SIZE N SINK_PORT SESSIONS [PARENT]
#   opensmtpd_drain SIZE N SINK_PORT SESSIONS [PARENT]
#   peers_cleanup                                 stops whatever daemon is still running
#
# The two drains call peers_deps and peers_fetch themselves (both do nothing when done
# before). Each writes two JSON lines through json, like postfix_drain:
#   {"bench": "ingest", "engine": "exim"|"opensmtpd", "size", "messages", "sessions",
#    "seconds", "msgs_per_s"}
#   {"bench": "drain", "engine": ..., "size", "messages" (found in the queue after the load),
#    "delivered_logged" (deliveries in its log), "complete" (1: queue empty), "seconds",
#    "msgs_per_s"}
#
# Both packages conflict with the installed postfix, so they are never installed: their .debs
# are fetched with `apt-get download` into CACHE (default ${MAILQ_PEERS_DIR:-
# /var/cache/mailq-bench/peers}) and unpacked with `dpkg-deb -x` into CACHE/root, once. Each
# run gets a fresh directory under PARENT (default $work, else /tmp) holding its
# configuration, queue and log, removed afterwards. Everything listens on 127.0.0.1 only, on a
# free port; every daemon is bounded by timeout and stopped by its pid (peers_cleanup stops
# one left behind by an interrupted run: call it from the caller's exit trap).
#
# Needs root: the two switch to their own system users, which are created when missing
# (useradd -r): Debian-exim (Exim's binary looks it up before it reads any configuration),
# opensmtpd and opensmtpq (OpenSMTPD's compiled-in users).
#
# Durability: both are run with their defaults, which sync every message before the 250.
# Exim fsyncs the -D (body) and -H (envelope) spool files and then the input directory after
# the rename, and fsyncs a -J journal after each delivery. OpenSMTPD fsyncs the message file
# and the envelope file (not the directory). Postfix (run.sh) fsyncs the queue file in
# cleanup. None of the three syncs the removal of a delivered message.

peers_pids=()  # timeout pids of the daemons running now (peers_cleanup)

# The runtime libraries of exim4-daemon-light and opensmtpd (their Depends that are shared
# libraries, checked with ldd on the extracted binaries). None conflicts with postfix; on a
# machine with postfix installed only libidn12 is usually missing. The other Depends (adduser,
# debconf, cron, netbase, ed, lsb-base, init-system-helpers, exim4-config) serve the maintainer
# scripts and the system configuration, which are not used here.
peers_libs=(libc6 libcrypt1 libdb5.3 libgnutls-dane0 libgnutls30 libidn12 libidn2-0 libnsl2
  libpcre2-8-0 libevent-2.1-7 libpam0g libssl3 zlib1g)

peers_deps() {
  local missing=() p status
  for p in "${peers_libs[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "peers.sh: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y --no-install-recommends \
    "${missing[@]}" >/dev/null
}

peers_cache() { echo "${1:-${MAILQ_PEERS_DIR:-/var/cache/mailq-bench/peers}}"; }

# Downloads (once) and extracts (once) the packages into CACHE/root; sets peers_root.
peers_fetch() {  # [cache-dir]
  local cache pkg deb updated=0
  cache=$(peers_cache "${1:-}")
  mkdir -p "$cache/debs" "$cache/root"
  # exim4-base only carries Exim's utilities (exim_dumpdb, exiqgrep, ...), handy to look at a
  # queue; exim4-config (the Debian configuration) is not needed with a private -C file.
  for pkg in exim4-base exim4-daemon-light opensmtpd; do
    if ! compgen -G "$cache/debs/${pkg}_*.deb" >/dev/null; then
      if ! (cd "$cache/debs" && timeout 300 apt-get -q -o APT::Sandbox::User=root download "$pkg" \
            >/dev/null); then
        if [[ $updated -eq 0 ]]; then
          timeout 600 apt-get -q update >/dev/null || true
          updated=1
        fi
        (cd "$cache/debs" && timeout 300 apt-get -q -o APT::Sandbox::User=root download "$pkg" \
          >/dev/null) || { echo "peers.sh: apt-get download $pkg failed" >&2; return 1; }
      fi
    fi
    deb=$(compgen -G "$cache/debs/${pkg}_*.deb" | sort -V | tail -1)
    if [[ ! -e $cache/root/.extracted-$pkg || $(cat "$cache/root/.extracted-$pkg") != "${deb##*/}" ]]; then
      timeout 120 dpkg-deb -x "$deb" "$cache/root" || { echo "peers.sh: dpkg-deb -x $deb failed" >&2; return 1; }
      echo "${deb##*/}" >"$cache/root/.extracted-$pkg"
    fi
  done
  peers_root=$cache/root
  [[ -x $peers_root/usr/sbin/exim4 && -x $peers_root/usr/sbin/smtpd ]]
}

peers_user() {  # name home
  getent passwd "$1" >/dev/null && return 0
  echo "peers.sh: creating the system user $1" >&2
  # --badname: Debian-exim has a capital letter, which useradd refuses by default.
  timeout 60 useradd -r -U -M -d "$2" -s /usr/sbin/nologin --badname "$1" 2>/dev/null ||
    timeout 60 useradd -r -U -M -d "$2" -s /usr/sbin/nologin "$1"
}

# Stops one daemon started under timeout: TERM to timeout, which passes it on to its whole
# process group (the daemon and the processes it forked), then KILL if it is still there.
peers_stop() {  # timeout-pid
  local pid=$1 i keep=()
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for i in "${peers_pids[@]}"; do [[ $i == "$pid" ]] || keep+=("$i"); done
  peers_pids=("${keep[@]}")
}

peers_cleanup() {
  local pid
  for pid in "${peers_pids[@]}"; do peers_stop "$pid"; done
  peers_pids=()
}

# Seconds allowed for a drain of n messages: 20 minutes, or 20 messages/s if that is longer.
peers_budget() { echo $(( $1 / 20 > 1200 ? $1 / 20 : 1200 )); }

peers_parent() {  # [parent]
  local p=${1:-${work:-/tmp}}
  mkdir -p "$p" && echo "$p"
}

peers_ingest_json() {  # engine size n sessions seconds
  json "$(python3 -c "import json,sys; e,n,s,c,t=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4]),float(sys.argv[5]); print(json.dumps({'bench':'ingest','engine':e,'size':s,'messages':n,'sessions':c,'seconds':round(t,4),'msgs_per_s':round(n/t,1)}))" "$1" "$3" "$2" "$4" "$5")"
}

# The load phase (the ingest figure): smtp-source into the engine's listener, timed.
peers_load() {  # engine name port size n sessions
  local t0 t1
  t0=$(now)
  timeout 900 smtp-source -d -s "$6" -m "$5" -l "$4" -f bench@bench.localhost \
    -t sink@bench.localhost "127.0.0.1:$3" || echo "peers.sh: smtp-source into $2 failed" >&2
  t1=$(now)
  peers_ingest_json "$1" "$4" "$5" "$6" "$(echo "$t1 - $t0" | bc)"
}

peers_drain_json() {  # engine size loaded seconds delivered complete
  json "$(python3 -c "import json,sys; e,n,s,t,d,ok=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4]),int(sys.argv[5]),int(sys.argv[6]); print(json.dumps({'bench':'drain','engine':e,'size':s,'messages':n,'delivered_logged':d,'complete':ok,'seconds':round(t,4),'msgs_per_s':round(n/t,1)}))" "$1" "$3" "$2" "$4" "$5" "$6")"
}

# --- Exim 4.96 (exim4-daemon-light) ---
#
# A private configuration (-C, given by root, so it is trusted), spool and log under the
# run's directory; its daemon in the foreground (-bdf) runs no queue runners. Loaded with
# queue_only: the listener stores the message and answers 250, no delivery process starts.
#
# The drain: SESSIONS queue runners at once, `exim -qf FIRST LAST` each over its own slice of
# the queue (the message ids sorted and cut into SESSIONS contiguous ranges). A queue runner
# delivers one message at a time (a delivery process per message), so this is up to SESSIONS
# concurrent deliveries, each over its own connection to the sink: Exim only passes a
# connection on to further messages that its wait-<transport> hints list for the host, and
# only a deferral or the routing pass of a two-phase run (-qq) writes those hints.
# Alternatives measured at 2,000 x 2 KB on this 2-core VM (with other work running):
#   exim -qqf with queue_fast_ramp and queue_run_max = 20 (Exim's own answer to "a big queue
#     for one host": the routing pass asks the daemon for a runner per 50 messages routed,
#     and those reuse connections): 60-76 msg/s, bounded by its routing pass, which rewrites
#     and fsyncs every -H file and updates the hints one message at a time;
#   SESSIONS plain `exim -qf` over the whole queue (what queue_run_max with a daemon amounts
#     to): 64-120 msg/s, every runner forks a delivery process for every message, most of
#     which find the message locked by another runner;
#   SESSIONS two-phase runners over the slices: 31 msg/s;
#   SESSIONS single-phase runners over the slices (this): 245-440 msg/s (378 at 20,000).
# Exim is CPU-bound here, 85-90% of it system time (perf: page-table copies and teardown of
# its fork per message).
# remote_max_parallel (default 2) parallelises the deliveries of one message to several
# hosts and does not matter with one recipient per message.
exim_config() {  # file dir port sink-port exim-binary
  cat >"$1" <<EOF
# exim_path: what re-executions run (the compiled-in /usr/sbin/exim4 is not there).
exim_path = $5
spool_directory = $2/spool
log_file_path = $2/log/%slog
pid_file_path = $2/exim.pid
primary_hostname = bench.localhost
qualify_domain = bench.localhost
local_interfaces = <; [127.0.0.1]:$3
disable_ipv6 = true
daemon_startup_retries = 0
keep_environment =
tls_advertise_hosts =
acl_smtp_rcpt = acl_rcpt
message_size_limit = 0
# The default limit of 20 simultaneous connections would turn away smtp-source's sessions
# beyond 20 (and the backlog of 20 would drop connections): no limit, a deep backlog.
smtp_accept_max = 0
smtp_connect_backlog = 1024
# At most 1000 messages per connection by default (421 after that), which smtp-source's
# reused sessions reach at 20,000 messages: no limit.
smtp_accept_max_per_connection = 0
queue_only = true
# A re-execution with a -C file (a delivery down a passed connection, exim -MC) runs as the
# Exim user; without this Exim would log a panic for each. No root is needed to deliver over
# SMTP.
deliver_drop_privilege = true

begin acl
acl_rcpt:
  accept hosts = 127.0.0.1
  deny

begin routers
sink:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = sink_smtp
  # 127.0.0.1 is one of Exim's own interfaces: deliver there anyway (it is another port).
  self = send
  no_more

begin transports
sink_smtp:
  driver = smtp
  port = $4
  allow_localhost
  hosts_avoid_tls = *

begin retry
* * F,2h,15m; G,16h,1h,1.5; F,4d,6h
EOF
}

exim_drain() {  # size n sink-port sessions [parent-dir]
  local size=$1 n=$2 sink=$3 sessions=$4 parent dir port exim pid="" t0 t1 loaded left ok \
    delivered attempt ids per i e qp=() failed=0 budget
  budget=$(peers_budget "$n")
  peers_deps && peers_fetch "${MAILQ_PEERS_DIR:-}" || return 1
  peers_user Debian-exim /nonexistent || return 1
  parent=$(peers_parent "${5:-}") || return 1
  exim=$peers_root/usr/sbin/exim4
  dir=$(mktemp -d "$parent/exim.XXXXXX")
  chmod 755 "$dir"
  mkdir -p "$dir/spool" "$dir/log"
  chown Debian-exim:Debian-exim "$dir/spool" "$dir/log"
  # A port free when chosen can be taken before the daemon binds it: up to 3 tries.
  for attempt in 1 2 3; do
    port=$(free_port)
    exim_config "$dir/exim.conf" "$dir" "$port" "$sink" "$exim"
    if ! timeout 30 "$exim" -C "$dir/exim.conf" -bV >"$dir/check.out" 2>&1; then
      echo "peers.sh: Exim refused its configuration:" >&2
      cat "$dir/check.out" >&2
      rm -rf "$dir"
      return 1
    fi
    timeout -k 5 $((budget + 1800)) "$exim" -C "$dir/exim.conf" -bdf >"$dir/daemon.out" 2>&1 &
    pid=$!
    peers_pids+=("$pid")
    wait_listen "$port" && break
    echo "peers.sh: Exim did not start on 127.0.0.1:$port:" >&2
    cat "$dir/daemon.out" "$dir/log/paniclog" "$dir/log/mainlog" 2>/dev/null | tail -5 >&2
    peers_stop "$pid"
    pid=""
  done
  if [[ -z $pid ]]; then rm -rf "$dir"; return 1; fi
  echo "exim: $(head -1 "$dir/check.out") on 127.0.0.1:$port" >&2
  # Load. Exim answers 250 once the -D and -H files are fsync'ed.
  peers_load exim Exim "$port" "$size" "$n" "$sessions"
  mapfile -t ids < <(find "$dir/spool/input" -name '*-H' -printf '%f\n' | sed 's/-H$//' | LC_ALL=C sort)
  loaded=${#ids[@]}
  echo "exim: $loaded messages in its queue" >&2
  # Drain: SESSIONS single-phase queue runners over contiguous slices of the sorted ids.
  t0=$(now)
  if [[ $loaded -gt 0 ]]; then
    per=$(( (loaded + sessions - 1) / sessions ))
    for ((i = 0; i < loaded; i += per)); do
      e=$((i + per - 1))
      [[ $e -lt $loaded ]] || e=$((loaded - 1))
      timeout "$budget" "$exim" -C "$dir/exim.conf" -qf "${ids[i]}" "${ids[e]}" >"$dir/qrun.$i.out" 2>&1 &
      qp+=($!)
    done
    for i in "${qp[@]}"; do wait "$i" || failed=$((failed + 1)); done
    [[ $failed -eq 0 ]] || echo "peers.sh: $failed Exim queue runners failed: $(cat "$dir"/qrun.*.out | tail -3)" >&2
  fi
  ok=0
  for _ in $(seq 1 600); do  # 30 s more at most: the runners wait for their deliveries
    left=$(find "$dir/spool/input" -name '*-H' 2>/dev/null | wc -l)
    [[ $left -eq 0 ]] && { ok=1; break; }
    sleep 0.05
  done
  t1=$(now)
  delivered=$(grep -c ' => ' "$dir/log/mainlog" || true)
  peers_drain_json exim "$size" "$loaded" "$(echo "$t1 - $t0" | bc)" "$delivered" "$ok"
  [[ $ok -eq 1 ]] || { echo "exim: $left messages left; the end of its log:" >&2; tail -5 "$dir/log/mainlog" >&2; }
  [[ -s $dir/log/paniclog ]] && { echo "exim: its paniclog:" >&2; tail -5 "$dir/log/paniclog" >&2; }
  peers_stop "$pid"
  rm -rf "$dir"
}

# --- OpenSMTPD 6.8 ---
#
# smtpd has its paths compiled in: the queue in /var/spool/smtpd, the control socket
# /var/run/smtpd.sock, the chroot /var/lib/opensmtpd/empty, and no option moves them. So it
# runs in a private mount namespace (unshare -m) in which /var/spool, /var/lib and /run are
# the run's own directories (bind mounts that vanish with the namespace): its queue is on the
# same file system as the other engines' (the run's directory) and nothing of the system's is
# created or touched. smtpctl reaches it with nsenter into that namespace. CACHE and PARENT
# must therefore not lie under /var/spool, /var/lib or /run.
#
# Loaded with the MTA paused from the start (smtpd -P mta: nothing is scheduled for relaying),
# released with `smtpctl resume mta`. Concurrency: smtpd's connection limits are per route
# (source -> host, default 5 connections), per host (10), per relay (100) and per domain (100),
# and it paces new connections (5 s between two to the same route, 2 s to the same relay, 3 s
# after a disconnect on the route), politeness toward remote hosts that would dominate a drain
# to one local sink. The limits to that host and route are raised to SESSIONS, the delays are
# set to 0: up to SESSIONS concurrent connections, each carrying up to 100 messages (the
# default session-mail-max) before the next one. Its smtp listener accepts at most 100
# messages per session by default (452 after that), which smtp-source's reused sessions would
# hit, so `smtp limit max-mails` is raised to N (the limits are `mta limit` and `smtp limit`
# in the grammar of 6.8, undocumented for mta; limit.c lists the keys).
#
# What limits its drain here (2 cores, smtp-sink on loopback), seen with `smtpctl show stats`
# and strace; both are its defaults and left as they are:
#  - it is mostly idle. Its client does not pipeline and does not set TCP_NODELAY: the final
#    ".\r\n" goes out as a separate small write after the body and waits for the ACK of the
#    body, which the receiver delays (40 ms), so one session carries ~22 messages/s, and its
#    MTA seldom keeps more than a few sessions open;
#  - with a large queue for one relay, the scheduler sends up to 5,000 envelopes in flight
#    (scheduler max-inflight), the relay holds 50 tasks (task-hiwat) and its hold queue 1,000;
#    every envelope beyond that is tempfailed and rescheduled after a backoff, so envelopes
#    come back in waves with seconds of no connection in between (at 20,000 messages, most of
#    the drain). `scheduler limit max-inflight 1000` did not help.
opensmtpd_drain() {  # size n sink-port sessions [parent-dir]
  local size=$1 n=$2 sink=$3 sessions=$4 parent dir port smtpd smtpctl pid nspid t0 t1 loaded \
    left ok delivered stats budget deadline
  budget=$(peers_budget "$n")
  peers_deps && peers_fetch "${MAILQ_PEERS_DIR:-}" || return 1
  peers_user opensmtpd /var/lib/opensmtpd/empty || return 1
  peers_user opensmtpq /var/lib/opensmtpd/empty || return 1
  parent=$(peers_parent "${5:-}") || return 1
  smtpd=$peers_root/usr/sbin/smtpd
  smtpctl=$peers_root/usr/sbin/smtpctl
  # smtpctl refuses to run unless it is setgid opensmtpq (the package does this with
  # dpkg-statoverride, which dpkg-deb -x does not apply).
  chgrp opensmtpq "$smtpctl" && chmod 2755 "$smtpctl" || return 1
  dir=$(mktemp -d "$parent/opensmtpd.XXXXXX")
  chmod 755 "$dir"
  mkdir -p "$dir/var/spool" "$dir/var/lib/opensmtpd/empty" "$dir/run"
  # The namespace: bind the run's directories over /var/spool, /var/lib and /run, then exec
  # smtpd (-n: check the configuration; -d: in the foreground, logging to stderr). The shell's
  # pid, written before the exec, is smtpd's: nsenter -t uses it to reach the namespace.
  # shellcheck disable=SC2016  # expanded by the inner sh
  local ns='set -e
d=$1; shift
mount --bind "$d/var/spool" /var/spool
mount --bind "$d/var/lib" /var/lib
mount --bind "$d/run" /run
echo $$ >"$d/ns.pid"
exec "$@"' attempt
  pid=""
  # A port free when chosen can be taken before smtpd binds it: up to 3 tries.
  for attempt in 1 2 3; do
    port=$(free_port)
    cat >"$dir/smtpd.conf" <<EOF
listen on 127.0.0.1 port $port hostname bench.localhost
smtp limit max-mails $((n + 1000))
mta limit inet4 max-conn-per-route $sessions max-conn-per-host $sessions conn-delay-route 0 conn-delay-relay 0 reconn-delay-route 0
action "sink" relay host smtp+notls://127.0.0.1:$sink
match from local for any action "sink"
EOF
    if ! timeout 30 unshare -m --propagation private sh -c "$ns" sh "$dir" "$smtpd" -n \
        -f "$dir/smtpd.conf" >"$dir/check.out" 2>&1; then
      echo "peers.sh: OpenSMTPD refused its configuration (or unshare -m failed):" >&2
      cat "$dir/check.out" >&2
      rm -rf "$dir"
      return 1
    fi
    rm -f "$dir/ns.pid"
    # -P mta: the MTA paused from the start, nothing is relayed until `smtpctl resume mta`.
    timeout -k 5 $((budget + 1800)) unshare -m --propagation private sh -c "$ns" sh "$dir" "$smtpd" -d \
      -P mta -f "$dir/smtpd.conf" >"$dir/smtpd.log" 2>&1 &
    pid=$!
    peers_pids+=("$pid")
    wait_listen "$port" && [[ -s $dir/ns.pid ]] && break
    echo "peers.sh: OpenSMTPD did not start on 127.0.0.1:$port:" >&2
    tail -5 "$dir/smtpd.log" >&2
    peers_stop "$pid"
    pid=""
  done
  if [[ -z $pid ]]; then rm -rf "$dir"; return 1; fi
  nspid=$(cat "$dir/ns.pid")
  echo "opensmtpd: $(head -1 "$dir/smtpd.log") on 127.0.0.1:$port" >&2
  # Load. smtpd answers 250 once the message file and its envelope are fsync'ed.
  peers_load opensmtpd OpenSMTPD "$port" "$size" "$n" "$sessions"
  # queue/<bucket>/<msgid>/ holds the file "message" and one file per envelope (recipient).
  loaded=$(find "$dir/var/spool/smtpd/queue" -type f ! -name message | wc -l)
  echo "opensmtpd: $loaded envelopes in its queue" >&2
  # Drain.
  t0=$(now)
  if ! timeout 30 nsenter -t "$nspid" -m -- "$smtpctl" resume mta >"$dir/resume.out" 2>&1; then
    echo "peers.sh: smtpctl resume mta failed: $(cat "$dir/resume.out")" >&2
    peers_stop "$pid"
    rm -rf "$dir"
    return 1
  fi
  # Until the scheduler holds no envelope (it forgets one after the queue process deleted its
  # file), asked every 50 ms through smtpctl: cheaper than walking the queue's directories, one
  # per message, every 50 ms.
  ok=0
  deadline=$((SECONDS + budget))
  while [[ $SECONDS -lt $deadline ]]; do
    if ! stats=$(timeout 10 nsenter -t "$nspid" -m -- "$smtpctl" show stats 2>/dev/null); then
      kill -0 "$pid" 2>/dev/null || break  # smtpd is gone
      sleep 0.05
      continue
    fi
    left=$(sed -n 's/^scheduler\.envelope=//p' <<<"$stats")
    [[ ${left:-0} -eq 0 ]] && { ok=1; break; }
    sleep 0.05
  done
  t1=$(now)
  left=$(find "$dir/var/spool/smtpd/queue" -type f 2>/dev/null | wc -l)
  [[ $left -eq 0 ]] || ok=0
  delivered=$(grep -c 'mta delivery .*result="Ok"' "$dir/smtpd.log" || true)
  peers_drain_json opensmtpd "$size" "$loaded" "$(echo "$t1 - $t0" | bc)" "$delivered" "$ok"
  [[ $ok -eq 1 ]] || { echo "opensmtpd: $left files left in its queue; the end of its log:" >&2; tail -5 "$dir/smtpd.log" >&2; }
  peers_stop "$pid"
  rm -rf "$dir"
}
