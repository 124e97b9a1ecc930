package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/boltstore"
)

// limits are the mailbox limits and the Trash retention the flags set.
type limits struct {
	maxMessages    int
	maxTime        time.Duration
	trashRetention time.Duration
}

func (l *limits) flags(fs *flag.FlagSet) {
	fs.IntVar(&l.maxMessages, "max-messages", 0, "most messages a mailbox holds outside Trash; a deposit past it is refused (0: no limit)")
	fs.DurationVar(&l.maxTime, "max-time", 0, "most recorded time a mailbox holds outside Trash, such as 30m (0: no limit)")
	fs.DurationVar(&l.trashRetention, "trash-retention", 0, "purge messages that have been in Trash this long, such as 720h (0: keep them)")
}

func (l *limits) check() error {
	switch {
	case l.maxMessages < 0:
		return fmt.Errorf("-max-messages %d: want 0 or more", l.maxMessages)
	case l.maxTime < 0:
		return fmt.Errorf("-max-time %v: want 0 or more", l.maxTime)
	case l.trashRetention < 0:
		return fmt.Errorf("-trash-retention %v: want 0 or more", l.trashRetention)
	}
	return nil
}

func (l *limits) apply(o *um.Options) *um.Options {
	o.MaxMessages, o.MaxRecordedTime, o.TrashRetention = l.maxMessages, l.maxTime, l.trashRetention
	return o
}

// storeCommand runs backup and check, which the embedded store offers; a
// PostgreSQL store is backed up with PostgreSQL's tools.
func (p *phone) storeCommand(ctx context.Context, cmd string, args []string, bad error) (string, error) {
	bs, ok := p.store.(*boltstore.Store)
	if !ok {
		return "", fmt.Errorf("%s works on the embedded store; back up PostgreSQL with pg_dump or pg_basebackup", cmd)
	}
	if cmd == "backup" {
		if len(args) < 1 {
			return "", bad
		}
		info, err := bs.Backup(ctx, strings.Join(args, " "))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ok %d messages\n", info.Messages), nil
	}
	if len(args) != 0 {
		return "", bad
	}
	rep, err := bs.Check(ctx)
	if err != nil {
		return "", err
	}
	if err := rep.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("ok %d messages, 0 problems\n", rep.Messages), nil
}
