-- The personal data of each event, as sealed on the log (AES-256-GCM under the subject's data
-- key, associated data = event_id): the API opens it at read time for the identity section.
-- Destroying the data key (erasure) makes it unreadable here as on the log.
ALTER TABLE readmodel.person_events ADD COLUMN sealed_key_id uuid;
ALTER TABLE readmodel.person_events ADD COLUMN sealed_nonce bytea;
ALTER TABLE readmodel.person_events ADD COLUMN sealed_data bytea;
-- The commune of residence the event gave (INSEE code), for the identity section.
ALTER TABLE readmodel.person_events ADD COLUMN commune text;
-- The blind index of the person's name and birth date (HMAC with the pepper, computed by the
-- hub at ingestion), for search by nom + date_naissance without storing either.
ALTER TABLE readmodel.person_events ADD COLUMN search_key text;
CREATE INDEX person_events_by_search ON readmodel.person_events (search_key) WHERE search_key IS NOT NULL;
-- The caisse of the household the event is about, for the CAF/MSA agents' reach.
ALTER TABLE readmodel.person_events ADD COLUMN organisme text;
