package replicate

import (
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/tandemhq/tandem/record"
)

// docExamples are the link frames shown in docs/replication.md; the test
// fails when the document and the encoders disagree.
func docExamples() []struct{ name, hex string } {
	var nonce [nonceSize]byte
	for i := range nonce {
		nonce[i] = byte(i)
	}
	var journal record.JournalID
	for i := range journal {
		journal[i] = 0xa0 + byte(i)
	}
	h := hello{Version: protoVersion, From: "A", To: "B", Nonce: nonce, Journal: journal, MaxFrame: DefaultMaxFrame, Epoch: 0x11223344, Last: 41}
	rec := record.Append(nil, &record.Header{Seq: 7, Time: 1, Origin: record.OriginID("A", journal), Publisher: record.ID("p"), PubSeq: 3}, []byte("t"), []byte("x"))
	v, _, err := record.Parse(rec)
	if err != nil {
		panic(err)
	}
	batch, start := startBatch(nil)
	batch = append(batch, rec...)
	batch = finishBatch(batch, start, 5, 7, v.CRC())
	return []struct{ name, hex string }{
		{"Hello (A dials B, before the proof)", hex.EncodeToString(appendHello(nil, &h))},
		{"Resume (durable through 41 of journal a0a1..af, CRC 0x12345678)", hex.EncodeToString(appendResume(nil, position{Journal: journal, Seq: 41, CRC: 0x12345678}))},
		{"Batch (source seqs 5..7, one record: seq 7)", hex.EncodeToString(batch)},
		{"BatchAck (through 7)", hex.EncodeToString(appendU64Frame(nil, typeBatchAck, 7))},
		{"Refuse (a fork)", hex.EncodeToString(appendRefuse(nil, refuseFork, "fork"))},
	}
}

func TestReplicationDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/replication.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range docExamples() {
		if !strings.Contains(string(doc), ex.name+": `"+ex.hex+"`") {
			t.Errorf("docs/replication.md lacks the example %q: `%s`", ex.name, ex.hex)
		}
	}
}
