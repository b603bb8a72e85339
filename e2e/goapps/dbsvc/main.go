// dbsvc: a service doing a known sequence of database calls for gotel's database spans
// (e2e/tests/db.rs). Each HTTP handler runs one sequence, so every query and command happens
// under an HTTP server span and a user function (main.pgSequence, ...). The test knows the
// sequence and checks one span per query or command, its attributes, status and parents.
//
//	dbsvc -portfile F [-pg DSN] [-redis ADDR] [-sqlite PATH]
//
// GET /pgx, /pq: PostgreSQL through database/sql with pgx v5 stdlib, lib/pq;
// GET /sqlite: modernc.org/sqlite; GET /redis: go-redis v9. Each answers "ok" or 500 with what
// went differently than planned.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/lib/pq"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"
)

func must(err error, what string) {
	if err != nil {
		panic(fmt.Sprintf("%s: %v", what, err))
	}
}

// fail: an error the sequence expects (a span with status ERROR).
func fail(err error, what string) {
	if err == nil {
		panic(what + ": expected an error")
	}
}

// sqlSequence: the statements of one database/sql run. Placeholders are $1 for PostgreSQL
// and ?1 for SQLite (ph). Spans, in order:
//
//	DROP TABLE IF EXISTS items                              (exec)
//	CREATE TABLE items (id integer primary key, name text)  (exec)
//	INSERT INTO items (id, name) VALUES ($1, $2)            (exec)
//	SELECT name FROM items WHERE id = $1                    (query)
//	SELECT id FROM items WHERE name = 'tea' AND id > 0      (query: literals sanitized)
//	UPDATE items SET name = $1 WHERE id = $2                (exec in a transaction)
//	SELECT count(*) FROM items                              (query in the transaction)
//	SELECT name FROM items WHERE id = $1                    (prepared, queried twice)
//	SELEC 1                                                 (ERROR: syntax)
//	INSERT INTO items (id, name) VALUES (1, 'dup')          (ERROR: unique violation)
//
//go:noinline
func sqlSequence(ctx context.Context, db *sql.DB, ph func(int) string) {
	_, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS items")
	must(err, "drop")
	_, err = db.ExecContext(ctx, "CREATE TABLE items (id integer primary key, name text)")
	must(err, "create")
	_, err = db.ExecContext(ctx, fmt.Sprintf("INSERT INTO items (id, name) VALUES (%s, %s)", ph(1), ph(2)), 1, "tea")
	must(err, "insert")
	var name string
	must(db.QueryRowContext(ctx, "SELECT name FROM items WHERE id = "+ph(1), 1).Scan(&name), "select")
	rows, err := db.QueryContext(ctx, "SELECT id FROM items WHERE name = 'tea' AND id > 0")
	must(err, "select literal")
	for rows.Next() {
	}
	must(rows.Close(), "rows")

	tx, err := db.BeginTx(ctx, nil)
	must(err, "begin")
	_, err = tx.ExecContext(ctx, fmt.Sprintf("UPDATE items SET name = %s WHERE id = %s", ph(1), ph(2)), "green tea", 1)
	must(err, "update")
	var n int
	must(tx.QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&n), "count")
	must(tx.Commit(), "commit")

	stmt, err := db.PrepareContext(ctx, "SELECT name FROM items WHERE id = "+ph(1))
	must(err, "prepare")
	for i := 0; i < 2; i++ {
		must(stmt.QueryRowContext(ctx, 1).Scan(&name), "stmt")
	}
	must(stmt.Close(), "stmt close")

	_, err = db.ExecContext(ctx, "SELEC 1")
	fail(err, "syntax error")
	_, err = db.ExecContext(ctx, "INSERT INTO items (id, name) VALUES (1, 'dup')")
	fail(err, "unique violation")
}

// pgClosed: a connection the server closes (pg_terminate_backend), then a query on it:
//
//	SELECT pg_terminate_backend(pg_backend_pid())   (ERROR: the server ends the session)
//	SELECT 1                                        (ERROR: closed connection)
//
//go:noinline
func pgClosed(ctx context.Context, db *sql.DB) {
	conn, err := db.Conn(ctx)
	must(err, "conn")
	defer conn.Close()
	_, _ = conn.ExecContext(ctx, "SELECT pg_terminate_backend(pg_backend_pid())")
	_, err = conn.ExecContext(ctx, "SELECT 1")
	fail(err, "closed connection")
}

//go:noinline
func pgSequence(ctx context.Context, db *sql.DB) {
	sqlSequence(ctx, db, func(i int) string { return fmt.Sprintf("$%d", i) })
	pgClosed(ctx, db)
}

//go:noinline
func sqliteSequence(ctx context.Context, db *sql.DB) {
	sqlSequence(ctx, db, func(i int) string { return fmt.Sprintf("?%d", i) })
}

// redisSequence, spans in order:
//
//	set   SET k v
//	get   GET k
//	get   GET missing          (redis.Nil: not an error)
//	incr  INCR counter
//	pipeline: set, incr        (one span for the pipeline)
//	lpush LPUSH k x            (ERROR: WRONGTYPE)
//
//go:noinline
func redisSequence(ctx context.Context, rdb *redis.Client) {
	must(rdb.Set(ctx, "k", "v", 0).Err(), "set")
	must(rdb.Get(ctx, "k").Err(), "get")
	if err := rdb.Get(ctx, "missing").Err(); !errors.Is(err, redis.Nil) {
		panic(fmt.Sprintf("get missing: %v", err))
	}
	must(rdb.Incr(ctx, "counter").Err(), "incr")
	pipe := rdb.Pipeline()
	pipe.Set(ctx, "a", "1", 0)
	pipe.Incr(ctx, "a")
	_, err := pipe.Exec(ctx)
	must(err, "pipeline")
	fail(rdb.LPush(ctx, "k", "x").Err(), "wrongtype")
}

func handle(run func(context.Context)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				http.Error(w, fmt.Sprint(p), 500)
			}
		}()
		run(r.Context())
		fmt.Fprintln(w, "ok")
	}
}

func main() {
	portfile := flag.String("portfile", "", "write the listen address here")
	pg := flag.String("pg", "", "PostgreSQL DSN (postgres://...)")
	rd := flag.String("redis", "", "Redis address")
	lite := flag.String("sqlite", "", "SQLite database file")
	flag.Parse()

	mux := http.NewServeMux()
	if *pg != "" {
		for path, driver := range map[string]string{"/pgx": "pgx", "/pq": "postgres"} {
			db, err := sql.Open(driver, *pg)
			must(err, driver)
			mux.HandleFunc(path, handle(func(ctx context.Context) { pgSequence(ctx, db) }))
		}
	}
	if *lite != "" {
		db, err := sql.Open("sqlite", *lite)
		must(err, "sqlite")
		mux.HandleFunc("/sqlite", handle(func(ctx context.Context) { sqliteSequence(ctx, db) }))
	}
	if *rd != "" {
		rdb := redis.NewClient(&redis.Options{Addr: *rd, DisableIndentity: true})
		mux.HandleFunc("/redis", handle(func(ctx context.Context) { redisSequence(ctx, rdb) }))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	if *portfile != "" {
		must(os.WriteFile(*portfile, []byte(ln.Addr().String()), 0o644), "portfile")
	}
	log.Fatal(http.Serve(ln, mux))
}
