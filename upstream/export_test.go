package upstream

// SetAfterAppend installs a hook that runs after each successful APPEND;
// when it returns true the engine drops the connection as if the server's
// answer had been lost.
func SetAfterAppend(e *Engine, f func() bool) { e.afterAppend = f }
