package iscsi

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestExportValidation(t *testing.T) {
	t.Parallel()
	good := Export{Name: "vol-1", IQN: "iqn.2026-11.io.drover:vol-1", Path: "/tmp/x"}
	tests := []struct {
		name   string
		change func(*Export)
		ok     bool
	}{
		{"a plain export is valid", func(*Export) {}, true},
		{"an upper-case name is refused", func(e *Export) { e.Name = "Vol" }, false},
		{"a 64-character name is refused", func(e *Export) { e.Name = string(bytes.Repeat([]byte("a"), 64)) }, false},
		{"a name with a slash is refused", func(e *Export) { e.Name = "a/b" }, false},
		{"a target name that is no IQN is refused", func(e *Export) { e.IQN = "vol-1" }, false},
		{"LUN 1 is refused", func(e *Export) { e.LUN = 1 }, false},
		{"a missing path is refused", func(e *Export) { e.Path = "" }, false},
		{"CHAP without a secret is refused", func(e *Export) { e.CHAP = &wire.CHAP{User: "u"} }, false},
		{"mutual CHAP without its secret is refused", func(e *Export) { e.CHAP = &wire.CHAP{User: "u", Secret: "s", MutualUser: "t"} }, false},
		{"mutual CHAP reusing the secret is refused", func(e *Export) {
			e.CHAP = &wire.CHAP{User: "u", Secret: "s", MutualUser: "t", MutualSecret: "s"}
		}, false},
		{"mutual CHAP is valid", func(e *Export) {
			e.CHAP = &wire.CHAP{User: "u", Secret: "s", MutualUser: "t", MutualSecret: "m"}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex := good
			tt.change(&ex)
			if err := validate(ex); (err == nil) != tt.ok {
				t.Errorf("validate: got error %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestCHAPResponseMatchesRFC1994(t *testing.T) {
	t.Parallel()
	// MD5(id || secret || challenge), computed independently with md5sum.
	chal, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	got := hex.EncodeToString(chapResponse(7, "secret", chal))
	const want = "15c1682eb7ac3daca85d727884af20a0"
	if got != want {
		t.Errorf("chapResponse: got %s, want %s", got, want)
	}
	if other := hex.EncodeToString(chapResponse(8, "secret", chal)); other == got {
		t.Errorf("response for another id: got %s, want a different one", other)
	}
}

func TestBinaryValuesDecodeFromHexAndBase64(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []byte
		ok   bool
	}{
		{"0x0a0b", []byte{0x0a, 0x0b}, true},
		{"0X0A0B", []byte{0x0a, 0x0b}, true},
		{"0bCgs=", []byte{0x0a, 0x0b}, true},
		{"0a0b", nil, false},
		{"0xzz", nil, false},
	}
	for _, tt := range tests {
		got, err := decodeBinary(tt.in)
		if (err == nil) != tt.ok || !bytes.Equal(got, tt.want) {
			t.Errorf("decodeBinary(%q): got %x, %v; want %x, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestLUNsDecodeFromPeripheralAndFlatAddressing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw  uint64
		want uint64
	}{
		{0, 0},
		{0x0001 << 48, 1},
		{0x4105 << 48, 0x105},
		{0xc000 << 48, 1 << 62},
	}
	for _, tt := range tests {
		if got := decodeLUN(tt.raw); got != tt.want {
			t.Errorf("decodeLUN(%#x): got %d, want %d", tt.raw, got, tt.want)
		}
	}
}

func TestLoginTextRoundTrips(t *testing.T) {
	t.Parallel()
	kvs := []kv{{"InitiatorName", "iqn.x:y"}, {"AuthMethod", "CHAP,None"}}
	got := parseText(marshalText(kvs))
	if len(got) != 2 || got[0] != kvs[0] || got[1] != kvs[1] {
		t.Errorf("parseText(marshalText(%v)): got %v, want the same", kvs, got)
	}
}

func TestPersistentReservationsBlockOtherInitiatorsWrites(t *testing.T) {
	t.Parallel()
	pr, err := newPersistentReservations("v", nil)
	if err != nil {
		t.Fatal(err)
	}
	param := func(key, saKey uint64) []byte {
		b := make([]byte, 24)
		for i := 0; i < 8; i++ {
			b[i] = byte(key >> (56 - 8*i))
			b[8+i] = byte(saKey >> (56 - 8*i))
		}
		return b
	}
	cdb := func(sa, typ byte) []byte { return []byte{0x5f, sa, typ, 0, 0, 0, 0, 0, 24, 0} }
	if r := pr.out("a", cdb(0, 0), param(0, 0xaa)); r.status != statusGood {
		t.Fatalf("register: got status %#x, want good", r.status)
	}
	if r := pr.out("a", cdb(1, prWriteExclusive), param(0xaa, 0)); r.status != statusGood {
		t.Fatalf("reserve: got status %#x, want good", r.status)
	}
	if !pr.conflicts("b", 0x2a) {
		t.Errorf("WRITE(10) from another initiator: got no conflict, want conflict")
	}
	if pr.conflicts("b", 0x28) {
		t.Errorf("READ(10) from another initiator under WRITE EXCLUSIVE: got conflict, want none")
	}
	if pr.conflicts("a", 0x2a) {
		t.Errorf("WRITE(10) from the holder: got conflict, want none")
	}
}
