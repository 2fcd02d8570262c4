-- The read models live in their own schema, so a rebuild can fill a sibling schema and swap it
-- in by renaming, atomically, while the current one keeps serving. The application's
-- connections use search_path "readmodel, public"; the event log's tables stay in public.
CREATE SCHEMA IF NOT EXISTS readmodel;
ALTER TABLE projector_offsets SET SCHEMA readmodel;
ALTER TABLE applied_events SET SCHEMA readmodel;
ALTER TABLE persons SET SCHEMA readmodel;
ALTER TABLE subject_links SET SCHEMA readmodel;
ALTER TABLE identity_conflicts SET SCHEMA readmodel;
ALTER TABLE person_events SET SCHEMA readmodel;
ALTER TABLE dossiers SET SCHEMA readmodel;
ALTER TABLE dead_letters SET SCHEMA readmodel;
ALTER TABLE erased_subjects SET SCHEMA readmodel;
