-- Subjects erased (lawful request or end of retention). Events about them that happened before
-- the erasure are never projected again, even by a rebuild; their data keys are destroyed too.
CREATE TABLE erased_subjects (
    subject_key text PRIMARY KEY,
    erased_at   timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL
);
