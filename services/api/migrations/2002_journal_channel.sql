-- Which channel a journaled request came through: the REST API, its gRPC face, or the web
-- console. Rows written before this column existed came through the API.
ALTER TABLE journal.entries ADD COLUMN channel text NOT NULL DEFAULT 'api';
