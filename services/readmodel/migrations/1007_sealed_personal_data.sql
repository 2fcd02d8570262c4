-- The personal data of each event, as sealed on the log (AES-256-GCM under the subject's data
-- key, associated data = event_id): the API opens it at read time for the identity section.
-- Destroying the data key (erasure) makes it unreadable here as on the log.
ALTER TABLE readmodel.person_events ADD COLUMN sealed_key_id uuid;
ALTER TABLE readmodel.person_events ADD COLUMN sealed_nonce bytea;
ALTER TABLE readmodel.person_events ADD COLUMN sealed_data bytea;
-- The commune of residence the event gave (INSEE code), for the identity section.
ALTER TABLE readmodel.person_events ADD COLUMN commune text;
-- The caisse of the household the event is about, for the CAF/MSA agents' reach.
ALTER TABLE readmodel.person_events ADD COLUMN organisme text;
