-- The blind index of names and birth dates, for the API's search by nom + date_naissance:
-- HMAC(pepper, normalised name + birth date) → the subject key of the event that carried them.
-- Written by the ingestion hub when it seals an event (it alone sees the clear values), not
-- carried on the log: like the data keys, it is the hub's own state; an erasure deletes the
-- subject's rows. (It was a Kafka header first: tansu 0.6 stopped serving fetches of large
-- partitions whose records carry headers, docs/projector.md.)
CREATE TABLE search_index (
    search_key  text NOT NULL,
    subject_key text NOT NULL,
    PRIMARY KEY (search_key, subject_key)
);
CREATE INDEX search_index_by_subject ON search_index (subject_key);
