#!/usr/bin/env bash
# apns-sim against the minimal coalescing forwarder, alternated, with the same pump and the
# same devices (`apns-sim bench`): the binary figures of BENCHMARKS.md's "Anchors (issue 10)".
#
#   cargo build --release --bin apns-sim --example anchors
#   benches/anchors/compare.sh                 # ROUNDS [3], N [300000], FLAGS [the defaults]
#   FLAGS="--rate 50000" N=500000 benches/anchors/compare.sh      # paced
#   TASKSET=0 benches/anchors/compare.sh       # the targets (forwarder, serve) pinned to CPU 0
#   BIN=target/apns-sim-before benches/anchors/compare.sh         # another build of apns-sim
#
# TASKSET is a CPU list for `taskset`: every thread of the forwarder and of each `serve`
# child is pinned to it once the process is up (the load generator is not), so that runs on
# one core and on two show how the targets scale.
# Each round runs the forwarder, `serve` at RUST_LOG=warn and `serve` at the default level
# (info), in an order that rotates by round; one line per run, then the median of each, and
# the median of each round's ratio to that round's forwarder.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="${BIN:-$root/target/release/apns-sim}"
anchors="$root/target/release/examples/anchors"
work=$(mktemp -d)
fwd=
trap 'if [ -n "$fwd" ]; then kill "$fwd" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
"$anchors" forwarder --certs "$work/certs" --info "$work/fwd.json" >/dev/null &
fwd=$!
for _ in $(seq 300); do [ -f "$work/fwd.json" ] && break; sleep 0.1; done
# Pins every thread of process $1 to the CPUs of TASKSET (nothing without it).
pin() { if [ -n "${TASKSET:-}" ]; then taskset -a -p -c "$TASKSET" "$1" >/dev/null; fi; }
pin "$fwd"
# Pins the `serve` child of the bench process $1 as soon as it exists (before its devices
# connect).
pin_serve() {
  local child
  for _ in $(seq 200); do
    child=$(pgrep -P "$1" -f ' serve ' || true)
    if [ -n "$child" ]; then
      pin "$child"
      return
    fi
    sleep 0.05
  done
}
# An incomplete run (bench exits 1 after printing its summary) is shown as `complete False`
# rather than ending the comparison.
# shellcheck disable=SC2086 # FLAGS is a list of flags
run() {
  case $1 in
    forwarder) "$bin" bench --json --raw-tls-frames 0 -n "${N:-300000}" ${FLAGS:-} --target "$work/fwd.json" || [ $? -eq 1 ] ;;
    warn | info)
      "$bin" bench --json --raw-tls-frames 0 -n "${N:-300000}" ${FLAGS:-} --serve "$1" &
      if [ -n "${TASKSET:-}" ]; then pin_serve $!; fi
      wait $! || [ $? -eq 1 ]
      ;;
  esac >"$work/$1.$2.json"
  python3 - "$work/$1.$2.json" "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
l = s["latency_us"] or {}
# A paced binary run: how far the pacer's writes fell behind the schedule (p99).
pacing = s.get("pacing")
lag = f'  pacer lag p99 {pacing["lag_us"]["p99"]} µs' if pacing else ''
print(f'{sys.argv[2]:9} round {sys.argv[3]}: delivered {s["delivered_per_sec"]:9.0f}/s  '
      f'accepted {s["accepted_per_sec"]:9.0f}/s  CPU {s["simulator"]["cpu_us_per_notification"]:6.2f} µs  '
      f'p50 {l.get("p50", 0)} µs  p99 {l.get("p99", 0)} µs{lag}  complete {s["complete"]}  '
      f'load {open("/proc/loadavg").read().split()[0]}')
PY
}
targets=(forwarder warn info)
for round in $(seq "${ROUNDS:-3}"); do
  for i in 0 1 2; do
    run "${targets[$(((i + round - 1) % 3))]}" "$round"
  done
done
python3 - "$work" <<'PY'
import glob, json, statistics, sys
for t in ["forwarder", "warn", "info"]:
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{sys.argv[1]}/{t}.*.json"))]
    med = lambda f: statistics.median(f(s) for s in runs)
    print(f'median {t:9}: delivered {med(lambda s: s["delivered_per_sec"]):9.0f}/s  '
          f'CPU {med(lambda s: s["simulator"]["cpu_us_per_notification"]):6.2f} µs  '
          f'p50 {med(lambda s: (s["latency_us"] or {}).get("p50", 0)):.0f} µs  '
          f'p99 {med(lambda s: (s["latency_us"] or {}).get("p99", 0)):.0f} µs')
# Each round's ratio to the forwarder of the same round: the host's speed drifts over
# minutes on shared machines, and a ratio within one round cancels most of that drift.
def by_round(t):
    return {f.rsplit(".", 2)[1]: json.load(open(f)) for f in glob.glob(f"{sys.argv[1]}/{t}.*.json")}
fwd = by_round("forwarder")
for t in ["warn", "info"]:
    runs = by_round(t)
    pairs = [(runs[r], fwd[r]) for r in sorted(runs, key=int) if r in fwd]
    thr = [s["delivered_per_sec"] / f["delivered_per_sec"] for s, f in pairs if f["delivered_per_sec"]]
    cpu = [s["simulator"]["cpu_us_per_notification"] / f["simulator"]["cpu_us_per_notification"]
           for s, f in pairs if f["simulator"]["cpu_us_per_notification"]]
    if thr and cpu:
        print(f'ratio {t:10}: delivered {statistics.median(thr):.3f}x the same round\'s forwarder '
              f'({" ".join(f"{x:.3f}" for x in thr)}), CPU per notification {statistics.median(cpu):.3f}x')
PY
