// grpc measures what gotel's built-in gRPC hooks cost the program: a unary grpc-go call from a
// client to a server in this one process, over plaintext HTTP/2 on 127.0.0.1, on one CPU
// (bench/grpc_hooks.py pins it), so every trap a call causes, client's and server's, is in the
// time measured. Calls are sequential on one connection.
//
//	grpc -n N -wait-file F   # ns per call
//
// The service is declared by hand (no protoc; messages are protobuf's wrapperspb.StringValue,
// as in e2e/goapps/grpcsvc). Every call carries a traceparent in its metadata, as a traced
// caller's would, so the server's incoming trace context is found. The timed part starts once
// -wait-file exists (probes attached from outside) and prints one JSON line.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

//go:noinline
func unrelated(x int) int { return x * 3 }

type greeter interface{}

func sayHello(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	return wrapperspb.String("hello " + in.Value), nil
}

var desc = grpc.ServiceDesc{
	ServiceName: "gotel.bench.Greeter",
	HandlerType: (*greeter)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "SayHello", Handler: sayHello}},
}

func waitFile(path string) {
	for path != "" {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func main() {
	n := flag.Int("n", 2000, "calls")
	wait := flag.String("wait-file", "", "start timing once this file exists")
	flag.Parse()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&desc, struct{}{})
	go srv.Serve(ln)
	cc, err := grpc.Dial(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	in := wrapperspb.String("tea")
	one := func() {
		out := new(wrapperspb.StringValue)
		if err := cc.Invoke(ctx, "/gotel.bench.Greeter/SayHello", in, out); err != nil {
			panic(err)
		}
	}
	for i := 0; i < 200; i++ {
		one()
	}
	waitFile(*wait)
	unrelated(1)
	for i := 0; i < 200; i++ {
		one()
	}
	start := time.Now()
	for i := 0; i < *n; i++ {
		one()
	}
	ns := float64(time.Since(start).Nanoseconds()) / float64(*n)
	cc.Close()
	srv.Stop()
	json.NewEncoder(os.Stdout).Encode(map[string]any{"mode": "grpc", "n": *n, "ns": ns})
}
