// Program whose only purpose is to link the standard-library types gotel's HTTP spans read
// (net/http server and client, the bundled HTTP/2 server, url.URL, bufio.Writer) and its
// database spans read (database/sql's DB, Stmt, driverConn, dsnConnector), so that
// gotel-layouts can read their field offsets from its DWARF (tools/gen-go-layouts.sh) and the
// unit tests can check sidecar/src/go_layouts.json against every installed Go.
package main

import (
	"bufio"
	"database/sql"
	"fmt"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) > 1 {
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, r.URL.Path) })
		_ = http.ListenAndServeTLS(os.Args[1], "cert.pem", "key.pem", nil)
		resp, err := http.Get("http://" + os.Args[1])
		if err == nil {
			fmt.Println(resp.StatusCode)
		}
	}
	if len(os.Args) > 2 {
		db, err := sql.Open(os.Args[2], os.Args[1])
		if err == nil {
			_, _ = db.Exec("SELECT 1")
			if s, err := db.Prepare("SELECT 1"); err == nil {
				_, _ = s.Exec()
			}
		}
	}
	w := bufio.NewWriter(os.Stdout)
	w.Flush()
}
