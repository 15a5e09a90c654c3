# Every KAFKA_* variable (but the JVM's) becomes a server property, as in apache/kafka:
# KAFKA_LOG_DIRS -> log.dirs, `__` -> `_`, `___` -> `-`. The storage is formatted once, with
# CLUSTER_ID.
set -eu
conf=/tmp/server.properties
: >"$conf"
env | grep '^KAFKA_' | grep -v -e '^KAFKA_HEAP_OPTS=' -e '^KAFKA_OPTS=' >/tmp/kafka-env || true
while IFS= read -r line; do
  name=${line%%=*}
  key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
  printf '%s=%s\n' "$key" "${line#*=}" >>"$conf"
done </tmp/kafka-env
dirs=$(sed -n 's/^log\.dirs=//p' "$conf")
if [ ! -f "${dirs:-/var/lib/kafka/data}/meta.properties" ]; then
  java -Dlog4j2.configurationFile=/opt/kafka/log4j2.xml -cp '/opt/kafka/lib/*' kafka.tools.StorageTool \
    format -t "$CLUSTER_ID" -c "$conf"
fi
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=/opt/kafka/log4j2.xml -cp '/opt/kafka/lib/*' kafka.Kafka "$conf"
