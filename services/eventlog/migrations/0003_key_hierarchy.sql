-- The key hierarchy (docs/decisions/0007-erasure-that-forgets.md): data keys are wrapped by one
-- of 1024 bucket keys, the bucket keys by a root key kept outside the database (one file per
-- generation). An erasure gives the buckets it touched new keys and every bucket a new root
-- generation, and deletes the old root: no backup of this database can unwrap an erased key.
CREATE TABLE key_buckets (
    bucket          smallint PRIMARY KEY,
    generation      integer NOT NULL,
    root_generation integer NOT NULL,
    wrapped         bytea NOT NULL
);

-- A data key names its bucket and the bucket key generation that wraps it. Once destroyed, the
-- row keeps only its random id and the time: nothing links it to a subject any more.
ALTER TABLE data_keys ADD COLUMN bucket smallint;
ALTER TABLE data_keys ADD COLUMN generation integer;
ALTER TABLE data_keys ALTER COLUMN subject_key DROP NOT NULL;
ALTER TABLE data_keys ADD CONSTRAINT data_keys_destroyed_forget_their_subject
    CHECK (destroyed_at IS NULL OR (subject_key IS NULL AND bucket IS NULL AND generation IS NULL)) NOT VALID;
CREATE INDEX data_keys_by_bucket ON data_keys (bucket, generation) WHERE destroyed_at IS NULL;
