-- Bodies with their managedFields and annotations pass 2 KB, so PostgreSQL compresses
-- them when a row is stored: every write compresses the object's body and the log
-- entry's body and prev_body. lz4 does it in about half the time of the default pglz
-- (measured: 96-104 against 52-58 us per log row of two 2.1 KB bodies; reading them back
-- as text 20 against 18 us), at 6 % more bytes (docs/adr/0011-ten-thousand-workspaces.md,
-- 2026-11-27 session 5). Rows already stored keep their compression; new ones use lz4.
-- A server built without lz4 keeps pglz.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'
               AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE objects ALTER COLUMN body SET COMPRESSION lz4;
        ALTER TABLE event_log ALTER COLUMN body SET COMPRESSION lz4,
                              ALTER COLUMN prev_body SET COMPRESSION lz4;
    END IF;
END
$$;
