module github.com/embeddedum/um/examples/pbx

go 1.24

require (
	github.com/embeddedum/um v0.0.0
	github.com/emersion/go-imap/v2 v2.0.0-beta.8
	github.com/emiago/sipgo v1.7.3
	github.com/jackc/pgx/v5 v5.7.6
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/gobwas/pool v0.2.1 // indirect
	github.com/gobwas/ws v1.3.2 // indirect
	github.com/icholy/digest v1.2.0 // indirect
)

require (
	github.com/embeddedum/um/sipmwi v0.0.0
	github.com/emersion/go-message v0.18.2 // indirect
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.2 // indirect
	go.etcd.io/bbolt v1.4.3 // indirect
	golang.org/x/crypto v0.37.0 // indirect
	golang.org/x/sync v0.16.0 // indirect
	golang.org/x/sys v0.32.0 // indirect
	golang.org/x/text v0.24.0 // indirect
)

replace github.com/embeddedum/um => ../../

replace github.com/embeddedum/um/sipmwi => ../../sipmwi
