"""dev/bench's driver: one run, on the local stack and the same data, of indexferry and the
tools a user would pick instead. See dev/bench for what it needs; every figure is the median of
--runs runs, wall time of the whole process (start-up included) for every tool."""

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Cluster:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def call(self, method, path, body=None, ok=(200, 201)):
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return None
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None

    def drop(self, index):
        self.call("DELETE", f"/{index}", ok=(404,))

    def create(self, index, mappings, shards):
        self.drop(index)
        settings = {"number_of_shards": shards, "number_of_replicas": 0, "refresh_interval": "-1"}
        self.call("PUT", f"/{index}", {"settings": {"index": settings}, "mappings": mappings})

    def count(self, index):
        self.call("POST", f"/{index}/_refresh")
        return self.call("GET", f"/{index}/_count")["count"]


class Measured:
    """A finished process: wall seconds, CPU seconds (user + system), peak RSS bytes, and
    the CPU seconds the measured server spent meanwhile."""

    def __init__(self, wall, cpu, rss, out, server_cpu):
        self.wall, self.cpu, self.rss, self.out, self.server_cpu = wall, cpu, rss, out, server_cpu


def server_cpu():
    """CPU seconds used so far by the OpenSearch (or Elasticsearch) server processes."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"org.opensearch.bootstrap.OpenSearch" not in cmdline and b"org.elasticsearch.bootstrap" not in cmdline:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return total


def measure(cmd, env=None, log_to=None):
    """Runs cmd to completion; fails on a non-zero exit with the tail of its output."""
    out = open(log_to, "w") if log_to else subprocess.DEVNULL
    server_before = server_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, env=env)
    stdout = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if log_to:
        out.close()
    if proc.returncode != 0:
        tail = Path(log_to).read_text()[-2000:] if log_to else ""
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {stdout[-500:]}{tail}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, stdout, server_cpu() - server_before)


def proc_usage(pid):
    """CPU seconds (user + system) and peak RSS bytes of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return cpu, int(hwm.split()[1]) * 1024


def median(xs):
    return statistics.median(xs) if xs else None


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.es = Cluster(args.url)
        self.ferry = os.environ["INDEXFERRY_BIN"]
        self.producer = os.environ["INDEXFERRY_PRODUCER_BIN"]
        self.python = sys.executable
        self.elasticdump = os.environ["ELASTICDUMP_BIN"]
        self.docs = args.docs
        self.shards = args.shards
        self.data = self.work / f"docs-{self.docs}-seed{args.seed}.ndjson"
        self.mappings_file = self.work / "mappings.json"
        self.results = {"docs": self.docs}
        self.cost = {}
        self.run_id = int(time.time())

    # --- data ---------------------------------------------------------------------------
    def prepare(self):
        if not self.data.exists():
            log(f"writing {self.docs} documents (seed {self.args.seed}) to {self.data.name}")
            tmp = self.data.with_suffix(".tmp")
            measure(
                [self.producer, "gen", "--docs", str(self.docs), "--seed", str(self.args.seed),
                 "--out", str(tmp), "--mappings", str(self.mappings_file)]
            )
            tmp.rename(self.data)
        self.mappings = json.loads(self.mappings_file.read_text())
        if not self.source_ready("bench-source", self.docs):
            log(f"loading the source index bench-source ({self.docs} documents)")
            self.load("bench-source", self.docs)
        if self.docs > 100_000 and not self.source_ready("bench-source-100k", 100_000):
            self.load("bench-source-100k", 100_000)

    def source_ready(self, index, n):
        try:
            return self.es.count(index) == n
        except RuntimeError:
            return False

    def load(self, index, n, cluster=None):
        cluster = cluster or self.es
        cluster.create(index, self.mappings, self.shards)
        self.bulk(index, n, concurrency=2, cluster=cluster)
        cluster.call("POST", f"/{index}/_refresh")
        cluster.call("POST", f"/{index}/_forcemerge?max_num_segments=5")
        assert cluster.count(index) == n, f"{index} does not hold {n} documents"

    def bulk(self, index, n, concurrency, cluster=None):
        url = (cluster or self.es).url
        m = measure(
            [self.producer, "bulk", "--url", url, "--index", index, "--file", str(self.data),
             "--concurrency", str(concurrency), "--batch", "1000", "--limit", str(n)]
        )
        return json.loads(m.out.strip().splitlines()[-1]), m

    # --- the _bulk ceiling --------------------------------------------------------------
    def ceiling(self):
        sample = min(self.docs, 200_000)
        best, best_rate = 1, 0.0
        for c in (1, 2, 4, 8):
            self.es.create("bench-ceiling", self.mappings, self.shards)
            r, _ = self.bulk("bench-ceiling", sample, c)
            log(f"_bulk ceiling: concurrency {c}: {r['docs_per_s']:.0f} docs/s ({sample} documents)")
            if r["docs_per_s"] > best_rate:
                best, best_rate = c, r["docs_per_s"]
        rates = []
        for i in range(self.args.runs):
            self.es.create("bench-ceiling", self.mappings, self.shards)
            r, m = self.bulk("bench-ceiling", self.docs, best)
            assert self.es.count("bench-ceiling") == self.docs
            rates.append(self.docs / m.wall)
            self.cost.setdefault("bulk_ceiling", []).append(m)
            log(f"_bulk ceiling run {i + 1}: {rates[-1]:.0f} docs/s at concurrency {best}")
        self.es.drop("bench-ceiling")
        self.ceiling_concurrency = best
        return median(rates)

    # --- indexferry ---------------------------------------------------------------------
    def recipe(self, name, source, target, alias, topic, extra="", method="search", source_url=None):
        # The method is explicit: `auto` would take `_reindex` where the module is there, and
        # the figures of the other measures would change meaning. With `source_url`, the
        # source is on that cluster and the target on the measured one.
        path = self.work / f"{name}.toml"
        clusters = f'[source]\nurl = "{source_url}"\n[target]\nurl = "{self.es.url}"' if source_url else \
            f'[source]\nurl = "{self.es.url}"'
        path.write_text(
            f"""name = "{name}"
{clusters}
[kafka]
brokers = "{self.args.brokers}"
topic = "{topic}"
[[indices]]
source = "{source}"
target = "{target}"
alias = "{alias}"
mappings_file = "{self.mappings_file}"
settings = {{ number_of_shards = {self.shards}, number_of_replicas = 0 }}
[snapshot]
method = "{method}"
{extra}"""
        )
        return path

    def ferry_cmd(self, *args):
        return [self.ferry, "migration", *args, "--state-dir", str(self.work / "state")]

    def alias(self, index, alias, cluster=None):
        (cluster or self.es).call("POST", "/_aliases", {"actions": [{"add": {"index": index, "alias": alias}}]})

    @functools.cached_property
    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.args.brokers})

    def topic(self, name, partitions=2):
        from confluent_kafka.admin import NewTopic

        futures = self.admin.create_topics([NewTopic(name, partitions, 1)])
        for f in futures.values():
            try:
                f.result(30)
            except Exception as e:  # already there: fine
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise
        return name

    def drop_topic(self, name):
        for f in self.admin.delete_topics([name]).values():
            try:
                f.result(30)
            except Exception:
                pass

    def reset_state(self):
        shutil.rmtree(self.work / "state", ignore_errors=True)

    def ferry_snapshot(self, source, n, label, method="search", source_cluster=None):
        self.reset_state()
        alias = f"{source}-alias"
        src = source_cluster or self.es
        src.call("POST", "/_aliases", {"actions": [{"remove": {"index": "*", "alias": alias}}]}, ok=(404,))
        self.alias(source, alias, src)
        topic = self.topic("bench-snapshot-events")
        self.es.drop("bench-target-ixf")
        recipe = self.recipe("bench-snapshot", source, "bench-target-ixf", alias, topic, method=method,
                             source_url=source_cluster and source_cluster.url)
        measure(self.ferry_cmd("init", str(recipe)))
        m = measure(self.ferry_cmd("snapshot", "bench-snapshot"), log_to=self.work / f"{label}.log")
        got = self.es.count("bench-target-ixf")
        assert got == n, f"indexferry snapshot copied {got} of {n}"
        measure(self.ferry_cmd("cancel", "bench-snapshot"))
        return m

    def snapshot_indexferry(self, method="search", source_cluster=None):
        """The snapshot by `method`, in-cluster, or from `source_cluster` into the measured one."""
        rates = []
        cost = "snapshot" if method == "search" else f"snapshot_{method}"
        if source_cluster:
            cost = f"snapshot_remote_{method}"
        for i in range(self.args.runs):
            m = self.ferry_snapshot("bench-source", self.docs, f"{cost}-{i}", method=method,
                                    source_cluster=source_cluster)
            rates.append(self.docs / m.wall)
            self.cost.setdefault(cost, []).append(m)
            log(f"indexferry {cost} run {i + 1}: {rates[-1]:.0f} docs/s, cpu {m.cpu:.1f}s, rss {m.rss >> 20} MiB")
        return median(rates)

    def has_reindex(self):
        nodes = self.es.call("GET", "/_nodes/plugins?filter_path=nodes.*.modules.name")["nodes"]
        return all(any(m["name"] == "reindex" for m in n.get("modules", [])) for n in nodes.values())

    def server_reindex(self):
        """The cluster's own copy, as a user would run it: a sliced `_reindex` (slices = shard
        count) into a fresh index with the same mappings, waited for through its task."""
        rates = []
        for i in range(self.args.runs):
            self.es.create("bench-target-peer", self.mappings, self.shards)
            body = {"conflicts": "proceed", "source": {"index": "bench-source", "size": 2000},
                    "dest": {"index": "bench-target-peer", "version_type": "external"}}
            server_before, started = server_cpu(), time.monotonic()
            task = self.es.call("POST", f"/_reindex?slices={self.shards}&wait_for_completion=false", body)["task"]
            while True:
                t = self.es.call("GET", f"/_tasks/{task}")
                if t.get("completed"):
                    break
                time.sleep(0.2)
            wall = time.monotonic() - started
            failures = t.get("error") or (t.get("response") or {}).get("failures")
            assert not failures, f"_reindex failed: {failures}"
            got = self.es.count("bench-target-peer")
            assert got == self.docs, f"_reindex copied {got} of {self.docs}"
            rates.append(self.docs / wall)
            self.cost.setdefault("server_reindex", []).append(Measured(wall, 0.0, 0, "", server_cpu() - server_before))
            log(f"server_reindex run {i + 1}: {rates[-1]:.0f} docs/s")
        self.es.drop("bench-target-peer")
        return median(rates)

    def remote(self):
        """Cross-cluster: the same data on another cluster (--remote-url, the stack's
        Elasticsearch 7.17), copied into the measured one by the search method (indexferry
        reads and bulks) and by the reindex method (the target pulls it: reindex from remote)."""
        src = Cluster(self.args.remote_url)
        try:
            ready = src.count("bench-source") == self.docs
        except RuntimeError:
            ready = False
        except OSError as e:
            log(f"remote: {src.url} does not answer ({e}); not measured (dev/stack up es7)")
            return None
        if not ready:
            log(f"loading bench-source on {src.url} ({self.docs} documents)")
            self.load("bench-source", self.docs, cluster=src)
        return {"indexferry": self.snapshot_indexferry("search", src),
                "indexferry_reindex": self.snapshot_indexferry("reindex", src)}

    # --- peers --------------------------------------------------------------------------
    def peer_copy(self, name, cmd):
        rates = []
        for i in range(self.args.runs):
            self.es.create("bench-target-peer", self.mappings, self.shards)
            m = measure(cmd, log_to=self.work / f"{name}-{i}.log")
            got = self.es.count("bench-target-peer")
            assert got == self.docs, f"{name} copied {got} of {self.docs}"
            rates.append(self.docs / m.wall)
            self.cost.setdefault(name, []).append(m)
            log(f"{name} run {i + 1}: {rates[-1]:.0f} docs/s, cpu {m.cpu:.1f}s, rss {m.rss >> 20} MiB")
        self.es.drop("bench-target-peer")
        return median(rates)

    def elasticdump_copy(self):
        return self.peer_copy(
            "elasticdump",
            [self.elasticdump, f"--input={self.es.url}/bench-source", f"--output={self.es.url}/bench-target-peer",
             "--type=data", "--limit=1000", "--quiet"],
        )

    def helpers_reindex(self):
        return self.peer_copy(
            "helpers_reindex",
            [self.python, str(HERE / "helpers_reindex.py"), "--url", self.es.url, "--source", "bench-source",
             "--target", "bench-target-peer"],
        )

    # --- replay -------------------------------------------------------------------------
    def fill(self, topic):
        measure([self.producer, "fill", "--brokers", self.args.brokers, "--topic", topic, "--index",
                 "bench-source", "--file", str(self.data)])

    def replay_indexferry(self, keep_topic=False):
        rates = []
        for i in range(self.args.runs):
            self.reset_state()
            topic = self.topic(f"bench-replay-{self.run_id}-{i}")
            self.es.drop("bench-target-ixf")
            recipe = self.recipe("bench-replay", "bench-source", "bench-target-ixf", "bench-source-alias", topic)
            self.es.call("POST", "/_aliases", {"actions": [{"remove": {"index": "*", "alias": "bench-source-alias"}}]},
                         ok=(404,))
            self.alias("bench-source", "bench-source-alias")
            measure(self.ferry_cmd("init", str(recipe)))
            self.fill(topic)
            m = measure(self.ferry_cmd("consume", "bench-replay", "--until-caught-up"),
                        log_to=self.work / f"replay-{i}.log")
            got = self.es.count("bench-target-ixf")
            assert got == self.docs, f"indexferry consume applied {got} of {self.docs}"
            measure(self.ferry_cmd("cancel", "bench-replay"))
            if keep_topic and i == 0:
                self.python_topic = topic  # filled already: the Python consumer reads it next
            else:
                self.drop_topic(topic)
            rates.append(self.docs / m.wall)
            self.cost.setdefault("replay", []).append(m)
            log(f"indexferry consume run {i + 1}: {rates[-1]:.0f} events/s, cpu {m.cpu:.1f}s, rss {m.rss >> 20} MiB")
        return median(rates)

    def replay_python(self):
        rates = []
        for i in range(self.args.runs):
            self.es.create("bench-target-peer", self.mappings, self.shards)
            m = measure(
                [self.python, str(HERE / "python_consumer.py"), "--url", self.es.url, "--brokers", self.args.brokers,
                 "--topic", self.python_topic, "--group", f"bench-python-{self.run_id}-{i}", "--target",
                 "bench-target-peer", "--events", str(self.docs)],
                log_to=self.work / f"python-consumer-{i}.log",
            )
            got = self.es.count("bench-target-peer")
            assert got == self.docs, f"the python consumer applied {got} of {self.docs}"
            rates.append(self.docs / m.wall)
            self.cost.setdefault("python_consumer", []).append(m)
            log(f"python consumer run {i + 1}: {rates[-1]:.0f} events/s, cpu {m.cpu:.1f}s, rss {m.rss >> 20} MiB")
        self.es.drop("bench-target-peer")
        self.drop_topic(self.python_topic)
        return median(rates)

    # --- rollover -----------------------------------------------------------------------
    def rollovers(self):
        """Chained migrations under one steady load through one alias: index k -> k+1."""
        n, rate = self.args.rollovers, self.args.rollover_rate
        topic = f"bench-rollover-{self.run_id}"
        alias = f"bench-roll-{self.run_id}"
        first = f"{alias}-0"
        load_report = self.work / "rollover-load.json"
        load = subprocess.Popen(
            [self.producer, "load", "--url", self.es.url, "--brokers", self.args.brokers, "--topic", topic,
             "--alias", alias, "--create-index", first, "--partitions", "2", "--initial", str(self.args.rollover_docs), "--rate",
             str(rate), "--concurrency", str(self.args.rollover_concurrency), "--report", str(load_report)],
            stdout=subprocess.DEVNULL, stderr=open(self.work / "rollover-load.log", "w"),
        )
        pauses = []
        try:
            self.wait_for(lambda: self.alias_target(alias) is not None, 120, "the load's index")
            self.wait_for(lambda: self.initial_loaded(), 3600, "the load's initial documents")
            time.sleep(3)
            for k in range(n):
                self.reset_state()
                source, target = f"{alias}-{k}", f"{alias}-{k + 1}"
                name = f"roll-{k}"
                recipe = self.recipe(name, source, target, alias, topic)
                measure(self.ferry_cmd("init", str(recipe)))
                run = subprocess.Popen(self.ferry_cmd("run", name), stdout=subprocess.DEVNULL,
                                       stderr=open(self.work / f"rollover-run-{k}.log", "w"))
                self.wait_for(lambda: self.caught_up(name), max(300, self.args.rollover_docs // 1000), f"migration {name} to catch up")
                m = measure(self.ferry_cmd("rollover", name))
                pause = next(int(line.split()[2]) for line in m.out.splitlines() if line.startswith("write pause:"))
                pauses.append(pause / 1000)
                run.wait(60)
                self.es.drop(source)
                log(f"rollover {k + 1}/{n}: write pause {pause} ms")
        finally:
            load.send_signal(signal.SIGINT)
            load.wait(60)
        report = json.loads(load_report.read_text())
        if report.get("failed"):
            raise RuntimeError(f"the load saw {report['failed']} failed writes during the rollovers")
        self.es.drop(f"{alias}-{n}")
        self.drop_topic(topic)
        pauses.sort()
        p99 = pauses[min(len(pauses) - 1, int(round(0.99 * (len(pauses) - 1))))]
        return {"p50": median(pauses), "p99": p99, "max": pauses[-1], "count": len(pauses),
                "load_writes_per_s": rate, "load_writes": report.get("done")}

    # --- the capture proxy ----------------------------------------------------------------
    def proxy(self):
        """indexferry-proxy side by side with direct access to the same cluster: the latency it
        adds to single writes (at 200 and 2,000/s) and searches, _bulk documents/s through it
        against direct and against the producer library (which also publishes), and the
        proxy's CPU seconds per million writes and peak RSS."""
        topic = self.topic(f"bench-proxy-{self.run_id}", partitions=2)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [os.environ["INDEXFERRY_PROXY_BIN"], "--listen", f"127.0.0.1:{port}", "--upstream", self.es.url,
             "--brokers", self.args.brokers, "--topic", topic],
            stdout=subprocess.DEVNULL, stderr=open(self.work / "proxy.log", "w"),
        )
        out = {}
        try:
            def answers():
                try:
                    return Cluster(url).call("GET", "/_indexferry/stats") is not None
                except Exception:
                    return False

            self.wait_for(answers, 30, "the proxy")

            def probe(target, kind, rate, index):
                m = measure([self.producer, "probe", "--url", target, "--index", index, "--kind", kind,
                             "--rate", str(rate), "--seconds", str(self.args.proxy_seconds)])
                return json.loads(m.out.strip().splitlines()[-1])

            for rate in (200, 2000):
                for where, target in (("direct", self.es.url), ("proxy", url)):
                    index = f"bench-probe-{where}"
                    self.es.create(index, self.mappings, self.shards)
                    r = probe(target, "write", rate, index)
                    out[f"write_{rate}_{where}"] = r
                    log(f"proxy: single writes at {rate}/s {where}: {r['rate']:.0f}/s p50 {r['p50_ms']:.2f} ms "
                        f"p99 {r['p99_ms']:.2f} ms errors {r['errors']}")
                    self.es.drop(index)
            for where, target in (("direct", self.es.url), ("proxy", url)):
                r = probe(target, "search", 200, "bench-source")
                out[f"search_200_{where}"] = r
                log(f"proxy: searches at 200/s {where}: p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
            n = min(self.docs, 200_000)
            c = self.ceiling_concurrency
            self.es.create("bench-proxy-bulk", self.mappings, self.shards)
            direct, _ = self.bulk("bench-proxy-bulk", n, c)
            self.es.create("bench-proxy-bulk", self.mappings, self.shards)
            cpu_before, _ = proc_usage(proc.pid)
            through = measure([self.producer, "bulk", "--url", url, "--index", "bench-proxy-bulk", "--file", str(self.data),
                               "--concurrency", str(c), "--batch", "1000", "--limit", str(n)])
            cpu_after, rss = proc_usage(proc.pid)
            through = json.loads(through.out.strip().splitlines()[-1])
            assert self.es.count("bench-proxy-bulk") == n
            self.es.drop("bench-proxy-bulk")
            # The producer library: its initial load writes _bulk batches and publishes.
            lib_topic = self.topic(f"bench-proxy-lib-{self.run_id}", partitions=2)
            lib = measure([self.producer, "load", "--url", self.es.url, "--brokers", self.args.brokers, "--topic", lib_topic,
                           "--alias", "bench-proxy-lib", "--create-index", "bench-proxy-lib-0", "--partitions", "2",
                           "--initial", str(n), "--rate", "0", "--concurrency", str(c)],
                          log_to=self.work / "proxy-lib.log")
            self.es.drop("bench-proxy-lib-0")
            self.drop_topic(lib_topic)
            out["bulk"] = {
                "docs": n, "concurrency": c, "direct_docs_per_s": direct["docs_per_s"],
                "proxy_docs_per_s": through["docs_per_s"], "library_docs_per_s": n / lib.wall,
                "proxy_cpu_s_per_million_writes": (cpu_after - cpu_before) * 1_000_000 / n,
                "proxy_peak_rss_bytes": rss,
            }
            log(f"proxy: _bulk {through['docs_per_s']:.0f} docs/s through it, {direct['docs_per_s']:.0f} direct, "
                f"{n / lib.wall:.0f} with the producer library; {out['bulk']['proxy_cpu_s_per_million_writes']:.1f} "
                f"CPU s per million writes, peak RSS {rss / 1e6:.0f} MB")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            self.drop_topic(topic)
        return out

    def initial_loaded(self):
        log_text = (self.work / "rollover-load.log").read_text(errors="replace")
        return "load: initial " in log_text and " documents in " in log_text

    def alias_target(self, alias):
        try:
            return next(iter(self.es.call("GET", f"/_alias/{alias}")))
        except (RuntimeError, StopIteration):
            return None

    def caught_up(self, name):
        p = subprocess.run(self.ferry_cmd("status", name, "--json"), capture_output=True)
        if p.returncode != 0:
            return False
        s = json.loads(p.stdout)
        lag = s["replay"]["lag_messages"]
        return all(x["done"] for x in s["pairs"]) and lag is not None and lag < 200

    @staticmethod
    def wait_for(check, seconds, what):
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.5)

    # --- reconcile ----------------------------------------------------------------------
    def reconcile(self):
        """`reconcile` after a snapshot of the same index: with nothing to repair, then with 1 %
        of the source rewritten without events (up to 10,000 documents: one search page)."""
        self.reset_state()
        source, target, name = "bench-source", "bench-target-rec", "bench-reconcile"
        alias = f"{source}-alias"
        self.es.call("POST", "/_aliases", {"actions": [{"remove": {"index": "*", "alias": alias}}]}, ok=(404,))
        self.alias(source, alias)
        topic = self.topic("bench-reconcile-events")
        self.es.drop(target)
        measure(self.ferry_cmd("init", str(self.recipe(name, source, target, alias, topic))))
        snap = measure(self.ferry_cmd("snapshot", name))
        clean, repair = [], []
        for i in range(self.args.runs):
            m = measure(self.ferry_cmd("reconcile", name), log_to=self.work / f"reconcile-clean-{i}.log")
            assert "reconcile: clean" in m.out, m.out
            clean.append(m.wall)
            self.cost.setdefault("reconcile", []).append(m)
            # 1 % of the source written again with no event, as an application that died
            # between its write and its publish: the target is behind on those.
            page = {"size": min(self.docs // 100, 10_000), "sort": ["_doc"]}
            hits = self.es.call("POST", f"/{source}/_search", page)["hits"]["hits"]
            ids = [h["_id"] for h in hits]
            body = "".join(json.dumps({"index": {"_index": source, "_id": h["_id"]}}) + "\n"
                           + json.dumps(h["_source"]) + "\n" for h in hits)
            self.es.call("POST", "/_bulk?refresh=true", body.encode())
            m = measure(self.ferry_cmd("reconcile", name), log_to=self.work / f"reconcile-repair-{i}.log")
            assert f"reconcile: repaired {len(ids)}" in m.out, m.out
            repair.append(m.wall)
            log(f"reconcile run {i + 1}: clean {clean[-1]:.1f}s, {len(ids)} to repair {repair[-1]:.1f}s "
                f"(snapshot {snap.wall:.1f}s)")
        measure(self.ferry_cmd("cancel", name))
        self.drop_topic(topic)
        return {"snapshot_s": snap.wall, "clean_s": median(clean), "repair_1pct_s": median(repair),
                "clean_s_per_million": median(clean) * 1_000_000 / self.docs,
                "repair_1pct_s_per_million": median(repair) * 1_000_000 / self.docs,
                "clean_to_snapshot": median(clean) / snap.wall}

    # --- cost ---------------------------------------------------------------------------
    def rss_scaling(self):
        """Peak RSS of the snapshot at 100k documents next to the full runs'."""
        out = {str(self.docs): max(m.rss for m in self.cost["snapshot"])}
        if self.docs > 100_000:
            m = self.ferry_snapshot("bench-source-100k", 100_000, "snapshot-100k")
            self.cost["snapshot_100k"] = [m]
            out["100000"] = m.rss
        return out


def main():
    ap = argparse.ArgumentParser(prog="dev/bench", description=__doc__)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (the median is reported)")
    ap.add_argument("--rollovers", type=int, default=20)
    ap.add_argument("--rollover-rate", type=int, default=200, help="steady writes/s during the rollovers")
    ap.add_argument("--rollover-docs", type=int, default=5000, help="documents in the index each rollover migrates")
    ap.add_argument("--rollover-concurrency", type=int, default=8, help="the load's writes in flight at once")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--url", default="http://127.0.0.1:9202")
    ap.add_argument("--remote-url", default="http://127.0.0.1:9204",
                    help="the source cluster of the cross-cluster measure (remote)")
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--out", default="bench-results.json")
    ap.add_argument("--work", required=True)
    ap.add_argument("--baseline-bin", help="another indexferry binary (with consume --until-caught-up) to measure too")
    ap.add_argument("--peers", default="elasticdump,helpers_reindex,server_reindex,python_consumer",
                    help="the peer tools to measure (comma-separated; empty for none)")
    ap.add_argument("--only", default="snapshot,remote,replay,reconcile,rollover,cost,proxy",
                    help="comma-separated parts to run (snapshot, remote, replay, reconcile, rollover, cost, proxy)")
    ap.add_argument("--proxy-seconds", type=float, default=20, help="how long each proxy latency probe runs")
    args = ap.parse_args()
    only = set(args.only.split(","))
    b = Bench(args)
    b.prepare()
    r = b.results
    ceiling = b.ceiling()
    r["bulk_ceiling_concurrency"] = b.ceiling_concurrency
    baseline = {}
    if args.baseline_bin:
        # Another build of indexferry, measured in the same run: before/after an optimisation.
        b.ferry, ours = args.baseline_bin, b.ferry
        if "snapshot" in only:
            baseline["snapshot_docs_per_s"] = b.snapshot_indexferry()
        if "replay" in only:
            baseline["replay_events_per_s"] = b.replay_indexferry()
        b.ferry = ours
        for tool in ("snapshot", "replay"):
            b.cost.pop(tool, None)  # the costs reported are this build's
    if "snapshot" in only or "cost" in only:
        r["snapshot_docs_per_s"] = {"indexferry": b.snapshot_indexferry()}
    peers = set(filter(None, args.peers.split(",")))
    if "snapshot" in only:
        if "elasticdump" in peers:
            r["snapshot_docs_per_s"]["elasticdump"] = b.elasticdump_copy()
        if "helpers_reindex" in peers:
            r["snapshot_docs_per_s"]["helpers_reindex"] = b.helpers_reindex()
        if "server_reindex" in peers:
            if b.has_reindex():
                # The method `reindex` as an indexferry figure, and the plain `_reindex` beside it.
                r["snapshot_docs_per_s"]["indexferry_reindex"] = b.snapshot_indexferry("reindex")
                r["snapshot_docs_per_s"]["server_reindex"] = b.server_reindex()
            else:
                log("server_reindex: the cluster has no reindex module; not measured")
        r["snapshot_docs_per_s"]["bulk_ceiling"] = ceiling
    if "remote" in only:
        figures = b.remote()
        if figures:
            r["cross_cluster_snapshot_docs_per_s"] = figures
    if "replay" in only:
        r["replay_events_per_s"] = {"indexferry": b.replay_indexferry(keep_topic="python_consumer" in peers)}
        if "python_consumer" in peers:
            r["replay_events_per_s"]["python_consumer"] = b.replay_python()
        r["replay_events_per_s"]["bulk_ceiling"] = ceiling
    for key, rate in baseline.items():
        r.setdefault(key, {})["indexferry_baseline"] = rate
    if "reconcile" in only:
        r["reconcile"] = b.reconcile()
    if "rollover" in only:
        r["rollover_pause_s"] = b.rollovers()
    if "cost" in only:
        r["peak_rss_bytes"] = b.rss_scaling()
    if "proxy" in only:
        r["proxy"] = b.proxy()
    per_million = {}
    for tool, runs in b.cost.items():
        if tool == "snapshot_100k":
            continue
        per_million[tool] = median([m.cpu for m in runs]) * 1_000_000 / b.docs
    r["client_cpu_s_per_million"] = per_million
    r["server_cpu_s_per_million"] = {
        tool: median([m.server_cpu for m in runs]) * 1_000_000 / b.docs
        for tool, runs in b.cost.items() if tool != "snapshot_100k"
    }
    r["client_peak_rss_bytes"] = {tool: max(m.rss for m in runs) for tool, runs in b.cost.items()}
    Path(args.out).write_text(json.dumps(r, indent=2) + "\n")
    print(table(r))
    log(f"figures written to {args.out}")


def table(r):
    lines = [f"### {r['docs']:,} documents of about 1 KB", "",
             "| measure | tool | rate | indexferry / tool |", "|---|---|---:|---:|"]
    for key, unit, what in (("snapshot_docs_per_s", "docs/s", "snapshot"),
                            ("cross_cluster_snapshot_docs_per_s", "docs/s", "snapshot cross-cluster"),
                            ("replay_events_per_s", "events/s", "replay")):
        figures = r.get(key)
        if not figures:
            continue
        ours = figures["indexferry"]
        for tool, rate in figures.items():
            ratio = "" if tool == "indexferry" else f"{ours / rate:.2f}x"
            lines.append(f"| {what} | {tool} | {rate:,.0f} {unit} | {ratio} |")
        if "indexferry_reindex" in figures:
            peer = "server_reindex" if "server_reindex" in figures else "indexferry"
            lines.append(f"| {what} | indexferry_reindex / {peer} | | "
                         f"{figures['indexferry_reindex'] / figures[peer]:.2f}x |")
    rec = r.get("reconcile")
    if rec:
        lines.append(f"| reconcile, nothing to repair | indexferry | {rec['clean_s_per_million']:.0f} s per million "
                     f"({rec['clean_to_snapshot']:.2f}x the snapshot's time) | |")
        lines.append(f"| reconcile, 1 % to repair | indexferry | {rec['repair_1pct_s_per_million']:.0f} s per million | |")
    p = r.get("rollover_pause_s")
    if p:
        lines.append(f"| rollover write pause ({p['count']} rollovers) | indexferry | p50 {p['p50'] * 1000:.0f} ms, "
                     f"p99 {p['p99'] * 1000:.0f} ms | |")
    px = r.get("proxy")
    if px:
        for rate in (200, 2000):
            d, p = px[f"write_{rate}_direct"], px[f"write_{rate}_proxy"]
            lines.append(f"| single writes at {rate}/s | proxy vs direct | p50 {p['p50_ms']:.1f} vs {d['p50_ms']:.1f} ms, "
                         f"p99 {p['p99_ms']:.1f} vs {d['p99_ms']:.1f} ms ({p['rate']:.0f} vs {d['rate']:.0f}/s reached) | |")
        d, p = px["search_200_direct"], px["search_200_proxy"]
        lines.append(f"| searches at 200/s | proxy vs direct | p99 {p['p99_ms']:.2f} vs {d['p99_ms']:.2f} ms "
                     f"(+{p['p99_ms'] - d['p99_ms']:.2f} ms) | |")
        b = px["bulk"]
        lines.append(f"| _bulk through the proxy | direct | {b['proxy_docs_per_s']:,.0f} vs {b['direct_docs_per_s']:,.0f} docs/s | "
                     f"{b['proxy_docs_per_s'] / b['direct_docs_per_s']:.2f}x |")
        lines.append(f"| _bulk through the proxy | producer library | {b['library_docs_per_s']:,.0f} docs/s | "
                     f"{b['proxy_docs_per_s'] / b['library_docs_per_s']:.2f}x |")
        lines.append(f"| proxy cost | | {b['proxy_cpu_s_per_million_writes']:.0f} CPU s per million writes, "
                     f"peak RSS {b['proxy_peak_rss_bytes'] / 1e6:.0f} MB | |")
    for tool, rss in r.get("client_peak_rss_bytes", {}).items():
        cpu = r["client_cpu_s_per_million"].get(tool)
        server = r["server_cpu_s_per_million"].get(tool)
        cpu_text = f", client {cpu:.0f} / server {server:.0f} CPU s per million" if cpu is not None else ""
        lines.append(f"| cost | {tool} | peak RSS {rss / 2**20:.0f} MiB{cpu_text} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
