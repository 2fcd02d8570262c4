-- The "à affecter" queue (docs/territories.md): CAF/MSA facts received by the split département
-- 69 whose commune does not say whether they are the Métropole's (69M) or the Rhône's (69D) carry
-- the territory '69' and wait, applied to nothing, until their caisse corrects them with the
-- authority. The queue is small; this index keeps reading it from scanning every fact.
CREATE INDEX person_events_to_assign ON readmodel.person_events (recorded_at)
    WHERE territory = '69' AND family = 'allocataire';
