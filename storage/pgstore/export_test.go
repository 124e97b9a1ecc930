package pgstore

import "github.com/jackc/pgx/v5/pgxpool"

// PoolOf returns the pool of s, for tests that read the settings of its
// sessions.
func PoolOf(s *Store) *pgxpool.Pool { return s.pool }
