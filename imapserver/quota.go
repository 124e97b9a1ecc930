package imapserver

import (
	"fmt"

	"github.com/emersion/go-imap/v2"
)

// QUOTA (RFC 9208): a voice mailbox is one quota root, "", that every
// folder belongs to. MESSAGE is the count outside Trash against
// um.Options.MaxMessages; STORAGE is the size of those messages in KiB
// against the most they can take up, MaxMessages messages of at most
// Options.AppendLimit each. Without MaxMessages there is no quota and the
// root has no resources.

func (c *conn) cmdQuota(tag string, root bool) error {
	a := c.args().sp()
	var name string
	if root {
		name = a.mailbox()
	} else {
		name = a.astring()
	}
	if err := a.end(); err != nil {
		return err
	}
	if root {
		if _, err := c.sess.mb.Folder(c.sess.ctx, folderName(name)); err != nil {
			return c.srv.imapError(err, roleSource)
		}
		c.enc.raw("* QUOTAROOT ")
		c.enc.mailbox(name)
		c.enc.raw(` ""` + "\r\n")
	} else if name != "" {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: "No such quota root"}
	}
	if err := c.writeQuota(); err != nil {
		return err
	}
	if root {
		return c.ok(tag, "", "GETQUOTAROOT completed")
	}
	return c.ok(tag, "", "GETQUOTA completed")
}

func (c *conn) writeQuota() error {
	lim := c.srv.svc.Limits()
	if lim.MaxMessages <= 0 {
		c.enc.raw(`* QUOTA "" ()` + "\r\n")
		return nil
	}
	u, err := c.srv.svc.Usage(c.sess.ctx, c.sess.mailbox)
	if err != nil {
		return c.srv.imapError(err, roleSource)
	}
	storage := int64(lim.MaxMessages) * int64(c.srv.opts.AppendLimit) / 1024
	c.enc.raw(fmt.Sprintf("* QUOTA \"\" (STORAGE %d %d MESSAGE %d %d)\r\n", (u.Size+1023)/1024, storage, u.Messages, lim.MaxMessages))
	return nil
}
