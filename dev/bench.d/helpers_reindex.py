"""The Python client's helpers.reindex, as a team would call it: scan the source, bulk into the
target. opensearch-py carries the same helpers as the elasticsearch client (whose 8.x and 9.x
releases refuse servers that are not Elasticsearch)."""

import argparse

from opensearchpy import OpenSearch, helpers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--chunk-size", type=int, default=1000)
    args = ap.parse_args()
    client = OpenSearch(args.url, timeout=120)
    ok, errors = helpers.reindex(
        client,
        args.source,
        args.target,
        chunk_size=args.chunk_size,
        scan_kwargs={"size": args.chunk_size},
        bulk_kwargs={"raise_on_error": False},
    )
    if errors:
        raise SystemExit(f"helpers.reindex: {len(errors)} errors, first: {errors[0]}")
    print(ok)


if __name__ == "__main__":
    main()
