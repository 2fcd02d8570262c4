-- Server-side sessions of the web console (tower-sessions records): the browser holds only an
-- opaque id in an HttpOnly cookie. A record holds who signed in (uid, SIRET, identity provider,
-- names from the id_token), the OIDC state of a sign-in in progress and the CSRF token; never a
-- NIR. Expired rows are deleted by the hub every few minutes.
CREATE SCHEMA web;
CREATE TABLE web.sessions (
    id          text PRIMARY KEY,
    -- the session's data (tower-sessions' key-value map)
    record      jsonb NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_by_expiry ON web.sessions (expires_at);

GRANT USAGE ON SCHEMA web TO passerelle_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON web.sessions TO passerelle_app;
