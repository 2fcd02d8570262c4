-- The "à affecter" queue (docs/territories.md): CAF/MSA facts received by the split département
-- 69 whose commune does not say whether they are the Métropole's (69M) or the Rhône's (69D) carry
-- the territory '69' and wait, applied to nothing, until their caisse corrects them with the
-- authority or ops decide it for their foyer. The queue is small; this index keeps reading it
-- from scanning every fact.
CREATE INDEX person_events_to_assign ON readmodel.person_events (recorded_at)
    WHERE territory = '69' AND family = 'allocataire';

-- Ops' decisions, per foyer (topic passerelle.affectation.v1): the latest holds. A fact of the
-- foyer stored waiting takes the foyer's authority, and says which decision placed it.
CREATE TABLE readmodel.territory_assignments (
    household_key text PRIMARY KEY,
    authority     text NOT NULL CHECK (authority IN ('69M', '69D')),
    decided_at    timestamptz NOT NULL,
    decided_by    text NOT NULL,
    decision_id   text NOT NULL
);
ALTER TABLE readmodel.person_events ADD COLUMN assigned_by text;
