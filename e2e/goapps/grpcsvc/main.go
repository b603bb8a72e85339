// A real grpc-go server and client in one process, over plaintext HTTP/2 on 127.0.0.1: the
// service gotel.test.Greeter, declared by hand (no protoc; messages are protobuf's
// wrapperspb.StringValue), with a unary call, a server-streaming call, one that ends with an
// error status after its messages, a call answered with an error status, a call that runs past
// its deadline and one of an unimplemented method. The client calls run inside main.callAll
// and main.call (traced by the tests); handlers call main.lookup, which must nest under the
// server span.
//
// Prints one line per call: "method code", then "done".
//
// Two services instead of one (the outgoing trace context tests): `-serve ADDR` only serves
// (prints "listening ADDR", stops once the file `-until` names exists), `-target ADDR` only
// calls that server;
// `-hello N` makes N SayHello calls (the load test) instead of callAll, and counts the answers
// that are not "hello <name>" (the server answers otherwise when a call carried more than one
// `traceparent`). `-warm N` makes N SayHello calls on the connection first, then waits for the
// `-wait` file (gotel attaching in between: a connection opened and used before it attached).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type greeter interface{}

type server struct{}

//go:noinline
func lookup(name string) string { return "hello " + name }

func sayHello(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if n := len(md.Get("traceparent")); n > 1 {
		return wrapperspb.String(fmt.Sprintf("%d traceparents", n)), nil
	}
	return wrapperspb.String(lookup(in.Value)), nil
}

func fail(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	lookup(in.Value)
	return nil, status.Error(codes.NotFound, "no such greeting: "+in.Value)
}

func slow(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

func count(_ any, stream grpc.ServerStream) error {
	in := new(wrapperspb.StringValue)
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	for i := 0; i < 3; i++ {
		if err := stream.SendMsg(wrapperspb.String(fmt.Sprintf("%s %d", lookup(in.Value), i))); err != nil {
			return err
		}
	}
	if in.Value == "broken" {
		// A stream that ends with an error status after its messages.
		return status.Error(codes.DataLoss, "stream broke")
	}
	return nil
}

var desc = grpc.ServiceDesc{
	ServiceName: "gotel.test.Greeter",
	HandlerType: (*greeter)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "SayHello", Handler: sayHello},
		{MethodName: "Fail", Handler: fail},
		{MethodName: "Slow", Handler: slow},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "Count", Handler: count, ServerStreams: true},
		{StreamName: "CountBroken", Handler: count, ServerStreams: true},
	},
}

// call makes one unary call and returns its status code.
//
//go:noinline
func call(ctx context.Context, cc *grpc.ClientConn, method, name string) codes.Code {
	out := new(wrapperspb.StringValue)
	err := cc.Invoke(ctx, "/gotel.test.Greeter/"+method, wrapperspb.String(name), out)
	return status.Code(err)
}

// stream reads the whole server stream (of method Count or CountBroken) and returns its final
// status code.
//
//go:noinline
func stream(ctx context.Context, cc *grpc.ClientConn, method, name string) codes.Code {
	s, err := cc.NewStream(ctx, &desc.Streams[0], "/gotel.test.Greeter/"+method)
	if err != nil {
		return status.Code(err)
	}
	if err := s.SendMsg(wrapperspb.String(name)); err != nil {
		return status.Code(err)
	}
	if err := s.CloseSend(); err != nil {
		return status.Code(err)
	}
	for {
		out := new(wrapperspb.StringValue)
		if err := s.RecvMsg(out); err == io.EOF {
			return codes.OK
		} else if err != nil {
			return status.Code(err)
		}
	}
}

//go:noinline
func callAll(cc *grpc.ClientConn, traceparent string) {
	ctx := context.Background()
	if traceparent != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", traceparent)
	}
	fmt.Println("SayHello", call(ctx, cc, "SayHello", "tea"))
	fmt.Println("Count", stream(ctx, cc, "Count", "coffee"))
	fmt.Println("CountBroken", stream(ctx, cc, "CountBroken", "broken"))
	fmt.Println("Fail", call(ctx, cc, "Fail", "gold"))
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	fmt.Println("Slow", call(short, cc, "Slow", "late"))
	cancel()
	fmt.Println("Missing", call(ctx, cc, "Missing", "x"))
}

// hellos makes n SayHello calls and prints how many failed or came back changed.
//
//go:noinline
func hellos(cc *grpc.ClientConn, n int) {
	bad := 0
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("n%d", i)
		out := new(wrapperspb.StringValue)
		err := cc.Invoke(context.Background(), "/gotel.test.Greeter/SayHello", wrapperspb.String(name), out)
		if err != nil || out.Value != "hello "+name {
			bad++
		}
	}
	fmt.Println("hellos", n, "bad", bad)
}

func main() {
	traceparent := flag.String("traceparent", "", "metadata sent with every call")
	serve := flag.String("serve", "", "only serve on this address (127.0.0.1:0: any port)")
	target := flag.String("target", "", "only call the server at this address")
	hello := flag.Int("hello", 0, "make this many SayHello calls instead of the set of calls")
	until := flag.String("until", "", "with -serve: serve until this file exists")
	rounds := flag.Int("rounds", 1, "how many times to make the calls")
	wait := flag.String("wait", "", "wait until this file exists before calling (gotel attached)")
	warm := flag.Int("warm", 0, "with -target and -wait: make this many SayHello calls before waiting")
	flag.Parse()
	waitFile := func() {
		for *wait != "" {
			if _, err := os.Stat(*wait); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if *warm == 0 {
		waitFile()
	}
	addr := *target
	var srv *grpc.Server
	if addr == "" {
		listen := *serve
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		srv = grpc.NewServer()
		srv.RegisterService(&desc, server{})
		go srv.Serve(ln)
		addr = ln.Addr().String()
	}
	if *serve != "" {
		fmt.Println("listening", addr)
		for {
			if _, err := os.Stat(*until); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		srv.Stop()
		fmt.Println("done")
		return
	}
	cc, err := grpc.Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *warm > 0 {
		hellos(cc, *warm)
		waitFile()
	}
	for i := 0; i < *rounds; i++ {
		if *hello > 0 {
			hellos(cc, *hello)
		} else {
			callAll(cc, *traceparent)
		}
	}
	cc.Close()
	if srv != nil {
		// GracefulStop waits for the handlers (Stop does not before grpc-go 1.60ish): the
		// server span of a call that ended by its deadline must end before the process does.
		srv.GracefulStop()
	}
	fmt.Println("done")
}
