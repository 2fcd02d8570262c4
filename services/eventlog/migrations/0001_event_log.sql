-- Data keys for crypto-shredding: one live key per subject key, wrapped by the master key.
-- Destroying a key (erasure) nulls the wrapped key: events sealed with it become unreadable.
CREATE TABLE data_keys (
    key_id       uuid PRIMARY KEY,
    subject_key  text NOT NULL,
    wrapped_key  bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
);
CREATE UNIQUE INDEX data_keys_one_live_key_per_subject ON data_keys (subject_key) WHERE destroyed_at IS NULL;
CREATE INDEX data_keys_by_subject ON data_keys (subject_key);

-- The schema registry: every committed version of every subject, with its Confluent id.
CREATE TABLE schema_registry (
    id          serial PRIMARY KEY,
    subject     text NOT NULL,
    version     integer NOT NULL,
    schema      text NOT NULL,
    fingerprint text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subject, version)
);
