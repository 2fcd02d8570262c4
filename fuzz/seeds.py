"""Writes the seed corpora of the fuzz targets that read binary messages (fuzz/corpus/normalise,
fuzz/corpus/avro_envelope) and tokens (jwt_habilitations); the file readers' corpora are the test
fixtures (infra/fuzz.sh copies them). Run by infra/fuzz.sh with the test venv's Python
(fastavro), from the repository root. Deterministic: the same seeds every run.
"""

import io
import json
import pathlib
import struct

import fastavro

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    """A protobuf field: a string, bytes (an embedded message) or a bool."""
    if isinstance(value, bool):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields):
    return b"".join(field(n, v) for n, v in fields)


PERSON = message((1, "1850752121003"), (6, "MARTIN"), (7, "Paul"), (8, "1985-07-12"))
HOUSEHOLD = message((1, "521"), (2, "1234567"), (3, "DEM"))
LOCATION = message((1, "052"), (2, "52121"))
ADDRESS = message((1, "12 rue des Lilas"), (2, "52000"), (3, "52121"))

ALLOCATAIRE = [
    message((1, "a-1"), (2, "2026-09-01T09:00:00+02:00"), (3, PERSON), (4, HOUSEHOLD), (5, LOCATION),
            (11, message((1, "2026-09-01")))),
    message((1, "a-2"), (2, "2026-09-02T09:00:00+02:00"), (3, PERSON), (4, HOUSEHOLD), (5, LOCATION),
            (15, message((1, True)))),
    message((1, "a-3"), (2, "2026-09-03T09:00:00+02:00"), (3, PERSON), (4, HOUSEHOLD), (5, LOCATION),
            (17, message((1, ADDRESS)))),
    message((1, "a-4"), (2, "2026-09-04T09:00:00+02:00"), (3, PERSON), (4, HOUSEHOLD), (5, LOCATION),
            (18, message((1, "a-1"), (2, "erreur")))),
]
DEMANDEUR = [
    message((1, "f-1"), (2, "2026-09-01T09:00:00+02:00"), (3, message((2, "12345678901"), (6, "MARTIN"))),
            (4, LOCATION), (10, message((1, "1"), (2, "01"), (3, "2026-09-01")))),
    message((1, "f-2"), (2, "2026-09-05T09:00:00+02:00"), (3, message((2, "12345678901"))), (4, LOCATION),
            (13, message((1, "DUPONT"), (2, "conseiller@ft.example"), (3, "52001")))),
]
ORIENTATION = [
    message((1, "o-1"), (2, "2026-09-10T09:00:00+02:00"), (3, PERSON), (4, LOCATION),
            (11, message((1, "SOCIO_PRO"), (2, "73282932000074")))),
    message((1, "o-2"), (2, "2026-09-11T09:00:00+02:00"), (3, PERSON), (4, LOCATION),
            (13, message((1, message((1, "agent-cd52-0042"), (2, "a@b.example"), (3, "73282932000074")))))),
    message((1, "o-3"), (2, "2026-09-12T09:00:00+02:00"), (3, PERSON), (4, LOCATION), (17, b"")),
    message((1, "o-4"), (2, "2026-09-12T09:00:00+02:00"), (3, PERSON), (4, LOCATION),
            (15, message((1, "CER"), (2, "2026-09-12"), (3, "2027-03-12")))),
]


def write(target, name, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def avro_seeds():
    """Events of each family as the log holds them: Confluent framing (magic byte, schema id)
    and the Avro datum of the committed schema."""
    # The fuzz target picks the family by the first byte: Family::ALL's order.
    family_of = {"passerelle.allocataire.v1": 0, "passerelle.demandeur-emploi.v1": 1, "passerelle.orientation.v1": 2}
    for stream, family in family_of.items():
        path = sorted((ROOT / "schemas" / stream).glob("v*.avsc"))[-1]
        schema = fastavro.parse_schema(json.loads(path.read_text()))
        record = example(schema)
        if record is None:
            continue
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, record)
        framed = b"\x00" + struct.pack(">I", 1) + buffer.getvalue()
        write("avro_envelope", stream, bytes([family]) + framed)


def example(schema):
    """The smallest record of a schema: defaults, first union branches, empty collections."""
    def value_of(kind):
        if isinstance(kind, list):
            return value_of(kind[0]) if kind[0] != "null" else None
        if isinstance(kind, dict):
            t = kind.get("type")
            if t == "record":
                return {f["name"]: f.get("default", value_of(f["type"])) for f in kind["fields"]}
            if t == "enum":
                return kind["symbols"][0]
            if t == "array":
                return []
            if t == "map":
                return {}
            if kind.get("logicalType") == "timestamp-micros" or kind.get("logicalType") == "timestamp-millis":
                return 1_780_000_000_000_000 if kind.get("logicalType") == "timestamp-micros" else 1_780_000_000_000
            if kind.get("logicalType") == "date":
                return 20_000
            return value_of(t)
        return {"string": "x", "long": 1, "int": 1, "boolean": False, "bytes": b"", "double": 0.0,
                "float": 0.0, "null": None}.get(kind, "x")
    try:
        return value_of(schema)
    except Exception:  # a schema this simple writer cannot fill: no seed from it
        return None


def main():
    for index, event in enumerate(ALLOCATAIRE):
        write("normalise", f"allocataire-{index}", b"\x00" + event)
    for index, event in enumerate(DEMANDEUR):
        write("normalise", f"demandeur-{index}", b"\x01" + event)
    for index, event in enumerate(ORIENTATION):
        write("normalise", f"orientation-{index}", b"\x02" + event)
    avro_seeds()
    for index, token in enumerate([
        "Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ1enoifQ.eyJpc3MiOiJodHRwczovL2Z1enouaW52YWxpZCJ9.c2ln",
        "eyJhbGciOiJub25lIn0.e30.",
        "Basic dXNlcjpwYXNz",
    ]):
        write("jwt_habilitations", f"token-{index}", token.encode())
    habilitations = (ROOT / "infra" / "dev" / "habilitations.toml").read_bytes()
    write("jwt_habilitations", "habilitations", habilitations)
    print(f"seeds written under {CORPUS}")


if __name__ == "__main__":
    main()
