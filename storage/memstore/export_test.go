package memstore

// SetVanishedKept changes how many removals a folder remembers, for tests,
// and returns a function that restores it.
func SetVanishedKept(n int) (restore func()) {
	old := vanishedKept
	vanishedKept = n
	return func() { vanishedKept = old }
}
