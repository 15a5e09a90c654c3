"""The replay consumer a team would write by hand: confluent-kafka reads the change events,
elasticsearch-style helpers.streaming_bulk writes them with external versions (opensearch-py
carries the same helper), offsets are committed after each acknowledged chunk. Stops after
--events events."""

import argparse
import json

from confluent_kafka import Consumer, TopicPartition
from opensearchpy import OpenSearch, helpers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--chunk-size", type=int, default=1000)
    args = ap.parse_args()

    client = OpenSearch(args.url, timeout=120)
    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    seen = 0
    positions = {}

    def actions():
        nonlocal seen
        while seen < args.events:
            for msg in consumer.consume(num_messages=args.chunk_size, timeout=1.0):
                if msg.error():
                    continue
                seen += 1
                positions[msg.partition()] = msg.offset() + 1
                event = json.loads(msg.value())
                action = {
                    "_index": args.target,
                    "_id": event["id"],
                    "version": event["seq_no"] + 1,
                    "version_type": "external",
                }
                if event["op"] == "delete":
                    action["_op_type"] = "delete"
                else:
                    action["_op_type"] = "index"
                    action["_source"] = event["source"]
                yield action

    applied = 0
    for n, (ok, item) in enumerate(
        helpers.streaming_bulk(client, actions(), chunk_size=args.chunk_size, raise_on_error=False), 1
    ):
        status = next(iter(item.values())).get("status", 0)
        if ok or status == 409:  # 409: an older version than the target holds, as expected
            applied += 1
        else:
            raise SystemExit(f"python consumer: item failed: {item}")
        if n % args.chunk_size == 0:
            consumer.commit(
                offsets=[TopicPartition(args.topic, p, o) for p, o in positions.items()], asynchronous=False
            )
    consumer.close()
    print(applied)


if __name__ == "__main__":
    main()
