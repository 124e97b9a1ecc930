package um

import "context"

// Limits returns the bounds Options.MaxMessages and Options.MaxRecordedTime
// set, for servers that show them to clients (IMAP QUOTA).
func (s *Service) Limits() Limits { return s.limits() }

// Usage returns what a mailbox holds outside Trash, counted by the store
// when it implements Counter.
func (s *Service) Usage(ctx context.Context, mailbox string) (Usage, error) {
	return s.usage(ctx, mailbox)
}
