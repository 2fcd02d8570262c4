-- After an erasure the journal keeps every read of the erased person (DOMAIN.md §6: one year),
-- but under a new random id: the hub derives person ids from keyed hashes of identifiers, so an
-- operator holding the pepper and a NIR could otherwise find who read that person and when.
-- The application may not update the journal; this function, with the owner's rights, only
-- replaces ids.
CREATE FUNCTION journal.pseudonymise(erased uuid[]) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = journal, pg_temp
AS $$
DECLARE
    person uuid;
    replacement uuid;
    changed bigint := 0;
    rows bigint;
BEGIN
    FOREACH person IN ARRAY erased LOOP
        replacement := gen_random_uuid();
        UPDATE journal.entries SET person_id = replacement WHERE person_id = person;
        GET DIAGNOSTICS rows = ROW_COUNT;
        changed := changed + rows;
        UPDATE journal.entries SET persons_found = array_replace(persons_found, person, replacement)
         WHERE persons_found @> ARRAY[person];
        GET DIAGNOSTICS rows = ROW_COUNT;
        changed := changed + rows;
    END LOOP;
    RETURN changed;
END
$$;
REVOKE ALL ON FUNCTION journal.pseudonymise(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION journal.pseudonymise(uuid[]) TO passerelle_app;
