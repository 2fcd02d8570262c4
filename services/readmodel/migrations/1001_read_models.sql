-- Read models of the dossier projection, written by the projector, read by the API.
-- Every table here can be rebuilt from the topics (passerelle projections rebuild).

-- Progress of each projection: the next offset to apply per topic partition. Written in the
-- same transaction as the effects of the events before it.
CREATE TABLE projector_offsets (
    projection  text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Every (source, event_id) applied, with the fingerprint of its fact: a seen pair is skipped, the
-- same pair with another fingerprint is a conflict (dead-lettered).
CREATE TABLE applied_events (
    projection  text   NOT NULL,
    source      text   NOT NULL,
    event_id    text   NOT NULL,
    fingerprint bytea  NOT NULL,
    topic       text   NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, source, event_id)
);

-- Persons minted by identity resolution; a merged person redirects to the one it was merged into.
CREATE TABLE persons (
    person_id   uuid PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    merged_into uuid REFERENCES persons (person_id)
);

-- Which person each subject key (nir:, ft:, dep:, civ:) belongs to.
CREATE TABLE subject_links (
    subject_key text PRIMARY KEY,
    person_id   uuid NOT NULL REFERENCES persons (person_id),
    linked_at   timestamptz NOT NULL DEFAULT now(),
    via_event   text NOT NULL
);
CREATE INDEX subject_links_by_person ON subject_links (person_id);

-- A key claimed by an event for one person while linked to another: for a human to decide.
CREATE TABLE identity_conflicts (
    conflict_id  bigserial PRIMARY KEY,
    subject_key  text NOT NULL,
    linked_to    uuid NOT NULL,
    claimed_for  uuid NOT NULL,
    source       text NOT NULL,
    event_id     text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    resolution   text,
    UNIQUE (subject_key, linked_to, claimed_for)
);

-- The events of each person, in a form the fold reads back: the timeline of the dossier and
-- the source of every section's state. Corrections and retractions mark the events they name.
CREATE TABLE person_events (
    person_id     uuid NOT NULL,
    source        text NOT NULL,
    event_id      text NOT NULL,
    family        text NOT NULL,
    event_type    text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL,
    relayed_by    text,
    household_key text,
    role          text,
    territory     text,
    fact          jsonb NOT NULL,
    corrects      text,
    superseded_by text,
    retracted_by  text,
    PRIMARY KEY (person_id, source, event_id)
);
CREATE INDEX person_events_by_event ON person_events (source, event_id);
CREATE INDEX person_events_by_household ON person_events (household_key) WHERE household_key IS NOT NULL;

-- Current state of each dossier, folded from person_events.
CREATE TABLE dossiers (
    person_id          uuid PRIMARY KEY REFERENCES persons (person_id),
    territory          text,
    territory_since    timestamptz,
    previous_territory text,
    household_key      text,
    role               text,
    right_state        text,
    right_state_at     timestamptz,
    right_motif        text,
    sdd                boolean NOT NULL DEFAULT false,
    sdd_since          timestamptz,
    ft_status          text,
    ft_status_at       timestamptz,
    ft_categorie       text,
    ft_accompagnement  text,
    orientation_status text,
    orientation_type   text,
    oriented_at        timestamptz,
    structure_siret    text,
    referent_uid       text,
    referent_siret     text,
    referent_since     timestamptz,
    contract_kind      text,
    contract_start     date,
    contract_end       date,
    opposition         boolean NOT NULL DEFAULT false,
    consent_diagnostic boolean NOT NULL DEFAULT false,
    last_contact_at    timestamptz,
    incomplete         boolean NOT NULL DEFAULT false,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dossiers_by_territory ON dossiers (territory);

-- Events that could not be decoded or applied, with the reason and where they came from.
CREATE TABLE dead_letters (
    dead_letter_id bigserial PRIMARY KEY,
    projection     text NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    "offset"       bigint NOT NULL,
    source         text,
    event_id       text,
    person_id      uuid,
    reason         text NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    replayed_at    timestamptz,
    UNIQUE (projection, topic, partition, "offset")
);
