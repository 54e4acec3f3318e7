// Package hasm is the HA client's decisions as a pure, single-threaded state
// machine: which server to try next and when, when to give up, what leaves
// the publish store on a logon, what is re-published before any new
// publish, which messages are refused locally, what each (re)subscription
// carries and when it ends, and which deliveries are duplicates.
//
// It does no I/O: no sockets, files, goroutines, wall clock, floats or
// map-iteration-order dependence. Logical time is an int64 of nanoseconds
// given with every input; the only randomness (delay jitter, generated
// subscription ids) comes from a seeded Rand given in the Config. The same
// inputs in the same order produce the same outputs, so the client
// (client.HAClient, a thin driver around a Machine) and the simulator
// (sim/) run the same decisions.
//
// The model is etcd-io/raft's RawNode:
//
//   - inputs: Step(Input) for what happened (a dial succeeded or failed, a
//     connection ended, a persisted ack, a permanent refusal, a
//     subscription's answer, Close), Tick(now) for time passing, and a few
//     synchronous calls for the hot paths whose answer the caller needs at
//     once (Stored, Replayed, NextPubSeq, AddSub);
//   - outputs: Ready() returns the Actions to carry out, in order (dial,
//     attach, set a timer, close a connection, store discards and removals,
//     failed writes, subscribe, events and errors, stopped); Advance()
//     acknowledges them. The Actions slice is reused: it is valid until
//     Advance.
//
// A driver executes the actions in order and feeds back their outcomes
// (ActDial -> InDialed or InDialFailed; ActAttach -> InAttached, calling
// Replayed for each stored message above the ack point meanwhile;
// ActSubscribe -> InSubscribed). See docs/client.md, "The state machine",
// and example_test.go for a driver with a fake server and logical time.
//
// The server chooser and delay strategy are interfaces (Chooser, Delay)
// with the client's defaults implemented here as pure types
// (DefaultChooser, ExponentialDelay, FixedDelay); a driver may plug in
// others (the client adapts its ServerChooser and DelayStrategy).
//
// Not inside: the publish and bookmark stores (the machine tells the driver
// what to discard and remove, and asks a Bookmarks interface for a
// subscription's resume entries), the connection's own window, heartbeats
// and idle timeout (a silent connection comes in as InLost with
// CauseSilent), and the application's handlers.
package hasm
