-- The incremental fold (docs/projector.md, "Incremental fold"): a dossier and a household keep
-- the order key (occurred_at, recorded_at, event_id) of the last fact their fold took. Facts that
-- sort after it fold on from the stored state; anything else folds the whole history again. NULL:
-- never folded since this migration, folded in full on the next fact.
ALTER TABLE readmodel.dossiers
    ADD COLUMN folded_occurred_at timestamptz,
    ADD COLUMN folded_recorded_at timestamptz,
    ADD COLUMN folded_event_id    text;

-- A household's RSA right state, folded from the right facts of all its members (a member who
-- moved keeps facts that count for the former household, so it cannot live on the dossiers
-- alone). The members' dossiers carry a copy, written in the same transaction.
CREATE TABLE readmodel.households (
    household_key      text PRIMARY KEY,
    right_state        text,
    right_state_at     timestamptz,
    right_motif        text,
    folded_occurred_at timestamptz,
    folded_recorded_at timestamptz,
    folded_event_id    text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
