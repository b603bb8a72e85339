//! The kernel's event counters: what it counts instead of failing (a full ring buffer, a call
//! too deep to trace, a header it could not inject) and what it did (spans, adopted and injected
//! contexts). The kernel adds to the per-CPU `COUNTERS` array at a [`Counter`]'s index; user space
//! sums the CPUs and reports them.

/// Indices of the per-CPU `COUNTERS` array. Userspace sums the CPUs and reports them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A record did not fit into the ring buffer: that span or its values are lost.
    RingBufferFull = 0,
    /// A call ran deeper than MAX_FRAMES traced frames on one goroutine and was not traced.
    DepthOverflow = 1,
    /// A RET fired with no matching entry (attached mid-call, or depth overflow).
    UnmatchedReturn = 2,
    /// A frame was unwound without returning (panic then recover, Goexit).
    Abandoned = 3,
    /// The goroutine map refused an insert.
    StateInsertFailed = 4,
    /// A morestack re-entry of an entry probe that sits at the function start was ignored.
    MorestackReentry = 5,
    /// Entries seen (calls started).
    Entries = 6,
    /// Spans completed in the kernel.
    Returns = 7,
    /// Goroutine records cleared because runtime.newproc1 handed out that g again.
    GoroutineReused = 8,
    /// Valid incoming `traceparent` headers adopted.
    TraceparentAdopted = 9,
    /// `traceparent` headers ignored because they were malformed.
    TraceparentInvalid = 10,
    /// `traceparent` headers written into outgoing requests (GOTEL_PROPAGATION=inject).
    TraceparentInjected = 11,
    /// Injection skipped: the request already had a `traceparent`.
    InjectSkippedPresent = 12,
    /// Injection skipped: no room in the write buffer, or the buffer was flushed meanwhile.
    InjectSkippedNoRoom = 13,
    /// Socket path: client sockets of the traced process put into the `INJECT_SOCKETS` sockhash.
    SocketEnrolled = 14,
    /// Socket path: a client socket of the traced process could not be enrolled (sockhash full).
    SocketEnrolFailed = 15,
    /// Socket path: `traceparent` lines inserted into outgoing requests (`bpf_msg_push_data`).
    SocketInjected = 16,
    /// Socket path skipped a request that already carries `traceparent`.
    SocketSkippedPresent = 17,
    /// Socket path: a context was waiting but the message does not start with an HTTP/1 request
    /// line (TLS ciphertext, HTTP/2, a request line split across writes).
    SocketSkippedNotHttp1 = 18,
    /// Socket path: the request line does not end inside the scanned window.
    SocketSkippedLineTooLong = 19,
    /// Socket path: the waiting context was older than its lifetime and was dropped.
    SocketContextExpired = 20,
    /// Socket path: the kernel refused to make room for the line (`bpf_msg_push_data` or a pull
    /// failed); the message was sent unchanged.
    SocketInjectFailed = 21,
    /// Socket path: injected although the end of the header block was past the scanned window
    /// (a `traceparent` after it would not have been seen).
    SocketHeadersPastWindow = 22,
    /// Socket path: a message that starts like a request line was sent with no context waiting
    /// for its goroutine (request not made through a traced `Transport.roundTrip`).
    SocketNoContext = 23,
    /// gRPC: a valid `traceparent` in a request's HEADERS frame was adopted for its handler.
    GrpcTraceparentAdopted = 32,
    /// gRPC: a `traceparent` field with a malformed value was ignored.
    GrpcTraceparentInvalid = 33,
    /// gRPC: an adopted context was handed to the goroutine started for the stream's handler.
    GrpcContextHandedOff = 34,
    /// An HTTP/1 request's header block was no longer whole in the connection's read buffer
    /// (it came in several reads, or did not fit), no `traceparent` was among the lines left,
    /// and its `http.Header` map could not be walked to the end (too large, layout unknown).
    TraceparentUnreadable = 24,
    /// The header block was not whole in the read buffer, so the request's `http.Header` map was
    /// walked instead (completely: what it holds, the request had).
    HeaderMapWalked = 25,
    /// gRPC socket path: `traceparent` appended to a HEADERS frame's header block (h2c).
    GrpcSocketInjected = 35,
    /// gRPC socket path: the call's header fields already carry `traceparent` (left alone).
    GrpcSocketSkippedPresent = 36,
    /// gRPC socket path: not injected because the frame would exceed 16384 bytes, or the
    /// message had more HEADERS frames waiting than one message's injections (`H2_MAX_INJECT`).
    GrpcSocketSkippedTooLong = 37,
    /// gRPC socket path: the frame walk of a connection lost its place (an unknown frame type,
    /// or more frames in one message than it walks): that connection is no longer injected.
    GrpcSocketDesync = 38,
    /// gRPC socket path: the kernel refused to make room or to write (`bpf_msg_push_data`, a
    /// pull), or the header fields could not be read; nothing was sent changed.
    GrpcSocketInjectFailed = 39,
    /// gRPC socket path: a message of a connection whose frames are not followed (open before
    /// gotel attached, or its place lost) that does not tile into frames: passed unchanged.
    GrpcSocketUnaligned = 40,
    /// gRPC socket path: such a connection's frames found again (a message that tiles exactly
    /// into well-formed frames): followed, and injected, from that message on.
    GrpcSocketResync = 41,
    /// Same node: a client request's context stored under its connection (`join.same_node`).
    SameNodeOffered = 44,
    /// Same node: a server span without `traceparent` joined the client span of its connection.
    SameNodeJoined = 45,
    /// Same node: the connection's stored context was too old and was dropped.
    SameNodeExpired = 46,
    /// Same node: a connection's addresses could not be read (neither a `*net.TCPConn` nor a
    /// `*tls.Conn` over one: another wrapper, a unix socket), so it was not matched.
    SameNodeUnreadable = 47,
    /// Same node: a server span found its connection only under the client address, and that
    /// record was ambiguous (the client's port served another destination within
    /// `same_node::AMBIGUITY_WINDOW_NS`): not joined.
    SameNodeAmbiguous = 48,
    /// Same node: of the joins, those made through the client address alone (the server's
    /// address was not the one the client dialled: a Service's virtual IP, DNATed).
    SameNodeJoinedTranslated = 49,
    /// HTTP/1 requests whose request line was not whole in the read buffer at the server
    /// span's entry: their method, path and host were read from `*http.Request` instead.
    RequestLineUnread = 50,
}
pub const NUM_COUNTERS: u32 = 64;
