-- An erasure no longer leaves a list of erased subject keys behind (keyed hashes of the NIR that
-- anyone with the pepper can recompute): the records of an erased person are sealed under keys
-- that no longer exist, so no replay or rebuild can read them again
-- (docs/decisions/0007-erasure-that-forgets.md).
DROP TABLE readmodel.erased_subjects;
