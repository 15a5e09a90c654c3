# shellcheck shell=bash
# dev/stack's TLS: a CA and a node certificate made once with openssl (es8-tls serves HTTPS with
# them, Kafka's SASL_SSL listener too), the analysis plugin the .security index needs, and the
# keystore's bootstrap password, for the components whose extras name tls.

TLS_USER=elastic
TLS_PASSWORD=${INDEXFERRY_TLS_PASSWORD:-indexferry-secret}
TLS_CERT_DAYS=3650

# the node settings of a tls component (transport TLS may stay off: single-node discovery skips
# that bootstrap check)
TLS_SETTINGS=(
    -Expack.security.enabled=true -Expack.security.enrollment.enabled=false
    -Expack.security.http.ssl.enabled=true
    -Expack.security.http.ssl.certificate=tls/node.pem
    -Expack.security.http.ssl.key=tls/node.key
    -Expack.security.http.ssl.certificate_authorities=tls/ca.pem
    -Expack.security.transport.ssl.enabled=false
    -Expack.security.authc.api_key.enabled=true
    # a small request limit, so that tests meet the target's 413
    -Ehttp.max_content_length=256kb
)

# the CA and the node certificate, shared by every tls component and Kafka
tls_dir() { echo "$STACK_DIR/es8-tls/certs"; }

tls_openssl_config() {
    cat <<'EOF'
# written by dev/stack
[req]
distinguished_name = dn
prompt = no
[dn]
CN = indexferry dev CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_node]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
}

# still_valid <cert>: exists and does not expire within 30 days
still_valid() { [[ -f $1 ]] && openssl x509 -checkend $((30 * 86400)) -noout -in "$1" >/dev/null 2>&1; }

# ensure_tls_certs: <tls_dir>/{ca.pem,ca.key,node.pem,node.key}, made when missing or about to
# expire (a new CA also means a new node certificate). Messages go to stderr.
ensure_tls_certs() {
    local d tmp
    d=$(tls_dir)
    if still_valid "$d/ca.pem" && [[ -f $d/ca.key ]] && still_valid "$d/node.pem" && [[ -f $d/node.key ]] &&
        openssl verify -CAfile "$d/ca.pem" "$d/node.pem" >/dev/null 2>&1; then
        return 0
    fi
    need openssl openssl
    mkdir -p "$d"
    tmp=$d/.new
    safe_rm "$tmp"
    mkdir -p "$tmp"
    tls_openssl_config >"$tmp/openssl.cnf"
    if ! still_valid "$d/ca.pem" || [[ ! -f $d/ca.key ]]; then
        say "generating the es8-tls CA in $d" >&2
        openssl req -config "$tmp/openssl.cnf" -x509 -new -newkey rsa:2048 -nodes -sha256 \
            -days "$TLS_CERT_DAYS" -subj "/CN=indexferry dev CA" -extensions v3_ca \
            -keyout "$tmp/ca.key" -out "$tmp/ca.pem" >/dev/null 2>&1 || die "openssl: CA generation failed"
        chmod 600 "$tmp/ca.key"
        rm -f "$d/node.pem" "$d/node.key"
        mv -f "$tmp/ca.key" "$d/ca.key"
        mv -f "$tmp/ca.pem" "$d/ca.pem"
    fi
    say "generating the es8-tls node certificate (127.0.0.1, localhost) in $d" >&2
    openssl req -config "$tmp/openssl.cnf" -new -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tmp/node.key" -out "$tmp/node.csr" >/dev/null 2>&1 || die "openssl: node key generation failed"
    openssl x509 -req -in "$tmp/node.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$TLS_CERT_DAYS" \
        -extfile "$tmp/openssl.cnf" -extensions v3_node -out "$tmp/node.pem" >/dev/null 2>&1 ||
        die "openssl: signing the node certificate failed"
    chmod 600 "$tmp/node.key"
    mv -f "$tmp/node.key" "$d/node.key"
    mv -f "$tmp/node.pem" "$d/node.pem"
    safe_rm "$tmp"
}

# The .security index (native users, roles, API keys) is created with an `email` analyzer built
# from pattern_capture, uax_url_email and unique, which live in the analysis-common module that the
# integ-test zip does not ship: without them every API key call fails with "Unknown filter type
# [pattern_capture]". Nothing on Maven Central provides that module, so dev/stack compiles these
# three (on top of Lucene's own classes in the distribution's lib/) into a small plugin.
SECURITY_ANALYSIS_PLUGIN=indexferry-security-analysis

security_analysis_java() {
    cat "$SCRIPT_DIR/stack.d/SecurityAnalysisPlugin.java"
}

# find_javac: a javac of Java >= 17 (the plugin is compiled with --release 17)
find_javac() {
    local h v
    for h in "$(find_jdk 17)" /usr/lib/jvm/*; do
        [[ -x $h/bin/javac && -x $h/bin/jar ]] || continue
        v=$(jdk_major "$h") || continue
        if ((v >= 17)); then
            echo "$h/bin/javac"
            return 0
        fi
    done
    return 1
}

# install_security_analysis <cdir>: into $DIST_HOME/plugins, rebuilt only when source or version changed
install_security_analysis() {
    local cdir=$1 pdir build want javac
    [[ -d $DIST_HOME/modules/analysis-common ]] && return 0 # a full distribution has the real ones
    pdir=$DIST_HOME/plugins/$SECURITY_ANALYSIS_PLUGIN
    want=$({
        security_analysis_java
        echo "$DIST_VERSION"
    } | sha256sum | cut -d' ' -f1)
    if [[ -f $pdir/.indexferry-built && $(<"$pdir/.indexferry-built") == "$want" ]]; then
        return 0
    fi
    if ! javac=$(find_javac); then
        apt_install openjdk-17-jdk-headless || true
        javac=$(find_javac) || die "$(basename "$cdir") needs a JDK with javac (Java >= 17) to build its analysis plugin"
    fi
    say "building the $SECURITY_ANALYSIS_PLUGIN plugin (pattern_capture, unique, uax_url_email)"
    build=$cdir/plugin-build
    safe_rm "$build"
    mkdir -p "$build/src" "$build/classes"
    security_analysis_java >"$build/src/SecurityAnalysisPlugin.java"
    "$javac" --release 17 -nowarn -cp "$DIST_HOME/lib/*" -d "$build/classes" \
        "$build/src/SecurityAnalysisPlugin.java" >"$build/javac.log" 2>&1 ||
        { cat "$build/javac.log" >&2; die "compiling the $SECURITY_ANALYSIS_PLUGIN plugin failed"; }
    "$(dirname "$javac")/jar" cf "$build/$SECURITY_ANALYSIS_PLUGIN.jar" -C "$build/classes" . ||
        die "jar of the $SECURITY_ANALYSIS_PLUGIN plugin failed"
    safe_rm "$pdir"
    mkdir -p "$pdir"
    cp "$build/$SECURITY_ANALYSIS_PLUGIN.jar" "$pdir/"
    cat >"$pdir/plugin-descriptor.properties" <<EOF
# written by dev/stack
description=pattern_capture, unique and uax_url_email for the .security index
version=$DIST_VERSION
name=$SECURITY_ANALYSIS_PLUGIN
classname=indexferry.analysis.SecurityAnalysisPlugin
java.version=17
elasticsearch.version=$DIST_VERSION
EOF
    echo "$want" >"$pdir/.indexferry-built"
    chown_service "$pdir"
    safe_rm "$build"
}

# setup_tls_node <comp> <jdk>: certificates into the config dir (ES only reads SSL files below it),
# bootstrap.password into the keystore (only when it changed: each keystore call is a JVM)
setup_tls_node() {
    local comp=$1 jdk=$2 cdir src dst f ks stamp want
    cdir=$(comp_dir "$comp")
    install_security_analysis "$cdir"
    ensure_tls_certs
    src=$(tls_dir)
    dst=$DIST_HOME/config/tls
    mkdir -p "$dst"
    for f in ca.pem node.pem node.key; do
        cmp -s "$src/$f" "$dst/$f" || cp -f "$src/$f" "$dst/$f"
    done
    chmod 600 "$dst/node.key"
    chown_service "$src" "$dst"
    local -a run
    read -r -a run <<<"$(as_service)"
    local -a tool=("${run[@]}" env HOME="$cdir" ES_JAVA_HOME="$jdk" JAVA_HOME="$jdk"
        "$DIST_HOME/bin/elasticsearch-keystore")
    ks=$DIST_HOME/config/elasticsearch.keystore
    stamp=$cdir/bootstrap-password.sha256
    want=$(printf '%s' "$TLS_PASSWORD" | sha256sum | cut -d' ' -f1)
    if [[ -f $ks && -f $stamp && $(<"$stamp") == "$want" ]]; then
        return 0
    fi
    if [[ ! -f $ks ]]; then
        "${tool[@]}" create >>"$(console_log "$comp")" 2>&1 ||
            die "elasticsearch-keystore create failed; see $(console_log "$comp")"
    fi
    say "setting the password of '$TLS_USER' (keystore bootstrap.password)"
    printf '%s' "$TLS_PASSWORD" | "${tool[@]}" add -x -f bootstrap.password >>"$(console_log "$comp")" 2>&1 ||
        die "elasticsearch-keystore add bootstrap.password failed; see $(console_log "$comp")"
    echo "$want" >"$stamp"
}
