-- Version 3: delivery modes held by the store. A mailbox's rows all name
-- one mode; each is a node that holds it. Claims lock the mailbox's row, so
-- two nodes claiming two modes at once end with one.
CREATE TABLE um_delivery (
    mailbox_id bigint NOT NULL REFERENCES um_mailboxes ON DELETE CASCADE,
    node       text COLLATE "C" NOT NULL,
    mode       text NOT NULL,
    PRIMARY KEY (mailbox_id, node)
);
