-- Found by measuring the projection (docs/projector.md): without these, every event scanned
-- person_events (to find a correction or retraction naming it) and every household refold
-- scanned dossiers, so throughput fell as the read models grew.
CREATE INDEX person_events_by_target ON readmodel.person_events (source, corrects) WHERE corrects IS NOT NULL;
CREATE INDEX dossiers_by_household ON readmodel.dossiers (household_key) WHERE household_key IS NOT NULL;
