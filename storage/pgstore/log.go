package pgstore

import (
	"log/slog"

	"github.com/embeddedum/um/internal/slogf"
)

// logger returns the logger Options ask for: Logger, else one that hands
// each record to Logf as one line, else one that drops everything (as
// boltstore does).
func (o *Options) logger() *slog.Logger {
	if o.Logger == nil && o.Logf == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slogf.Logger(o.Logger, o.Logf)
}
