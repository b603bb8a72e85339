// bigbin writes a large Go program (thousands of functions and struct types, full DWARF when
// built normally) for the startup benchmark when no Jaeger build is at hand:
//
//	go run . -out DIR [-files 40] [-funcs 200]; cd DIR && go build
//
// The program it writes blocks until SIGTERM, so gotel can attach to it.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	out := flag.String("out", "", "directory to write the program into")
	files := flag.Int("files", 40, "source files")
	funcs := flag.Int("funcs", 200, "functions per file")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "bigbin: -out is required")
		os.Exit(2)
	}
	must(os.MkdirAll(*out, 0o755))
	must(os.WriteFile(filepath.Join(*out, "go.mod"), []byte("module bigbin\n\ngo 1.22\n"), 0o644))
	var calls strings.Builder
	for f := 0; f < *files; f++ {
		var b strings.Builder
		fmt.Fprintf(&b, "package main\n\nimport (\n\t\"fmt\"\n\t\"strings\"\n)\n\n")
		for i := 0; i < *funcs; i++ {
			n := f*(*funcs) + i
			fmt.Fprintf(&b, "type Rec%d struct {\n\tID int64\n\tName string\n\tTags []string\n\tNext *Rec%d\n\tM map[string]int\n}\n\n", n, n)
			fmt.Fprintf(&b, "//go:noinline\nfunc F%d(r *Rec%d, s string, k int) (string, error) {\n", n, n)
			fmt.Fprintf(&b, "\tif r == nil {\n\t\treturn \"\", fmt.Errorf(\"nil record %%d\", k)\n\t}\n")
			fmt.Fprintf(&b, "\tparts := make([]string, 0, len(r.Tags)+2)\n\tparts = append(parts, r.Name, s)\n")
			fmt.Fprintf(&b, "\tfor _, t := range r.Tags {\n\t\tparts = append(parts, strings.ToUpper(t))\n\t}\n")
			fmt.Fprintf(&b, "\tr.M[s] += k + %d\n\treturn strings.Join(parts, \",\"), nil\n}\n\n", n)
			fmt.Fprintf(&calls, "\tif os.Getenv(\"BIGBIN_CALL\") == \"%d\" {\n\t\tfmt.Println(F%d(&Rec%d{M: map[string]int{}}, \"x\", 1))\n\t}\n", n, n, n)
		}
		must(os.WriteFile(filepath.Join(*out, fmt.Sprintf("gen%03d.go", f)), []byte(b.String()), 0o644))
	}
	mainSrc := "package main\n\nimport (\n\t\"fmt\"\n\t\"net/http\"\n\t\"os\"\n\t\"os/signal\"\n\t\"syscall\"\n)\n\n" +
		"func main() {\n" + calls.String() +
		"\tif os.Getenv(\"BIGBIN_HTTP\") != \"\" {\n\t\thttp.Get(os.Getenv(\"BIGBIN_HTTP\"))\n\t}\n" +
		"\tc := make(chan os.Signal, 1)\n\tsignal.Notify(c, syscall.SIGTERM, syscall.SIGINT)\n\t<-c\n}\n"
	must(os.WriteFile(filepath.Join(*out, "main.go"), []byte(mainSrc), 0o644))
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bigbin:", err)
		os.Exit(1)
	}
}
