// Package client is Tandem's native Go client: one connection to one server,
// publishing with client-assigned publisher sequences and cumulative acks,
// subscribing with bookmarks, flushing, heartbeats and statistics.
//
//	c, err := client.Connect(ctx, "127.0.0.1:7400", client.WithName("pricer-1"))
//	seq, err := c.Publish(ctx, "prices.EURUSD", payload) // no round trip
//	err = c.Flush(ctx)                                    // everything so far is on disk
//	sub, err := c.Subscribe(ctx, "prices.", client.Prefix(), client.From(client.Epoch))
//	for m := range sub.C { ... m.Bookmark ... }
//
// A server with TLS and a users file (docs/security.md) takes WithTLS and
// WithUser (or a client certificate in the tls.Config):
//
//	c, err := client.Connect(ctx, "broker1:7400", client.WithName("oms-1"),
//		client.WithTLS(&tls.Config{RootCAs: pool}), client.WithUser("oms", password))
//
// # Threading
//
// A connection runs exactly two goroutines, whatever the traffic:
//
//   - the writer owns the socket's write side. Publish, Flush, Subscribe and
//     the rest encode their frame into a shared write buffer under a mutex
//     and wake the writer only if the buffer was empty; the writer swaps the
//     buffer for a second one and sends everything with one write, so a fast
//     publisher costs one syscall per batch, not per message. It also sends
//     a heartbeat when it has written nothing for half the granted interval.
//   - the reader owns the read buffer. It reads as much as the socket has,
//     splits frames in place (wire.Split; the buffer grows for a frame larger
//     than itself) and handles each one: cumulative acks advance the
//     persisted sequence and call the WithAckHandler function; deliveries
//     call a WithHandler function or are copied onto Subscription.C; flush,
//     subscribe and stat replies wake the goroutine waiting for them. It
//     treats two heartbeat intervals without a byte from the server as a
//     dead connection (ErrHeartbeatTimeout).
//
// Handler functions (acks, messages, errors) run on the reader goroutine:
// while one runs, nothing else is read. They must not block, and must not
// call methods that wait for the reader (Flush, Subscribe, Unsubscribe,
// Stats, WaitPersisted, or Publish with a full window).
//
// # Flow control
//
// Publish blocks (until its context ends) while WithWindow messages are
// unacknowledged or the write buffer is full. A subscriber that does not
// keep up with Subscription.C blocks the reader, TCP pushes back, and the
// server serves the subscription from its journal instead of queueing.
//
// # Lifetime of Message slices
//
// A *Message passed to a WithHandler function is reused by the reader: the
// struct and its Topic and Payload slices are views into the read buffer,
// valid only until the function returns. Messages from Subscription.C are
// copies owned by the application.
//
// # Connection lifetime and errors
//
// A Client holds one connection (an unexported conn: socket, reader, writer,
// write buffer). When it ends, Done is closed and Err says why: ErrClosed
// after Close, otherwise an error matching ErrDisconnected and its cause (a
// *ServerError from an Error frame, ErrHeartbeatTimeout, a network error).
// Messages not yet acknowledged are then reported to the ack handler with
// that error; waiting calls return it; subscription channels are closed.
// A Client does not reconnect: HAClient (ha.go, docs/client.md) makes a
// new Client per connection and keeps what survives them: the publish
// sequence and PublishStore, the subscriptions (SubscriptionManager) and
// their progress (BookmarkStore).
//
// Publisher sequences continue after the LastPubSeq the server reports at
// logon, so a client that restarts under the same name appends rather than
// being de-duplicated away.
//
// # Refusals and limits
//
// A version 2 server announces its MaxFrame and MaxTopic at logon; Publish
// refuses, without sending it, a message beyond them or beyond WithMaxFrame
// (an error matching ErrTooLarge that says which limit). A publish the
// server refuses comes back in an Ack with a code: wire.Code.Permanent ones
// (too-large, bad topic, sequence-reused, not-permitted) also go to the
// WithFailedWriteHandler function, and the connection stays up. Every
// persisted ack, with its sync-peer count, goes to WithAckInfoHandler.
//
// Lock order: conn.wmu before Client.smu; signal.mu is a leaf.
package client
