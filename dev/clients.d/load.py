"""A write load through an official Python client, as an application would write.

Used by the capture proxy's tests and by `dev/demo --capture proxy`: the application knows
nothing of indexferry; it points its client at the proxy. Writes documents by id (index,
create, partial update, doc_as_upsert, delete, and with --auto-ids index with the id left to
the cluster), `helpers.bulk`, `streaming_bulk` and `parallel_bulk` batches, `delete_by_query`
and `update_by_query` over a few ids, and documents that carry their own version
(`external_gte`, as Invenio's indexer writes them), at a set rate, until SIGTERM; then writes
a JSON report: done, failed and the failures' kinds.

Expected refusals are the application's own answers, not failures: a create of an id that
exists (409), a delete or update of an id already deleted (404), a version below the
stored one (409), an update that still meets a concurrent write after retry_on_conflict
(409, counted as `conflicts`).

With `--retry-for SECONDS` it retries as an application that rides out outages does: a
request refused for now (429, 502, 503, 504, after its `Retry-After` when it gives one) or
whose connection failed is sent again, and a bulk's items refused so are sent again, until
they succeed or the time is up; a write that succeeded on a later attempt is done, not
failed (`retried` counts the attempts made again). Every write names its id, so a retried
write can never create a second document.
"""

import argparse
import json
import random
import signal
import sys
import threading
import time


def client_for(kind, urls, compress, retries):
    """The client over every URL given (several proxies, as behind a load balancer): a
    request that cannot connect, or meets 502/503/504, is sent again to another one, up to
    `retries` times, as the clients do by default."""
    hosts = urls.split(",")
    if kind == "elasticsearch":
        from elasticsearch import Elasticsearch, helpers

        return Elasticsearch(hosts, http_compress=compress, request_timeout=10, max_retries=retries), helpers
    from opensearchpy import OpenSearch, helpers

    return OpenSearch(hosts, http_compress=compress, timeout=10, max_retries=retries), helpers


# What a retrying application sends again: a full queue, an unreachable or refusing
# upstream, a proxy that cannot publish (its 503 names the write as not taken, or as taken
# without its event: sending it again publishes one).
TRANSIENT_STATUSES = (429, 502, 503, 504)


def status_of(e):
    for attr in ("status_code", "status", "meta"):
        v = getattr(e, attr, None)
        if isinstance(v, int):
            return v
        if v is not None and isinstance(getattr(v, "status", None), int):
            return v.status
    return None


def transient(e):
    """A refusal for now or a lost connection: worth sending the same request again."""
    if status_of(e) in TRANSIENT_STATUSES:
        return True
    return type(e).__name__ in ("ConnectionError", "ConnectionTimeout")


def transient_item(item):
    """A bulk item refused for now, or not sent because the whole request failed so."""
    info = list(item.values())[0]
    status = info.get("status")
    exception = info.get("exception")
    return status in TRANSIENT_STATUSES or (exception is not None and transient(exception))


def retry_after(e):
    """Seconds the answer asked to wait (`Retry-After`), if it said."""
    headers = getattr(getattr(e, "meta", None), "headers", None)
    try:
        return float(headers.get("retry-after")) if headers is not None else None
    except (TypeError, ValueError):
        return None


class Load:
    def __init__(self, args):
        self.args = args
        self.es, self.helpers = client_for(args.client, args.url, args.compress, args.retries)
        self.lock = threading.Lock()
        self.done = 0
        self.failed = 0
        self.conflicts = 0
        self.retried = 0
        self.kinds = {}
        self.stop = threading.Event()
        self.rng = random.Random(args.seed)

    def count(self, ok, kind=None, n=1, detail=None):
        with self.lock:
            if ok:
                self.done += n
            else:
                self.failed += n
                self.kinds[kind] = self.kinds.get(kind, 0) + n
                if self.kinds[kind] <= 3:
                    said = f": {str(detail)[:1000]}" if detail is not None else ""
                    print(f"load: write failed: {kind}{said}", file=sys.stderr, flush=True)

    def backoff(self, delay, deadline, e=None):
        """Waits before an attempt again: the answer's Retry-After, else `delay`, never past
        `deadline`; the next delay."""
        with self.lock:
            self.retried += 1
        wait = retry_after(e) if e is not None else None
        time.sleep(max(0.0, min(wait if wait is not None else delay, deadline - time.monotonic())))
        return min(delay * 2, 2.0)

    def call(self, request):
        """`request()`, sent again while it fails for now (`transient`), for up to --retry-for."""
        deadline, delay = time.monotonic() + self.args.retry_for, 0.25
        while True:
            try:
                return request()
            except Exception as e:
                if not self.args.retry_for or not transient(e) or time.monotonic() >= deadline:
                    raise
                delay = self.backoff(delay, deadline, e)

    def bulk(self, actions, chunk_size=500, parallel=False):
        """`streaming_bulk` (or `parallel_bulk`, two threads, chunks of `chunk_size`) over
        `actions`: (ok, item) for each, in order. With --retry-for, the items refused for now
        and those a failed request did not send go again."""
        results = [None] * len(actions)
        todo = list(range(len(actions)))
        deadline, delay = time.monotonic() + self.args.retry_for, 0.25
        while True:
            got, failure = [], None
            try:
                helper = self.helpers.parallel_bulk if parallel else self.helpers.streaming_bulk
                extra = {"thread_count": 2} if parallel else {}
                for r in helper(
                    self.es,
                    [actions[n] for n in todo],
                    chunk_size=chunk_size,
                    raise_on_error=False,
                    raise_on_exception=False,
                    **extra,
                ):
                    got.append(r)
            except Exception as e:
                if not self.args.retry_for or not transient(e):
                    raise
                failure = e
            for n, r in zip(todo, got):
                results[n] = r
            again = [n for n, (ok, item) in zip(todo, got) if not ok and transient_item(item)] + todo[len(got):]
            if not again or not self.args.retry_for or time.monotonic() >= deadline:
                if failure is not None and len(got) < len(todo):
                    raise failure
                return results
            todo = again
            # A whole request refused (its answer, with any Retry-After, is in each item).
            refused = next((list(item.values())[0].get("exception") for ok, item in got if not ok), None)
            delay = self.backoff(delay, deadline, failure or refused)

    # The two clients name the body differently (elasticsearch 8: document= and doc=;
    # opensearch-py: body=).
    def index(self, i, doc, **kw):
        if self.args.client == "elasticsearch":
            return self.call(lambda: self.es.index(index=self.args.index, id=i, document=doc, **kw))
        return self.call(lambda: self.es.index(index=self.args.index, id=i, body=doc, params=kw))

    def create(self, i, doc):
        if self.args.client == "elasticsearch":
            return self.call(lambda: self.es.create(index=self.args.index, id=i, document=doc))
        return self.call(lambda: self.es.create(index=self.args.index, id=i, body=doc))

    def delete(self, i):
        return self.call(lambda: self.es.delete(index=self.args.index, id=i))

    # Updates retry a conflict with a concurrent write of the same document, as
    # applications do; one that still conflicts is the cluster's answer, not a failure.
    def update(self, i, doc, upsert=False):
        try:
            if self.args.client == "elasticsearch":
                return self.call(
                    lambda: self.es.update(index=self.args.index, id=i, doc=doc, doc_as_upsert=upsert or None, retry_on_conflict=3)
                )
            body = {"doc": doc}
            if upsert:
                body["doc_as_upsert"] = True
            return self.call(lambda: self.es.update(index=self.args.index, id=i, body=body, retry_on_conflict=3))
        except Exception as e:
            if status_of(e) != 409:
                raise
            with self.lock:
                self.conflicts += 1

    def by_query(self, delete, ids):
        query = {"ids": {"values": ids}}
        api = self.es.delete_by_query if delete else self.es.update_by_query
        if self.args.client == "elasticsearch":
            return self.call(lambda: api(index=self.args.index, query=query, conflicts="proceed"))
        return self.call(lambda: api(index=self.args.index, body={"query": query}, conflicts="proceed"))

    def doc(self, n):
        return {"title": f"record {n}", "n": n, "at": time.time(), "tags": [f"t{n % 7}"]}

    def one(self, rng):
        a = self.args
        n = rng.randrange(a.ids)
        i = f"doc-{n}"
        op = rng.random()
        try:
            if op < 0.30:
                self.index(i, self.doc(n))
            elif op < 0.40:
                try:
                    self.create(i, self.doc(n))
                except Exception as e:
                    if status_of(e) != 409:
                        raise
            elif op < 0.60:
                try:
                    self.update(i, {"n": n, "at": time.time()})
                except Exception as e:
                    if status_of(e) != 404:
                        raise
            elif op < 0.70:
                self.update(i, self.doc(n), upsert=True)
            elif op < 0.82:
                try:
                    self.delete(i)
                except Exception as e:
                    if status_of(e) != 404:
                        raise
            elif op < 0.86:
                # A by-query over a few ids: run by the proxy, each changed document published.
                ids = [f"doc-{rng.randrange(a.ids)}" for _ in range(3)]
                r = self.by_query(op < 0.84, ids)
                if r.get("failures"):
                    raise RuntimeError(f"by-query failures: {r['failures'][:1]}")
            elif op < 0.92:
                # The application's own versions: its clock in milliseconds.
                v = int(time.time() * 1000)
                try:
                    self.index(f"ext-{n}", self.doc(n), version=v, version_type="external_gte")
                except Exception as e:
                    if status_of(e) != 409:
                        raise
            elif a.auto_ids and op < 0.94:
                # The cluster chooses the id: never sent again (a retry would be a second document).
                if self.args.client == "elasticsearch":
                    self.es.index(index=a.index, document=self.doc(n))
                else:
                    self.es.index(index=a.index, body=self.doc(n))
            else:
                actions = []
                for _ in range(20):
                    m = rng.randrange(a.ids)
                    if rng.random() < 0.8:
                        actions.append({"_op_type": "index", "_index": a.index, "_id": f"doc-{m}", "_source": self.doc(m)})
                    else:
                        actions.append({"_op_type": "delete", "_index": a.index, "_id": f"doc-{m}"})
                mode = rng.random()
                if mode < 0.33 and not a.retry_for:
                    # helpers.bulk: a count and the failed items (nothing to send again).
                    ok, errors = self.helpers.bulk(self.es, actions, raise_on_error=False, raise_on_exception=False)
                    bad = [item for item in errors if list(item.values())[0].get("status") != 404]
                    self.count(True, n=ok)
                    if bad:
                        self.count(False, f"bulk item {list(bad[0].values())[0].get('status')}", n=len(bad), detail=bad[0])
                    return
                # Else streaming_bulk, or parallel_bulk: two chunks of ten at once.
                parallel = mode < 0.66
                results = self.bulk(actions, chunk_size=10 if parallel else 500, parallel=parallel)
                ok = sum(1 for done, _ in results if done)
                bad = [item for done, item in results if not done and list(item.values())[0].get("status") != 404]
                self.count(True, n=ok)
                if bad:
                    self.count(False, f"bulk item {list(bad[0].values())[0].get('status')}", n=len(bad), detail=bad[0])
                return
            self.count(True)
        except Exception as e:
            self.count(False, f"{type(e).__name__} {status_of(e)}", detail=e)

    def worker(self, k):
        rng = random.Random(self.args.seed * 1000 + k)
        per = self.args.concurrency / max(self.args.rate, 1)
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.one(rng)
            next_at += per
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                next_at = time.monotonic()

    def run(self):
        a = self.args
        if a.initial:
            actions = [{"_op_type": "index", "_index": a.index, "_id": f"doc-{n}", "_source": self.doc(n)} for n in range(a.initial)]
            for ok, item in self.bulk(actions):
                self.count(ok, None if ok else f"initial {list(item.values())[0].get('status')}")
            print(f"load: initial {a.initial} documents written", file=sys.stderr, flush=True)
        threads = [threading.Thread(target=self.worker, args=(k,), daemon=True) for k in range(a.concurrency)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + a.seconds if a.seconds else None
        while not self.stop.is_set():
            if deadline and time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.stop.set()
        for t in threads:
            # A write being retried finishes (or gives up) before the report.
            t.join(timeout=30 + a.retry_for)
        self.report()

    def report(self):
        with self.lock:
            r = {
                "done": self.done,
                "failed": self.failed,
                "failures": self.kinds,
                "conflicts": self.conflicts,
                "retried": self.retried,
            }
        with open(self.args.report, "w") as f:
            json.dump(r, f)
        print(f"load: done={r['done']} failed={r['failed']} retried={r['retried']}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the proxy (or cluster) the client talks to; several, comma-separated")
    ap.add_argument("--retries", type=int, default=0, help="the client's max_retries (another URL on a connection error)")
    ap.add_argument("--client", choices=["elasticsearch", "opensearch"], default="elasticsearch")
    ap.add_argument("--index", required=True, help="the alias the application writes through")
    ap.add_argument("--initial", type=int, default=0, help="documents written with streaming_bulk first")
    ap.add_argument("--ids", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=50, help="writes/s after the initial ones")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: at SIGTERM)")
    ap.add_argument("--compress", action="store_true", help="http_compress=True")
    ap.add_argument(
        "--auto-ids",
        action="store_true",
        help="2%% of the writes let the cluster choose the id (never retried: a retry would make a second document)",
    )
    ap.add_argument(
        "--retry-for",
        type=float,
        default=0,
        metavar="SECONDS",
        help="send a write refused for now (429, 502, 503, 504: after its Retry-After) or whose connection failed "
        "again, for up to this long (0: never)",
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--report", required=True)
    args = ap.parse_args()
    load = Load(args)
    signal.signal(signal.SIGTERM, lambda *_: load.stop.set())
    load.run()


if __name__ == "__main__":
    main()
