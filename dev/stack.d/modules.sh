# shellcheck shell=bash
# dev/stack's assembled modules, for the components whose extras name reindex or ingest: the
# integ-test zips lack them, Maven Central has them as plugin jars.

# ----------------------------------------------------------------------------------------------
# the reindex module (server-side `_reindex`, in-cluster and from remote)
#
# The integ-test zips lack it. Elasticsearch 7 and OpenSearch publish its client jar
# (`reindex-client`, which holds the whole module) on Maven Central; dev/stack fetches it with
# its runtime dependencies, drops those the distribution's lib/ already has, and writes the
# module's descriptor and security policy. Elasticsearch 8 and 9 publish no such jar: there
# the snapshot falls back to its search method.

reindex_coords() { # comp -> "group artifact", or nothing when it gets no reindex module
    has_extra "$1" reindex || return 0
    case $(comp_kind "$1") in
    opensearch) echo "org.opensearch.plugin reindex-client" ;;
    es) echo "org.elasticsearch.plugin reindex-client" ;;
    esac
}

# The hosts a reindex from remote may read from: every cluster of the stack, by IP. `localhost`
# stays off the list, so that tests can meet the refusal of a host that is not allowlisted.
REINDEX_ALLOWLIST='127.0.0.1:*'

# install_reindex_module <comp> <cdir>: into $DIST_HOME/modules/reindex, once per version;
# sets REINDEX_SETTINGS to the node settings the module takes.
install_reindex_module() {
    local comp=$1 cdir=$2 coords g a mdir build jar cls flavor
    REINDEX_SETTINGS=()
    coords=$(reindex_coords "$comp")
    [[ -n $coords ]] || return 0
    read -r g a <<<"$coords"
    mdir=$DIST_HOME/modules/reindex
    if [[ ! -f $mdir/.indexferry-$DIST_VERSION ]]; then
        say "fetching the reindex module ($g:$a:$DIST_VERSION) for $comp"
        build=$cdir/reindex-build
        safe_rm "$build" "$mdir"
        mkdir -p "$build/jars"
        cat >"$build/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>indexferry.dev</groupId><artifactId>reindex-module</artifactId><version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>$g</groupId><artifactId>$a</artifactId><version>$DIST_VERSION</version></dependency>
  </dependencies>
</project>
EOF
        mvn_run -f "$build/pom.xml" "$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime \
            -DoutputDirectory="$build/jars" ||
            { show_mvn_log; die "could not fetch $g:$a:$DIST_VERSION and its dependencies"; }
        mkdir -p "$mdir"
        for jar in "$build"/jars/*.jar; do
            local name
            name=$(basename "$jar" .jar)
            name=${name%-*}
            # what the server already loads, and what the module does not use (the rest client
            # of OpenSearch 3 needs slf4j-api: httpclient5 logs through it)
            compgen -G "$DIST_HOME/lib/$name-[0-9]*.jar" >/dev/null && continue
            [[ $name == httpcore5-reactive ]] && continue
            cp "$jar" "$mdir/"
        done
        need unzip unzip
        jar=$(compgen -G "$mdir/$a-*.jar" | head -n 1)
        cls=$(unzip -Z1 "$jar" | grep -m 1 -E '^org/[a-z]+/(index/)?reindex/Reindex(Module)?Plugin\.class$' || true)
        [[ -n $cls ]] || die "no reindex plugin class in $jar"
        cls=${cls%.class}
        cls=${cls//\//.}
        flavor=opensearch
        [[ $(comp_kind "$comp") == es ]] && flavor=elasticsearch
        cat >"$mdir/plugin-descriptor.properties" <<EOF
description=The Reindex module adds APIs to reindex from one index to another or update documents in place.
version=$DIST_VERSION
name=reindex
classname=$cls
java.version=11
$flavor.version=$DIST_VERSION
EOF
        # a reindex from remote opens connections with the rest client
        cat >"$mdir/plugin-security.policy" <<EOF
grant {
  permission java.net.SocketPermission "*", "connect";
  permission java.net.NetPermission "getProxySelector";
};
EOF
        touch "$mdir/.indexferry-$DIST_VERSION"
        safe_rm "$build"
    fi
    # Elasticsearch never renamed its whitelist
    if [[ $(comp_kind "$comp") == es ]]; then
        REINDEX_SETTINGS=("-Ereindex.remote.whitelist=$REINDEX_ALLOWLIST")
    else
        REINDEX_SETTINGS=("-Ereindex.remote.allowlist=$REINDEX_ALLOWLIST")
    fi
}

# ----------------------------------------------------------------------------------------------
# the ingest processors (`set`, `rename`, `script`...) and painless scripts
#
# OpenSearch's test builds have neither: the `lang-painless` and `ingest-common` modules are on
# Maven Central as plugin jars. install_ingest_modules assembles both, each from its jar and
# the libraries only it uses (named below: the server's own are in lib/ already), with the
# descriptor and the permissions the full distribution gives them. ingest-common extends
# lang-painless (its `script` processor). Elasticsearch publishes neither for 8/9.

# install_module <cdir> <artifact> <class path regex> <extends> <jar patterns...>: into
# $DIST_HOME/modules/<artifact>, once per version (the plugin class is found in the jar: 3.x
# renamed some, e.g. PainlessPlugin to PainlessModulePlugin).
install_module() {
    local cdir=$1 name=$2 class_re=$3 extends=$4
    shift 4
    local mdir=$DIST_HOME/modules/$name build=$cdir/$name-build pattern jar cls
    [[ -f $mdir/.indexferry-$DIST_VERSION ]] && return 0
    say "fetching the $name module (org.opensearch.plugin:$name:$DIST_VERSION)"
    safe_rm "$build" "$mdir"
    mkdir -p "$build/jars" "$mdir"
    cat >"$build/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>indexferry.dev</groupId><artifactId>$name-module</artifactId><version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.opensearch.plugin</groupId><artifactId>$name</artifactId><version>$DIST_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    mvn_run -f "$build/pom.xml" "$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime \
        -DoutputDirectory="$build/jars" ||
        { show_mvn_log; die "could not fetch org.opensearch.plugin:$name:$DIST_VERSION and its dependencies"; }
    for pattern in "$@"; do
        jar=$(compgen -G "$build/jars/$pattern-[0-9]*.jar" | head -n 1)
        [[ -n $jar ]] || die "the $name module needs $pattern, which $name:$DIST_VERSION does not bring"
        cp "$jar" "$mdir/"
    done
    need unzip unzip
    cls=$(unzip -Z1 "$(compgen -G "$mdir/$name-[0-9]*.jar" | head -n 1)" | grep -m 1 -E "$class_re" || true)
    [[ -n $cls ]] || die "no plugin class matching $class_re in the $name jar"
    cls=${cls%.class}
    cls=${cls//\//.}
    cat >"$mdir/plugin-descriptor.properties" <<EOF
description=The $name module, assembled by dev/stack from Maven Central.
version=$DIST_VERSION
name=$name
classname=$cls
java.version=11
opensearch.version=$DIST_VERSION
extended.plugins=$extends
EOF
    touch "$mdir/.indexferry-$DIST_VERSION"
    safe_rm "$build"
}

# install_ingest_modules <comp> <cdir>: lang-painless and ingest-common (OpenSearch's; extras
# ingest on an es component is not supported).
install_ingest_modules() {
    local comp=$1 cdir=$2
    has_extra "$comp" ingest || return 0
    install_module "$cdir" lang-painless '^org/opensearch/painless/Painless(Module)?Plugin\.class$' "" \
        lang-painless antlr4-runtime asm asm-analysis asm-commons asm-tree asm-util opensearch-scripting-painless-spi
    # painless generates and loads classes at run time
    cat >"$DIST_HOME/modules/lang-painless/plugin-security.policy" <<EOF
grant {
  permission java.lang.RuntimePermission "createClassLoader";
  permission java.lang.RuntimePermission "getClassLoader";
};
EOF
    install_module "$cdir" ingest-common '^org/opensearch/ingest/common/IngestCommon(Module)?Plugin\.class$' lang-painless \
        ingest-common jcodings joni opensearch-dissect opensearch-grok
}

