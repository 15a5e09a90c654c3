# The compose stack's demo, from the indexferry image alone (docker-compose.yml's `demo`
# service, profile "demo"): records-v1 -> records-v2 on es8 with a new mapping, under live
# writes through the producer library: init -> run -> caught up -> rollover -> verify.
# Ends with `demo: ok write_pause_ms=<n> failed_writes=0 verify=identical`, or
# `demo: FAILED <reason>` and exit 1.
#
# DEMO_ES (http://es8:9200), DEMO_KAFKA (kafka:29092), DEMO_DOCS (20000), DEMO_RATE (100).
set -eu
es=${DEMO_ES:-http://es8:9200} kafka=${DEMO_KAFKA:-kafka:29092}
docs=${DEMO_DOCS:-20000} rate=${DEMO_RATE:-100}
work=$(mktemp -d)
step() { echo "demo: $*"; }
fail() {
  echo "demo: FAILED $*"
  for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
  exit 1
}
load() { indexferry-producer load --url "$es" --brokers "$kafka" --alias records --topic records.changes "$@"; }

step "waiting for Elasticsearch and Kafka, then records-v1 behind alias records, $docs documents"
tries=0
until load --create-index records-v1 --initial "$docs" --rate 0 >"$work/initial.log" 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 60 ] || fail "the stack is not up after 5 minutes"
  sleep 5
done

step "the application's writes: $rate a second"
# Started directly, not through `load`: $! must be the load itself, which SIGTERM stops with
# its summary, not a subshell.
indexferry-producer load --url "$es" --brokers "$kafka" --alias records --topic records.changes \
  --rate "$rate" >"$work/load.log" 2>&1 &
load_pid=$!

cat >"$work/recipe.toml" <<TOML
name = "records"
[source]
url = "$es"
[kafka]
brokers = "$kafka"
topic = "records.changes"
[[indices]]
source = "records-v1"
target = "records-v2"
alias = "records"
mappings_file = "/demo/examples/records-v2.mappings.json"
settings = { number_of_shards = 2, number_of_replicas = 0, refresh_interval = "1s" }
TOML
step "init"
indexferry migration init "$work/recipe.toml" >"$work/init.log" 2>&1 || fail "init failed"

step "run (snapshot + replay) while the writes go on"
indexferry migration run records >"$work/run.log" 2>&1 &
run_pid=$!
started=$(date +%s)
until indexferry migration status records --json 2>/dev/null | grep -q '"ready": true'; do
  [ $(($(date +%s) - started)) -lt 900 ] || fail "not caught up after 15 minutes"
  kill -0 "$run_pid" 2>/dev/null || fail "run stopped"
  sleep 2
done

step "rollover"
indexferry migration rollover records >"$work/rollover.log" 2>&1 || fail "rollover failed"
cat "$work/rollover.log"
pause=$(sed -n 's/^write pause: \([0-9]*\).*/\1/p' "$work/rollover.log")
sleep 2
kill -TERM "$load_pid"
wait "$load_pid" || true
failed=$(sed -n 's/^load: .* failed=\([0-9]*\) .*/\1/p' "$work/load.log")
wait "$run_pid" || fail "run failed"

step "verify"
indexferry migration verify records --json >"$work/verify.log" 2>&1 || true
grep -q '"identical": true' "$work/verify.log" || fail "verify found differences"
[ "${failed:-x}" = 0 ] || fail "failed writes: ${failed:-unknown}"
echo "demo: ok write_pause_ms=${pause:-?} failed_writes=$failed verify=identical"
