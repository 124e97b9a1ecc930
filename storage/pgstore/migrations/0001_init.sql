-- Version 1: mailboxes, folders, messages and their content.

-- UIDVALIDITY values come from one sequence, so a folder created again under
-- an old name always gets a larger value. It starts at the current Unix time:
-- a database restored from scratch still hands out values larger than any a
-- client cached from the old one.
CREATE SEQUENCE um_uidvalidity AS bigint MINVALUE 1 MAXVALUE 4294967295;
SELECT setval('um_uidvalidity', extract(epoch FROM now())::bigint);

-- Names compare byte for byte (COLLATE "C"), as Go sorts strings.
CREATE TABLE um_mailboxes (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE
);

CREATE TABLE um_folders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox_id  bigint NOT NULL REFERENCES um_mailboxes ON DELETE CASCADE,
    name        text COLLATE "C" NOT NULL,
    uidvalidity bigint NOT NULL DEFAULT nextval('um_uidvalidity'),
    uidnext     bigint NOT NULL DEFAULT 1,
    UNIQUE (mailbox_id, name)
);

-- Times are Unix nanoseconds (NULL for the zero time), so a message reads
-- back exactly as it was stored.
CREATE TABLE um_messages (
    mailbox_id    bigint NOT NULL REFERENCES um_mailboxes ON DELETE CASCADE,
    id            uuid NOT NULL,
    folder_id     bigint NOT NULL REFERENCES um_folders ON DELETE CASCADE,
    uid           bigint NOT NULL,
    flags         integer NOT NULL DEFAULT 0,
    keywords      text[] NOT NULL DEFAULT '{}',
    urgent        boolean NOT NULL DEFAULT false,
    caller_number text NOT NULL DEFAULT '',
    caller_name   text NOT NULL DEFAULT '',
    recorded_ns   bigint,
    duration_ns   bigint NOT NULL DEFAULT 0,
    audio_type    text NOT NULL DEFAULT '',
    transcript    text NOT NULL DEFAULT '',
    size          bigint NOT NULL,
    added_ns      bigint,
    raw           boolean NOT NULL DEFAULT false,
    PRIMARY KEY (mailbox_id, id),
    UNIQUE (folder_id, uid)
);

-- Content lives apart from the metadata, so listing a folder never reads
-- audio, and in chunks, so neither side holds a whole recording in memory.
-- The foreign key is checked at commit: Append writes the chunks first and
-- takes the folder's UID lock only for its last statements.
CREATE TABLE um_content (
    mailbox_id bigint NOT NULL,
    message_id uuid NOT NULL,
    seq        integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (mailbox_id, message_id, seq),
    FOREIGN KEY (mailbox_id, message_id) REFERENCES um_messages (mailbox_id, id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);

-- um_keywords normalizes a keyword list as um.FlagOp.Apply does: sorted byte
-- for byte, without empty or case-insensitively repeated keywords.
CREATE FUNCTION um_keywords(kw text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(k ORDER BY k COLLATE "C"), '{}')
    FROM (SELECT DISTINCT ON (lower(k)) k
          FROM unnest(kw) AS u(k)
          WHERE k <> ''
          ORDER BY lower(k), k COLLATE "C") AS d
$$;

-- um_keywords_without removes the keywords of drop from kw, ignoring case.
CREATE FUNCTION um_keywords_without(kw text[], drop text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT um_keywords(ARRAY(
        SELECT k FROM unnest(kw) AS u(k)
        WHERE lower(k) <> ALL (SELECT lower(x) FROM unnest(drop) AS v(x))))
$$;
