-- Version 2: ModSeqs for IMAP CONDSTORE and QRESYNC, and subscriptions.

-- Each mailbox counts its changes; the transaction that takes the next value
-- holds the mailbox's row until it commits, so ModSeqs become visible in
-- the order they were handed out. Existing messages and folders start at 1.
ALTER TABLE um_mailboxes ADD COLUMN modseq bigint NOT NULL DEFAULT 1;
-- A folder's modseq is that of its creation; its HighestModSeq is the
-- largest of it, its messages' and its removals'.
ALTER TABLE um_folders ADD COLUMN modseq bigint NOT NULL DEFAULT 1;
ALTER TABLE um_messages ADD COLUMN modseq bigint NOT NULL DEFAULT 1;
CREATE INDEX um_messages_modseq ON um_messages (folder_id, modseq);

-- Messages removed from a folder (removed, expunged, moved away), for
-- Vanished. They go with their folder.
CREATE TABLE um_vanished (
    folder_id bigint NOT NULL REFERENCES um_folders ON DELETE CASCADE,
    modseq    bigint NOT NULL,
    uid       bigint NOT NULL,
    PRIMARY KEY (folder_id, modseq, uid)
);

-- Subscribed folder names, which need not exist.
CREATE TABLE um_subscriptions (
    mailbox_id bigint NOT NULL REFERENCES um_mailboxes ON DELETE CASCADE,
    name       text COLLATE "C" NOT NULL,
    PRIMARY KEY (mailbox_id, name)
);
INSERT INTO um_subscriptions (mailbox_id, name)
    SELECT id, f FROM um_mailboxes, unnest(ARRAY['INBOX', 'Trash']) AS f;
