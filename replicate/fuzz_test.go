package replicate

import (
	"encoding/hex"
	"testing"

	"github.com/tandemhq/tandem/wire"
)

// FuzzLinkFrames feeds arbitrary bytes to the replication link's frame
// splitting and to every link frame decoder (Hello, Proof, Resume, Batch,
// BatchAck, Refuse, Error): none may panic, and a Hello or Resume that
// decodes re-encodes to the same bytes.
func FuzzLinkFrames(f *testing.F) {
	for _, ex := range docExamples() {
		f.Add(mustHex(ex.hex))
	}
	f.Add(appendProof(nil, [proofSize]byte{1}))
	f.Add([]byte{8, 0, 0, 0, byte(typeHello), 0, 0, 0})
	f.Add(append(appendHello(nil, &hello{Version: protoVersion, From: "A", To: "B"}), appendResume(nil, position{Seq: 3})...))
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			fr, n, err := wire.Split(b, handshakeMaxFrame)
			if err != nil || n == 0 {
				fr = wire.Frame{Type: typeHello, Body: b}
				n = len(b)
			}
			b = b[n:]
			for _, typ := range []wire.Type{fr.Type, typeHello, typeResume, typeBatch, typeBatchAck, typeRefuse, wire.TypeError} {
				decodeLinkFrame(t, typ, fr.Body)
			}
		}
	})
}

func decodeLinkFrame(t *testing.T, typ wire.Type, body []byte) {
	switch typ {
	case typeHello:
		var h hello
		if decodeHello(body, &h) == nil {
			if got := appendHello(nil, &h)[wire.HeaderSize:]; string(got[:6]) != string(body[:6]) || len(got) != len(body) {
				t.Fatalf("hello %x re-encodes as %x", body, got)
			}
		}
	case typeProof:
		_ = len(body) == proofSize && proofEqual(body, [proofSize]byte{})
	case typeResume:
		if p, err := decodeResume(body); err == nil {
			if got := appendResume(nil, p)[wire.HeaderSize:]; string(got[:28]) != string(body[:28]) {
				t.Fatalf("resume %x re-encodes as %x", body, got)
			}
		}
	case typeBatch:
		from, through, _, recs, err := decodeBatch(body)
		if err == nil && (from == 0 || through+1 < from || len(recs) != len(body)-batchFixed) {
			t.Fatalf("batch [%d, %d] accepted", from, through)
		}
	case typeBatchAck:
		decodeU64(typ, body)
	case typeRefuse:
		decodeRefuse(body)
	case wire.TypeError:
		remoteError(body)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
