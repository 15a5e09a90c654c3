# Variables named like settings (cluster.name, discovery.type, ...) become -E flags, as the
# public image does; the HTTP port listens on every interface of the container.
set -eu
set -- -Enetwork.host=0.0.0.0
# From the process's own environment: sh drops names with dots from what it passes on.
tr '\0' '\n' </proc/$$/environ | grep -E '^[a-z0-9_]+\.[a-zA-Z0-9_.]+=' >/tmp/es-env || true
while IFS= read -r line; do
  set -- "$@" "-E$line"
done </tmp/es-env
exec /usr/share/elasticsearch/bin/elasticsearch "$@"
