-- Deterministic person ids and human identity decisions (docs/projector.md, "Identity").
-- A person's id derives from its identity key (the strongest subject key it was minted from),
-- so a rebuild mints the same ids; a decision names persons by those keys.
ALTER TABLE readmodel.persons ADD COLUMN id_key text;
-- The subject key of each event, so a key moved to another person by a decision takes its own
-- events along.
ALTER TABLE readmodel.person_events ADD COLUMN subject_key text;
CREATE INDEX person_events_by_subject ON readmodel.person_events (subject_key);

-- Decisions applied (from the identity topic), the audit trail of every conflict's outcome.
CREATE TABLE readmodel.identity_decisions (
    decision_id  uuid PRIMARY KEY,
    decided_at   timestamptz NOT NULL,
    decided_by   text NOT NULL,
    subject_key  text NOT NULL,
    holder_key   text NOT NULL,
    claimant_key text NOT NULL,
    decision     text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now()
);

-- Which person a decided key belongs to: identity resolution follows it before any rule.
CREATE TABLE readmodel.identity_pins (
    subject_key text PRIMARY KEY,
    owner_key   text NOT NULL,
    decision_id uuid NOT NULL
);
