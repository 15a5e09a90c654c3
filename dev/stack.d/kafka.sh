# shellcheck shell=bash
# dev/stack's Kafka: its jars from Maven Central, KRaft in one process (broker + controller),
# PLAINTEXT, SASL_PLAINTEXT and SASL_SSL listeners, and the admin tools.

LOG4J_VERSION=2.24.3 # the log4j2 that kafka 4.1 itself depends on
# Kafka also listens with SASL (PLAIN) on these ports, in the clear and over TLS, for the
# security tests.
KAFKA_SASL_PORT=9094
KAFKA_SASL_SSL_PORT=9095
KAFKA_SASL_USER=indexferry
KAFKA_SASL_PASSWORD=${INDEXFERRY_KAFKA_SASL_PASSWORD:-kafka-secret}

kafka_pom() { # version
    cat <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>indexferry.dev</groupId><artifactId>kafka-runtime</artifactId><version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$1</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$1</version></dependency>
    <!-- kafka 4.1 logs through slf4j 1.7: bind it to log4j2 (log4j-slf4j-impl, not -slf4j2-) -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
}

# install_kafka: sets KAFKA_LIB and KAFKA_RESOLVED
install_kafka() {
    local cdir v want
    cdir=$(comp_dir kafka)
    want=$(wanted_version kafka)
    v=$want
    if [[ -f $cdir/resolved-version && $(head -n 1 "$cdir/resolved-version") == "$v "* ]]; then
        v=$(head -n 1 "$cdir/resolved-version" | cut -d' ' -f2)
    fi
    KAFKA_LIB=$cdir/lib-$v
    if [[ ! -f $KAFKA_LIB/.complete ]]; then
        mkdir -p "$cdir"
        say "fetching Kafka $v jars from Maven Central"
        kafka_pom "$v" >"$cdir/pom.xml"
        if ! mvn_run -f "$cdir/pom.xml" "$DEP_PLUGIN:get" -Dartifact="org.apache.kafka:kafka_2.13:$v" \
            -Dtransitive=false; then
            local nv
            nv=$(nearest_version org.apache.kafka kafka_2.13 "$v" jar) || {
                show_mvn_log
                die "Kafka $v not found (or Maven Central unreachable), and no nearby version"
            }
            say "Kafka $v does not exist on Maven Central; using nearest version $nv"
            v=$nv
            kafka_pom "$v" >"$cdir/pom.xml"
        fi
        KAFKA_LIB=$cdir/lib-$v
        safe_rm "$KAFKA_LIB"
        mvn_run -f "$cdir/pom.xml" "$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime \
            -DoutputDirectory="$KAFKA_LIB" || { show_mvn_log; die "could not fetch the Kafka $v jars"; }
        echo "$want $v" >"$cdir/resolved-version"
        touch "$KAFKA_LIB/.complete"
    fi
    KAFKA_RESOLVED=$v
}

kafka_log4j_config() { # appender target (SYSTEM_OUT / SYSTEM_ERR), root level
    cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="console" target="$1">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.controller" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Root level="$2"><AppenderRef ref="console"/></Root>
  </Loggers>
</Configuration>
EOF
}

kafka_java() { comp_jdk kafka; }

# the jar folder of an earlier install, for the TopicCommand fallback (no download here)
detect_kafka_lib() {
    [[ -n ${KAFKA_LIB:-} ]] && return 0
    local f v
    f=$(comp_dir kafka)/resolved-version
    [[ -f $f ]] || return 1
    v=$(head -n 1 "$f" | cut -d' ' -f2)
    [[ -f $(comp_dir kafka)/lib-$v/.complete ]] || return 1
    KAFKA_LIB=$(comp_dir kafka)/lib-$v
}

kafka_healthy() {
    local port
    port=$(http_port kafka)
    port_open "$port" || return 1
    if command -v kcat >/dev/null 2>&1; then
        kcat -b "127.0.0.1:$port" -L -m 5 >/dev/null 2>&1
    elif detect_kafka_lib; then
        kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --list >/dev/null 2>&1
    else
        true
    fi
}

kafka_tool() { # class args... (runs with WARN logging to stderr)
    local cfg java
    cfg=$(comp_dir kafka)/log4j2-tools.xml
    [[ -f $cfg ]] || kafka_log4j_config SYSTEM_ERR WARN >"$cfg"
    java=$(kafka_java)/bin/java
    "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$cfg" \
        -cp "$KAFKA_LIB/*" "$@"
}

# kafka_tool_class <short name or class>: what `dev/stack kafka-cli` runs
kafka_tool_class() {
    case $1 in
    topics) echo org.apache.kafka.tools.TopicCommand ;;
    consumer-groups) echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    console-consumer) echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    console-producer) echo org.apache.kafka.tools.ConsoleProducer ;;
    get-offsets) echo org.apache.kafka.tools.GetOffsetShell ;;
    delete-records) echo org.apache.kafka.tools.DeleteRecordsCommand ;;
    *.*) echo "$1" ;;
    *) echo "org.apache.kafka.tools.$1" ;;
    esac
}

kafka_version() { # -> the version dev/stack started, or nothing
    local cdir
    cdir=$(comp_dir kafka)
    if [[ -f $cdir/running-version ]] && owned_pid kafka >/dev/null; then
        echo "$(<"$cdir/running-version")"
    fi
}

start_kafka() {
    local cdir java port cport
    cdir=$(comp_dir kafka)
    port=$(http_port kafka)
    cport=$(second_port kafka)
    install_kafka
    java=$(kafka_java)/bin/java
    mkdir -p "$cdir/data" "$cdir/logs"
    # The TLS listener's key and certificate, in one PEM file, from the es8-tls CA.
    ensure_tls_certs
    (umask 077 && cat "$(tls_dir)/node.key" "$(tls_dir)/node.pem" >"$cdir/keystore.pem")
    local jaas="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$KAFKA_SASL_USER\" password=\"$KAFKA_SASL_PASSWORD\" user_$KAFKA_SASL_USER=\"$KAFKA_SASL_PASSWORD\";"
    cat >"$cdir/server.properties" <<EOF
# written by dev/stack on every start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=$jaas
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=$jaas
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$cdir/keystore.pem
log.dirs=$cdir/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
EOF
    kafka_log4j_config SYSTEM_OUT INFO >"$cdir/log4j2.xml"
    kafka_log4j_config SYSTEM_ERR WARN >"$cdir/log4j2-tools.xml"
    if [[ ! -f $cdir/data/meta.properties ]]; then
        local id
        id=$(kafka_tool kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
        [[ $id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "kafka StorageTool random-uuid failed (got '$id')"
        say "formatting Kafka storage (cluster id $id)"
        kafka_tool kafka.tools.StorageTool format -t "$id" -c "$cdir/server.properties" \
            >>"$(console_log kafka)" 2>&1 || die "kafka storage format failed; see $(console_log kafka)"
    fi
    echo "$KAFKA_RESOLVED" >"$cdir/running-version"
    local heap
    heap=$(comp_heap kafka)
    start_bg kafka "$cdir" "$java" "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC \
        -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$cdir/log4j2.xml" -Dkafka.logs.dir="$cdir/logs" \
        -cp "$KAFKA_LIB/*" kafka.Kafka "$cdir/server.properties"
    say "kafka $KAFKA_RESOLVED starting (pid $(<"$(pid_file kafka)"), java $(jdk_major "$(kafka_java)"))"
}
