-- The access journal (DOMAIN.md §6: every consultation, who, when, which person, what, for
-- what purpose; kept one year, separate from the data, append-only) and the application's
-- database role. Migrations run as the owner role (database_owner_url); the hub connects as
-- passerelle_app (database_url), which may only insert and read the journal. The yearly purge
-- is the only deletion, through a function that runs with the owner's rights.

DO $$
BEGIN
    CREATE ROLE passerelle_app LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created by another database of this cluster, or concurrently
END
$$;

CREATE SCHEMA journal;
REVOKE ALL ON SCHEMA journal FROM PUBLIC;

CREATE TABLE journal.entries (
    entry_id          bigserial PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT now(),
    request_id        uuid NOT NULL,
    -- recherche, dossier, historique, territoire, journal
    action            text NOT NULL,
    agent_uid         text,
    agent_siret       text,
    agent_role        text,
    purpose           text,
    person_id         uuid,
    persons_found     uuid[] NOT NULL DEFAULT '{}',
    sections_shown    text[] NOT NULL DEFAULT '{}',
    -- [{"section": …, "motif": …}]
    sections_withheld jsonb NOT NULL DEFAULT '[]',
    -- shown, moved_out, not_found, refused:<motif>, unauthenticated, not_habilitated, invalid
    outcome           text NOT NULL
);
CREATE INDEX entries_by_person ON journal.entries (person_id, at) WHERE person_id IS NOT NULL;
CREATE INDEX entries_by_agent ON journal.entries (agent_uid, at);
CREATE INDEX entries_by_time ON journal.entries (at);

CREATE FUNCTION journal.purge_expired() RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = journal, pg_temp
AS $$
    WITH gone AS (DELETE FROM journal.entries WHERE at < now() - interval '1 year' RETURNING 1)
    SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION journal.purge_expired() FROM PUBLIC;

GRANT USAGE ON SCHEMA journal TO passerelle_app;
GRANT SELECT, INSERT ON journal.entries TO passerelle_app;
GRANT USAGE ON SEQUENCE journal.entries_entry_id_seq TO passerelle_app;
GRANT EXECUTE ON FUNCTION journal.purge_expired() TO passerelle_app;

-- The rest of the hub's tables: the application reads and writes them.
GRANT USAGE ON SCHEMA public, readmodel TO passerelle_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, readmodel TO passerelle_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public, readmodel TO passerelle_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public, readmodel GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO passerelle_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public, readmodel GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO passerelle_app;
