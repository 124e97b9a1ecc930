package main

import (
	"fmt"
	"os"
	"strings"
)

// secretLine is a line of a file of secrets, numbered from 1 for errors.
type secretLine struct {
	n    int
	text string
}

// readSecretFile reads the file given with flag (-smtp-file,
// -upstream-file) and returns its lines, trimmed, but blank ones and those
// starting with #. A file other users may read or write is refused, since
// it holds what holds says ("the password it holds").
func readSecretFile(flag, path, holds string) ([]secretLine, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s: mode %04o lets other users read or change %s; chmod 600 it", flag, path, perm, holds)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	var lines []secretLine
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, secretLine{n: i + 1, text: line})
	}
	return lines, nil
}
