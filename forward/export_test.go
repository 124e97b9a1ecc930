package forward

// SetMaxQueue sets the MaxQueue of the subscriptions Add makes from now on
// and returns a function that restores the default.
func SetMaxQueue(n int) (restore func()) {
	old := maxQueue
	maxQueue = n
	return func() { maxQueue = old }
}

// ErrTooMuchReceived is the error of a connection on which the server sent
// more than a submission's replies can take.
var ErrTooMuchReceived = errTooMuchReceived
