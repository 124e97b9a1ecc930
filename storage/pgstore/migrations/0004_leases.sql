-- Version 4: leases on a mailbox's outward work, and its state. Lease
-- times are the database's clock, so the nodes' clocks need not agree.
CREATE TABLE um_leases (
    mailbox_id bigint NOT NULL REFERENCES um_mailboxes ON DELETE CASCADE,
    purpose    text COLLATE "C" NOT NULL,
    holder     text COLLATE "C" NOT NULL,
    epoch      bigint NOT NULL,
    expires    timestamptz NOT NULL,
    PRIMARY KEY (mailbox_id, purpose)
);

CREATE TABLE um_outward_state (
    mailbox_id bigint NOT NULL REFERENCES um_mailboxes ON DELETE CASCADE,
    purpose    text COLLATE "C" NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (mailbox_id, purpose)
);
