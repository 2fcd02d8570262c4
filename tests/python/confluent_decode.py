"""Reads Passerelle topics with Confluent's own Python client and Avro deserializer.

Proves that standard Kafka/Avro tooling decodes the hub's records with no code of ours: the
schema is fetched from the hub's registry by the id in each record's Confluent framing. A record
is sealed whole (docs/decisions/0007-erasure-that-forgets.md): what a consumer without the
subject's data key reads is the key's id, the content version, a nonce and a ciphertext.

usage: confluent_decode.py BOOTSTRAP REGISTRY_URL TOPIC EXPECTED_COUNT
prints one JSON object per record: {"key", "key_id", "content_version", "nonce", "ciphertext"}
(bytes in hex)
"""
import json
import sys
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main() -> int:
    bootstrap, registry_url, topic, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    registry = SchemaRegistryClient({"url": registry_url})
    deserialize = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"confluent-check-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen = 0
    idle = 0
    try:
        while seen < expected and idle < 60:
            message = consumer.poll(1.0)
            if message is None:
                idle += 1
                continue
            if message.error():
                print(f"consumer error: {message.error()}", file=sys.stderr)
                idle += 1
                continue
            value = deserialize(message.value(), SerializationContext(topic, MessageField.VALUE))
            print(json.dumps({
                "key": message.key().decode(),
                "fields": sorted(value.keys()),
                "key_id": value["key_id"],
                "content_version": value["content_version"],
                "nonce": value["nonce"].hex(),
                "ciphertext": value["ciphertext"].hex(),
            }), flush=True)
            seen += 1
    finally:
        consumer.close()
    if seen < expected:
        print(f"only {seen} of {expected} records decoded", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
