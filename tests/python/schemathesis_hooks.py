"""Schemathesis hooks of the API feuille de route's OpenAPI test (tests/tests/openapi.rs).

The one rule of the document JSON Schema cannot say: a 15-character NIR ends with its key,
97 − (the first 13 characters as a number, 2A → 19 and 2B → 18) mod 97. Schemathesis draws the
last two digits at random, so this hook writes the right key over them; nothing else of any
body is touched, and positive-data acceptance stays on for every field and operation.

Likewise a page cursor (`curseur`) is the `suivant` of an earlier page, which no pattern can
describe: the hook turns the string drawn into a well-formed cursor (a position derived from
it) for the operation, so a request the document calls valid is one the API must accept.
"""

import base64
import hashlib

import schemathesis


def nir_key(first13):
    number = int(first13.replace("2A", "19", 1).replace("2B", "18", 1))
    return f"{97 - number % 97:02d}"


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and isinstance(body.get("nir"), str) and len(body["nir"]) == 15:
        body["nir"] = body["nir"][:13] + nir_key(body["nir"][:13])
    return body


def cursor_for(path, drawn):
    digest = hashlib.sha256(drawn.encode()).hexdigest()
    micros = int(digest[:8], 16)
    text = f"h:{micros}:{micros}:{digest[:16]}" if path.endswith("/historique") else f"j:{micros}:{micros}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@schemathesis.hook
def map_query(context, query):
    if isinstance(query, dict) and isinstance(query.get("curseur"), str):
        query["curseur"] = cursor_for(context.operation.path, query["curseur"])
    return query
