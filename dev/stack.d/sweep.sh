# shellcheck shell=bash
# dev/stack sweep <prefix>...: deletes what starts with a prefix on every server of the stack
# that is up, all servers at once. On a search server: data streams, indices (hidden and closed
# ones too), aliases left on other indices, composable and legacy index templates, component
# templates and ingest pipelines; on Kafka: topics (listed by kcat, else TopicCommand, and
# deleted by one TopicCommand with a regex). One summary line per server.

sweep_usage() {
    printf 'stack: error: %s\n' "$*" >&2
    echo "usage: dev/stack sweep <prefix>... (at least 3 characters of a-z A-Z 0-9 . _ -, starting with a letter or digit)" >&2
    exit 2
}

# plural <n> <singular> <plural>
plural() {
    if (($1 == 1)); then echo "$1 $2"; else echo "$1 $3"; fi
}

# url_part <name>: a name as one path segment (index names may hold characters a URL does not)
url_part() {
    local s=$1 out="" c i LC_ALL=C
    if [[ $s =~ ^[A-Za-z0-9._-]+$ ]]; then
        echo "$s"
        return 0
    fi
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        [A-Za-z0-9._~-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    echo "$out"
}

# sweep_req <comp> <method> <path>: sets SWEEP_CODE (000 when no answer) and SWEEP_BODY; true
# on a 2xx
sweep_req() {
    local out
    if out=$(search_curl "$1" -sS -m 60 -X "$2" -w '\n%{http_code}' "$(base_url "$1")$3" 2>&1); then
        SWEEP_CODE=${out##*$'\n'}
        SWEEP_BODY=${out%$'\n'*}
    else
        SWEEP_CODE=000
        SWEEP_BODY=$out
    fi
    [[ $SWEEP_CODE == 2?? ]]
}

# what a name must start with: one of SWEEP_PREFIXES
sweep_match() {
    local p
    for p in "${SWEEP_PREFIXES[@]}"; do [[ $1 == "$p"* ]] && return 0; done
    return 1
}

# sweep_keep: stdin's names that start with a prefix, once each
sweep_keep() {
    local n
    while IFS= read -r n; do
        [[ -n $n ]] && sweep_match "$n" && echo "$n"
    done | sort -u
}

# sweep_unique <array name>: each name once (prefixes may overlap)
sweep_unique() {
    local -n arr=$1
    ((${#arr[@]})) || return 0
    mapfile -t arr < <(printf '%s\n' "${arr[@]}" | sort -u)
}

# the names of a listing, by the shape of its (filter_path'ed) answer
json_values() { grep -o "\"$1\":\"[^\"]*\"" | sed 's/^"[^"]*":"//; s/"$//'; } # "name":"x"
json_keys_of() { grep -oE "(^[{]|[}],)\"[^\"]*\":[{]\"$1\"" | sed -E 's/^([{]|[}],)"//; s/":[{]".*$//'; } # {"x":{"<field>"

# sweep_get <comp> <path>: GET, true on a 2xx; a 404 is an empty listing, other answers go to
# SWEEP_ERRORS
sweep_get() {
    sweep_req "$1" GET "$2" && return 0
    [[ $SWEEP_CODE == 404 ]] || SWEEP_ERRORS+=("GET ${2:0:80}: HTTP $SWEEP_CODE ${SWEEP_BODY:0:300}")
    return 1
}

# sweep_delete <comp> <path>: DELETE; a 404 (gone meanwhile) is no failure; others go to
# SWEEP_ERRORS
sweep_delete() {
    sweep_req "$1" DELETE "$2" && return 0
    [[ $SWEEP_CODE == 404 ]] && return 0
    SWEEP_ERRORS+=("DELETE ${2:0:80}: HTTP $SWEEP_CODE ${SWEEP_BODY:0:300}")
}

# sweep_delete_list <comp> <path before the names> <path after> <names...>: DELETEs of the
# names joined by commas, as many as an HTTP request line (4kb at most) holds
sweep_delete_list() {
    local comp=$1 before=$2 after=$3 n list=""
    shift 3
    for n in "$@"; do
        n=$(url_part "$n")
        if [[ -n $list ]] && ((${#list} + ${#n} > 3000)); then
            sweep_delete "$comp" "$before$list$after"
            list=""
        fi
        list+=${list:+,}$n
    done
    if [[ -n $list ]]; then sweep_delete "$comp" "$before$list$after"; fi
}

# sweep_search <comp>: prints its summary line
sweep_search() {
    local comp=$1 p pat=() names=() streams=() indices=() aliases=() ntpl=0 npipe=0
    SWEEP_ERRORS=()
    if ! port_open "$(http_port "$comp")" ||
        ! search_curl "$comp" -fsS -m 5 -o /dev/null "$(base_url "$comp")/_cluster/health" 2>/dev/null; then
        say "sweep $comp: down, skipped"
        return 0
    fi
    for p in "${SWEEP_PREFIXES[@]}"; do pat+=("$p*"); done
    local globs
    globs=$(IFS=,; echo "${pat[*]}")

    # data streams first: their backing indices (.ds-...) go with them, and their templates
    # cannot be deleted while they exist. Elasticsearch's test zips have no data streams (405),
    # OpenSearch knows no expand_wildcards here (400).
    for p in "${SWEEP_PREFIXES[@]}"; do
        if sweep_req "$comp" GET "/_data_stream/$p*?expand_wildcards=all&filter_path=data_streams.name" ||
            { [[ $SWEEP_CODE == 400 ]] && sweep_req "$comp" GET "/_data_stream/$p*?filter_path=data_streams.name"; }; then
            mapfile -t -O "${#streams[@]}" streams < <(json_values name <<<"$SWEEP_BODY" | sweep_keep)
        fi
    done
    sweep_unique streams
    sweep_delete_list "$comp" /_data_stream/ "" "${streams[@]+"${streams[@]}"}"

    # indices, hidden and closed ones too
    if sweep_get "$comp" "/_cat/indices/$globs?h=index&expand_wildcards=all"; then
        mapfile -t indices < <(sweep_keep <<<"$SWEEP_BODY")
        sweep_delete_list "$comp" / "?ignore_unavailable=true" "${indices[@]+"${indices[@]}"}"
    fi

    # aliases of a prefix still on other indices, index by index
    local pairs=() pair
    if sweep_get "$comp" "/_cat/aliases/$globs?h=alias,index&expand_wildcards=all"; then
        mapfile -t pairs < <(sweep_keep <<<"$SWEEP_BODY")
        for pair in "${pairs[@]+"${pairs[@]}"}"; do
            read -r p pair <<<"$pair"
            aliases+=("$p")
            sweep_delete "$comp" "/$(url_part "$pair")/_alias/$(url_part "$p")"
        done
        sweep_unique aliases
    fi

    # composable templates, then the component templates they are composed of, then legacy
    # ones, then pipelines: one prefix a request (template names take no comma lists), one
    # DELETE a name (not all versions take lists or wildcards there)
    local path field extract
    for path in /_index_template /_component_template /_template /_ingest/pipeline; do
        case $path in
        /_index_template) field=index_templates.name extract="json_values name" ;;
        /_component_template) field=component_templates.name extract="json_values name" ;;
        # the answers are objects by name: every name is a key before {"order" / {"processors"
        /_template) field=*.order extract="json_keys_of order" ;;
        /_ingest/pipeline) field=*.processors extract="json_keys_of processors" ;;
        esac
        names=()
        for p in "${SWEEP_PREFIXES[@]}"; do
            if sweep_get "$comp" "$path/$p*?filter_path=$field"; then
                mapfile -t -O "${#names[@]}" names < <($extract <<<"$SWEEP_BODY" | sweep_keep)
            fi
        done
        sweep_unique names
        for p in "${names[@]+"${names[@]}"}"; do sweep_delete "$comp" "$path/$(url_part "$p")"; done
        if [[ $path == /_ingest/pipeline ]]; then npipe=${#names[@]}; else ntpl=$((ntpl + ${#names[@]})); fi
    done

    local line e
    line="$(plural ${#indices[@]} index indices), $(plural "$ntpl" template templates), $(plural "$npipe" pipeline pipelines)"
    if ((${#streams[@]})); then line+=", $(plural ${#streams[@]} "data stream" "data streams")"; fi
    if ((${#aliases[@]})); then line+=", $(plural ${#aliases[@]} alias aliases)"; fi
    say "sweep $comp: $line"
    for e in "${SWEEP_ERRORS[@]+"${SWEEP_ERRORS[@]}"}"; do warn "sweep $comp: failed: $e"; done
    ((${#SWEEP_ERRORS[@]} == 0))
}

# sweep_kafka: prints its summary line
sweep_kafka() {
    local port topics=() p re=""
    port=$(http_port kafka)
    if ! port_open "$port"; then
        say "sweep kafka: down, skipped"
        return 0
    fi
    local out nolib="its jars are not installed here ('dev/stack up kafka')"
    # kcat lists them in milliseconds, a JVM takes a second or two
    if command -v kcat >/dev/null 2>&1 && out=$(kcat -b "127.0.0.1:$port" -L -m 10 2>&1); then
        out=$(sed -n 's/^ *topic "\(.*\)" with [0-9]* partitions:$/\1/p' <<<"$out")
    else
        detect_kafka_lib || { warn "sweep kafka: failed: $nolib"; return 1; }
        out=$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --list 2>&1) ||
            { warn "sweep kafka: failed: listing the topics: ${out:0:300}"; return 1; }
    fi
    mapfile -t topics < <(sweep_keep <<<"$out")
    if ((${#topics[@]})); then
        detect_kafka_lib || { warn "sweep kafka: failed: $nolib"; return 1; }
        # one regex for them all (TopicCommand matches it against whole names)
        for p in "${SWEEP_PREFIXES[@]}"; do re+=${re:+|}${p//./\\.}; done
        out=$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
            --delete --if-exists --topic "($re).*" 2>&1) ||
            { say "sweep kafka: $(plural ${#topics[@]} topic topics) found"; warn "sweep kafka: failed: deleting them: ${out:0:300}"; return 1; }
    fi
    say "sweep kafka: $(plural ${#topics[@]} topic topics)"
}

cmd_sweep() {
    (($#)) || sweep_usage "sweep needs a prefix"
    local p
    for p in "$@"; do
        [[ -n $p ]] || sweep_usage "an empty prefix would sweep everything"
        [[ $p != *[*,]* ]] || sweep_usage "'$p': a prefix holds no '*' or ','"
        ((${#p} >= 3)) || sweep_usage "'$p': a prefix has at least 3 characters"
        [[ $p =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
            sweep_usage "'$p': a prefix is letters, digits, '.', '_' and '-', and starts with a letter or digit (system indices start with '.')"
    done
    SWEEP_PREFIXES=("$@")
    need curl curl
    local tmp c rc=0 pids=()
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expanded now, on purpose
    trap "rm -rf -- '$tmp'" EXIT
    for c in "${ALL_COMPONENTS[@]}"; do
        (
            if is_search "$c"; then sweep_search "$c"; else sweep_kafka; fi
        ) >"$tmp/$c.out" 2>"$tmp/$c.err" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || rc=1
    done
    for c in "${ALL_COMPONENTS[@]}"; do
        cat "$tmp/$c.out"
        cat "$tmp/$c.err" >&2
    done
    return "$rc"
}
