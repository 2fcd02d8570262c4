-- The subject key of a dead letter, so a dossier created after its poison record arrived (on
-- another partition) is still flagged incomplete.
ALTER TABLE dead_letters ADD COLUMN subject_key text;
CREATE INDEX dead_letters_open_by_subject ON dead_letters (subject_key) WHERE replayed_at IS NULL;
